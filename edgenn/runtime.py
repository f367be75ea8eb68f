"""[device] Run a .tflite model with LiteRT (or tflite-runtime): float in, float out.

The runtime is ``ai_edge_litert`` when installed, else ``tflite_runtime`` (32-bit Pi OS, old Coral
set-ups); never ``tf.lite``, which is deprecated and would pull in TensorFlow. Quantized inputs and
outputs are handled here with the model's own scale and zero point, so callers always pass float
model inputs and get float outputs, whatever the model's I/O dtype. For a hot path,
:meth:`Runner.bind` hands out the first input and output as the interpreter's own buffers and its
native invoke (what :class:`edgenn.predict.Classifier` uses).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np

from edgenn import classify, optional, tflite_model
from edgenn.errors import EdgennError, MissingDependencyError, UsageError
from edgenn.stdio import capture_stderr

#: Runtimes in order of preference, by the name users pass to --runtime.
RUNTIMES = {"litert": "ai_edge_litert.interpreter", "tflite-runtime": "tflite_runtime.interpreter"}
EDGETPU_LIBRARY = "libedgetpu.so.1"
#: What a delegate spec may be (see :func:`load_delegate`), for help texts and errors.
DELEGATE_FORMS = ("edgetpu", "edgetpu:usb", "edgetpu:pci", "a delegate .so path")


#: Coral's apt repository and the Edge TPU runtime, as Coral's "Get started" pages set them up.
EDGETPU_INSTALL = (
    "curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo gpg --dearmor -o "
    "/usr/share/keyrings/coral-edgetpu.gpg && echo 'deb [signed-by=/usr/share/keyrings/"
    "coral-edgetpu.gpg] https://packages.cloud.google.com/apt coral-edgetpu-stable main' | "
    "sudo tee /etc/apt/sources.list.d/coral-edgetpu.list && sudo apt-get update && "
    "sudo apt-get install -y libedgetpu1-std"
)


@dataclasses.dataclass
class Runtime:
    """The interpreter module in use.

    Attributes:
        name: ``litert`` or ``tflite-runtime``.
        version: Its package version.
        module: The ``...interpreter`` module.
    """

    name: str
    version: str
    module: ModuleType


def find_runtime(name: str | None = None) -> Runtime:
    """Import a TFLite interpreter module.

    Args:
        name: ``litert`` or ``tflite-runtime``; None tries them in that order.

    Returns:
        The runtime.

    Raises:
        UsageError: Unknown name.
        MissingDependencyError: The runtime (or any runtime) is not installed.
    """
    if name is not None and name not in RUNTIMES:
        raise UsageError(f"Unknown runtime {name!r}; expected one of {', '.join(RUNTIMES)}.")
    candidates = [name] if name else list(RUNTIMES)
    for candidate in candidates:
        module = optional.try_import(RUNTIMES[candidate])
        if module is None:
            continue
        from importlib import metadata

        try:
            version = metadata.version(optional.dependency(RUNTIMES[candidate]).package)
        except metadata.PackageNotFoundError:
            version = "unknown"
        return Runtime(candidate, version, module)
    wanted = name or "a LiteRT runtime"
    raise MissingDependencyError(wanted, "Running a .tflite model", optional.RUNTIME_INSTALL)


@contextlib.contextmanager
def _quiet_unraisable() -> Iterator[None]:
    """Hide the AttributeError that a half-made ``Delegate.__del__`` prints after a failed load."""
    previous = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        yield
    finally:
        sys.unraisablehook = previous


def load_delegate(runtime: Runtime, spec: str):
    """Load an external delegate: ``edgetpu``, ``edgetpu:usb``, ``edgetpu:pci`` or a ``.so`` path.

    Args:
        runtime: The runtime whose ``load_delegate`` to use.
        spec: What to load.

    Returns:
        The delegate object.

    Raises:
        EdgennError: The library is missing or refused to load; the message says how to install it.
    """
    options = {}
    if spec == "edgetpu" or spec.startswith("edgetpu:"):
        library = EDGETPU_LIBRARY
        device = spec.partition(":")[2]
        if device:
            options["device"] = device
        hint = f"Install the Edge TPU runtime: {EDGETPU_INSTALL}"
    else:
        library = spec
        if not Path(spec).is_file():
            raise EdgennError(
                f"Delegate library {spec} does not exist.",
                f"Pass one of: {', '.join(DELEGATE_FORMS)} (e.g. a GPU delegate build).",
            )
        hint = "Check that the library is built for this machine and runtime version."
    with _quiet_unraisable():
        try:
            return runtime.module.load_delegate(library, options)
        except (OSError, ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        # The half-made Delegate lives on in the exception's traceback; collect it while its
        # __del__ noise is muted, instead of at some later, unmuted moment.
        gc.collect()
    raise EdgennError(f"Could not load the delegate {library} ({first}).", hint)


@dataclasses.dataclass(frozen=True)
class Binding:
    """A model's first input and output as numpy arrays, and the call that runs between them.

    Write the input into :attr:`input`, call :attr:`invoke`, read :attr:`output`: no per-call
    copy, allocation or validation (see :meth:`Runner.bind`).

    Attributes:
        input: The model input, shaped and typed as the input tensor (quantized values for an
            integer input).
        output: The first output, flat, raw (quantized values for an integer output).
        invoke: Runs the model once.
        direct: True when ``input`` and ``output`` are the interpreter's own buffers; False when
            they are staging copies (runtimes without direct tensor access).
    """

    input: np.ndarray
    output: np.ndarray
    invoke: Callable[[], None]
    direct: bool


class Runner:
    """One interpreter for one model, with float-in / float-out helpers.

    Args:
        model: A path, the model bytes, or a parsed :class:`~edgenn.tflite_model.TFLiteFile`.
        threads: Interpreter threads (None: the runtime's default).
        xnnpack: Use LiteRT's default XNNPACK delegate; False gives the bit-exact reference
            kernels (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``).
        delegate: ``edgetpu``, ``edgetpu:usb``, ``edgetpu:pci`` or a delegate ``.so`` path.
        runtime: A name of :data:`RUNTIMES` (None: the first installed).
        verbose: Let the runtime's own log lines through to stderr.

    Raises:
        EdgennError: The model is damaged or the runtime cannot run it.
    """

    def __init__(
        self,
        model: Path | bytes | tflite_model.TFLiteFile,
        threads: int | None = None,
        xnnpack: bool = True,
        delegate: str | None = None,
        runtime: str | None = None,
        verbose: bool = False,
    ) -> None:
        self.model = (
            model if isinstance(model, tflite_model.TFLiteFile) else tflite_model.load(model)
        )
        _check_runnable(self.model)
        self.runtime = find_runtime(runtime)
        self.threads = threads
        self.xnnpack = xnnpack
        self.delegate_name = delegate
        self.interpreter = self._make_interpreter(threads, xnnpack, delegate, verbose)
        label = self.model.path or "the model"
        try:
            self.input_details = self.interpreter.get_input_details()
            self.output_details = self.interpreter.get_output_details()
        except (RuntimeError, ValueError, UnicodeDecodeError) as exc:
            raise EdgennError(f"{label} has damaged tensor details: {exc}") from None
        self._check_tensor_data()
        first = self.input_details[0]
        self._in_index = first["index"]
        self._in_dtype = np.dtype(first["dtype"])
        self._in_scale, self._in_zero = _quant(first)
        self.input_shape = tuple(int(s) for s in first["shape"])
        self._in_buffer = np.zeros(self.input_shape, dtype=self._in_dtype)
        self._q_buffer = np.zeros(self.input_shape, dtype=np.float32)
        out = self.output_details[0]
        self._out_index = out["index"]
        self._out_scale, self._out_zero = _quant(out)
        self._invoke: Callable[[], None] = self.interpreter.invoke
        self._binding: Binding | None = None

    def _make_interpreter(
        self, threads: int | None, xnnpack: bool, delegate: str | None, verbose: bool
    ):
        kwargs = {"model_content": self.model.data, "num_threads": threads}
        if not xnnpack:
            resolver = getattr(self.runtime.module, "OpResolverType", None)
            if resolver is None:
                raise EdgennError(f"{self.runtime.name} cannot turn XNNPACK off.")
            kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        if delegate:
            kwargs["experimental_delegates"] = [load_delegate(self.runtime, delegate)]
        try:
            # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate" and its errors from
            # C++; keep them off the screen unless asked for, and quote them in the error.
            with capture_stderr(not verbose) as native:
                interpreter = self.runtime.module.Interpreter(**kwargs)
                interpreter.allocate_tensors()
        except MemoryError:
            raise EdgennError(
                f"{self.model.path or 'The model'} needs more memory than this process may use "
                "(the runtime could not allocate its tensors).",
                "Close other programs, or use a smaller model.",
            ) from None
        except (RuntimeError, ValueError) as exc:
            message = " ".join((str(exc) + " " + native.text).split())
            raise EdgennError(
                f"{self.runtime.name} {self.runtime.version} cannot run "
                f"{self.model.path or 'the model'}: {message[:300]}",
                "Check the model's ops with: edgenn inspect MODEL --target cpu",
            ) from None
        return interpreter

    @property
    def delegated_ops(self) -> int | None:
        """How many of the model's ops the external delegate took (None without a delegate)."""
        if not self.delegate_name:
            return None
        try:
            remaining = self.interpreter._get_ops_details()  # noqa: SLF001 - no public API for this
        except AttributeError:
            return None
        kept = sum(1 for op in remaining if op.get("op_name") != "DELEGATE")
        main_ops = sum(1 for op in self.model.ops if op.subgraph == 0)
        return max(main_ops - kept, 0)

    @property
    def output_quantization(self) -> tuple[float, int]:
        """``(scale, zero_point)`` of the first output (``(0.0, 0)`` for a float output)."""
        return self._out_scale, self._out_zero

    def quantize(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Float model-input values in the input's dtype, as :meth:`set_input` stores them.

        ``q = round(x / scale) + zero_point``, saturated to the integer range, for a quantized
        input; a float input is only cast.

        Args:
            x: Float values, any shape.
            out: Where to write (an array of the input dtype and ``x``'s size); None: a new one.

        Returns:
            ``out`` (or the new array), shaped as ``out`` (or as ``x``).
        """
        x = np.asarray(x)
        if out is None:
            out = np.empty(x.shape, dtype=self._in_dtype)
        if not self._in_scale:
            out[...] = x.reshape(out.shape)
            return out
        # A float buffer kept between calls when the shapes allow: the hot path reuses it.
        q = self._q_buffer if x.size == self._q_buffer.size else np.empty(x.shape, np.float32)
        q = q.reshape(out.shape)
        np.divide(x.reshape(out.shape), self._in_scale, out=q)
        np.rint(q, out=q)
        q += self._in_zero
        info = np.iinfo(self._in_dtype)
        np.clip(q, info.min, info.max, out=q)
        out[...] = q
        return out

    def set_input(self, x: np.ndarray) -> None:
        """Quantize (when needed) and copy one float input into the interpreter.

        Args:
            x: Float input of the model's shape, with or without the batch axis of 1; an array
                already in a quantized model's input dtype is passed through unchanged.

        Raises:
            EdgennError: The input has the wrong number of elements.
        """
        x = np.asarray(x)
        if x.size != self._in_buffer.size:
            raise EdgennError(
                f"Input of shape {tuple(x.shape)} does not fit the model input {self.input_shape}.",
            )
        if x.dtype == self._in_dtype and (self._in_scale or x.shape == self.input_shape):
            # Already in the model's dtype (quantized by the caller once, outside a timing loop,
            # or a float input in shape): the interpreter copies it as is.
            self.interpreter.set_tensor(self._in_index, x.reshape(self.input_shape))
            return
        self.interpreter.set_tensor(self._in_index, self.quantize(x, out=self._in_buffer))

    def _check_tensor_data(self) -> None:
        """Check that every input and output has a buffer after allocation.

        A damaged file can leave one without; reading it would fail later, in the middle of a run.
        """
        for detail in (*self.input_details, *self.output_details):
            try:
                self.interpreter.tensor(detail["index"])()  # a view, dropped at once
            except ValueError as exc:
                raise self.failure(exc) from None

    def failure(self, exc: Exception) -> EdgennError:
        """The one-line error for a runtime exception raised while running this model.

        Args:
            exc: What the runtime raised (a RuntimeError of a failed invoke, say).

        Returns:
            The error to raise instead.
        """
        first = " ".join(str(exc).split())[:300] or exc.__class__.__name__
        return EdgennError(
            f"{self.runtime.name} {self.runtime.version} could not run "
            f"{self.model.path or 'the model'}: {first}",
            "Check the model with: edgenn inspect MODEL --target cpu",
        )

    def invoke(self) -> None:
        """Run the model once on the input set last.

        Raises:
            EdgennError: The runtime failed (a damaged model can pass allocation and fail here).
        """
        try:
            self._invoke()
        except RuntimeError as exc:
            raise self.failure(exc) from None

    def get_output(self) -> np.ndarray:
        """The first output, dequantized to float32, as a fresh array (batch axis kept)."""
        raw = self.interpreter.get_tensor(self._out_index)
        return classify.dequantize(raw, self._out_scale, self._out_zero)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run one example: float input in, float output out.

        Args:
            x: Float model input (already preprocessed).

        Returns:
            The first output as float32, batch axis kept.
        """
        self.set_input(x)
        self.invoke()
        return self.get_output()

    def predict(
        self, xs: np.ndarray, progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        """Run a stack of examples one by one (models are exported with batch 1).

        Args:
            xs: Float inputs ``(N, ...)``.
            progress: Optional callable ``progress(done, total)``.

        Returns:
            Outputs ``(N, units)`` as float32.
        """
        first = self.run(xs[0]) if len(xs) else np.zeros((1, 0), np.float32)
        out = np.empty((len(xs), *first.shape[1:]), dtype=np.float32)
        for i in range(len(xs)):
            out[i] = first[0] if i == 0 else self.run(xs[i])[0]
            if progress is not None and (i % 500 == 499 or i == len(xs) - 1):
                progress(i + 1, len(xs))
        return out

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """A float input converted to the model's input dtype and shape (a copy).

        Args:
            x: Float model input (with or without the batch axis).

        Returns:
            The array :meth:`set_input` would copy into the interpreter.

        Raises:
            EdgennError: The input has the wrong number of elements.
        """
        if np.size(x) != self._in_buffer.size:
            raise EdgennError(
                f"Input of shape {np.shape(x)} does not fit the model input {self.input_shape}."
            )
        return self.quantize(x, out=np.empty(self.input_shape, self._in_dtype))

    def top_k(self, k: int = 1) -> list[tuple[int, float]]:
        """The k best classes of the last invoke as ``(index, probability)``, best first.

        Args:
            k: How many.

        Returns:
            ``[(class index, score)]`` (see :func:`edgenn.classify.top_k`).
        """
        raw = self.interpreter.get_tensor(self._out_index)
        return classify.top_k(raw, k, self._out_scale, self._out_zero)

    def bind(self) -> Binding:
        """The first input and output as arrays for a hot path without copies (made once).

        With LiteRT and tflite-runtime, ``input`` and ``output`` are views of the interpreter's
        own tensor buffers and ``invoke`` is the native call. The interpreter's Python
        ``invoke()`` refuses to run while such a view exists, because a view goes stale when
        tensors are reallocated; this Runner allocates once, in its constructor, and never
        resizes, so the views stay valid and :meth:`invoke` switches to the native call too.
        After ``bind()`` call :meth:`invoke`, never ``interpreter.invoke()`` or
        ``interpreter.allocate_tensors()`` (which refuse, as said). Where the runtime has no
        native handle, the binding stages copies through ``set_tensor`` / ``get_tensor``.

        Returns:
            The binding.
        """
        if self._binding is None:
            native = getattr(getattr(self.interpreter, "_interpreter", None), "Invoke", None)
            if native is not None:
                tensor = self.interpreter.tensor
                self._binding = Binding(
                    tensor(self._in_index)(), tensor(self._out_index)().reshape(-1), native, True
                )
                self._invoke = native
            else:
                self._binding = self._staged_binding()
        return self._binding

    def _staged_binding(self) -> Binding:
        interpreter, in_index, out_index = self.interpreter, self._in_index, self._out_index
        staged_in = np.zeros(self.input_shape, self._in_dtype)
        staged_out = interpreter.get_tensor(out_index).reshape(-1).copy()

        def invoke() -> None:
            interpreter.set_tensor(in_index, staged_in)
            interpreter.invoke()
            staged_out[...] = interpreter.get_tensor(out_index).reshape(-1)

        return Binding(staged_in, staged_out, invoke, False)


def _check_runnable(model: tflite_model.TFLiteFile) -> None:
    """What must hold before an interpreter is made: numeric inputs and outputs, sane sizes.

    Raises:
        EdgennError: The model has no input or no output, one that is not numeric, or inputs
            its shapes contradict.
    """
    for kind, indices in (("input", model.inputs), ("output", model.outputs)):
        if not indices:
            raise EdgennError(
                f"{model.path or 'The model'} has no {kind}; edgenn runs models with at least "
                "one input and one output.",
                "Check the model with: edgenn inspect MODEL",
            )
    for kind, tensors in (("input", model.input_details), ("output", model.output_details)):
        for n, t in enumerate(tensors):
            if not tflite_model.is_numeric(t.dtype):
                # LiteRT hands out no numpy view of such a tensor (it crashes trying).
                raise EdgennError(
                    f"{model.path or 'The model'}'s {kind} {n} ({t.name!r}) holds {t.dtype} "
                    "values; edgenn runs models whose inputs and outputs are numbers.",
                    "Run it with the runtime's own tools.",
                )
    tflite_model.check_input_sizes(model)


def _quant(detail: dict) -> tuple[float, int]:
    scale, zero = detail.get("quantization", (0.0, 0))
    if np.dtype(detail["dtype"]).kind not in "iu":
        return 0.0, 0
    return float(scale), int(zero)

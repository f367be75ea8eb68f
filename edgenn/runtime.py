"""[device] Run a .tflite model with LiteRT (or tflite-runtime): float in, float out.

The runtime is ``ai_edge_litert`` when installed, else ``tflite_runtime`` (32-bit Pi OS, old Coral
set-ups); never ``tf.lite``, which is deprecated and would pull in TensorFlow. Quantized inputs and
outputs are handled here with the model's own scale and zero point, so callers always pass float
model inputs and get float outputs, whatever the model's I/O dtype.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np

from edgenn import classify, optional, tflite_model
from edgenn.errors import EdgennError, MissingDependencyError, UsageError
from edgenn.stdio import capture_stderr

#: Runtimes in order of preference, by the name users pass to --runtime.
RUNTIMES = {"litert": "ai_edge_litert.interpreter", "tflite-runtime": "tflite_runtime.interpreter"}
EDGETPU_LIBRARY = "libedgetpu.so.1"


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
        hint = (
            "Install the Edge TPU runtime: add Coral's apt repository and run "
            "sudo apt-get install libedgetpu1-std (https://coral.ai/software/#debian-packages)."
        )
    else:
        library = spec
        if not Path(spec).is_file():
            raise EdgennError(
                f"Delegate library {spec} does not exist.",
                "Pass the path of a delegate .so (e.g. a GPU delegate build) or 'edgetpu'.",
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


class Runner:
    """One interpreter for one model, with float-in / float-out helpers.

    The hot path (:meth:`run`) reuses one input buffer, copies the output out of the interpreter
    before returning (no ``tensor()`` view is held across ``invoke()``) and allocates only the
    returned array.

    Args:
        model: A path, the model bytes, or a parsed :class:`~edgenn.tflite_model.TFLiteFile`.
        threads: Interpreter threads (None: the runtime's default).
        xnnpack: Use LiteRT's default XNNPACK delegate; False gives the bit-exact reference
            kernels (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``).
        delegate: ``edgetpu``, ``edgetpu:usb``, ``edgetpu:pci`` or a delegate ``.so`` path.
        runtime: ``litert`` or ``tflite-runtime`` (None: the first installed).
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
        self.runtime = find_runtime(runtime)
        self.threads = threads
        self.xnnpack = xnnpack
        self.delegate_name = delegate
        kwargs = {"model_content": self.model.data, "num_threads": threads}
        if not xnnpack:
            resolver = getattr(self.runtime.module, "OpResolverType", None)
            if resolver is None:
                raise EdgennError(f"{self.runtime.name} cannot turn XNNPACK off.")
            kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        if delegate:
            kwargs["experimental_delegates"] = [load_delegate(self.runtime, delegate)]
        label = self.model.path or "the model"
        try:
            # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate" and its errors from
            # C++; keep them off the screen unless asked for, and quote them in the error.
            with capture_stderr(not verbose) as native:
                self.interpreter = self.runtime.module.Interpreter(**kwargs)
                self.interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            message = " ".join((str(exc) + " " + native.text).split())
            raise EdgennError(
                f"{self.runtime.name} {self.runtime.version} cannot run {label}: {message[:300]}",
                "Check the model's ops with: edgenn inspect MODEL --target cpu",
            ) from None
        try:
            self.input_details = self.interpreter.get_input_details()
            self.output_details = self.interpreter.get_output_details()
        except (RuntimeError, ValueError, UnicodeDecodeError) as exc:
            raise EdgennError(f"{label} has damaged tensor details: {exc}") from None
        first = self.input_details[0]
        self._in_index = first["index"]
        self._in_dtype = np.dtype(first["dtype"])
        self._in_scale, self._in_zero = _quant(first)
        self.input_shape = tuple(int(s) for s in first["shape"])
        self._in_buffer = np.zeros(self.input_shape, dtype=self._in_dtype)
        self._q_buffer = np.zeros(self.input_shape, dtype=np.float32)
        if self._in_scale:
            self._in_min, self._in_max = np.iinfo(self._in_dtype).min, np.iinfo(self._in_dtype).max
        out = self.output_details[0]
        self._out_index = out["index"]
        self._out_units = int(np.prod(out["shape"]))
        self._get_tensor = self.interpreter.get_tensor
        self._out_scale, self._out_zero = _quant(out)

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
    def input_dtype(self) -> np.dtype:
        """The model's input dtype (float32, int8 or uint8...)."""
        return self._in_dtype

    def set_input(self, x: np.ndarray) -> None:
        """Quantize (when needed) and copy one float input into the interpreter.

        Args:
            x: Float input of the model's shape, with or without the batch axis of 1; an array
                already in a quantized model's input dtype is passed through unchanged.

        Raises:
            EdgennError: The input has the wrong number of elements.
        """
        if (
            not self._in_scale
            and type(x) is np.ndarray
            and x.dtype == self._in_dtype
            and x.shape == self.input_shape
        ):
            # Float model, input already in shape: the interpreter copies it; no staging copy.
            self.interpreter.set_tensor(self._in_index, x)
            return
        x = np.asarray(x)
        if x.size != self._in_buffer.size:
            raise EdgennError(
                f"Input of shape {tuple(x.shape)} does not fit the model input {self.input_shape}.",
            )
        flat_in = x.reshape(self._in_buffer.shape)
        if x.dtype == self._in_dtype and self._in_scale:
            # Already quantized (e.g. by the caller once, outside a timing loop): copy as is.
            self.interpreter.set_tensor(self._in_index, flat_in)
            return
        if self._in_scale:
            # q = round(x / scale) + zero_point, saturated to the integer range, computed in a
            # float buffer kept between calls (the hot path allocates nothing it can reuse).
            q = self._q_buffer
            np.divide(flat_in, self._in_scale, out=q)
            np.rint(q, out=q)
            q += self._in_zero
            np.clip(q, self._in_min, self._in_max, out=q)
            self._in_buffer[...] = q
        else:
            self._in_buffer[...] = flat_in
        self.interpreter.set_tensor(self._in_index, self._in_buffer)

    def invoke(self) -> None:
        """Run the model once on the input set last."""
        self.interpreter.invoke()

    def get_output(self) -> np.ndarray:
        """The first output, dequantized to float32, as a fresh array (batch axis kept)."""
        raw = self.interpreter.get_tensor(self._out_index)
        if self._out_scale:
            # Dequantize in float32 after widening: int8 - zero_point cannot overflow there.
            return (raw.astype(np.float32) - np.float32(self._out_zero)) * np.float32(
                self._out_scale
            )
        return raw.astype(np.float32, copy=True)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run one example: float input in, float output out.

        Args:
            x: Float model input (already preprocessed).

        Returns:
            The first output as float32, batch axis kept.
        """
        self.set_input(x)
        self.interpreter.invoke()
        return self.get_output()

    def predict(self, xs: np.ndarray, progress=None) -> np.ndarray:
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
        """A float input converted to the model's input dtype (a copy; float models: float32).

        Args:
            x: Float model input.

        Returns:
            The array :meth:`set_input` would copy into the interpreter.
        """
        self.set_input(x)
        return self.interpreter.get_tensor(self._in_index)

    def top_k(self, k: int = 1) -> list[tuple[int, float]]:
        """The k best classes of the last invoke as ``(index, probability)``, best first.

        Args:
            k: How many.

        Returns:
            ``[(class index, score)]`` (see :func:`edgenn.classify.top_k`).
        """
        return classify.top_k(self._get_tensor(self._out_index), k, self._out_scale, self._out_zero)


def _quant(detail: dict) -> tuple[float, int]:
    scale, zero = detail.get("quantization", (0.0, 0))
    if np.dtype(detail["dtype"]).kind not in "iu":
        return 0.0, 0
    return float(scale), int(zero)

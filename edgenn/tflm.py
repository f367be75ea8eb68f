"""[device] TFLite Micro on the host: its interpreter, the smallest arena, its kernels.

One helper for everything that runs a model in TFLite Micro's reference interpreter (PyPI
``tflite-micro``, a pinned pre-release: ``pip install 'edgenn[micro]'``): the ``micro`` target
check (:mod:`edgenn.targets.micro`) and the firmware export (:mod:`firmware_export`). The package
is imported on first use through :mod:`edgenn.optional`, so importing this module needs nothing
but numpy.

TFLM's Python error is only "TFLM failed to allocate tensors"; the reason is printed by its C++
side, so that output is captured and quoted.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edgenn import optional
from edgenn.errors import EdgennError
from edgenn.stdio import capture_stderr
from edgenn.tflite_model import TFLiteFile

#: Kernels for some MCUs (CMSIS-NN, ESP-NN, Xtensa) allocate scratch buffers the host reference
#: does not; 10% on top of the measured minimum covers the differences seen in practice.
DEFAULT_ARENA_MARGIN = 10
#: The bisection's upper end: a model that does not run with this much arena never will.
MAX_ARENA = 64 * 1024 * 1024
#: TFLM aligns tensors in the arena to 16 bytes, so arena sizes are measured in 16-byte steps.
ALIGN = 16
#: Where an arena was measured (:attr:`ArenaResult.measured_on`). The Python interpreter's
#: figure is a few hundred bytes above a compiled program's: both are reported.
ON_INTERPRETER = "TFLM Python interpreter"
ON_PROGRAM = "compiled program"

RUNTIME_MODULE = "tflite_micro.python.tflite_micro.runtime"
ALIGNER_MODULE = "tflite_micro.tensorflow.lite.micro.tools.tflite_flatbuffer_align_wrapper"
#: What needs tflite-micro, for the install message, when the caller did not say.
PURPOSE = "Running a model in TFLite Micro"

#: Bytes per element of the dtypes a TFLM model's inputs and outputs have (others count 4).
_ITEM_BYTES = {"int8": 1, "uint8": 1, "int16": 2, "float16": 2, "int32": 4, "float32": 4}


def runtime(purpose: str = PURPOSE) -> ModuleType:
    """TFLM's Python runtime module (``tflite_micro.python.tflite_micro.runtime``).

    Args:
        purpose: What needs it, for the install line when it is missing.

    Returns:
        The module.

    Raises:
        MissingDependencyError: tflite-micro is not installed.
    """
    return optional.require(RUNTIME_MODULE, purpose)


@dataclasses.dataclass
class ArenaResult:
    """The smallest tensor arena that works, and the size to use.

    Attributes:
        minimum_bytes: Smallest arena (16-byte steps) with which TFLM allocates and invokes.
        margin_percent: Margin added.
        recommended_bytes: The minimum plus the margin (:func:`with_margin`).
        measured_on: :data:`ON_INTERPRETER` or :data:`ON_PROGRAM`.
    """

    minimum_bytes: int
    margin_percent: float
    recommended_bytes: int
    measured_on: str = ON_INTERPRETER


def with_margin(minimum_bytes: int, margin_percent: float) -> int:
    """The arena to generate: the measured minimum plus the margin, in whole :data:`ALIGN` steps.

    The margin is rounded down to 16-byte steps, so the arena is never more than ``margin_percent``
    above the minimum (the generated/minimum ratio stays within ``1 + margin``) and never below it.

    Args:
        minimum_bytes: The measured smallest arena (a multiple of :data:`ALIGN`).
        margin_percent: Percent to add.

    Returns:
        The arena size, a multiple of :data:`ALIGN` when the minimum is one.
    """
    margin = int(minimum_bytes * margin_percent / 100) // ALIGN * ALIGN
    return minimum_bytes + margin


def bisect_arena(works: Callable[[int], bool], upper_bytes: int) -> int:
    """The smallest arena, in :data:`ALIGN`-byte steps, with which ``works`` succeeds.

    An arena that works keeps working when it grows, so the answer is found by bisection between
    nothing and ``upper_bytes``; the caller has checked that ``upper_bytes`` works.

    Args:
        works: Whether the model allocates and runs with an arena of that many bytes.
        upper_bytes: An arena size that works.

    Returns:
        The smallest working size, a multiple of :data:`ALIGN`.
    """
    lo, hi = 0, -(-upper_bytes // ALIGN)  # in ALIGN-byte units: lo fails, hi works
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if works(mid * ALIGN):
            hi = mid
        else:
            lo = mid
    return hi * ALIGN


def input_details(interp: Any) -> list[dict]:
    """Every input's details (TFLM's interpreter has no input count, so ask until it refuses).

    Args:
        interp: A TFLM ``Interpreter``.

    Returns:
        The details, in input order.
    """
    details = []
    i = 0
    while True:
        try:
            details.append(interp.get_input_details(i))
        except (RuntimeError, ValueError, IndexError):
            return details
        i += 1


def try_run(module: ModuleType, data: bytes, arena_bytes: int) -> tuple[Any | None, str]:
    """Build TFLM's interpreter with an arena and invoke it once on zero inputs.

    Args:
        module: The module :func:`runtime` returns (passed in: the bisection calls this often).
        data: The model bytes.
        arena_bytes: Tensor arena size.

    Returns:
        The interpreter (None when it failed) and what TFLM printed or raised.
    """
    with capture_stderr() as out:
        try:
            interp = module.Interpreter.from_bytes(data, arena_size=arena_bytes)
            for i, detail in enumerate(input_details(interp)):
                interp.set_input(np.zeros(detail["shape"], dtype=detail["dtype"]), i)
            interp.invoke()
        except (RuntimeError, ValueError) as exc:
            interp = None
            err = str(exc)
        else:
            err = ""
    return interp, (out.text + "\n" + err).strip()


def reason(message: str) -> str:
    """TFLM's output from :func:`try_run` as one line (its first four lines)."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    return " / ".join(lines[:4]) if lines else "no reason given"


def missing_ops(message: str) -> set[str]:
    """The builtin ops TFLM's output from :func:`try_run` says it has no registration for."""
    return set(re.findall(r"opcode '?([A-Z0-9_]+)'?", message))


def smallest_arena(data: bytes, margin_percent: float = DEFAULT_ARENA_MARGIN) -> ArenaResult:
    """Bisect the smallest arena with which TFLM allocates and runs the model.

    Args:
        data: The model bytes.
        margin_percent: Margin to add for the recommended size.

    Returns:
        The measured minimum and the recommended size.

    Raises:
        EdgennError: The model does not run in TFLM even with a 64 MiB arena.
        MissingDependencyError: tflite-micro is not installed.
    """
    micro = runtime()
    interp, message = try_run(micro, data, MAX_ARENA)
    if interp is None:
        raise EdgennError(f"TFLite Micro cannot run the model: {reason(message)}")
    minimum = bisect_arena(lambda size: try_run(micro, data, size)[0] is not None, MAX_ARENA)
    return ArenaResult(minimum, margin_percent, with_margin(minimum, margin_percent))


class Interpreter:
    """TFLM's reference interpreter over model bytes with a fixed arena: one input, one output.

    Args:
        data: The model bytes (aligned, as the firmware embeds them).
        arena_bytes: Tensor arena size.

    Raises:
        MissingDependencyError: tflite-micro is not installed.
    """

    def __init__(self, data: bytes, arena_bytes: int) -> None:
        self._interp = runtime().Interpreter.from_bytes(data, arena_size=arena_bytes)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Invoke once on an input already in the model's dtype and shape.

        Args:
            x: The first input's raw (quantized) values.

        Returns:
            The first output's raw values.
        """
        self._interp.set_input(x, 0)
        self._interp.invoke()
        return self._interp.get_output(0)


def static_problems(model: TFLiteFile) -> dict[int, str]:
    """Reasons TFLM will refuse an op, known before running it (quoted next to TFLM's own).

    Args:
        model: The parsed model.

    Returns:
        Op index -> reason, for the ops TFLM cannot run.
    """
    problems = {}
    for op in model.ops:
        operands = [model.tensors[i] for i in op.inputs + op.outputs if 0 <= i < len(model.tensors)]
        if op.custom:
            problems[op.index] = f"custom op {op.name}: TFLM has no kernel unless you register one"
        elif any(t.dtype == "float16" for t in operands):
            problems[op.index] = "float16 tensors: TFLM has no fp16 kernels (use --quantize int8)"
        elif op.name in ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D") and operands:
            inp = model.tensors[op.inputs[0]]
            weights = model.tensors[op.inputs[1]] if len(op.inputs) > 1 else None
            if inp.dtype == "float32" and weights is not None and weights.dtype == "int8":
                problems[op.index] = (
                    "hybrid (dynamic-range) kernel: float input with int8 weights is not in TFLM"
                )
        elif op.name == "DENSIFY":
            problems[op.index] = "DENSIFY (sparse weights) is not in TFLM"
        if any(s < 0 for t in operands for s in t.shape):
            problems.setdefault(op.index, "dynamic shape: TFLM needs static shapes")
    return problems


def kernels() -> set[str]:
    """Builtin ops the installed TFLM build has kernels for, read from its library's symbols.

    Returns:
        Op names (``CONV_2D``...), each a ``Register_OP()`` function in TFLM's ``_runtime.so``.

    Raises:
        EdgennError: ``nm`` (binutils) or TFLM's library is missing.
        MissingDependencyError: tflite-micro is not installed.
    """
    library = Path(runtime().__file__).parent / "_runtime.so"
    nm = shutil.which("nm")
    if nm is None or not library.is_file():
        raise EdgennError(
            "Cannot list TFLM's kernels: `nm` (binutils) or the TFLM library is missing."
        )
    out = subprocess.run(
        [nm, "-DC", str(library)], capture_output=True, text=True, check=False
    ).stdout
    return set(re.findall(r"Register_([A-Z0-9_]+)\(", out))


def align(data: bytes, purpose: str = PURPOSE) -> bytes:
    """The model re-serialized with TFLM's aligner (the one the ``tflite-micro`` package ships).

    TFLM reads tensors in place from the flatbuffer, so their buffers must be aligned in it.

    Args:
        data: The model bytes.
        purpose: What needs it, for the install line when tflite-micro is missing.

    Returns:
        The aligned model bytes.

    Raises:
        MissingDependencyError: tflite-micro is not installed.
    """
    aligner = optional.require(ALIGNER_MODULE, purpose)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.tflite", Path(tmp) / "out.tflite"
        src.write_bytes(data)
        aligner.align_tflite_model(str(src), str(dst))
        return dst.read_bytes()


def nbytes(shape: list[int], dtype: str) -> int:
    """Bytes of a tensor (an unknown dimension counts as 1)."""
    return int(np.prod([max(s, 1) for s in shape])) * _ITEM_BYTES.get(dtype, 4)


def io_bytes(model: TFLiteFile) -> int:
    """Bytes of the model's inputs and outputs, which live inside TFLM's tensor arena."""
    return sum(nbytes(t.shape, t.dtype) for t in model.input_details + model.output_details)

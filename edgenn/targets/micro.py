"""[device] The ``micro`` target: TFLite Micro's own interpreter runs the model; the arena, measured.

The check loads the model into TFLM's reference interpreter (PyPI ``tflite-micro``, a pinned
pre-release: ``pip install 'edgenn[micro]'``), runs it once, and finds the smallest tensor arena
that works by bisection. TFLM's Python error is only "TFLM failed to allocate tensors"; the reason
is printed by its C++ side, so that output is captured and quoted.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from edgenn import optional
from edgenn.errors import EdgennError
from edgenn.stdio import capture_stderr
from edgenn.targets import FAILS, RUNS, OpRow, TargetReport
from edgenn.tflite_model import TFLiteFile

#: Kernels for some MCUs (CMSIS-NN, ESP-NN, Xtensa) allocate scratch buffers the host reference
#: does not; 10% on top of the measured minimum covers the differences seen in practice.
DEFAULT_ARENA_MARGIN = 10
MAX_ARENA = 64 * 1024 * 1024
ALIGN = 16


def _runtime():
    return optional.require("tflite_micro.python.tflite_micro.runtime", "The micro target check")


@dataclasses.dataclass
class ArenaResult:
    """The smallest tensor arena that works, and the size to use.

    Attributes:
        minimum_bytes: Smallest arena (16-byte steps) with which TFLM allocates and invokes.
        margin_percent: Margin added.
        recommended_bytes: ``minimum * (1 + margin)``, rounded up to 16 bytes.
    """

    minimum_bytes: int
    margin_percent: float
    recommended_bytes: int


def _try(runtime, data: bytes, arena: int) -> tuple[object | None, str]:
    """Build and invoke once; return (interpreter or None, what TFLM printed)."""
    with capture_stderr() as out:
        try:
            interp = runtime.Interpreter.from_bytes(data, arena_size=arena)
            for i, detail in enumerate(_inputs(interp)):
                interp.set_input(np.zeros(detail["shape"], dtype=detail["dtype"]), i)
            interp.invoke()
        except (RuntimeError, ValueError) as exc:
            interp = None
            err = str(exc)
        else:
            err = ""
    return interp, (out.text + "\n" + err).strip()


def _inputs(interp) -> list[dict]:
    details = []
    i = 0
    while True:
        try:
            details.append(interp.get_input_details(i))
        except (RuntimeError, ValueError, IndexError):
            return details
        i += 1


def smallest_arena(data: bytes, margin_percent: float = DEFAULT_ARENA_MARGIN) -> ArenaResult:
    """Bisect the smallest arena with which TFLM allocates and runs the model.

    Args:
        data: The model bytes.
        margin_percent: Margin to add for the recommended size.

    Returns:
        The measured minimum and the recommended size.

    Raises:
        EdgennError: The model does not run in TFLM even with a 64 MiB arena.
    """
    runtime = _runtime()
    interp, message = _try(runtime, data, MAX_ARENA)
    if interp is None:
        raise EdgennError(f"TFLite Micro cannot run the model: {_reason(message)}")
    lo, hi = 0, MAX_ARENA // ALIGN  # in 16-byte units: lo fails, hi works
    while hi - lo > 1:
        mid = (lo + hi) // 2
        ok, _ = _try(runtime, data, mid * ALIGN)
        if ok is not None:
            hi = mid
        else:
            lo = mid
    minimum = hi * ALIGN
    recommended = int(np.ceil(minimum * (1 + margin_percent / 100) / ALIGN) * ALIGN)
    return ArenaResult(minimum, margin_percent, recommended)


def _reason(message: str) -> str:
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    return " / ".join(lines[:4]) if lines else "no reason given"


def _static_problems(model: TFLiteFile) -> dict[int, str]:
    """Reasons TFLM will refuse an op, known before running it (quoted next to TFLM's own)."""
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


def check_micro(model: TFLiteFile, arena_margin: float = DEFAULT_ARENA_MARGIN, **_) -> TargetReport:
    """Run the model in TFLite Micro's interpreter and measure its arena.

    Args:
        model: The parsed model.
        arena_margin: Percent added to the measured minimum arena.

    Returns:
        The report; ``details["arena"]`` holds the figures when the model runs.
    """
    runtime = _runtime()
    problems = _static_problems(model)
    interp, message = _try(runtime, model.data, MAX_ARENA)
    rows = []
    if interp is None:
        reason = _reason(message)
        missing = set(re.findall(r"opcode '?([A-Z0-9_]+)'?", message))
        for op in model.ops:
            why = problems.get(op.index) or (f"TFLM: {reason}" if op.name in missing else "")
            rows.append(OpRow(op.index, op.name, op.version, FAILS if why else RUNS, why))
        if not any(r.status == FAILS for r in rows):
            for r in rows:
                r.status, r.reason = FAILS, f"TFLM: {reason}"
        verdict = (
            f"FAILS: TFLite Micro cannot run the model ({reason}). "
            "Convert with: edgenn convert RUN --target micro (full int8)"
        )
        return TargetReport("micro", False, verdict, rows, notes=[f"TFLM said: {reason}"])
    arena = smallest_arena(model.data, arena_margin)
    rows = [OpRow(op.index, op.name, op.version, RUNS) for op in model.ops]
    io_bytes = sum(_nbytes(t.shape, t.dtype) for t in model.input_details + model.output_details)
    notes = [
        f"arena: measured minimum {arena.minimum_bytes} B, with {arena.margin_percent:g}% margin "
        f"{arena.recommended_bytes} B (host reference kernels; MCU-optimized kernels may need more)",
        f"flash: {model.size_bytes} B model; RAM: {arena.recommended_bytes} B arena "
        f"(inputs and outputs, {io_bytes} B, live inside it)",
    ]
    float_ops = "float32" in model.dtypes
    if float_ops:
        notes.append("float32 activations: TFLM runs them, but MCUs want --quantize int8")
    verdict = (
        f"OK: TFLite Micro ran all {len(rows)} ops; arena {arena.recommended_bytes} B "
        f"(minimum {arena.minimum_bytes} B + {arena.margin_percent:g}%)."
    )
    return TargetReport(
        "micro",
        True,
        verdict,
        rows,
        notes,
        {"arena": dataclasses.asdict(arena), "io_bytes": io_bytes},
    )


def _nbytes(shape: list[int], dtype: str) -> int:
    size = {"int8": 1, "uint8": 1, "int16": 2, "float16": 2, "int32": 4, "float32": 4}.get(dtype, 4)
    return int(np.prod([max(s, 1) for s in shape])) * size

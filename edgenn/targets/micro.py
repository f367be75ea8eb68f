"""[device] The ``micro`` target: TFLite Micro's own interpreter runs the model; the arena, measured.

The check loads the model into TFLM's reference interpreter (through :mod:`edgenn.tflm`, which
also serves ``firmware_export``), runs it once, and finds the smallest tensor arena that works by
bisection. When TFLM refuses the model, the reasons known beforehand (custom ops, float16,
hybrid kernels, sparse weights, dynamic shapes) are quoted next to what TFLM itself printed.
"""

from __future__ import annotations

import dataclasses

from edgenn import tflm
from edgenn.targets import FAILS, RUNS, OpRow, TargetReport
from edgenn.tflite_model import TFLiteFile
from edgenn.tflm import DEFAULT_ARENA_MARGIN

PURPOSE = "The micro target check"
FIX = "Convert with: edgenn convert RUN --target micro (full int8)"


def check_micro(model: TFLiteFile, arena_margin: float = DEFAULT_ARENA_MARGIN) -> TargetReport:
    """Run the model in TFLite Micro's interpreter and measure its arena.

    Args:
        model: The parsed model.
        arena_margin: Percent added to the measured minimum arena.

    Returns:
        The report; ``details["arena"]`` holds the figures when the model runs.

    Raises:
        MissingDependencyError: tflite-micro is not installed.
    """
    interp, message = tflm.try_run(tflm.runtime(PURPOSE), model.data, tflm.MAX_ARENA)
    if interp is None:
        return _refused(model, message)
    arena = tflm.smallest_arena(model.data, arena_margin)
    rows = [OpRow(op.index, op.name, op.version, RUNS) for op in model.ops]
    io_bytes = tflm.io_bytes(model)
    notes = [
        f"arena: measured minimum {arena.minimum_bytes} B, with {arena.margin_percent:g}% margin "
        f"{arena.recommended_bytes} B (host reference kernels; MCU-optimized kernels may need more)",
        f"flash: {model.size_bytes} B model; RAM: {arena.recommended_bytes} B arena "
        f"(inputs and outputs, {io_bytes} B, live inside it)",
    ]
    if "float32" in model.dtypes:
        notes.append("float32 activations: TFLM runs them, but MCUs want --quantize int8")
    verdict = (
        f"OK: TFLite Micro ran all {len(rows)} ops; arena {arena.recommended_bytes} B "
        f"(minimum {arena.minimum_bytes} B + {arena.margin_percent:g}%)."
    )
    details = {"arena": dataclasses.asdict(arena), "io_bytes": io_bytes}
    return TargetReport("micro", True, verdict, rows, notes, details)


def _refused(model: TFLiteFile, message: str) -> TargetReport:
    """The report when TFLM will not run the model: each op's known problem, else TFLM's words."""
    problems = tflm.static_problems(model)
    why_tflm = tflm.reason(message)
    missing = tflm.missing_ops(message)
    rows = []
    for op in model.ops:
        why = problems.get(op.index) or (f"TFLM: {why_tflm}" if op.name in missing else "")
        rows.append(OpRow(op.index, op.name, op.version, FAILS if why else RUNS, why))
    if not any(r.status == FAILS for r in rows):
        # TFLM named no op: the failure is the model's as a whole, so every row carries it.
        for r in rows:
            r.status, r.reason = FAILS, f"TFLM: {why_tflm}"
    verdict = f"FAILS: TFLite Micro cannot run the model ({why_tflm}). {FIX}"
    return TargetReport("micro", False, verdict, rows, notes=[f"TFLM said: {why_tflm}"])

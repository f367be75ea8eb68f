"""[device] Per-target checks: what of a .tflite runs on a target, what falls back, and why.

Every check reads the flatbuffer (``edgenn.tflite_model``) and returns a :class:`TargetReport`:
one row per op (op, version, status, reason) and a verdict line. No TensorFlow here.

Targets (the one list that drives the CLI choices):

- ``cpu``: LiteRT on a CPU; the real runtime must load and allocate the model.
- ``tflite-runtime-2.14``: op versions against the measured table of tflite-runtime 2.14.
- ``edgetpu``: the Edge TPU compiler's documented requirements; runs ``edgetpu_compiler`` when
  it is on PATH.
- ``gpu``: the LiteRT GPU delegate's documented op list and constraints.
- ``micro``: TFLite Micro's own interpreter (PyPI ``tflite-micro``) and the smallest arena.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from edgenn.tflite_model import TFLiteFile

TARGETS = ("cpu", "gpu", "edgetpu", "micro", "tflite-runtime-2.14")

#: Row statuses.
RUNS = "runs"
FALLS_BACK = "falls back"  # runs, but on the CPU instead of the accelerator
FAILS = "fails"  # cannot run on this target at all


@dataclasses.dataclass
class OpRow:
    """One operator's fate on a target.

    Attributes:
        index: Position in execution order.
        op: Op name.
        version: Op version.
        status: ``runs``, ``falls back`` or ``fails``.
        reason: Why it falls back or fails (empty when it runs).
    """

    index: int
    op: str
    version: int
    status: str
    reason: str = ""


@dataclasses.dataclass
class TargetReport:
    """The result of a target check.

    Attributes:
        target: Target name.
        ok: True when the whole model runs on the target as intended.
        verdict: One line for people.
        rows: Per-op table.
        notes: Model-level findings (dtypes, shapes, what was and was not run).
        details: Target-specific figures (e.g. the TFLM arena, compiler output).
    """

    target: str
    ok: bool
    verdict: str
    rows: list[OpRow] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON document."""
        return dataclasses.asdict(self)

    def table(self) -> str:
        """The per-op table and the verdict as text."""
        width = max([len(r.op) for r in self.rows] + [2])
        lines = [f"{'#':>3}  {'op':<{width}}  ver  {'status':<10}  reason"]
        for r in self.rows:
            lines.append(
                f"{r.index:>3}  {r.op:<{width}}  {r.version:>3}  {r.status:<10}  {r.reason}"
            )
        lines.extend(f"note: {n}" for n in self.notes)
        lines.append(f"verdict ({self.target}): {self.verdict}")
        return "\n".join(lines)


def check(model: TFLiteFile, target: str, **options: Any) -> TargetReport:
    """Run one target's check.

    Args:
        model: The parsed model.
        target: A name from :data:`TARGETS`.
        **options: Target-specific options (``arena_margin`` for micro, ``output_dir`` for
            edgetpu).

    Returns:
        The report.

    Raises:
        UsageError: Unknown target.
    """
    from edgenn.errors import UsageError

    if target == "cpu":
        from edgenn.targets.cpu import check_cpu

        return check_cpu(model)
    if target == "tflite-runtime-2.14":
        from edgenn.targets.runtime_versions import check_runtime

        return check_runtime(model, "tflite-runtime 2.14.0", target)
    if target == "edgetpu":
        from edgenn.targets.edgetpu import check_edgetpu

        return check_edgetpu(model, **options)
    if target == "gpu":
        from edgenn.targets.gpu import check_gpu

        return check_gpu(model)
    if target == "micro":
        from edgenn.targets.micro import check_micro

        return check_micro(model, **options)
    raise UsageError(f"Unknown target {target!r}; expected one of {', '.join(TARGETS)}.")

"""[device] The ``cpu`` target: the installed LiteRT runtime must load and run the model."""

from __future__ import annotations

import numpy as np

from edgenn.errors import EdgennError
from edgenn.targets import FAILS, RUNS, OpRow, TargetReport
from edgenn.tflite_model import TFLiteFile


def check_cpu(model: TFLiteFile) -> TargetReport:
    """Load the model in the device runtime and run it once on zeros.

    Args:
        model: The parsed model.

    Returns:
        The report: every op runs, or the runtime's own error.
    """
    from edgenn.runtime import Runner

    seen = {}
    for op in model.ops:
        seen.setdefault((op.name, op.version), op.index)
    try:
        runner = Runner(model)
        for detail in runner.input_details:
            runner.interpreter.set_tensor(
                detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"])
            )
        runner.invoke()
    except EdgennError as exc:
        rows = [OpRow(i, name, v, FAILS, "see verdict") for (name, v), i in seen.items()]
        return TargetReport("cpu", False, f"FAILS: {exc.message}", rows)
    rows = [OpRow(i, name, v, RUNS) for (name, v), i in seen.items()]
    runtime = f"{runner.runtime.name} {runner.runtime.version}"
    return TargetReport(
        "cpu",
        True,
        f"OK: {runtime} loaded the model and ran it once ({len(model.ops)} ops).",
        rows,
        notes=[f"runtime: {runtime}"],
    )

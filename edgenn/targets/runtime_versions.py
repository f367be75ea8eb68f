"""[device] Which runtime release can load a model: op versions against measured tables.

``op_versions.json`` holds, for each runtime release, the highest version of every builtin op its
op resolver registers, measured by ``scripts/probe_op_versions.py`` (an op the resolver cannot
find fails at load time with "Didn't find op for builtin opcode 'X' version 'N'").
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from edgenn.targets import FAILS, RUNS, OpRow, TargetReport
from edgenn.tflite_model import TFLiteFile

TABLE_FILE = Path(__file__).resolve().parent / "op_versions.json"
#: The release the ``tflite-runtime-2.14`` target stands for (a key of ``op_versions.json``).
TFLITE_RUNTIME_214 = "tflite-runtime 2.14.0"


@functools.lru_cache(maxsize=1)
def op_version_tables() -> dict[str, dict[str, int]]:
    """The measured tables by runtime release (``"tflite-runtime 2.14.0"`` -> {op: max version})."""
    doc = json.loads(TABLE_FILE.read_text())
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def blocking_ops(model: TFLiteFile, runtime: str) -> list[OpRow]:
    """Per-op rows of a model for one runtime release.

    Args:
        model: The parsed model.
        runtime: A key of :func:`op_version_tables`.

    Returns:
        One row per distinct (op, version), in order of first use.
    """
    table = op_version_tables()[runtime]
    rows = []
    seen = set()
    for op in model.ops:
        key = (op.name, op.version)
        if key in seen:
            continue
        seen.add(key)
        if op.custom:
            rows.append(
                OpRow(
                    op.index, op.name, op.version, FAILS, "custom op: needs its kernel registered"
                )
            )
        elif op.name not in table:
            rows.append(
                OpRow(op.index, op.name, op.version, FAILS, f"{runtime} has no {op.name} kernel")
            )
        elif op.version > table[op.name]:
            rows.append(
                OpRow(
                    op.index,
                    op.name,
                    op.version,
                    FAILS,
                    f"{runtime} loads {op.name} up to version {table[op.name]}",
                )
            )
        else:
            rows.append(OpRow(op.index, op.name, op.version, RUNS))
    return rows


def loadable_by(model: TFLiteFile) -> list[str]:
    """The runtime releases in the table that can load every op of the model."""
    return [
        runtime
        for runtime in op_version_tables()
        if all(r.status == RUNS for r in blocking_ops(model, runtime))
    ]


def check_runtime(model: TFLiteFile, runtime: str, target: str) -> TargetReport:
    """Check that every op of the model has a kernel of its version in ``runtime``.

    Args:
        model: The parsed model.
        runtime: A key of :func:`op_version_tables`.
        target: The target name for the report.

    Returns:
        The report.
    """
    rows = blocking_ops(model, runtime)
    failing = [r for r in rows if r.status != RUNS]
    notes = [
        f"the converter's min_runtime_version metadata: {model.min_runtime_version or 'absent'}"
    ]
    loaders = loadable_by(model)
    notes.append(
        "loadable by: " + (", ".join(loaders) if loaders else "none of the measured runtimes")
    )
    if failing:
        names = ", ".join(f"{r.op} v{r.version}" for r in failing)
        verdict = f"FAILS: {runtime} cannot load {names}. Convert with: edgenn convert RUN --target {target}"
    else:
        verdict = f"OK: {runtime} has kernels for all {len(rows)} op types at these versions."
    return TargetReport(target=target, ok=not failing, verdict=verdict, rows=rows, notes=notes)


def check_tflite_runtime_214(model: TFLiteFile) -> TargetReport:
    """The ``tflite-runtime-2.14`` target: :func:`check_runtime` against tflite-runtime 2.14.0.

    Args:
        model: The parsed model.

    Returns:
        The report.
    """
    return check_runtime(model, TFLITE_RUNTIME_214, "tflite-runtime-2.14")

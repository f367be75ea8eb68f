"""[device] ``edgenn doctor --model``: can the runtime installed here run this model?

Two answers, side by side: the measured op-version tables (``edgenn/targets/op_versions.json``:
which op version each runtime release loads) say *why* a model cannot load, and a real load and
run in a child process says *whether* it does. The fix names what to install on this platform,
or how to convert the model for the runtime it has.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edgenn import tflite_model
from edgenn.doctor import FAIL, OK, WARN, Check, edgetpu, probe
from edgenn.doctor.runtimes import InstalledRuntime, RuntimeSurvey, pip
from edgenn.errors import EdgennError, MissingDependencyError
from edgenn.optional import LITERT_PACKAGES
from edgenn.targets import RUNS, OpRow
from edgenn.targets.runtime_versions import TFLITE_RUNTIME_214, blocking_ops, op_version_tables

#: The ``edgenn convert --target`` that makes models for a runtime release of the tables.
CONVERT_TARGETS = {TFLITE_RUNTIME_214: "tflite-runtime-2.14"}
#: The runtime's own message for a custom op it has no kernel for.
UNRESOLVED_CUSTOM_OP = "unresolved custom op"


def check_model(path: Path, survey: RuntimeSurvey, tpu: edgetpu.EdgeTpuRuntime) -> list[Check]:
    """The model's checks: what it is, whether this runtime runs it, what an Edge TPU model needs.

    Args:
        path: The .tflite file.
        survey: The installed runtimes.
        tpu: The Edge TPU runtime found.

    Returns:
        ``model``, ``model-runtime`` and, for an Edge TPU-compiled model, ``edgetpu-model``.
    """
    try:
        model = tflite_model.load(path)
    except MissingDependencyError as exc:
        # ai-edge-litert brings the flatbuffer schema edgenn reads models with.
        fix = survey.advice.command if survey.advice.package == "ai-edge-litert" else exc.install
        return [Check("model", FAIL, f"{path}: cannot read it: {exc.message}", fix=fix)]
    except EdgennError as exc:
        return [Check("model", FAIL, f"{path}: {exc.message}", fix=exc.hint or "")]
    ops = ", ".join(f"{name} v{version}" for name, version, _ in model.op_counts)
    found = (
        f"{path}: {model.size_bytes:,} B, {len(model.ops)} ops ({ops}); "
        f"converter's min_runtime_version: {model.min_runtime_version or 'absent'}"
    )
    checks = [Check("model", OK, found, details={"ops": [list(c) for c in model.op_counts]})]
    compiled = edgetpu.check_model(model, tpu)
    checks.append(_check_runtime(path, model, survey, tpu, compiled is not None))
    if compiled is not None:
        checks.append(compiled)
    return checks


def _builtin_blockers(model: tflite_model.TFLiteFile, release: str) -> list[OpRow]:
    """Builtin ops ``release`` has no kernel of this version for (custom ops: the real load)."""
    return [
        r for r in blocking_ops(model, release) if r.status != RUNS and r.op in _builtins(model)
    ]


def _builtins(model: tflite_model.TFLiteFile) -> set[str]:
    return {op.name for op in model.ops if not op.custom}


def _tables(model: tflite_model.TFLiteFile) -> dict[str, list[str]]:
    """Per measured runtime release, the builtin ops it cannot load (``["OP vN: reason"]``)."""
    return {
        release: [f"{r.op} v{r.version}: {r.reason}" for r in _builtin_blockers(model, release)]
        for release in op_version_tables()
    }


def _check_runtime(
    path: Path,
    model: tflite_model.TFLiteFile,
    survey: RuntimeSurvey,
    tpu: edgetpu.EdgeTpuRuntime,
    compiled: bool,
) -> Check:
    """Load and run the model with the runtime edgenn picks; explain a failure with the tables."""
    tables = _tables(model)
    loaders = [release for release, blockers in tables.items() if not blockers]
    details = {"op_version_blockers": tables, "loadable_by": loaders}
    runtime = survey.selected
    if runtime is None:
        needed = "a runtime that loads it: " + (", ".join(loaders) or "none of the measured ones")
        fix = survey.advice.command if _advised_loads(survey, loaders) else ""
        return Check(
            "model-runtime", FAIL, "no runtime installed to run it", needed, fix, details=details
        )
    if not runtime.works:
        found = f"not run: {runtime.label} fails on a 1-op model already"
        return Check(
            "model-runtime", FAIL, found, "a working runtime: see runtime", details=details
        )
    delegate = None
    if compiled:
        if not (tpu.loaded and tpu.devices):
            found = f"not run: its compiled part needs the Edge TPU delegate ({runtime.label} alone cannot run it)"
            return Check("model-runtime", WARN, found, "see edgetpu-model", details=details)
        delegate = "edgetpu"
    result = probe.run(runtime.name, model.data, delegate)
    details.update(
        runtime=runtime.label,
        peak_memory_bytes=result.peak_memory_bytes if result.ok else None,
        probe=dataclasses.asdict(result),
    )
    if result.ok:
        found = f"{runtime.label} loaded {path.name} and ran it once" + (
            " on the Edge TPU" if delegate else ""
        )
        stale = tables.get(runtime.table or "", [])
        if stale:
            found += f" (its measured table, {runtime.table}, predicted: {'; '.join(stale)})"
        return Check("model-runtime", OK, found, details=details)
    return _cannot_run(model, runtime, result, survey, details)


def _advised_loads(survey: RuntimeSurvey, loaders: list[str]) -> bool:
    """The runtime this platform can install is one that loads the model."""
    package = survey.advice.package
    return package is not None and any(release.split(" ")[0] == package for release in loaders)


def _cannot_run(
    model: tflite_model.TFLiteFile,
    runtime: InstalledRuntime,
    result: probe.ProbeResult,
    survey: RuntimeSurvey,
    details: dict,
) -> Check:
    """The runtime refused the model: name the ops and the way out on this platform."""
    found = f"{runtime.label} cannot run it: {result.error}"
    blockers = _builtin_blockers(model, runtime.table) if runtime.table else []
    target = CONVERT_TARGETS.get(runtime.table or "")
    # Converting needs the training run and TensorFlow: the host's job, not the device's.
    reconvert = f"edgenn convert RUN --target {target}" if target else ""
    litert = survey.advice.package == "ai-edge-litert" and runtime.package != "ai-edge-litert"
    if blockers:
        needed = "; ".join(f"{r.op} v{r.version}: {r.reason}" for r in blockers)
        loaders = details["loadable_by"]
        needed += "; loadable by: " + (", ".join(loaders) or "none of the measured runtimes")
        if reconvert:
            needed += f"; or a model converted for {runtime.label} (on the host, from the run)"
    elif UNRESOLVED_CUSTOM_OP in (result.error + result.stderr).lower():
        names = sorted({op.name for op in model.ops if op.custom})
        needed = f"a runtime that registers the custom op(s) {', '.join(names)}"
        reconvert = ""
    else:
        needed = "a runtime that loads it"
    if litert:
        fix, alternatives = pip(LITERT_PACKAGES), [reconvert] if reconvert else []
    else:
        fix, alternatives = reconvert, []
    return Check("model-runtime", FAIL, found, needed, fix, alternatives, details)

"""[device] Load a model with one runtime in a child process, and report what happened.

A runtime that does not fit the machine does not always raise: a wheel built for newer CPU
instructions dies with SIGILL, and tflite-runtime 2.14 under numpy 2 prints numpy's warning and
fails with ``_ARRAY_API not found``. Running the load in a child keeps ``edgenn doctor`` alive
and lets it report the signal or the error line, with the child's peak memory.

The parent calls :func:`run`; the child is ``python -m edgenn.doctor.probe RUNTIME [DELEGATE]``
with the model's bytes on stdin and one JSON line on stdout.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

#: A 348-byte float32 model: y = x + x on a [1, 4] tensor (one ADD v1, which every runtime has).
#: Written once with TFLite's schema (``ai_edge_litert.schema_py_generated``) and kept as bytes so
#: that a device without the schema module can still test its runtime.
PROBE_MODEL = base64.b64decode(
    "GAAAAFRGTDMAAA4AGAAUABAADAAIAAQADgAAABQAAAAsAAAATAAAACQBAAADAAAAAwAAABQAAAAMAAAABAAAAOz+///w"
    "/v//9P7//x4AAABlZGdlbm4gZG9jdG9yIHByb2JlOiB5ID0geCArIHgAAAEAAAAQAAAADAAUABAADAAIAAQADAAAABAA"
    "AABQAAAAVAAAAFgAAAABAAAAFAAAAAAADgAUAAAAEAAMAAsABAAOAAAAEAAAAAAAAAsMAAAAEAAAAHD///8BAAAAAQAAAAI"
    "AAAAAAAAAAAAAAAEAAAABAAAAAQAAAAAAAAACAAAAOAAAAAQAAADc////DAAAAAIAAAAMAAAAAQAAAHkAAAACAAAAAQAAAA"
    "QAAAAMABAADAAAAAgABAAMAAAADAAAAAEAAAAMAAAAAQAAAHgAAAACAAAAAQAAAAQAAAABAAAACAAAAAQABAAEAAAA"
)
#: The probe model's input, and the output a working runtime computes from it.
PROBE_INPUT = (1.0, 2.0, 3.0, 4.0)
PROBE_EXPECTED = (2.0, 4.0, 6.0, 8.0)
#: Seconds a child may take: importing the runtime and one inference of a small model.
TIMEOUT = 120


@dataclasses.dataclass
class ProbeResult:
    """What the child saw.

    Attributes:
        ok: The model loaded, allocated and ran once.
        stage: Where it stopped: ``import``, ``delegate``, ``load``, ``run`` or ``done``.
        error: The error line ('' when ok).
        version: The runtime package's version ('' when it did not import).
        output: The first values of the first output.
        peak_memory_bytes: The child's peak resident memory (0 where unknown).
        signal: The signal that killed the child ('' when none did).
        stderr: The tail of the child's stderr (runtime and numpy messages).
    """

    ok: bool
    stage: str
    error: str = ""
    version: str = ""
    output: list[float] = dataclasses.field(default_factory=list)
    peak_memory_bytes: int = 0
    signal: str = ""
    stderr: str = ""


def run(runtime: str, model: bytes, delegate: str | None = None) -> ProbeResult:
    """Load ``model`` with ``runtime`` in a child process and run it once on zeros.

    Args:
        runtime: A name of :data:`edgenn.runtime.RUNTIMES`.
        model: The .tflite bytes (:data:`PROBE_MODEL` runs on :data:`PROBE_INPUT`).
        delegate: A delegate spec for :func:`edgenn.runtime.load_delegate` (``edgetpu``).

    Returns:
        The result; a crash or a timeout is a result too, never an exception.
    """
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:
        # edgenn came from a path the child would not see (PYTHONPATH entries precede the
        # standard library, so a site-packages folder already on sys.path is never added).
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "edgenn.doctor.probe", runtime]
    command += [delegate] if delegate else []
    try:
        proc = subprocess.run(
            command, input=model, capture_output=True, env=env, timeout=TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        return ProbeResult(False, "run", f"no answer within {TIMEOUT} s")
    stderr = proc.stderr.decode("utf-8", "replace")
    tail = "\n".join(stderr.strip().splitlines()[-5:])
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        return ProbeResult(False, "run", f"the process died with {name}", signal=name, stderr=tail)
    lines = proc.stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        doc = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return ProbeResult(
            False, "import", _last_error(stderr) or f"exit {proc.returncode}", stderr=tail
        )
    return ProbeResult(**{**doc, "stderr": tail})


def _last_error(stderr: str) -> str:
    """The most telling line of a failed child's stderr: its last ``...Error: ...`` line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line.split(":")[0] or "error:" in line.lower()]
    return (errors or lines or [""])[-1][:300]


def _describe(exc: BaseException) -> str:
    """``Type: first line`` and the exception it came from.

    tflite-runtime's SystemError under numpy 2 hides numpy's ImportError.
    """

    def line(e: BaseException) -> str:
        text = str(e).strip().splitlines()
        return f"{type(e).__name__}: {text[0] if text else ''}"

    origin = exc.__cause__ or exc.__context__
    return (line(exc) + (f" (from {line(origin)})" if origin is not None else ""))[:400]


def _child(runtime: str, delegate: str | None, model: bytes) -> dict[str, Any]:
    """The child's work: import, load, allocate, run once; never raises."""
    import numpy as np

    from edgenn import optional
    from edgenn import runtime as rt

    result: dict[str, Any] = {"ok": False, "stage": "import"}
    try:
        optional.require(rt.RUNTIMES[runtime], "edgenn doctor")
        found = rt.find_runtime(runtime)
        result["version"], result["stage"] = found.version, "delegate"
        delegates = [rt.load_delegate(found, delegate)] if delegate else []
        result["stage"] = "load"
        interpreter = found.module.Interpreter(
            model_content=model, experimental_delegates=delegates
        )
        interpreter.allocate_tensors()
        result["stage"] = "run"
        for detail in interpreter.get_input_details():
            value = np.zeros(detail["shape"], dtype=detail["dtype"])
            if model == PROBE_MODEL:
                value = np.array([PROBE_INPUT], dtype=np.float32)
            interpreter.set_tensor(detail["index"], value)
        interpreter.invoke()
        output = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        result["output"] = [float(v) for v in np.asarray(output, dtype=np.float64).ravel()[:8]]
        result.update(ok=True, stage="done")
    except Exception as exc:  # noqa: BLE001 - every failure is the finding itself
        result["error"] = _describe(exc)
    if sys.platform != "win32":
        import resource

        # Linux reports kilobytes (macOS bytes, but doctor's memory figures are Linux's).
        result["peak_memory_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result


if __name__ == "__main__":
    _runtime, _delegate = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
    # The JSON line goes last, after anything the runtime itself prints to stdout.
    print(json.dumps(_child(_runtime, _delegate, sys.stdin.buffer.read())), flush=True)

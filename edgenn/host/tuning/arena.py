"""[host] A model's TFLite Micro arena, measured in a child process.

The arena is bisected as ``edgenn inspect --target micro`` does it (:func:`edgenn.targets.check`
with the ``micro`` target). TFLite Micro's interpreter has been seen to crash its process (a
segmentation fault) at some of the arena sizes the bisection tries; in a child process such a
crash leaves the study running, and the trial's arena is then unknown.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

#: Seconds before a measurement is given up (the bisection takes about a second).
TIMEOUT = 600


def measure(path: Path) -> int | None:
    """The arena ``edgenn firmware`` would allocate (measured minimum plus its margin).

    Args:
        path: The ``.tflite`` file.

    Returns:
        Bytes, or None when TFLite Micro cannot run the model (or crashed trying).
    """
    try:
        proc = subprocess.run(
            [sys.executable, "-m", __name__, str(path)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return None
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        return None
    value = json.loads(lines[-1])
    return int(value) if value is not None else None


def arena_bytes(path: Path) -> int | None:
    """The measurement itself, in this process (what the child runs)."""
    from edgenn import targets, tflite_model

    report = targets.check(tflite_model.load(path), "micro")
    arena = report.details.get("arena") if report.ok else None
    return int(arena["recommended_bytes"]) if arena else None


if __name__ == "__main__":
    print(json.dumps(arena_bytes(Path(sys.argv[1]))))

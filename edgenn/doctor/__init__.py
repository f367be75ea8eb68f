"""[device] ``edgenn doctor``: can this device run edgenn models, and if not, what fixes it.

Every check reads the machine itself (``/proc``, ``/sys``, ``/etc/os-release``, the installed
packages, the runtime loaded in a child process) and returns a :class:`Check`: a status, what was
found, what is needed and the exact command that fixes it. No TensorFlow, nothing installed.

- :mod:`edgenn.doctor.system`: Python, OS, CPU architecture and features, 32/64-bit userland.
- :mod:`edgenn.doctor.runtimes`: which LiteRT runtime is installed, whether it loads and runs a
  model (in a child process, so that a crash is reported, not suffered), numpy, install lines.
- :mod:`edgenn.doctor.edgetpu`: the Edge TPU runtime and devices; what a compiled model needs.
- :mod:`edgenn.doctor.resources`: memory, disk, cameras.
- :mod:`edgenn.doctor.model`: whether this runtime can run a given model, and the fix.
- :mod:`edgenn.doctor.probe`: the child process side.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Check statuses, from best to worst.
OK = "ok"
WARN = "warn"
FAIL = "fail"
STATUSES = (OK, WARN, FAIL)

#: Called with a line of progress (which check runs now).
Progress = Callable[[str], None]


@dataclasses.dataclass
class Check:
    """One finding.

    Attributes:
        name: What was checked (``python``, ``runtime``, ``model-runtime``...).
        status: ``ok``, ``warn`` or ``fail``.
        found: What is there.
        needed: What is needed, when that is not it ('' when nothing more is).
        fix: The command that fixes it ('' when no command does).
        alternatives: Other commands that fix it.
        details: The facts behind the line, for ``--json``.
    """

    name: str
    status: str
    found: str
    needed: str = ""
    fix: str = ""
    alternatives: list[str] = dataclasses.field(default_factory=list)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class DoctorReport:
    """Everything ``edgenn doctor`` found.

    Attributes:
        checks: The findings, in the order they were made.
        model: The model that was checked, if any.
    """

    checks: list[Check]
    model: str | None = None

    @property
    def ok(self) -> bool:
        """True when no check failed (warnings allowed)."""
        return not any(c.status == FAIL for c in self.checks)

    def count(self, status: str) -> int:
        """How many checks have ``status``."""
        return sum(1 for c in self.checks if c.status == status)

    def get(self, name: str) -> Check:
        """The check called ``name``.

        Raises:
            KeyError: No such check was made.
        """
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document."""
        return {
            "ok": self.ok,
            "failed": self.count(FAIL),
            "warnings": self.count(WARN),
            "model": self.model,
            "checks": [dataclasses.asdict(c) for c in self.checks],
        }


def _quiet(message: str) -> None:
    """The default progress sink: a library caller that passes no callback hears nothing."""


def diagnose(model: Path | None = None, progress: Progress | None = None) -> DoctorReport:
    """Check this device, and optionally whether it can run ``model``.

    Args:
        model: A .tflite file to check against what is installed.
        progress: Called with a line before each slow step.

    Returns:
        The report (its ``ok`` is False when a check failed).
    """
    from edgenn.doctor import edgetpu, resources, runtimes, system
    from edgenn.doctor import model as model_checks

    say = progress or _quiet
    facts = system.detect()
    checks = [system.check_python(facts), system.check_os(facts), system.check_cpu(facts)]
    say("loading the installed runtimes in a child process")
    found = runtimes.survey(facts)
    checks += [runtimes.check_runtime(found, facts), runtimes.check_numpy(found, facts)]
    tpu = edgetpu.detect()
    checks.append(edgetpu.check_runtime(tpu))
    checks.append(resources.check_cameras())
    folders = [Path.cwd()] + ([Path(model).resolve().parent] if model is not None else [])
    if model is not None:
        say(f"checking {model} against {found.selected_label}")
        checks += model_checks.check_model(Path(model), found, tpu)
    checks.append(resources.check_memory(_peak_model_memory(checks)))
    checks.append(resources.check_disk(folders))
    return DoctorReport(checks, str(model) if model is not None else None)


def _peak_model_memory(checks: list[Check]) -> int | None:
    """The peak memory the model's test run took, when one ran (bytes)."""
    for c in checks:
        if c.name == "model-runtime" and c.details.get("peak_memory_bytes"):
            return int(c.details["peak_memory_bytes"])
    return None

"""[device] Which LiteRT runtime is installed, whether it really runs a model, and how to get one.

Each installed runtime loads and runs a 1-op model (:data:`edgenn.doctor.probe.PROBE_MODEL`) in a
child process. The install line depends on the userland architecture and the Python version:
ai-edge-litert has wheels for 64-bit x86 and ARM only, tflite-runtime 2.14 (its last release)
for Python <= 3.11 and numpy < 2 only (TOOLCHAIN.md).
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import sys
from importlib import metadata

from edgenn import optional
from edgenn.doctor import FAIL, OK, WARN, Check, probe
from edgenn.doctor.system import Platform, python_version
from edgenn.optional import LITERT_PACKAGES, TFLITE_RUNTIME_PACKAGES
from edgenn.runtime import RUNTIMES

#: What ``pip install`` takes for each runtime (``edgenn.optional.RUNTIME_INSTALL`` names both).
NUMPY_1_PACKAGES = "'numpy<2'"
#: Userland architectures and Pythons each runtime has wheels for.
LITERT_ARCHES = ("x86_64", "aarch64")
LITERT_MIN_PYTHON = (3, 11)
TFLITE_RUNTIME_ARCHES = ("x86_64", "aarch64", "armv7l")
TFLITE_RUNTIME_MAX_PYTHON = (3, 11)
#: The Python to build where the OS's is too new for tflite-runtime.
PYENV_PYTHON = "3.11.11"


def pip(packages: str) -> str:
    """The exact command that installs ``packages`` into the Python running edgenn."""
    return f"{shlex.quote(sys.executable)} -m pip install {packages}"


@dataclasses.dataclass(frozen=True)
class Advice:
    """The runtime to install on this platform.

    Attributes:
        package: ``ai-edge-litert``, ``tflite-runtime`` or None when no wheel fits.
        command: The install command ('' when none exists).
        needed: Why this one, or what the platform lacks.
        alternatives: Other ways out.
    """

    package: str | None
    command: str
    needed: str = ""
    alternatives: tuple[str, ...] = ()


def advice(facts: Platform) -> Advice:
    """The right install line for this userland architecture and Python.

    Args:
        facts: The platform.

    Returns:
        The advice.
    """
    py, arch = facts.python[:2], facts.wheel_arch
    version = python_version(facts)
    if arch in LITERT_ARCHES and py >= LITERT_MIN_PYTHON:
        return Advice("ai-edge-litert", pip(LITERT_PACKAGES))
    if arch in TFLITE_RUNTIME_ARCHES and py <= TFLITE_RUNTIME_MAX_PYTHON:
        reason = (
            f"ai-edge-litert has no wheel for {arch}"
            if arch not in LITERT_ARCHES
            else f"ai-edge-litert needs Python >= {'.'.join(map(str, LITERT_MIN_PYTHON))}"
        )
        return Advice(
            "tflite-runtime",
            pip(TFLITE_RUNTIME_PACKAGES),
            f"{reason}; tflite-runtime 2.14 with numpy < 2",
        )
    if arch in TFLITE_RUNTIME_ARCHES:
        return Advice(
            None,
            "",
            f"Python <= 3.11: ai-edge-litert has no wheel for {arch} and tflite-runtime 2.14 "
            f"(its last release) none for Python {version}",
            (
                f"pyenv install {PYENV_PYTHON} && ~/.pyenv/versions/{PYENV_PYTHON}/bin/python -m venv "
                f"~/edgenn-venv && ~/edgenn-venv/bin/python -m pip install {TFLITE_RUNTIME_PACKAGES}",
                "or install a 64-bit OS (64-bit Raspberry Pi OS), where: pip install ai-edge-litert",
            ),
        )
    return Advice(
        None, "", f"a runtime wheel for {arch}: ai-edge-litert and tflite-runtime have none"
    )


@dataclasses.dataclass
class InstalledRuntime:
    """A runtime that is installed, and what happened when it ran the probe model.

    Attributes:
        name: ``litert`` or ``tflite-runtime`` (the ``--runtime`` names).
        package: Its PyPI package.
        version: Its installed version ('' when only the module was found).
        probe: The child process's result.
        table: The ``op_versions.json`` release that applies (None when none does).
        table_exact: The table is of this very version (else of an older one: a lower bound).
    """

    name: str
    package: str
    version: str
    probe: probe.ProbeResult
    table: str | None = None
    table_exact: bool = False

    @property
    def label(self) -> str:
        """``ai-edge-litert 2.3.0``."""
        return f"{self.package} {self.version}".strip()

    @property
    def works(self) -> bool:
        """It loaded the probe model and computed the right answer."""
        return self.probe.ok and tuple(self.probe.output[:4]) == probe.PROBE_EXPECTED


@dataclasses.dataclass
class RuntimeSurvey:
    """The runtimes installed here.

    Attributes:
        runtimes: The installed ones, in edgenn's order of preference.
        numpy: numpy's version.
        advice: What to install on this platform.
    """

    runtimes: list[InstalledRuntime]
    numpy: str
    advice: Advice

    @property
    def selected(self) -> InstalledRuntime | None:
        """The one edgenn uses without ``--runtime``: the first that imports."""
        return next((r for r in self.runtimes if r.probe.stage != "import"), None)

    @property
    def selected_label(self) -> str:
        """Its name and version, or ``no runtime``."""
        return self.selected.label if self.selected else "no runtime"


def version_tuple(text: str) -> tuple[int, ...]:
    """``2.14.0`` -> ``(2, 14, 0)`` (a suffix such as ``rc1`` or ``.post1`` is dropped)."""
    return tuple(int(p) for p in re.findall(r"\d+", text.split("rc")[0].split(".post")[0])[:3])


def table_for(package: str, version: str) -> tuple[str | None, bool]:
    """The measured op-version table that applies to an installed runtime.

    Args:
        package: ``ai-edge-litert`` or ``tflite-runtime``.
        version: Its version.

    Returns:
        ``(key, exact)``: the table of this version, else of the newest older release of the
        same package (runtimes only add op versions, so it is a lower bound), else ``(None, False)``.
    """
    from edgenn.targets.runtime_versions import op_version_tables

    mine = version_tuple(version)
    releases = [
        (version_tuple(key.split(" ", 1)[1]), key)
        for key in op_version_tables()
        if key.split(" ", 1)[0] == package
    ]
    older = sorted(r for r in releases if r[0] <= mine)
    if not older:
        return None, False
    return older[-1][1], older[-1][0] == mine


def survey(facts: Platform) -> RuntimeSurvey:
    """Find the installed runtimes and load the probe model with each.

    Args:
        facts: The platform.

    Returns:
        The survey.
    """
    import numpy as np

    found = []
    for name, module in RUNTIMES.items():
        package = optional.dependency(module).package
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            version = ""
        if not version and not optional.available(module.split(".")[0]):
            continue
        result = probe.run(name, probe.PROBE_MODEL)
        version = version or result.version
        table, exact = table_for(package, version) if version else (None, False)
        found.append(InstalledRuntime(name, package, version, result, table, exact))
    return RuntimeSurvey(found, np.__version__, advice(facts))


def _numpy_2(survey: RuntimeSurvey) -> bool:
    return version_tuple(survey.numpy)[:1] >= (2,)


def check_runtime(survey: RuntimeSurvey, facts: Platform) -> Check:
    """Is a runtime installed, and does the one edgenn picks load and run a model?

    Args:
        survey: The installed runtimes.
        facts: The platform.

    Returns:
        The check.
    """
    details = {
        "installed": [
            {
                "name": r.name,
                "package": r.package,
                "version": r.version,
                "works": r.works,
                **dataclasses.asdict(r.probe),
                "op_version_table": r.table,
            }
            for r in survey.runtimes
        ],  # fmt: skip
        "wheel_arch": facts.wheel_arch,
        "python": python_version(facts),
    }
    a = survey.advice
    if not survey.runtimes:
        return Check(
            "runtime",
            FAIL,
            f"no LiteRT runtime installed ({', '.join(_packages())} not found)",
            needed=a.needed or f"a LiteRT runtime: {a.package}",
            fix=a.command,
            alternatives=list(a.alternatives),
            details=details,
        )
    chosen = survey.selected
    if chosen is not None and chosen.works:
        others = [f"{r.label} fails ({r.probe.error})" for r in survey.runtimes if not r.works]
        found = f"{chosen.label} loads and runs a test model (y = x + x) correctly"
        return Check(
            "runtime", OK, "; ".join([found, *others]), details={**details, "selected": chosen.name}
        )
    return _broken(survey, chosen or survey.runtimes[0], details)


def _broken(survey: RuntimeSurvey, broken: InstalledRuntime, details: dict) -> Check:
    """The runtime edgenn would use is installed but fails: say why and how to fix it."""
    result = broken.probe
    found = f"{broken.label} is installed but fails at {result.stage}: {result.error}"
    working = next((r for r in survey.runtimes if r.works), None)
    alternatives = [f"edgenn predict --runtime {working.name} ..."] if working else []
    if broken.name == "tflite-runtime" and _numpy_2(survey):
        needed = (
            f"numpy < 2: tflite-runtime 2.14 is built against numpy 1 (found numpy {survey.numpy})"
        )
        fix = pip(NUMPY_1_PACKAGES)
    elif result.signal == "SIGILL":
        needed = "a build for this CPU: the runtime uses instructions this processor lacks"
        fix = survey.advice.command if survey.advice.package != broken.package else ""
    elif result.stage == "import" and "GLIBC" in result.error + result.stderr:
        needed = "a newer C library (glibc) than this OS has, for this wheel"
        fix = pip(TFLITE_RUNTIME_PACKAGES) if broken.package != "tflite-runtime" else ""
    elif result.ok:
        needed = f"the right answer {list(probe.PROBE_EXPECTED)}; it computed {result.output[:4]}"
        fix = pip(f"--force-reinstall {broken.package}")
    else:
        needed = f"a working {broken.package}"
        fix = pip(f"--force-reinstall {broken.package}")
    if working is not None and broken is survey.selected:
        alternatives.append(f"{shlex.quote(sys.executable)} -m pip uninstall -y {broken.package}")
    return Check("runtime", FAIL, found, needed, fix, alternatives, details)


def _packages() -> list[str]:
    return [optional.dependency(m).package for m in RUNTIMES.values()]


def check_numpy(survey: RuntimeSurvey, facts: Platform) -> Check:
    """The numpy version against the runtimes' needs (tflite-runtime 2.14 needs numpy < 2).

    Args:
        survey: The installed runtimes.
        facts: The platform.

    Returns:
        The check.
    """
    found = f"numpy {survey.numpy}"
    tflite = next((r for r in survey.runtimes if r.name == "tflite-runtime"), None)
    if tflite is None or not _numpy_2(survey):
        return Check("numpy", OK, found)
    status = FAIL if survey.selected is tflite or survey.selected is None else WARN
    return Check(
        "numpy",
        status,
        f"{found} with {tflite.label}",
        needed="numpy < 2: tflite-runtime 2.14 fails under numpy 2 (_ARRAY_API not found)",
        fix=pip(NUMPY_1_PACKAGES),
    )

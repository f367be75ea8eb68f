"""[device] A self-contained folder that installs and runs a model on a Raspberry Pi (or a Coral).

``make_bundle`` writes::

    DIR/
      models/            the model(s) with their labels and preprocessing (edgenn.artifact)
      wheels/            a wheel of edgenn itself
      requirements.txt   pinned for the target
      install.sh         makes .venv on the device and installs from the bundle
      run.sh             runs the chosen job (predict by default; camera or tag service)
      edgenn.service     an optional systemd unit (with --service)
      README.md          the steps and the figures of each model
      bundle.json        what was checked, for scripts

What a target installs and checks lives in one record per target (:data:`BUNDLE_TARGETS`), what a
service runs in one record per service (:data:`SERVICES`); the CLI builds its choices from both.

Every value written into run.sh, install.sh or the unit is quoted for the shell
(:func:`shlex.quote`) or for systemd (:mod:`edgenn.shellquote`): a model file name never runs as a
command. :mod:`edgenn.bundle_deploy` copies the folder to a device and starts it.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgenn import __version__, artifact, targets, tflite_model
from edgenn.errors import EdgennError, UsageError
from edgenn.fileio import atomic_directory
from edgenn.shellquote import systemd_exec_path, systemd_user


@dataclasses.dataclass(frozen=True)
class BundleTarget:
    """One kind of device a bundle installs on.

    Attributes:
        name: The ``--target`` value.
        help: One line for ``edgenn bundle --help``.
        runtime: The TFLite runtime it installs, for messages.
        requirements: What install.sh pins into the device's virtual environment.
        service_requirements: Extra pins per service name (the camera service needs an OpenCV
            built against this target's numpy).
        check: The :mod:`edgenn.targets` check every model must pass.
        check_options: Options of that check.
        carries_schema: Ship TFLite's flatbuffer schema module in ``wheels/``: edgenn reads every
            model before a runtime sees it, and this target's runtime ships no schema.
        max_python: Newest Python the runtime has wheels for; install.sh refuses a newer one.
        edgetpu: Models must be edgetpu_compiler output (``NAME_edgetpu.tflite`` holding an
            ``edgetpu-custom-op``) and run with ``--delegate edgetpu``.
        system_packages: Debian packages install.sh requires, each with where it comes from.
    """

    name: str
    help: str
    runtime: str
    requirements: tuple[str, ...]
    service_requirements: Mapping[str, tuple[str, ...]]
    check: str
    check_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    carries_schema: bool = False
    max_python: tuple[int, int] | None = None
    edgetpu: bool = False
    system_packages: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def requirements_for(self, service: Service | None) -> list[str]:
        """The pinned requirements of a bundle running ``service`` (None: predict only)."""
        extra = self.service_requirements.get(service.name, ()) if service else ()
        return [*self.requirements, *extra]


#: The bundle targets; the first is the default. pi-legacy and coral stay on tflite-runtime 2.14,
#: the last release: Python <= 3.11 and numpy < 2 only (OpenCV 5 needs numpy 2, hence < 5 there).
BUNDLE_TARGETS: dict[str, BundleTarget] = {
    t.name: t
    for t in (
        BundleTarget(
            name="pi",
            help="64-bit Raspberry Pi OS: LiteRT and numpy 2",
            runtime="ai-edge-litert 2.3.0",
            requirements=("ai-edge-litert==2.3.0", "numpy>=2,<3", "pillow>=10", "click>=8.1"),
            service_requirements={"camera": ("opencv-python-headless>=4.9",)},
            check="cpu",
        ),
        BundleTarget(
            name="pi-legacy",
            help="32-bit Pi OS or Python <= 3.11: tflite-runtime 2.14 and numpy 1",
            runtime="tflite-runtime 2.14",
            requirements=("tflite-runtime==2.14.0", "numpy<2", "pillow>=9.1", "click>=8.1"),
            service_requirements={"camera": ("opencv-python-headless<5",)},
            check="tflite-runtime-2.14",
            carries_schema=True,
            max_python=(3, 11),
        ),
        BundleTarget(
            name="coral",
            help="Coral Edge TPU: tflite-runtime 2.14 and libedgetpu1-std; models from "
            "edgetpu_compiler",
            runtime="tflite-runtime 2.14",
            requirements=("tflite-runtime==2.14.0", "numpy<2", "pillow>=9.1", "click>=8.1"),
            service_requirements={"camera": ("opencv-python-headless<5",)},
            # The model is compiled already; its uncompiled parts must still be 8-bit.
            check="edgetpu",
            check_options={"compile": False},
            carries_schema=True,
            max_python=(3, 11),
            edgetpu=True,
            system_packages={
                "libedgetpu1-std": "Coral's apt repository (https://coral.ai/software/#debian-packages)"
            },
        ),
    )
}
DEFAULT_TARGET = next(iter(BUNDLE_TARGETS))


@dataclasses.dataclass(frozen=True)
class Service:
    """A job a bundle runs under systemd; the unit's ExecStart runs ``run.sh``, which runs this.

    Attributes:
        name: The ``--service`` value.
        help: One line for ``edgenn bundle --help``.
        command: The line run.sh executes; ``{model}`` is the first model's path in the bundle as
            one quoted shell word and ``{delegate}`` the target's delegate option (or nothing).
            Arguments given to run.sh follow it (``"$@"``).
        restart: systemd's ``Restart=`` for the unit.
    """

    name: str
    help: str
    command: str
    restart: str = "on-failure"


#: What run.sh does without a service: classify the photos given to it.
PREDICT_COMMAND = 'exec .venv/bin/edgenn predict -m {model}{delegate} "$@"'
#: The services a bundle can run under systemd.
SERVICES: dict[str, Service] = {
    s.name: s
    for s in (
        Service(
            name="camera",
            help="classify camera frames headless, with a web view on $SERVE",
            command="exec .venv/bin/edgenn camera -m {model}{delegate} "
            '--source "${{CAMERA:-0}}" --headless --serve "${{SERVE:-127.0.0.1:8000}}" "$@"',
            # A camera service should come back after the camera does; a tagger only after a
            # failure.
            restart="always",
        ),
        Service(
            name="tag",
            help="tag the photos under $PHOTOS (default ~/Pictures) as XMP keywords",
            command="exec .venv/bin/edgenn tag -m {model} "
            '"${{PHOTOS:-$HOME/Pictures}}" --recursive "$@"',
        ),
    )
}


@dataclasses.dataclass
class BundleResult:
    """What :func:`make_bundle` wrote (``--json`` prints it)."""

    output: str
    target: str
    service: str | None
    models: list[dict[str, Any]]
    requirements: list[str]
    wheel: str
    files: list[str]


def _project_root() -> Path:
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise EdgennError(
            "edgenn bundle builds a wheel of edgenn from its source checkout, and this installation "
            "has none.",
            "Run it from a git clone installed with pip install -e .",
        )
    return root


def build_wheel(dest: Path) -> Path:
    """Build a wheel of this edgenn checkout into ``dest`` (pip, no dependencies, no network).

    Args:
        dest: Folder for the wheel.

    Returns:
        The wheel file.

    Raises:
        EdgennError: pip failed.
    """
    root = _project_root()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp, str(root)],
            capture_output=True,
            text=True,
        )
        wheels = list(Path(tmp).glob("edgenn-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise EdgennError(f"Building the edgenn wheel failed: {proc.stderr.strip()[-400:]}")
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / wheels[0].name
        shutil.copy(wheels[0], target)
    return target


def _copy_schema(dest: Path) -> None:
    """Ship the TFLite flatbuffer schema module for set-ups without ai-edge-litert.

    edgenn reads and checks every model before a runtime sees it, with the schema module that
    ai-edge-litert ships; tflite-runtime ships none. The bundle carries the host's copy (Apache 2.0,
    generated from TFLite's schema.fbs) and install.sh puts it into the device's environment.
    """
    from edgenn.tflite_model import _schema

    shutil.copy(_schema().__file__, dest / "edgenn_tflite_schema.py")


def _check_compiled(path: Path, model: tflite_model.TFLiteFile) -> None:
    """Refuse a model that edgetpu_compiler did not write."""
    if not path.stem.endswith("_edgetpu"):
        raise EdgennError(
            f"{path} is not an Edge TPU-compiled model (expected NAME_edgetpu.tflite); a Coral bundle "
            "runs what edgetpu_compiler wrote.",
            f"Compile it first: edgetpu_compiler -s -o {shlex.quote(str(path.parent))} "
            f"{shlex.quote(str(path))} "
            "(or: edgenn convert RUN --target edgetpu, which runs the compiler when installed)",
        )
    # A compiled model holds one edgetpu-custom-op; its uncompiled parts must still be 8-bit.
    if not any(op.name == "edgetpu-custom-op" for op in model.ops):
        raise EdgennError(f"{path} has no edgetpu-custom-op: it was not compiled for the Edge TPU.")


def _check_model(path: Path, target: BundleTarget) -> dict[str, Any]:
    """Read a model, run its target's check and refuse it when it cannot run there."""
    model = tflite_model.load(path)
    if target.edgetpu:
        _check_compiled(path, model)
    report = targets.check(model, target.check, **target.check_options)
    if not target.edgetpu and not report.ok and any(r.status == targets.FAILS for r in report.rows):
        raise EdgennError(
            f"{path} fails the {target.check} check that a {target.name} bundle needs: "
            f"{report.verdict}"
        )
    info = artifact.model_info(model)
    return {
        "model": path.name,
        "size_bytes": model.size_bytes,
        "check": target.check,
        "verdict": report.verdict,
        "labels": len(info.labels),
        "min_runtime_version": model.min_runtime_version,
        "info": info,
    }


def _resolve(target: str, service: str | None) -> tuple[BundleTarget, Service | None]:
    """The records of a ``--target`` and ``--service`` name."""
    if target not in BUNDLE_TARGETS:
        raise UsageError(
            f"Unknown --target {target!r}; expected one of {', '.join(BUNDLE_TARGETS)}."
        )
    if service is not None and service not in SERVICES:
        raise UsageError(f"Unknown --service {service!r}; expected one of {', '.join(SERVICES)}.")
    return BUNDLE_TARGETS[target], SERVICES[service] if service else None


def make_bundle(
    models: list[Path],
    output: Path,
    target: str = DEFAULT_TARGET,
    service: str | None = None,
    overwrite: bool = False,
) -> BundleResult:
    """Write a deployment bundle.

    Args:
        models: ``.tflite`` files (the first is the one ``run.sh`` uses).
        output: Folder to create.
        target: A name from :data:`BUNDLE_TARGETS`.
        service: A name from :data:`SERVICES` for a systemd unit; None for none.
        overwrite: Replace an existing folder.

    Returns:
        The result.

    Raises:
        UsageError: Bad target or service, or no model.
        EdgennError: A model fails its target's check; nothing is written.
    """
    record, job = _resolve(target, service)
    if not models:
        raise UsageError("Give at least one model.")
    models = [Path(m) for m in models]
    _refuse_same_names(models)
    checked = [_check_model(m, record) for m in models]
    requirements = record.requirements_for(job)
    summary = [{k: v for k, v in c.items() if k != "info"} for c in checked]
    with atomic_directory(Path(output), overwrite=overwrite) as tmp:
        wheel = build_wheel(tmp / "wheels")
        if record.carries_schema:
            _copy_schema(tmp / "wheels")
        (tmp / "models").mkdir()
        for path in models:
            shutil.copy(path, tmp / "models" / path.name)
        first = checked[0]["info"]
        artifact.write_companions(tmp / "models", first.labels, first.spec)
        _write_texts(tmp, record, job, models[0].name, wheel.name, summary, requirements)
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
    return BundleResult(
        str(output), record.name, job and job.name, summary, requirements, wheel.name, files
    )


def _refuse_same_names(models: list[Path]) -> None:
    """Two models with one file name would be one file in ``models/``: refuse, do not overwrite."""
    seen: dict[str, Path] = {}
    for path in models:
        if path.name in seen:
            raise UsageError(
                f"{seen[path.name]} and {path} have the same file name; a bundle keeps its models "
                "side by side in models/.",
                "Rename one of them.",
            )
        seen[path.name] = path


def _write_texts(
    folder: Path,
    target: BundleTarget,
    service: Service | None,
    model: str,
    wheel: str,
    summary: list[dict[str, Any]],
    requirements: list[str],
) -> None:
    """Write the bundle's scripts, unit, requirements, README and bundle.json."""
    (folder / "requirements.txt").write_text(
        f"# Pinned for the {target.name} target by edgenn {__version__}.\n"
        + "\n".join(requirements)
        + "\n"
    )
    _write_script(folder / "install.sh", _install_sh(target, wheel))
    _write_script(folder / "run.sh", _run_sh(target, service, model))
    if service:
        (folder / "edgenn.service").write_text(unit_text(service))
    (folder / "README.md").write_text(_readme(target, service, summary, requirements))
    doc = {
        "target": target.name,
        "service": service and service.name,
        "edgenn": __version__,
        "models": summary,
    }
    (folder / "bundle.json").write_text(json.dumps(doc, indent=2) + "\n")


def _write_script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def _system_package_checks(target: BundleTarget) -> str:
    return "".join(
        f"""
# {package} comes from {source}.
if ! dpkg-query -W {package} >/dev/null 2>&1; then
  echo "install.sh: {package} is not installed. Add its repository and run:" >&2
  echo "  sudo apt-get install {package}" >&2
  exit 1
fi
"""
        for package, source in target.system_packages.items()
    )


def _python_check(target: BundleTarget) -> str:
    if target.max_python is None:
        return ""
    major, minor = target.max_python
    return f"""
# {target.runtime} has wheels for Python {major}.{minor} and older only.
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info < ({major}, {minor + 1}) else 1)' || {{
  echo "install.sh: $target needs Python <= {major}.{minor} ({target.runtime}); set PYTHON=python{major}.{minor}" >&2; exit 1; }}
"""


#: install.sh stops in a folder whose path venv's activate script and pip's launchers (which put
#: it in double quotes) would run as shell code.
_FOLDER_CHECK = r"""case "$PWD" in *'$'* | *'`'* | *'"'* | *'\'*)
  echo 'install.sh: the path of this folder holds $, `, " or \; move the bundle to a plain path.' >&2
  exit 1;;
esac
"""


def _install_sh(target: BundleTarget, wheel: str) -> str:
    return f"""#!/usr/bin/env bash
# Install this bundle on the device: a virtual environment in .venv, edgenn from wheels/, and the
# pinned requirements. Safe to run again. Generated by edgenn bundle --target {target.name}.
set -euo pipefail
cd "$(dirname "$0")"
{_FOLDER_CHECK}target={shlex.quote(target.name)}
PYTHON=${{PYTHON:-python3}}
{_system_package_checks(target)}{_python_check(target)}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -m pip install -q --no-deps {shlex.quote("wheels/" + wheel)}
if [ -f wheels/edgenn_tflite_schema.py ]; then
  # TFLite's flatbuffer schema for edgenn's model checks (tflite-runtime does not ship one).
  cp wheels/edgenn_tflite_schema.py "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/"
  .venv/bin/python -m pip install -q "flatbuffers>=23"
fi
.venv/bin/edgenn --version
echo "install.sh: done. Try: ./run.sh path/to/photo.jpg"
"""


def _run_sh(target: BundleTarget, service: Service | None, model: str) -> str:
    command = service.command if service else PREDICT_COMMAND
    delegate = " --delegate edgetpu" if target.edgetpu else ""
    # The file name is data: one single-quoted word, whatever $, `, " or ; it holds.
    line = command.format(model=shlex.quote(f"models/{model}"), delegate=delegate)
    return f"""#!/usr/bin/env bash
# Run the bundled model. Generated by edgenn bundle.
set -euo pipefail
cd "$(dirname "$0")"
{line}
"""


#: Where deploy puts a bundle when the destination names no folder (relative to the home folder).
DEFAULT_REMOTE_PATH = "edgenn-bundle"
#: Who runs, and where lives, the service of a bundle copied by hand: Raspberry Pi OS's user.
DEFAULT_UNIT_USER = "pi"
DEFAULT_RUN_SH = f"/home/{DEFAULT_UNIT_USER}/{DEFAULT_REMOTE_PATH}/run.sh"


def unit_text(service: Service, run_sh: str = DEFAULT_RUN_SH, user: str = DEFAULT_UNIT_USER) -> str:
    """The systemd unit that runs a bundle's ``run.sh`` as ``user``.

    ``edgenn bundle`` writes it for the default place; ``edgenn deploy --run`` writes it again
    for the folder and user it deployed to. run.sh changes to its own folder, so the unit needs
    no WorkingDirectory.

    Args:
        service: The job.
        run_sh: Absolute path of the bundle's run.sh on the device.
        user: Who runs it.

    Returns:
        The unit file's text.

    Raises:
        EdgennError: The path or the user cannot be written into a unit (see
            :mod:`edgenn.shellquote`).
    """
    return f"""# Generated by edgenn bundle. edgenn deploy --run installs it for the folder and user it
# deploys to. By hand: set ExecStart and User to where the bundle lives and who runs it, then
#   sudo cp edgenn.service /etc/systemd/system/ && sudo systemctl daemon-reload
#   sudo systemctl enable --now edgenn
[Unit]
Description=edgenn {service.name}
After=network-online.target

[Service]
Type=simple
User={systemd_user(user)}
ExecStart={systemd_exec_path(run_sh)}
Restart={service.restart}
RestartSec=10

[Install]
WantedBy=multi-user.target
"""


def _readme(
    target: BundleTarget,
    service: Service | None,
    models: list[dict[str, Any]],
    requirements: list[str],
) -> str:
    rows = "\n".join(
        f"| {m['model']} | {m['size_bytes']:,} | {m['check']} | {m['verdict']} |" for m in models
    )
    return f"""# edgenn bundle for {target.name}

1. Copy this folder to the device (or `edgenn deploy THIS_FOLDER pi@raspberrypi.local`, which
   copies it into a new or empty folder and replaces that folder's contents on later deploys).
2. On the device: `./install.sh` (makes `.venv`, installs {", ".join(requirements)} and edgenn).
3. Run: `./run.sh{" photo.jpg" if not service else ""}`{"; as a service: `edgenn deploy ... --run` installs `edgenn.service`, or see its comments" if service else ""}.

| model | bytes | check | verdict |
|---|---|---|---|
{rows}
"""

"""[device] A self-contained folder that installs and runs a model on a Raspberry Pi (or a Coral).

``make_bundle`` writes::

    DIR/
      models/            the model(s) with labels.txt and preprocess.json
      wheels/            a wheel of edgenn itself
      requirements.txt   pinned for the target
      install.sh         makes .venv on the device and installs from the bundle
      run.sh             runs the chosen job (predict by default; camera or tag service)
      edgenn.service     an optional systemd unit (with --service)
      README.md          the steps and the figures of each model
      bundle.json        what was checked, for scripts

``deploy`` copies the folder with the system's rsync over ssh and runs ``install.sh`` there.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from edgenn import __version__, artifact, targets, tflite_model
from edgenn.errors import EdgennError, UsageError
from edgenn.fileio import atomic_directory

BUNDLE_TARGETS = ("pi", "pi-legacy", "coral")
#: Services a bundle can run under systemd.
SERVICES = ("camera", "tag")
#: What each bundle target installs. pi: 64-bit Raspberry Pi OS with LiteRT and numpy 2;
#: pi-legacy: 32-bit Pi OS or Python <= 3.11 set-ups with the last tflite-runtime (numpy < 2);
#: coral: tflite-runtime with Coral's libedgetpu1-std from Coral's apt repository.
REQUIREMENTS = {
    "pi": ["ai-edge-litert==2.3.0", "numpy>=2,<3", "pillow>=10", "click>=8.1"],
    "pi-legacy": ["tflite-runtime==2.14.0", "numpy<2", "pillow>=9.1", "click>=8.1"],
    "coral": ["tflite-runtime==2.14.0", "numpy<2", "pillow>=9.1", "click>=8.1"],
}
#: OpenCV for the camera service: numpy 2 builds on pi, the last numpy-1 series (4.x) elsewhere.
CAMERA_REQUIREMENTS = {
    "pi": ["opencv-python-headless>=4.9"],
    "pi-legacy": ["opencv-python-headless<5"],
    "coral": ["opencv-python-headless<5"],
}
#: The target check each bundle target requires of its models.
TARGET_CHECK = {"pi": "cpu", "pi-legacy": "tflite-runtime-2.14", "coral": "edgetpu"}


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
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "-q",
                "-w",
                tmp,
                str(root),
            ],
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


def _check_model(path: Path, target: str) -> dict[str, Any]:
    model = tflite_model.load(path)
    check_name = TARGET_CHECK[target]
    if target == "coral" and not path.stem.endswith("_edgetpu"):
        raise EdgennError(
            f"{path} is not an Edge TPU-compiled model (expected NAME_edgetpu.tflite); a Coral bundle "
            "runs what edgetpu_compiler wrote.",
            f"Compile it first: edgetpu_compiler -s -o {path.parent} {path} "
            "(or: edgenn convert RUN --target edgetpu, which runs the compiler when installed)",
        )
    report = (
        targets.check(model, check_name)
        if target != "coral"
        else targets.check(model, "edgetpu", compile=False)
    )
    if target == "coral":
        # A compiled model holds one edgetpu-custom-op; its uncompiled parts must still be 8-bit.
        ok = any(op.name == "edgetpu-custom-op" for op in model.ops)
        if not ok:
            raise EdgennError(
                f"{path} has no edgetpu-custom-op: it was not compiled for the Edge TPU."
            )
    elif not report.ok and any(r.status == targets.FAILS for r in report.rows):
        raise EdgennError(
            f"{path} fails the {check_name} check that a {target} bundle needs: {report.verdict}"
        )
    from edgenn.artifact import model_info

    info = model_info(model)
    return {
        "model": path.name,
        "size_bytes": model.size_bytes,
        "check": check_name,
        "verdict": report.verdict,
        "labels": len(info.labels),
        "min_runtime_version": model.min_runtime_version,
        "info": info,
    }


def make_bundle(
    models: list[Path],
    output: Path,
    target: str = "pi",
    service: str | None = None,
    overwrite: bool = False,
) -> BundleResult:
    """Write a deployment bundle.

    Args:
        models: ``.tflite`` files (the first is the one ``run.sh`` uses).
        output: Folder to create.
        target: ``pi``, ``pi-legacy`` or ``coral``.
        service: ``camera`` or ``tag`` for a systemd unit; None for none.
        overwrite: Replace an existing folder.

    Returns:
        The result.

    Raises:
        UsageError: Bad target or service, or no model.
        EdgennError: A model fails its target's check; nothing is written.
    """
    if target not in BUNDLE_TARGETS:
        raise UsageError(
            f"Unknown --target {target!r}; expected one of {', '.join(BUNDLE_TARGETS)}."
        )
    if service is not None and service not in SERVICES:
        raise UsageError(f"Unknown --service {service!r}; expected one of {', '.join(SERVICES)}.")
    if not models:
        raise UsageError("Give at least one model.")
    checked = [_check_model(Path(m), target) for m in models]
    requirements = list(REQUIREMENTS[target])
    if service == "camera":
        requirements += CAMERA_REQUIREMENTS[target]
    with atomic_directory(Path(output), overwrite=overwrite) as tmp:
        wheel = build_wheel(tmp / "wheels")
        if target in ("pi-legacy", "coral"):
            _copy_schema(tmp / "wheels")
        (tmp / "models").mkdir()
        for path in models:
            shutil.copy(path, tmp / "models" / Path(path).name)
        first = checked[0]["info"]
        artifact.write_companions(tmp / "models", first.labels, first.spec)
        (tmp / "requirements.txt").write_text(
            f"# Pinned for the {target} target by edgenn {__version__}.\n"
            + "\n".join(requirements)
            + "\n"
        )
        _write_script(tmp / "install.sh", _install_sh(target, wheel.name))
        _write_script(tmp / "run.sh", _run_sh(Path(models[0]).name, service))
        if service:
            (tmp / "edgenn.service").write_text(_unit(service))
        summary = [{k: v for k, v in c.items() if k != "info"} for c in checked]
        (tmp / "README.md").write_text(_readme(target, service, summary, requirements))
        (tmp / "bundle.json").write_text(
            json.dumps(
                {"target": target, "service": service, "edgenn": __version__, "models": summary},
                indent=2,
            )
            + "\n"
        )
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
    return BundleResult(str(output), target, service, summary, requirements, wheel.name, files)


def _write_script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def _install_sh(target: str, wheel: str) -> str:
    coral = (
        """
# The Edge TPU runtime comes from Coral's apt repository (https://coral.ai/software/#debian-packages).
if ! dpkg-query -W libedgetpu1-std >/dev/null 2>&1; then
  echo "install.sh: libedgetpu1-std is not installed. Add Coral's repository and run:" >&2
  echo "  sudo apt-get install libedgetpu1-std" >&2
  exit 1
fi
"""
        if target == "coral"
        else ""
    )
    python_check = (
        """
# tflite-runtime 2.14 has wheels for Python 3.11 and older only.
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info < (3, 12) else 1)' || {
  echo "install.sh: $target needs Python <= 3.11 (tflite-runtime 2.14); set PYTHON=python3.11" >&2; exit 1; }
"""
        if target in ("pi-legacy", "coral")
        else ""
    )
    return f"""#!/usr/bin/env bash
# Install this bundle on the device: a virtual environment in .venv, edgenn from wheels/, and the
# pinned requirements. Safe to run again. Generated by edgenn bundle --target {target}.
set -euo pipefail
cd "$(dirname "$0")"
target={target}
PYTHON=${{PYTHON:-python3}}
{coral}{python_check}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -m pip install -q --no-deps wheels/{wheel}
if [ -f wheels/edgenn_tflite_schema.py ]; then
  # TFLite's flatbuffer schema for edgenn's model checks (tflite-runtime does not ship one).
  cp wheels/edgenn_tflite_schema.py "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/"
  .venv/bin/python -m pip install -q "flatbuffers>=23"
fi
.venv/bin/edgenn --version
echo "install.sh: done. Try: ./run.sh path/to/photo.jpg"
"""


def _run_sh(model: str, service: str | None) -> str:
    delegate = " --delegate edgetpu" if model.endswith("_edgetpu.tflite") else ""
    job = {
        None: f'exec .venv/bin/edgenn predict -m "models/{model}"{delegate} "$@"',
        "camera": f'exec .venv/bin/edgenn camera -m "models/{model}"{delegate} --source "${{CAMERA:-0}}" --headless --serve "${{SERVE:-127.0.0.1:8000}}" "$@"',
        "tag": f'exec .venv/bin/edgenn tag -m "models/{model}" "${{PHOTOS:-$HOME/Pictures}}" --recursive "$@"',
    }[service]
    return f"""#!/usr/bin/env bash
# Run the bundled model. Generated by edgenn bundle.
set -euo pipefail
cd "$(dirname "$0")"
{job}
"""


def _unit(service: str) -> str:
    # A camera service should come back after the camera does; a tagger only after a failure.
    restart = "always" if service == "camera" else "on-failure"
    return f"""# Generated by edgenn bundle. Install with:
#   sudo cp edgenn.service /etc/systemd/system/ && sudo systemctl enable --now edgenn
# (edit WorkingDirectory and User to where the bundle lives and who runs it)
[Unit]
Description=edgenn {service}
After=network-online.target

[Service]
Type=simple
User=pi
WorkingDirectory=/home/pi/edgenn-bundle
ExecStart=/home/pi/edgenn-bundle/run.sh
Restart={restart}
RestartSec=10

[Install]
WantedBy=multi-user.target
"""


def _readme(
    target: str, service: str | None, models: list[dict[str, Any]], requirements: list[str]
) -> str:
    rows = "\n".join(
        f"| {m['model']} | {m['size_bytes']:,} | {m['check']} | {m['verdict']} |" for m in models
    )
    return f"""# edgenn bundle for {target}

1. Copy this folder to the device (or `edgenn deploy THIS_FOLDER pi@raspberrypi.local`).
2. On the device: `./install.sh` (makes `.venv`, installs {", ".join(requirements)} and edgenn).
3. Run: `./run.sh{" photo.jpg" if not service else ""}`{"; as a service: see `edgenn.service`" if service else ""}.

| model | bytes | check | verdict |
|---|---|---|---|
{rows}
"""


@dataclasses.dataclass
class DeployResult:
    """What :func:`deploy` did."""

    destination: str
    copied: bool
    installed: bool
    started: bool
    output: str


def deploy(
    bundle: Path, destination: str, run: bool = False, ssh_options: list[str] | None = None
) -> DeployResult:
    """Copy a bundle to ``USER@HOST[:PATH]`` with rsync over ssh and run ``install.sh`` there.

    Args:
        bundle: The bundle folder.
        destination: ``user@host`` or ``user@host:path`` (default path ``edgenn-bundle``).
        run: Also start the service (systemd unit) or ``run.sh --help`` when there is none.
        ssh_options: Extra ``-o``-style options / arguments passed to ssh (e.g. ``-p 2222``).

    Returns:
        The result.

    Raises:
        EdgennError: ssh or rsync failed (one line: unreachable, refused, ...).
    """
    bundle = Path(bundle)
    if not (bundle / "install.sh").is_file():
        raise EdgennError(
            f"{bundle} is not an edgenn bundle (no install.sh).", "Make one with: edgenn bundle"
        )
    host, _, path = destination.partition(":")
    if "@" not in host or not host.split("@")[1]:
        raise UsageError(f"Destination {destination!r} should be USER@HOST[:PATH].")
    path = path or "edgenn-bundle"
    for tool in ("ssh", "rsync"):
        if shutil.which(tool) is None:
            raise EdgennError(
                f"{tool} is not installed.",
                f"Install it: sudo apt-get install {'openssh-client' if tool == 'ssh' else 'rsync'}",
            )
    ssh = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", *(ssh_options or [])]
    _run([*ssh, host, f"mkdir -p {shlex.quote(path)}"], "creating the destination folder")
    _run(
        [
            "rsync",
            "-a",
            "--delete",
            "--exclude",
            ".venv",
            "-e",
            shlex.join(ssh),
            f"{bundle}/",
            f"{host}:{path}/",
        ],
        "copying the bundle",
    )
    out = _run([*ssh, host, f"cd {shlex.quote(path)} && ./install.sh"], "running install.sh")
    started = False
    if run:
        if (bundle / "edgenn.service").is_file():
            _run(
                [
                    *ssh,
                    host,
                    f"cd {path} && sudo cp edgenn.service /etc/systemd/system/ && sudo systemctl enable --now edgenn",
                ],
                "starting the service",
            )
        else:
            out += _run([*ssh, host, f"cd {path} && .venv/bin/edgenn --version"], "running edgenn")
        started = True
    return DeployResult(destination, True, True, started, out)


def _run(cmd: list[str], what: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit code {proc.returncode}"
        if (
            "Could not resolve hostname" in proc.stderr
            or "No route to host" in proc.stderr
            or "Connection refused" in proc.stderr
            or "timed out" in proc.stderr
        ):
            reason = "host unreachable: " + reason
        elif "Permission denied" in proc.stderr:
            reason = "authentication refused: " + reason
        raise EdgennError(f"Deploy failed while {what}: {reason}")
    return proc.stdout

"""edgenn bundle and deploy: bundles that install into fresh environments, deployed over real ssh.

Everything stays on this machine: the bundles install into new virtual environments (packages
from the registry, edgenn from the bundle's own wheel), and deploy talks to an OpenSSH server
that the test starts on 127.0.0.1 with throw-away keys.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgenn.bundle import BUNDLE_TARGETS, DEFAULT_TARGET, SERVICES, make_bundle
from edgenn.cli import main
from edgenn.errors import EdgennError, UsageError

from .conftest import REPO, SAMPLES

pytestmark = pytest.mark.slow

INT8 = REPO / "tests" / "data" / "tiny_cnn_int8.tflite"
PHOTO = sorted((SAMPLES / "Bag").glob("*.jpg"))[0]


def _host_prediction() -> str:
    result = CliRunner().invoke(main, ["predict", "-m", str(INT8), str(PHOTO), "-k", "3", "--json"])
    return [t["label"] for t in json.loads(result.stdout)["top_k"]]


@pytest.mark.parametrize(
    "target, runtime", [("pi", "ai-edge-litert"), ("pi-legacy", "tflite-runtime")]
)
def test_bundle_installs_in_a_fresh_environment_and_predicts(tmp_path, target, runtime):
    out = tmp_path / f"bundle-{target}"
    result = make_bundle([INT8], out, target=target)
    assert {"install.sh", "run.sh", "requirements.txt", "README.md", "bundle.json"} <= set(
        result.files
    )
    # tflite-runtime ships no flatbuffer schema: those bundles carry the host's copy.
    carried = "wheels/edgenn_tflite_schema.py" in result.files
    assert carried == BUNDLE_TARGETS[target].carries_schema == (runtime == "tflite-runtime")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
    install = subprocess.run(
        ["bash", str(out / "install.sh")], capture_output=True, text=True, env=env
    )
    assert install.returncode == 0, install.stderr[-2000:]
    python = out / ".venv" / "bin" / "python"
    listed = subprocess.run(
        [str(python), "-m", "pip", "list"], capture_output=True, text=True
    ).stdout
    assert runtime in listed and "tensorflow" not in listed.lower()
    numpy_major = (
        subprocess.run(
            [str(python), "-c", "import numpy; print(numpy.__version__)"],
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .split(".")[0]
    )
    assert numpy_major == ("2" if target == "pi" else "1")
    run = subprocess.run(
        ["bash", str(out / "run.sh"), str(PHOTO), "-k", "3", "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert [t["label"] for t in json.loads(run.stdout)["top_k"]] == _host_prediction()


def test_bundle_refuses_models_that_fail_the_target_check(tmp_path, face_detection):
    with pytest.raises(EdgennError, match="not an Edge TPU-compiled model"):
        make_bundle([INT8], tmp_path / "coral", target="coral")
    with pytest.raises(UsageError, match="Unknown --target"):
        make_bundle([INT8], tmp_path / "x", target="jetson")
    assert not (tmp_path / "coral").exists()


@pytest.mark.parametrize("service", ["tag", "camera"])
def test_bundle_service_unit(tmp_path, service):
    result = make_bundle([INT8], tmp_path / "svc", target="pi", service=service)
    unit = (tmp_path / "svc" / "edgenn.service").read_text()
    assert "ExecStart=" in unit and "WantedBy=multi-user.target" in unit
    assert f"edgenn {service}" in (tmp_path / "svc" / "run.sh").read_text()
    assert result.service == service
    assert any(r.startswith("opencv-python-headless") for r in result.requirements) == (
        service == "camera"
    )


def test_cli_choices_are_the_library_registries():
    params = {p.name: p for p in main.commands["bundle"].params}
    assert list(params["target"].type.choices) == list(BUNDLE_TARGETS)
    assert params["target"].default == DEFAULT_TARGET
    assert list(params["service"].type.choices) == list(SERVICES) == ["camera", "tag"]


def test_camera_service_bundle_end_to_end(tmp_path):
    """edgenn bundle --service camera writes a unit whose run.sh really classifies frames."""
    out = tmp_path / "bundle-camera"
    made = CliRunner().invoke(main, ["bundle", str(INT8), "-o", str(out), "--service", "camera"])
    assert made.exit_code == 0, made.output
    assert f"{out}: bundle for pi, camera service" in made.stdout
    doc = json.loads((out / "bundle.json").read_text())
    assert doc["target"] == "pi" and doc["service"] == "camera"
    unit = (out / "edgenn.service").read_text().splitlines()
    for line in ("Description=edgenn camera", "ExecStart=/home/pi/edgenn-bundle/run.sh"):
        assert line in unit
    assert "Restart=always" in unit and "WantedBy=multi-user.target" in unit
    pins = [r for r in (out / "requirements.txt").read_text().splitlines() if r[:1] != "#"]
    assert pins == [*BUNDLE_TARGETS["pi"].requirements, "opencv-python-headless>=4.9"]
    # run.sh as systemd runs it, with this environment's edgenn in place of install.sh's .venv:
    # three sample photos through the camera pipeline, the web view on a free local port.
    (out / ".venv" / "bin").mkdir(parents=True)
    (out / ".venv" / "bin" / "edgenn").symlink_to(Path(sys.executable).parent / "edgenn")
    env = {**os.environ, "CAMERA": str(PHOTO.parent), "SERVE": f"127.0.0.1:{_free_port()}"}
    run = subprocess.run(
        ["bash", str(out / "run.sh"), "--every-frame", "--max-frames", "3"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    frames = [json.loads(line) for line in run.stdout.splitlines()]
    assert [f["frame"] for f in frames] == [0, 1, 2]
    assert [t["label"] for t in frames[0]["top_k"]] == _host_prediction()
    assert "web view at http://127.0.0.1:" in run.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sshd(tmp_path):
    """A real OpenSSH server on 127.0.0.1 with a throw-away host key and user key."""
    sshd_bin = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd_bin).exists() or os.geteuid() != 0:
        pytest.fail(
            "needs Debian's openssh-server and root (scripts/setup.sh test installs it; CI is root)"
        )
    keys = tmp_path / "keys"
    keys.mkdir()
    for name in ("host", "user"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True
        )
    shutil.copy(keys / "user.pub", keys / "authorized_keys")
    port = _free_port()
    config = keys / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host'}\n"
        f"AuthorizedKeysFile {keys / 'authorized_keys'}\nPasswordAuthentication no\n"
        f"KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
        f"PidFile {keys / 'sshd.pid'}\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    options = [
        "-p",
        str(port),
        "-i",
        str(keys / "user"),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
    ]
    yield port, options, keys
    proc.terminate()
    proc.wait(timeout=10)


def test_deploy_over_real_ssh(tmp_path, sshd):
    port, options, keys = sshd
    bundle = tmp_path / "bundle"
    make_bundle([INT8], bundle, target="pi")
    remote = tmp_path / "remote" / "app"
    args = ["deploy", str(bundle), f"root@127.0.0.1:{remote}", "--run"] + [
        f"--ssh-option={o}" for o in options
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "deployed to root@127.0.0.1" in result.stdout and "edgenn, version" in result.stdout
    run = subprocess.run(
        ["bash", str(remote / "run.sh"), str(PHOTO), "--json"], capture_output=True, text=True
    )
    assert json.loads(run.stdout)["top_k"][0]["label"] == _host_prediction()[0]


def test_deploy_errors_are_one_line(tmp_path, sshd):
    port, options, keys = sshd
    bundle = tmp_path / "bundle"
    make_bundle([INT8], bundle, target="pi")
    closed = _free_port()
    unreachable = [o if o != str(port) else str(closed) for o in options]
    result = CliRunner().invoke(
        main,
        ["deploy", str(bundle), "root@127.0.0.1:/tmp/x"]
        + [f"--ssh-option={o}" for o in unreachable],
    )
    assert result.exit_code == 1 and "host unreachable" in result.output
    assert len(result.output.strip().splitlines()) == 1
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "stranger")], check=True
    )
    stranger = [str(keys / "stranger") if o == str(keys / "user") else o for o in options]
    result = CliRunner().invoke(
        main,
        ["deploy", str(bundle), "root@127.0.0.1:/tmp/x"] + [f"--ssh-option={o}" for o in stranger],
    )
    assert result.exit_code == 1 and "authentication refused" in result.output
    result = CliRunner().invoke(main, ["deploy", str(bundle), "no-user-host"])
    assert result.exit_code == 2 and "USER@HOST" in result.output

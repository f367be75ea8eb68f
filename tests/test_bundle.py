"""edgenn bundle and deploy: bundles that install into fresh environments, deployed over real ssh.

Everything stays on this machine: the bundles install into new virtual environments (packages
from the registry, edgenn from the bundle's own wheel), and deploy talks to an OpenSSH server
that the test starts on 127.0.0.1 with throw-away keys.
"""

from __future__ import annotations

import json
import os
import shlex
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
    # The suggested command is pasted into a shell: the paths in it are quoted.
    odd = tmp_path / "my models $(x)" / INT8.name
    odd.parent.mkdir()
    shutil.copy(INT8, odd)
    with pytest.raises(EdgennError) as refused:
        make_bundle([odd], tmp_path / "coral", target="coral")
    assert f"edgetpu_compiler -s -o {shlex.quote(str(odd.parent))} {shlex.quote(str(odd))}" in str(
        refused.value
    )
    with pytest.raises(UsageError, match="same file name"):
        make_bundle([INT8, odd], tmp_path / "twins")
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


#: A model file name that runs commands if it reaches a shell unquoted, and breaks a script that
#: puts it in double quotes.
HOSTILE_NAME = "cat $(touch PWNED1) `touch PWNED2` \"q\" 's' ${HOME} %n;x.tflite"


@pytest.mark.parametrize("service", [None, "tag"])
def test_model_file_name_never_runs_as_a_command(tmp_path, service):
    """A model named like a shell command: run.sh runs no part of the name and still finds the
    model (the default predict job, and the tag service's job on a photo folder)."""
    model = tmp_path / "in" / HOSTILE_NAME
    model.parent.mkdir()
    shutil.copy(INT8, model)
    out = tmp_path / "bundle"
    make_bundle([model], out, service=service)
    assert (out / "models" / HOSTILE_NAME).is_file()
    # This environment's edgenn in place of install.sh's .venv.
    (out / ".venv" / "bin").mkdir(parents=True)
    (out / ".venv" / "bin" / "edgenn").symlink_to(Path(sys.executable).parent / "edgenn")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
    if service is None:
        args = [str(PHOTO), "--json"]
    else:
        photos = tmp_path / "photos"
        photos.mkdir()
        shutil.copy(PHOTO, photos / PHOTO.name)
        env["PHOTOS"] = str(photos)
        args = ["--json", "--dry-run"]
    run = subprocess.run(
        ["bash", str(out / "run.sh"), *args], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert not list(tmp_path.rglob("PWNED*")), "a command in the model's name ran"
    assert run.returncode == 0, run.stderr[-2000:]
    doc = json.loads(run.stdout)
    if service is None:
        assert [t["label"] for t in doc["top_k"]] == _host_prediction()
    else:
        assert doc["photos"] == 1, doc
    # The bundle copied into a folder named like a command: venv's and pip's scripts would run
    # the name, so install.sh stops before making them.
    moved = tmp_path / "copy $(touch PWNED3)"
    shutil.copytree(out, moved, symlinks=True)
    install = subprocess.run(
        ["bash", str(moved / "install.sh")], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert install.returncode == 1 and "move the bundle to a plain path" in install.stderr
    assert not (moved / ".venv" / "bin" / "python").exists()
    assert not list(tmp_path.rglob("PWNED*"))


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("needs Debian's systemd package for systemd-analyze (scripts/setup.sh test)")
    return tool


def _verify_unit(unit: Path) -> subprocess.CompletedProcess:
    """systemd's own parser on a unit: it fails when ExecStart names no executable file."""
    return subprocess.run(
        [_systemd_analyze(), "verify", "--man=no", str(unit)], capture_output=True, text=True
    )


def test_unit_quotes_the_run_script_path_for_systemd(tmp_path):
    """A bundle folder whose path has spaces, %, $ and ;: systemd reads the unit's ExecStart back
    as exactly the run.sh in it; values systemd cannot hold (in User=, or a quote or backslash in
    the program's path, which systemd refuses) are refused with the reason."""
    from edgenn.bundle import unit_text

    folder = tmp_path / "my app %n $HOME ${IFS} ;x"
    folder.mkdir()
    run_sh = folder / "run.sh"
    run_sh.write_text("#!/bin/sh\n")
    run_sh.chmod(0o755)
    unit = tmp_path / "edgenn.service"
    unit.write_text(unit_text(SERVICES["camera"], str(run_sh), "root"))
    verified = _verify_unit(unit)
    assert verified.returncode == 0, verified.stderr
    assert "User=root" in unit.read_text().splitlines()
    # The same check fails on a path that is not there: the verification reads ExecStart.
    unit.write_text(unit_text(SERVICES["camera"], str(folder / "gone.sh"), "root"))
    assert _verify_unit(unit).returncode != 0
    for run_path, user, message in [
        (str(run_sh), "pi\nExecStartPre=/bin/touch /tmp/x", "User"),
        (str(run_sh), "-pi", "User"),
        (str(run_sh), "pi%n", "User"),
        ("relative/run.sh", "pi", "absolute"),
        (f"{folder}/new\nline/run.sh", "pi", "control character"),
        (f"{tmp_path}/o'brien/run.sh", "pi", "quote or a backslash"),
        (f'{tmp_path}/"q"/run.sh', "pi", "quote or a backslash"),
        (f"{tmp_path}/back\\slash/run.sh", "pi", "quote or a backslash"),
    ]:
        with pytest.raises(EdgennError, match=message):
            unit_text(SERVICES["tag"], run_path, user)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sshd(tmp_path):
    """A real OpenSSH server on 127.0.0.1 with a throw-away host key and user key.

    The container has no running systemd, so this stand-in device's ``sudo`` (first on the
    session's PATH) only records each command it is given in ``keys/sudo.log``.
    """
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
    (keys / "bin").mkdir()
    sudo = keys / "bin" / "sudo"
    sudo.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {shlex.quote(str(keys / "sudo.log"))}\n')
    sudo.chmod(0o755)
    port = _free_port()
    config = keys / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host'}\n"
        f"AuthorizedKeysFile {keys / 'authorized_keys'}\nPasswordAuthentication no\n"
        f"KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
        f"PidFile {keys / 'sshd.pid'}\nSetEnv PATH={keys / 'bin'}:/usr/local/bin:/usr/bin:/bin\n"
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


@pytest.fixture(scope="module")
def pi_bundle(tmp_path_factory) -> Path:
    """A pi bundle in a folder whose name rsync would take for a host (``:``) if given as is."""
    bundle = tmp_path_factory.mktemp("bundles") / "my bundle:v1"
    make_bundle([INT8], bundle, target="pi")
    return bundle


def _deploy(bundle: Path, destination: str, options: list[str], *extra: str):
    args = ["deploy", str(bundle), destination, *extra] + [f"--ssh-option={o}" for o in options]
    return CliRunner().invoke(main, args)


def test_deploy_over_real_ssh(tmp_path, sshd, pi_bundle):
    """A destination path that is a shell command if unquoted, deployed to with --run twice:
    nothing in it runs on the device, the bundle works there, and the second deploy (a service
    bundle) replaces the folder's contents but keeps .venv, and installs a unit for the real path."""
    port, options, keys = sshd
    pwned = tmp_path / "pwned"
    remote = Path(f"{tmp_path}/remote/app dir;touch {pwned}&&touch {pwned}2|x")
    result = _deploy(pi_bundle, f"root@127.0.0.1:{remote}", options, "--run")
    assert not pwned.exists() and not Path(f"{pwned}2").exists(), "the path ran as a command"
    assert result.exit_code == 0, result.output
    assert "deployed to root@127.0.0.1" in result.stdout and "edgenn, version" in result.stdout
    assert (remote / ".edgenn-deploy").is_file() and (remote / "run.sh").is_file()
    run = subprocess.run(
        ["bash", str(remote / "run.sh"), str(PHOTO), "--json"], capture_output=True, text=True
    )
    assert json.loads(run.stdout)["top_k"][0]["label"] == _host_prediction()[0]

    # Deploy owns the folder: a second deploy makes it the new bundle (stray files go), keeps
    # the device's .venv, and --run installs a unit for the folder and user it deployed to.
    (remote / "stray.txt").write_text("not in the bundle")
    service_bundle = tmp_path / "bundle-tag"
    make_bundle([INT8], service_bundle, target="pi", service="tag")
    result = _deploy(service_bundle, f"root@127.0.0.1:{remote}", options, "--run", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["started"] is True and doc["destination"] == f"root@127.0.0.1:{remote}"
    assert not (remote / "stray.txt").exists() and (remote / ".venv" / "bin" / "edgenn").exists()
    assert (remote / ".edgenn-deploy").is_file() and not pwned.exists()
    assert (keys / "sudo.log").read_text().splitlines() == [
        "-n cp edgenn.service /etc/systemd/system/edgenn.service",
        "-n systemctl daemon-reload",
        "-n systemctl enable edgenn",
        "-n systemctl restart edgenn",
    ]
    unit = (remote / "edgenn.service").read_text()
    assert "User=root" in unit.splitlines() and "/home/pi" not in unit
    verified = _verify_unit(remote / "edgenn.service")
    assert verified.returncode == 0, verified.stderr


def test_deploy_refuses_a_folder_it_did_not_make(tmp_path, sshd, pi_bundle):
    """rsync --delete would empty it: a folder with files and no marker, or a file, is refused
    before anything is copied, in one line that says how to go on."""
    port, options, keys = sshd
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(PHOTO.read_bytes())
    result = _deploy(pi_bundle, f"root@127.0.0.1:{photos}", options)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "not empty" in lines[0] and ".edgenn-deploy" in lines[0], lines
    assert sorted(p.name for p in photos.iterdir()) == ["holiday.jpg"]
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    result = _deploy(pi_bundle, f"root@127.0.0.1:{afile}", options)
    assert result.exit_code == 1 and "not a folder" in result.output, result.output
    assert afile.read_text() == "mine"


@pytest.mark.parametrize(
    "destination, message",
    [
        ("-V@x", "begins with '-'"),
        ("root@-oProxyCommand=touch${IFS}x", "begins with '-'"),
        ("root@host:-rf", "begins with '-'"),
        ("root@host:apps/x\ny", "control character"),
        ("root@host:apps/x\x00y", "control character"),
        ("root@ho st:apps", "USER@HOST"),
        ("root@fe80::1:apps", "[fe80::1]"),
        ("root@host:~other/apps", "~"),
        # The form in the report: venv and pip would run it from their own scripts even when
        # deploy quotes it, so it is refused.
        ("pi@host:/x;touch${IFS}/tmp/p", "double quotes"),
        ("pi@host:apps/`touch x`", "double quotes"),
        ("pi@host:~/$(touch x)", "double quotes"),
        ("pi@host:~/-rf", "begins with '-'"),
        ("no-user-host", "USER@HOST"),
    ],
)
def test_deploy_refuses_a_destination_that_could_be_read_as_an_option(
    tmp_path, destination, message
):
    """Checked before any ssh runs (the bundle folder here is not even one)."""
    result = CliRunner().invoke(main, ["deploy", "--", str(tmp_path), destination])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and message in result.output
    assert "USER@HOST[:PATH]" in result.output


def test_deploy_destination_forms():
    from edgenn.bundle_deploy import DEFAULT_REMOTE_PATH, parse_destination

    dest = parse_destination("pi@raspberrypi.local")
    assert (dest.user, dest.host, dest.path) == ("pi", "raspberrypi.local", DEFAULT_REMOTE_PATH)
    dest = parse_destination("pi@[fe80::1%wlan0]:~/apps/cam")
    assert (dest.host, dest.path) == ("fe80::1%wlan0", "apps/cam")
    assert dest.ssh_host == "pi@fe80::1%wlan0" and dest.rsync_host == "pi@[fe80::1%wlan0]"
    assert parse_destination("pi@10.0.0.7:/srv/app dir").path == "/srv/app dir"
    result = CliRunner().invoke(main, ["deploy", "x", "pi@host", "--ssh-option=-p\n22"])
    assert result.exit_code == 2 and "control character" in result.output


def test_deploy_errors_are_one_line(tmp_path, sshd, pi_bundle):
    port, options, keys = sshd
    bundle = pi_bundle
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

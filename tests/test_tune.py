"""edgenn tune: real studies on Fashion-MNIST slices, killed and resumed, shared over PostgreSQL.

The studies run as real ``edgenn tune`` processes: one is killed with SIGKILL in the middle of a
trial and run again with the same command; two workers share a study in a throw-away PostgreSQL
cluster (Debian's postgresql, started by a fixture on a loopback port) and one of them is killed.
Models are tiny MLPs on a few hundred images, so each trial takes seconds.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgenn.errors import EdgennError, UsageError
from edgenn.host.tuning.objectives import Constraints, Measures, parse_bytes
from edgenn.host.tuning.space import build_space

#: ``edgenn tune`` in a fresh interpreter.
TUNE = [sys.executable, "-m", "edgenn", "tune"]
STUDY = "edgenn-tune"
POSTGRES_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
#: Tiny MLPs on 300 images: a trial is seconds of training.
SPACE = {"model": "mlp", "layers": 1, "hidden": {"choices": [16, 32]}, "epochs": 2}


def _fast(fmnist_dir: Path, space: Path) -> list[str]:
    return ["--data-dir", str(fmnist_dir), "--limit", "300", "--space", str(space)]


def _space_file(folder: Path, doc: dict) -> Path:
    path = folder / "space.json"
    path.write_text(json.dumps(doc))
    return path


def _cli():
    from edgenn.cli import main

    return main


def _study(url: str, name: str = STUDY):
    import optuna

    from edgenn.host.tuning.study import driver_url

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.load_study(study_name=name, storage=driver_url(url))


def _rows(folder: Path) -> list[dict]:
    with open(folder / "trials.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _wait_and_kill(
    proc: subprocess.Popen, url: str, ready, name: str = STUDY, limit: float = 900
) -> list:
    """SIGKILL ``proc`` once ``ready(trials)`` holds; returns the trials seen at that moment."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if proc.poll() is not None:
            pytest.fail(f"edgenn tune ended before it could be killed:\n{proc.stderr.read()}")
        try:
            trials = _study(url, name).get_trials(deepcopy=True)
        except Exception:  # noqa: BLE001 - the study may not exist yet
            continue
        if ready(trials):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return trials
    proc.kill()
    pytest.fail("edgenn tune never reached the state to kill it in")


def _finished(trials) -> list:
    return [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]


# --- the pieces that need neither TensorFlow nor Optuna -----------------------------------------


def test_sizes_are_read_as_microcontroller_bytes():
    assert parse_bytes("64KB") == 65536
    assert parse_bytes("64k") == 65536
    assert parse_bytes("0.5MB") == 524288
    assert parse_bytes("65536") == 65536
    with pytest.raises(UsageError, match="received '64 parsecs'"):
        parse_bytes("64 parsecs")


def test_constraints_name_the_limit_that_is_broken():
    limits = Constraints(max_size=65536, max_arena=49152, max_latency_ms=2.0)
    assert limits.violation(Measures(None, 60000, 40000, 1.0)) is None
    assert "size 70,000 B > --max-size 65,536 B" in limits.violation(Measures(None, 70000, 1, 1))
    assert "--max-arena" in limits.violation(Measures(None, 100, 50000, 1.0))
    assert "--max-latency-ms 2" in limits.violation(Measures(None, 100, 100, 2.5))
    with pytest.raises(UsageError, match="--max-size must be positive"):
        Constraints(max_size=0).check()


def test_the_space_refuses_unknown_keys_and_impossible_ranges():
    with pytest.raises(EdgennError) as info:
        build_space({"filterz": [8, 16]}, {}, "space.json")
    message = str(info.value)
    assert "'filterz'" in message and "space.json" in message and "filters" in message
    with pytest.raises(EdgennError, match="'head'.*'pyramid'"):
        build_space({"head": {"choices": ["gap", "pyramid"]}}, {}, "space.json")
    with pytest.raises(EdgennError, match="low <= high"):
        build_space({"learning_rate": {"low": 0.1, "high": 0.01}}, {}, "space.json")
    with pytest.raises(EdgennError, match="can only be fixed"):
        build_space({"patience": {"choices": [1, 2]}}, {}, "space.json")


def test_options_given_fix_their_part_of_the_space():
    space = build_space(SPACE, {"epochs": 3, "limit": 500, "augment": True}, "space.json")
    assert space.dims["epochs"].value == 3  # the command line beats the file
    assert space.dims["model"].value == "mlp" and space.dims["hidden"].choices == (16, 32)
    assert space.dims["augment"].kind == "fixed" and space.fixed["limit"] == 500
    assert space.dims["filters"].kind == "int"  # not narrowed: still searched
    smallest = space.smallest()
    assert smallest == [{**smallest[0], "model": "mlp", "hidden": [16]}]


# --- real studies -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def killed_and_resumed(fmnist_dir, tmp_path_factory):
    """A SQLite study of 3 trials whose first run is SIGKILLed while trial 1 or later trains,
    then run again with the same command."""
    root = tmp_path_factory.mktemp("tune")
    out = root / "study"
    args = [
        *TUNE,
        *_fast(fmnist_dir, _space_file(root, SPACE)),
        "--target",
        "micro",
        "--trials",
        "3",
        "-o",
        str(out),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"sqlite:///{out / 'study.db'}"

    def training_after_one_finished(trials) -> bool:
        running = [t for t in trials if t.state.name == "RUNNING"]
        return bool(_finished(trials)) and any(
            t.user_attrs.get("phase") == "train" for t in running
        )

    before = _wait_and_kill(proc, url, training_after_one_finished)
    again = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    assert again.returncode == 0, again.stderr[-3000:]
    return {"out": out, "url": url, "args": args, "before": before, "again": again}


@pytest.mark.tf
@pytest.mark.slow
def test_a_killed_study_resumes_without_losing_or_repeating_a_trial(killed_and_resumed):
    out, url = killed_and_resumed["out"], killed_and_resumed["url"]
    before = {t.number: t for t in _finished(killed_and_resumed["before"])}
    killed = [t for t in killed_and_resumed["before"] if t.state.name == "RUNNING"]
    trials = _study(url).get_trials(deepcopy=False)
    finished = _finished(trials)
    assert len(finished) == 3  # --trials is the study's total
    for number, old in before.items():  # finished before the kill: kept as they were
        now = trials[number]
        assert now.state == old.state and now.values == old.values
        assert now.datetime_complete == old.datetime_complete
    # The killed trial failed; its parameters ran once more, as a new trial that says so.
    (victim,) = killed
    assert trials[victim.number].state.name == "FAIL"
    retries = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retries) == 1 and retries[0].params == victim.params
    assert retries[0].state.name in ("COMPLETE", "PRUNED")
    assert "stopped mid-way" in killed_and_resumed["again"].stderr
    # Run directories: one per COMPLETE trial, nothing left of the killed one.
    complete = sorted(t.number for t in trials if t.state.name == "COMPLETE")
    assert sorted(p.name for p in (out / "trials").iterdir()) == [f"{n:04d}" for n in complete]
    rows = {int(r["number"]): r for r in _rows(out)}
    assert set(rows) == {t.number for t in trials}
    assert rows[victim.number]["state"] == "FAIL"
    assert f"re-run as trial {retries[0].number}" in rows[victim.number]["reason"]
    assert all(r["worker"].rsplit(":", 1)[1].isdigit() for r in rows.values())


@pytest.mark.tf
@pytest.mark.slow
def test_every_trial_is_a_run_directory_the_other_commands_take(killed_and_resumed, tmp_path):
    out = killed_and_resumed["out"]
    rows = {int(r["number"]): r for r in _rows(out) if r["state"] == "COMPLETE"}
    best = json.loads((out / "best.json").read_text())
    chosen = max(rows.values(), key=lambda r: float(r["val_accuracy"]))
    assert (out / "best").resolve() == (out / "trials" / f"{int(chosen['number']):04d}").resolve()
    metrics = json.loads((out / "best" / "metrics.json").read_text())
    assert metrics["options"] == best  # best.json is the chosen run's own options
    model = out / "best" / "model_int8.tflite"
    assert model.stat().st_size == int(chosen["size_bytes"])
    result = CliRunner().invoke(
        _cli(), ["firmware", str(model), "-o", str(tmp_path / "fw"), "--name", "tuned"]
    )
    assert result.exit_code == 0, result.output
    # The arena tune recorded is the one the firmware allocates.
    assert f"RAM {int(chosen['arena_bytes']):,} B" in result.output
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.tf
@pytest.mark.slow
def test_best_json_replays_with_train_config(killed_and_resumed, tmp_path):
    out = killed_and_resumed["out"]
    run = tmp_path / "replay"
    result = CliRunner().invoke(
        _cli(), ["train", "--config", str(out / "best.json"), "-o", str(run), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    replayed = json.loads((run / "metrics.json").read_text())
    assert replayed["options"] == json.loads((out / "best.json").read_text())
    original = json.loads((out / "best" / "metrics.json").read_text())
    assert replayed["params"] == original["params"]


@pytest.mark.tf
@pytest.mark.slow
def test_a_study_with_other_objectives_is_refused_and_left_untouched(killed_and_resumed):
    out = killed_and_resumed["out"]
    digest = hashlib.sha256((out / "study.db").read_bytes()).hexdigest()
    args = killed_and_resumed["args"][len(TUNE) :]  # the same command's options
    result = CliRunner().invoke(_cli(), ["tune", *args, "--objective", "accuracy"])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "created with objectives accuracy, size; received --objective accuracy" in lines[0]
    assert hashlib.sha256((out / "study.db").read_bytes()).hexdigest() == digest


@pytest.mark.tf
@pytest.mark.slow
def test_a_model_over_the_size_limit_is_pruned_before_training(fmnist_dir, tmp_path):
    # Only the 16-unit layer fits in 20 KB (a 784-16-10 int8 MLP is about 16.5 KB); every
    # other width is rejected before it trains. 3 random picks out of 16 widths all being 16:
    # one chance in 4,096.
    space = {**SPACE, "hidden": {"low": 16, "high": 256, "step": 16}, "epochs": 1}
    out = tmp_path / "study"
    args = [*_fast(fmnist_dir, _space_file(tmp_path, space)), "--max-size", "20KB"]
    result = CliRunner().invoke(_cli(), ["tune", *args, "--trials", "3", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["finished"] == 3 and summary["objectives"] == ["accuracy", "size"]
    assert summary["counts"]["PRUNED"] >= 1 and summary["storage"].endswith("study.db")
    rows = _rows(out)
    pruned = [r for r in rows if r["state"] == "PRUNED"]
    assert pruned, rows
    for r in pruned:
        assert r["reason"].startswith("before training: size ")
        assert "> --max-size 20,480 B" in r["reason"]
        assert int(r["size_bytes"]) > 20480 and r["train_seconds"] == "" and r["hidden"] != "16"
        assert not (out / "trials" / f"{int(r['number']):04d}").exists()
    for r in rows:
        if r["state"] == "COMPLETE":
            assert int(r["size_bytes"]) <= 20480
    assert len([r for r in rows if r["state"] in ("COMPLETE", "PRUNED")]) == 3
    assert "PRUNED" in result.stderr and "--max-size" in result.stderr


def _one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("edgenn: error: ")
    return lines[0]


@pytest.mark.tf
def test_bad_input_is_one_line_and_creates_nothing(fmnist_dir, tmp_path):
    main = _cli()
    out = tmp_path / "never"
    fast = _fast(fmnist_dir, _space_file(tmp_path, SPACE))

    (tmp_path / "bad").mkdir()
    bad_key = _space_file(tmp_path / "bad", {"blocks": 2, "filterz": [8]})
    result = CliRunner().invoke(main, ["tune", "--space", str(bad_key), "-o", str(out)])
    assert result.exit_code == 1
    line = _one_line_error(result)
    assert "'filterz'" in line and "expected some of" in line and "filters" in line

    url = "postgresql://edgenn:hunter2@127.0.0.1:1/nowhere"
    result = CliRunner().invoke(
        main, ["tune", *fast, "--storage", url, "--study-name", "s", "-o", str(out)]
    )
    assert result.exit_code == 1
    line = _one_line_error(result)
    assert "Cannot open the study storage postgresql://edgenn:***@127.0.0.1:1/nowhere" in line
    assert "hunter2" not in result.output

    result = CliRunner().invoke(main, ["tune", *fast, "--storage", url, "-o", str(out)])
    assert result.exit_code == 2 and "--storage needs --study-name" in result.stderr

    # No int8 MLP is 2 KB: found from the smallest model of the space, before any study exists.
    result = CliRunner().invoke(main, ["tune", *fast, "--max-size", "2KB", "-o", str(out)])
    assert result.exit_code == 1
    line = _one_line_error(result)
    assert "No model in the search space meets --max-size 2,048 B: the smallest (mlp 16)" in line
    assert not out.exists()

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    result = CliRunner().invoke(main, ["tune", *fast, "-o", str(tmp_path / "other")])
    assert result.exit_code == 1 and "is not an edgenn tune folder" in _one_line_error(result)


# --- PostgreSQL: one study, two workers ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    """A throw-away PostgreSQL cluster on a loopback port, with a database ``tune``.

    initdb refuses to run as root, so under root the cluster belongs to the ``postgres`` user
    that Debian's package creates (``runuser``); its folder is made in /tmp, which that user can
    reach, and removed at the end.
    """
    if not POSTGRES_BIN:
        pytest.fail("PostgreSQL is not installed; run: bash scripts/setup.sh test")
    bindir = POSTGRES_BIN[-1]
    root = Path(tempfile.mkdtemp(prefix="edgenn-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        import pwd

        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]

    def run(*args) -> None:
        subprocess.run([*prefix, *map(str, args)], check=True, capture_output=True, cwd=root)

    port = _free_port()
    run(bindir / "initdb", "-D", root / "data", "-U", "edgenn", "--auth=trust", "--no-sync")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(bindir / "pg_ctl", "-D", root / "data", "-l", root / "log", "-w", "-o", options, "start")
    try:
        run(bindir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "edgenn", "tune")
        yield f"postgresql://edgenn@127.0.0.1:{port}/tune"
    finally:
        run(bindir / "pg_ctl", "-D", root / "data", "-w", "-m", "fast", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.tf
@pytest.mark.slow
def test_two_workers_share_a_postgresql_study_and_one_is_killed(postgres_url, fmnist_dir, tmp_path):
    name = "two-workers"
    common = [*_fast(fmnist_dir, _space_file(tmp_path, SPACE)), "--trials", "5"]
    common += ["--storage", postgres_url, "--study-name", name]

    def start(folder: str) -> subprocess.Popen:
        args = [*TUNE, *common, "-o", str(tmp_path / folder)]
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first, second = start("a"), start("b")
    mine = f"{socket.gethostname()}:{first.pid}"

    def first_is_mid_trial(trials) -> bool:
        done = [t for t in _finished(trials) if t.user_attrs.get("worker") == mine]
        running = [t for t in trials if t.state.name == "RUNNING"]
        return bool(done) and any(t.user_attrs.get("worker") == mine for t in running)

    seen = _wait_and_kill(first, postgres_url, first_is_mid_trial, name)
    (victim,) = [t for t in seen if t.state.name == "RUNNING" and t.user_attrs["worker"] == mine]
    out, err = second.communicate(timeout=1800)
    assert second.returncode == 0, err[-3000:]
    trials = _study(postgres_url, name).get_trials(deepcopy=False)
    finished = _finished(trials)
    assert len(finished) == 5
    workers = {t.user_attrs["worker"] for t in finished}
    assert mine in workers and f"{socket.gethostname()}:{second.pid}" in workers
    # Nothing lost: what the killed worker finished stays; its running trial ran again, once.
    for old in _finished(seen):
        assert trials[old.number].state == old.state and trials[old.number].values == old.values
    assert trials[victim.number].state.name == "FAIL"
    retries = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retries) == 1 and retries[0] in finished and retries[0].params == victim.params
    # Each COMPLETE trial's run directory is on the worker that ran it, and only there.
    for t in finished:
        if t.state.name == "COMPLETE":
            homes = [
                d for d in ("a", "b") if (tmp_path / d / "trials" / f"{t.number:04d}").is_dir()
            ]
            assert homes == ["a" if t.user_attrs["worker"] == mine else "b"]
    rows = _rows(tmp_path / "b")  # every worker's table lists the whole study
    assert {int(r["number"]) for r in rows} == {t.number for t in trials}


@pytest.mark.tf
@pytest.mark.slow
def test_trials_train_across_two_logical_cpus_with_distribute_mirrored(fmnist_dir, tmp_path):
    # Two trials in one process: the second reuses the first's MirroredStrategy (a new one would
    # clash with its collective ops), and the CPU split comes before the size check runs TF.
    out = tmp_path / "study"
    args = [*_fast(fmnist_dir, _space_file(tmp_path, SPACE)), "--distribute", "mirrored"]
    env = {**os.environ, "EDGENN_CPU_DEVICES": "2"}
    proc = subprocess.run(
        [*TUNE, *args, "--trials", "2", "-o", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(out)
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE"], rows
    for r in rows:
        metrics = json.loads((Path(r["run_dir"]) / "metrics.json").read_text())
        assert metrics["replicas"] == 2 and metrics["options"]["distribute"] == "mirrored"
    assert json.loads((out / "best.json").read_text())["distribute"] == "mirrored"

    result = CliRunner().invoke(
        _cli(), ["tune", *args[:-1], "multi-worker", "-o", str(tmp_path / "mw")]
    )
    assert result.exit_code == 2 and "run a tune worker per machine" in result.stderr.lower()
    assert not (tmp_path / "mw").exists()

"""edgenn train --distribute: mirrored over logical CPU devices, multi-worker over local processes.

Each distributed run is a real ``python -m edgenn train`` process: TensorFlow fixes its devices
and its cluster when it starts, so neither can be set up inside the test process.

Accuracy tolerance: the distributed runs must land within ``TOLERANCE`` (2.5 points) of the
single-device run of the same options. The spread to expect is run-to-run noise: this MLP
(784-32-10, 2,000 training images, 3 epochs) scored 73.09, 73.29, 73.38, 73.23, 73.11 and
71.44% with seeds 0-5 (standard deviation 0.73 points). Replicas change the order of
floating-point sums, so the runs part ways like two seeds do; 2.5 points is about 3.4 standard
deviations. A run that lost a worker's data or trained on one shard only would fall outside it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgenn import datasets as data
from edgenn.cli import main
from edgenn.errors import EdgennError
from edgenn.host.train import (
    CPU_DEVICES_ENV,
    OPTIONS_KEY,
    TF_CONFIG_ENV,
    ClusterTask,
    cluster_task,
    config_from_options,
)

from .conftest import REPO

#: The options every run here shares (the noise above was measured with exactly these).
OPTIONS = {"limit": 2000, "model": "mlp", "hidden": [32], "epochs": 3, "patience": 0, "seed": 0}
TOLERANCE = 0.025
#: A distributed run on 2 loaded cores takes 10-30 s; far longer means a worker is stuck.
TIMEOUT = 600


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The single-device run of OPTIONS (in this process)."""
    from edgenn.host.train import train

    return train(config_from_options(OPTIONS), tmp_path_factory.mktemp("single") / "run").metrics


@pytest.fixture()
def config_file(tmp_path) -> Path:
    path = tmp_path / "options.json"
    path.write_text(json.dumps(OPTIONS))
    return path


def _edgenn_train(*args: str, env: dict[str, str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "edgenn", "train", *args, "--json", "--quiet"]
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env}
    return subprocess.Popen(
        command, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(process: subprocess.Popen) -> dict:
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    assert process.returncode == 0, err[-3000:]
    return json.loads(out)


def _free_ports(count: int) -> list[int]:
    """Ports nothing listens on now (the OS picks them; they are released for the workers)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _reloaded_accuracy(run: Path) -> float:
    from edgenn.host import models

    splits = data.make_splits(data.load_data_spec(run))
    raw = models.load_keras_model(run).predict(splits.model_inputs(splits.x_test), verbose=0)
    return float(np.mean(raw.argmax(1) == splits.y_test))


@pytest.mark.tf
def test_mirrored_on_two_logical_cpu_devices(single, config_file, tmp_path):
    out = tmp_path / "mirrored"
    args = ["--config", str(config_file), "--distribute", "mirrored", "-o", str(out)]
    metrics = _finish(_edgenn_train(*args, env={CPU_DEVICES_ENV: "2"}))
    assert metrics["replicas"] == 2 and metrics[OPTIONS_KEY]["distribute"] == "mirrored"
    assert metrics["n_train"] == single["n_train"] and metrics["params"] == single["params"]
    assert abs(metrics["test_accuracy"] - single["test_accuracy"]) <= TOLERANCE
    # The saved model is an ordinary one: reloaded without any strategy, it scores the same.
    assert _reloaded_accuracy(out) == pytest.approx(metrics["test_accuracy"], abs=1e-4)


@pytest.mark.tf
def test_multi_worker_with_two_local_processes(single, config_file, tmp_path):
    out = tmp_path / "multi"
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    scratch = [tmp_path / "tmp0", tmp_path / "tmp1"]
    processes = []
    for index in range(2):
        scratch[index].mkdir()
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {TF_CONFIG_ENV: json.dumps(tf_config), "TMPDIR": str(scratch[index])}
        args = ["--config", str(config_file), "--distribute", "multi-worker", "-o", str(out)]
        processes.append(_edgenn_train(*args, env=env))
    chief, other = (_finish(p) for p in processes)
    assert chief["replicas"] == other["replicas"] == 2
    # The workers trained one model: the same weights give the same score on the test split.
    assert chief["test_accuracy"] == other["test_accuracy"]
    assert abs(chief["test_accuracy"] - single["test_accuracy"]) <= TOLERANCE
    # Only the chief wrote the run; the other worker's copy went to a temporary folder, removed.
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] == chief["test_accuracy"]
    assert list(scratch[1].iterdir()) == [] and list(tmp_path.glob("*multi*")) == [out]
    assert _reloaded_accuracy(out) == pytest.approx(chief["test_accuracy"], abs=1e-4)


@pytest.mark.tf
def test_logical_cpus_must_be_asked_for_before_tensorflow_starts(monkeypatch, tmp_path):
    import tensorflow as tf

    from edgenn.host.train import train

    tf.config.list_logical_devices("CPU")  # TensorFlow's devices exist from here on
    monkeypatch.setenv(CPU_DEVICES_ENV, "3")
    config = config_from_options({**OPTIONS, "distribute": "mirrored", "limit": 200})
    with pytest.raises(EdgennError, match=f"{CPU_DEVICES_ENV}=3 came after TensorFlow started"):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


TF_CONFIG_CASES = [
    (None, "--distribute multi-worker needs TF_CONFIG .the cluster and this process's task.; it"),
    ("{'cluster': {}}", "TF_CONFIG is not valid JSON .Expecting property name"),
    ('{"cluster": {"ps": ["a:1"]}, "task": {}}', 'TF_CONFIG has cluster {"ps": \\["a:1"\\]}; exp'),
    ('{"cluster": {"worker": ["a"]}}', 'cluster {"worker": \\["a"\\]}; expected an object with'),
    ('{"cluster": {"worker": ["a:1"]}}', 'TF_CONFIG has task null; expected {"type": one of "wo'),
    (
        '{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}',
        'TF_CONFIG has task {"type": "worker", "index": 2}; expected',
    ),
]


@pytest.mark.parametrize(("value", "message"), TF_CONFIG_CASES)
def test_multi_worker_needs_a_good_tf_config(monkeypatch, tmp_path, value, message):
    """Checked before data or TensorFlow load: runs without TensorFlow too."""
    if value is None:
        monkeypatch.delenv(TF_CONFIG_ENV, raising=False)
    else:
        monkeypatch.setenv(TF_CONFIG_ENV, value)
    out = tmp_path / "run"
    args = ["train", "--distribute", "multi-worker", "--limit", "100", "-o", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert len(result.stderr.splitlines()) == 1
    assert re.search(message, result.stderr), result.stderr
    assert 'Set TF_CONFIG in each process, e.g. TF_CONFIG=\'{"cluster"' in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("value", ["two", "0", "-1", "1.5"])
def test_bad_logical_cpu_count_is_refused(monkeypatch, tmp_path, value):
    monkeypatch.setenv(CPU_DEVICES_ENV, value)
    args = ["train", "--distribute", "mirrored", "--limit", "100", "-o", str(tmp_path / "r")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"edgenn: error: {CPU_DEVICES_ENV}={value!r}; expected a positive number of logical CPU "
        f"devices such as {CPU_DEVICES_ENV}=2."
    )


def test_the_chief_is_the_chief_task_else_worker_0():
    two = {"worker": ["a:1", "b:1"]}

    def task(cluster: dict, kind: str, index: int) -> ClusterTask:
        return cluster_task(
            json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})
        )

    assert task(two, "worker", 0) == ClusterTask("worker", 0, 2, True)
    assert task(two, "worker", 1) == ClusterTask("worker", 1, 2, False)
    with_chief = {"chief": ["c:1"], **two}
    assert task(with_chief, "chief", 0) == ClusterTask("chief", 0, 3, True)
    assert task(with_chief, "worker", 0) == ClusterTask("worker", 0, 3, False)

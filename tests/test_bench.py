"""edgenn bench: the JSON schema, statistics, row errors, third-party models, CSV and plot."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner
from PIL import Image

from edgenn import bench as bench_mod
from edgenn import datasets as data
from edgenn.bench import ROW_KEYS, BenchOptions, LatencyStats
from edgenn.cli import main
from edgenn.errors import UsageError

from .conftest import REPO, SAMPLES

INT8 = REPO / "tests" / "data" / "tiny_cnn_int8.tflite"
FP32 = REPO / "tests" / "data" / "tiny_cnn_fp32.tflite"


@pytest.fixture(scope="module")
def bench_doc(tmp_path_factory, face_detection):
    out = tmp_path_factory.mktemp("bench")
    broken = out / "broken.tflite"
    broken.write_bytes(INT8.read_bytes()[:5000])
    args = [
        str(FP32),
        str(INT8),
        str(face_detection),
        str(broken),
        "-n",
        "50",
        "--warmup",
        "5",
        "--limit",
        "1000",
        "--json",
        "--csv",
        str(out / "b.csv"),
    ]
    result = CliRunner().invoke(main, ["bench", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), out


def test_json_schema(bench_doc):
    doc, _ = bench_doc
    assert doc["runs"] == 50 and len(doc["rows"]) == 4
    for row in doc["rows"]:
        assert set(ROW_KEYS) <= set(row)
    fp32, int8, face, broken = doc["rows"]
    for row in (fp32, int8, face):
        assert row["error"] is None
        lat = row["latency_ms"]
        assert set(lat) == {"mean", "std", "min", "p50", "p90", "p99", "max"}
        assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert row["throughput_per_s"] == pytest.approx(1000 / lat["mean"], rel=0.01)
        assert row["peak_rss_mb"] > 10 and row["init_ms"] > 0 and row["first_ms"] > 0
        assert row["runtime"].startswith("litert") and row["delegate"] == "xnnpack"
    assert fp32["accuracy"] > 0.6 and int8["examples"] == 1000
    assert int8["accuracy_drop"] == pytest.approx(
        (fp32["accuracy"] - int8["accuracy"]) * 100, abs=1e-3
    )
    assert "damaged" in broken["error"] or "truncated" in broken["error"]


def test_third_party_model_runs_with_generated_inputs(bench_doc):
    face = bench_doc[0]["rows"][2]
    assert face["input"] == "generated" and face["accuracy"] is None
    assert (
        face["size_bytes"]
        == (REPO / "tests" / ".models" / "face_detection_short_range.tflite").stat().st_size
    )


def test_csv_has_a_row_per_model(bench_doc):
    _, out = bench_doc
    rows = list(csv.DictReader(open(out / "b.csv")))
    assert len(rows) == 4 and float(rows[1]["latency_p50_ms"]) > 0


def test_latency_stats():
    s = LatencyStats.of([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s.min == 1.0 and s.max == 100.0 and s.p50 == 3.0 and s.mean == 22.0


def test_bench_agrees_with_an_independent_timing_loop():
    """Same model, same process: bench's p50 and a plain invoke loop measure the same thing."""
    import time

    import numpy as np

    from edgenn.runtime import Runner

    row = bench_mod.bench_one(INT8, BenchOptions(dataset=None, runs=300))
    r = Runner(INT8)
    r.run(np.zeros((1, 28, 28, 1), np.float32))
    times = []
    for _ in range(300):
        t = time.perf_counter_ns()
        r.interpreter.invoke()
        times.append((time.perf_counter_ns() - t) / 1e6)
    # Loose: a unit test is no place for timing claims (benchmarks/runtime_overhead.py measures it).
    assert row.latency_ms.p50 < 20 * float(np.median(times)) + 0.05


@pytest.mark.parametrize(
    "args, message",
    [(["-n", "0"], "-n/--runs must be at least 1"), (["--warmup", "-1"], "--warmup")],
)
def test_usage_errors(args, message):
    result = CliRunner().invoke(main, ["bench", str(INT8), *args])
    assert result.exit_code == 2 and message in result.output


def test_all_rows_failing_is_exit_1(tmp_path):
    result = CliRunner().invoke(main, ["bench", str(tmp_path / "missing.tflite"), "-n", "5"])
    assert result.exit_code == 1 and "Model not found" in result.stdout


def test_absent_delegate_is_a_row_error():
    result = CliRunner().invoke(
        main, ["bench", str(INT8), "--delegate", "edgetpu", "-n", "5", "--json"]
    )
    row = json.loads(result.stdout)["rows"][0]
    assert "libedgetpu.so.1" in row["error"] and result.exit_code == 1


PLOT_WITHOUT_MATPLOTLIB = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "matplotlib":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
from edgenn.cli import main
main(["bench", sys.argv[1], "--plot", sys.argv[2]])
"""


def test_plot_without_matplotlib_names_the_install(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", PLOT_WITHOUT_MATPLOTLIB, str(INT8), str(tmp_path / "p.png")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1 and "pip install 'edgenn[plot]'" in out.stderr
    assert not (tmp_path / "p.png").exists()


@pytest.mark.tf  # matplotlib comes with the [train] extra: this runs in the TensorFlow environment
def test_plot_png(tmp_path):
    args = ["bench", str(FP32), str(INT8), "-n", "20", "--limit", "200"]
    result = CliRunner().invoke(main, [*args, "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "p.png") as img:
        assert img.format == "PNG" and img.width > 600


def test_options_validate():
    with pytest.raises(UsageError):
        BenchOptions(threads=0).validate()


def test_label_mismatch_names_both_lists():
    fm = data.FASHION_MNIST_LABELS
    assert bench_mod.label_mismatch(fm, list(fm), "fashion-mnist") is None
    assert bench_mod.label_mismatch([], ["a", "b"], "x") is None  # no labels: scored by index
    reason = bench_mod.label_mismatch(fm, ["0", "1", "2"], "digits")
    assert "10 labels (T-shirt/top, Trouser, Pullover, Dress, ...)" in reason
    assert "digits's 3 classes (0, 1, 2)" in reason


def test_same_count_different_names_is_not_scored():
    """The sample folders are Fashion-MNIST's classes, but named and ordered differently: an
    accuracy would compare output 0 (T-shirt/top) with folder 0 (Ankle_boot)."""
    row = bench_mod.bench_one(INT8, BenchOptions(dataset=str(SAMPLES), runs=5, warmup=0))
    assert row.error is None and row.latency_ms is not None and row.accuracy is None
    assert row.input == "generated" and row.examples == 0
    assert "accuracy not scored: the model's 10 labels (T-shirt/top" in row.note
    assert "10 classes (Ankle_boot, Bag, Coat, Dress, ...)" in row.note


def test_different_count_is_not_scored_and_the_table_says_why(tmp_path):
    folder = tmp_path / "three"
    for name in ("Bag", "Coat", "Dress"):
        shutil.copytree(SAMPLES / name, folder / name)
    result = CliRunner().invoke(
        main, ["bench", str(INT8), "--dataset", str(folder), "-n", "5", "--warmup", "0"]
    )
    assert result.exit_code == 0, result.output
    note = [line for line in result.stdout.splitlines() if line.startswith("note:")]
    assert len(note) == 1 and "10 labels" in note[0] and "3 classes (Bag, Coat, Dress)" in note[0]
    row = result.stdout.splitlines()[1].split()
    assert row[0] == "tiny_cnn_int8.tflite" and row[-2:] == ["-", "-"]  # no accuracy, no drop


def test_bench_options_come_from_the_library():
    from edgenn.runtime import RUNTIMES

    params = {p.name: p for p in main.commands["bench"].params}
    defaults = BenchOptions()
    assert params["runs"].default == defaults.runs and params["warmup"].default == defaults.warmup
    assert params["dataset"].default == defaults.dataset
    assert params["runtime"].type.choices == tuple(RUNTIMES)
    assert all(name in params["dataset"].help for name in data.BUILTIN_DATASETS)


def test_runtime_option_reaches_the_row():
    row = bench_mod.bench_one(INT8, BenchOptions(dataset=None, runs=5, runtime="litert"))
    assert row.runtime.startswith("litert ") and row.error is None


def test_worker_reply_is_the_protocol_line():
    request = json.dumps(
        {"model": str(INT8), "options": dataclasses.asdict(BenchOptions(dataset=None, runs=3))}
    )
    doc = json.loads(bench_mod.worker_reply(bench_mod.bench_one, request))
    assert doc["runs"] == 3 and len(doc["samples_ms"]) == 3 and doc["error"] is None


def test_labels_that_do_not_fit_the_output_fail_the_row(tmp_path):
    """As for ONNX and Keras rows: a wrong labels count is an error naming both numbers."""
    from edgenn import artifact, tflite_model

    spec = artifact.model_info(tflite_model.load(INT8)).spec
    wrong = tmp_path / "wrong.tflite"
    payload = artifact.metadata_bytes(["a", "b", "c"], spec)
    wrong.write_bytes(
        tflite_model.embed_metadata(INT8.read_bytes(), artifact.METADATA_ENTRY, payload)
    )
    row = bench_mod.bench_one(wrong, BenchOptions(runs=5, accuracy_limit=20))
    assert row.error is not None and "has 3 labels but 10 outputs" in row.error
    assert row.accuracy is None

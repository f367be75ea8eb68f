"""edgenn bench: the JSON schema, statistics, row errors, third-party models, CSV and plot."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner
from PIL import Image

from edgenn import bench as bench_mod
from edgenn.bench import ROW_KEYS, BenchOptions, LatencyStats
from edgenn.cli import main
from edgenn.errors import UsageError

from .conftest import REPO

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


def test_plot_png(tmp_path):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        result = CliRunner().invoke(main, ["bench", str(INT8), "--plot", str(tmp_path / "p.png")])
        assert result.exit_code == 1 and "pip install matplotlib" in result.output
        return
    result = CliRunner().invoke(
        main,
        [
            "bench",
            str(FP32),
            str(INT8),
            "-n",
            "20",
            "--limit",
            "200",
            "--plot",
            str(tmp_path / "p.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "p.png") as img:
        assert img.format == "PNG" and img.width > 600


def test_options_validate():
    with pytest.raises(UsageError):
        BenchOptions(threads=0).validate()

"""edgenn.quantization without TensorFlow: the per-layer comparison on real .tflite files.

The models are the tiny CNN of tests/data in fp32, int8 (float I/O), micro (int8 I/O) and uint8
I/O, run on real Fashion-MNIST sample photos. A damaged calibration is reproduced by widening the
stored range of one tensor of the int8 file (what one outlier calibration example does).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgenn import quantization, targets, tflite_model
from edgenn.cli import main
from edgenn.errors import EdgennError
from edgenn.precision import DYNAMIC, FP16, INT8

from .conftest import REPO, SAMPLES

DATA = REPO / "tests" / "data"
#: Op indices of tiny_cnn_int8.tflite (QUANTIZE, CONV, POOL, CONV, POOL, RESHAPE, FC, FC, ...).
DENSE, HEAD, RESHAPE, SOFTMAX = 6, 7, 5, 8


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    paths = sorted(SAMPLES.glob("*/*"))[:60]
    pixels = [np.asarray(Image.open(p).convert("L").resize((28, 28)), np.float32) for p in paths]
    return np.stack(pixels)[..., None] / 255.0


@pytest.fixture(scope="module")
def fp32() -> tflite_model.TFLiteFile:
    return tflite_model.load(DATA / "tiny_cnn_fp32.tflite")


def _load(name: str) -> tflite_model.TFLiteFile:
    return tflite_model.load(DATA / f"tiny_cnn_{name}.tflite")


def widened(model: tflite_model.TFLiteFile, tensor: int, factor: float) -> bytes:
    """The model with one tensor's quantization range widened ``factor`` times."""
    import flatbuffers

    schema = tflite_model._schema()
    doc = schema.ModelT.InitFromPackedBuf(bytearray(model.data), 0)
    q = doc.subgraphs[0].tensors[tensor].quantization
    q.scale = [s * factor for s in q.scale]
    builder = flatbuffers.Builder(len(model.data) + 1024)
    builder.Finish(doc.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_a_healthy_int8_model_pairs_every_op(fp32, images):
    report = quantization.compare(_load("int8"), fp32, images, INT8)
    assert report.unmatched == [] and report.samples == len(images)
    by_index = {e.index: e for e in report.ops}
    # Names survive quantization; the SOFTMAX whose name moved to the DEQUANTIZE pairs by
    # position; the converter's QUANTIZE / DEQUANTIZE pair through their input.
    assert by_index[1].matched_by == "name" and by_index[DENSE].matched_by == "name"
    assert by_index[SOFTMAX].matched_by == "position"
    assert by_index[0].matched_by == by_index[9].matched_by == "input"
    # pixel / 255 on a 1/255 grid: the input quantization is exact up to float32 rounding.
    assert by_index[0].snr_db is None and by_index[0].origin == quantization.EXACT
    scored = [e for e in report.ops if e.snr_db is not None]
    assert all(e.snr_db > 30 and e.cosine > 0.999 and e.rmse_rel < 0.01 for e in scored)
    assert [e.snr_db for e in scored] == sorted(e.snr_db for e in scored)
    assert report.ops[-1].snr_db is None  # identical outputs last
    assert 30 < report.output_snr_db == by_index[9].snr_db
    # Pooling and reshaping carry their input's error on; convolutions add their own.
    assert by_index[2].origin == by_index[RESHAPE].origin == quantization.INHERITED
    assert by_index[1].origin == quantization.INTRODUCED
    assert report.seconds > 0


def test_integer_io_models_show_the_same_errors(fp32, images):
    """int8 and uint8 inputs are quantized from the same float images and compared by position."""
    reference = quantization.compare(_load("int8"), fp32, images)
    for name in ("micro", "uint8io"):
        model = _load(name)
        report = quantization.compare(model, fp32, images)
        assert report.unmatched == []
        assert report.inputs[0]["snr_db"] is None
        assert report.output_snr_db == pytest.approx(reference.output_snr_db, abs=0.5)
        ops = sorted((e.op, e.snr_db) for e in report.ops if e.op not in ("QUANTIZE", "DEQUANTIZE"))
        expected = sorted(
            (e.op, e.snr_db) for e in reference.ops if e.op not in ("QUANTIZE", "DEQUANTIZE")
        )
        assert [o for o, _ in ops] == [o for o, _ in expected]
        assert np.allclose([s for _, s in ops], [s for _, s in expected], atol=0.5)


def test_the_float_model_against_itself_is_identical(fp32, images):
    report = quantization.compare(fp32, fp32, images[:5])
    assert all(e.snr_db is None and e.origin == quantization.EXACT for e in report.ops)
    assert all(e.cosine == pytest.approx(1.0) and e.rmse_rel == 0 for e in report.ops)
    assert report.worst == [] and report.introduced_by == []


def test_a_widened_range_is_blamed_where_it_enters(fp32, images):
    base = _load("int8")
    dense_out = base.ops[DENSE].outputs[0]
    model = tflite_model.load(widened(base, dense_out, 40))
    report = quantization.compare(model, fp32, images, INT8)
    dense, head = report.op(DENSE), report.op(HEAD)
    # The dense layer's output is now on a grid 40x too coarse: its SNR falls from ~44 dB, and
    # the head that reads it falls further; everything before it is untouched.
    assert dense.snr_db < 25 and dense.origin == quantization.INTRODUCED
    assert head.snr_db < dense.snr_db and head.input_snr_db == dense.snr_db
    assert all(report.op(i).snr_db is None or report.op(i).snr_db > 35 for i in range(DENSE))
    assert report.ops[0].index in (HEAD, SOFTMAX, 9) and report.output_snr_db < 10
    assert {e.index for e in quantization.blamed(report)} == {DENSE, HEAD}
    # Keeping the bad tensor in float means keeping both ends of it (and the head's reader).
    sets = quantization.float_candidates(report, model)
    assert sets[0] == [DENSE, HEAD, SOFTMAX]
    assert all(set(a) < set(b) for a, b in zip(sets, sets[1:]))
    assert set(range(1, 9)) - set(sets[-1])  # never every op: that is the float model again
    remedies = quantization.remedies(report, model, 300, "edgenn convert RUN", available=1000)
    assert remedies[-1] == (
        "Calibrate on more examples: edgenn convert RUN --calibration-samples 300,1000 tries "
        "each in turn."
    )
    assert "all 300 training examples" in quantization.remedies(report, model, 300, "x", 300)[-1]


def test_the_ladder_follows_the_target_records():
    assert quantization.ladder_for(targets.lookup("cpu").allowed_precisions) == quantization.LADDER
    # Targets that need full int8 never keep layers in float and never fall back.
    for name in ("edgetpu", "micro"):
        assert quantization.ladder_for(targets.lookup(name).allowed_precisions) == (INT8,)
    assert quantization.ladder_for((DYNAMIC, FP16)) == (DYNAMIC, FP16)
    assert quantization.QUANTIZE_CHOICES[-1] == quantization.AUTO


def test_compare_refuses_nothing_to_run(fp32):
    with pytest.raises(EdgennError, match="at least one input example"):
        quantization.compare(_load("int8"), fp32, np.zeros((0, 28, 28, 1), np.float32))


def _model_with_report(tmp_path: Path, fp32, images) -> Path:
    """An int8 model with its report beside it (the JSON only: the PNG needs matplotlib)."""
    path = tmp_path / "m.tflite"
    path.write_bytes(_load("int8").data)
    for name in ("labels.txt", "preprocess.json"):
        (tmp_path / name).write_bytes((DATA / name).read_bytes())
    report = quantization.compare(tflite_model.load(path), fp32, images[:20], INT8)
    quantization.stamp(report, path)
    (tmp_path / quantization.REPORT_JSON).write_text(json.dumps(report.to_dict()))
    return path


@pytest.mark.tf  # matplotlib comes with the [train] extra: this runs in the TensorFlow environment
def test_write_report_draws_the_png(tmp_path, fp32, images):
    path = tmp_path / "m.tflite"
    path.write_bytes(_load("int8").data)
    report = quantization.compare(tflite_model.load(path), fp32, images[:20], INT8)
    json_path, png_path = quantization.write_report(report, path)
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png_path.stat().st_size > 5000
    doc = json.loads(json_path.read_text())
    assert {"index", "op", "snr_db", "rmse_rel", "cosine", "introduced_db"} <= set(doc["ops"][0])
    assert doc["model"] == "m.tflite" and doc["order"] == quantization.ORDER
    assert doc["model_sha256"] == quantization.model_digest(path.read_bytes())
    quantization.check_report_free(tmp_path, overwrite=True)
    with pytest.raises(EdgennError, match="already exists"):
        quantization.check_report_free(tmp_path, overwrite=False)


def test_inspect_shows_the_stored_report(tmp_path, fp32, images):
    path = _model_with_report(tmp_path, fp32, images)
    shown = CliRunner().invoke(main, ["inspect", str(path)])
    assert shown.exit_code == 0, shown.output
    assert "quantization.json: int8 vs float on 20 examples" in shown.stdout
    assert "STALE" not in shown.stdout and " SNR " in shown.stdout
    doc = json.loads(CliRunner().invoke(main, ["inspect", str(path), "--json"]).stdout)
    assert doc["quantization"]["stale"] is False and len(doc["quantization"]["worst"]) == 5
    # Another model written over the file: the report no longer describes it.
    path.write_bytes(_load("micro").data)
    assert "STALE" in CliRunner().invoke(main, ["inspect", str(path)]).stdout


def test_a_damaged_report_does_not_hide_the_model(tmp_path, fp32, images):
    path = _model_with_report(tmp_path, fp32, images)
    (tmp_path / quantization.REPORT_JSON).write_text("{not json")
    shown = CliRunner().invoke(main, ["inspect", str(path)])
    assert shown.exit_code == 0 and "quantization.json: unreadable:" in shown.stdout
    assert "total MACs" in shown.stdout
    with pytest.raises(EdgennError, match="not valid JSON"):
        quantization.load_report(path)


def test_report_files_are_not_replaced_unasked(tmp_path):
    (tmp_path / quantization.REPORT_PNG).write_bytes(b"x")
    with pytest.raises(EdgennError, match="already exists"):
        quantization.check_report_free(tmp_path, overwrite=False)

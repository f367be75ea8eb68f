"""edgenn.tflite_model on real third-party models: parsing, checks, metadata, damaged files."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import numpy as np
import pytest

from edgenn import artifact, tflite_model
from edgenn.errors import EdgennError
from edgenn.runtime import Runner


def test_face_detection_structure(face_detection):
    m = tflite_model.load(face_detection)
    assert m.subgraphs == 1
    assert m.input_details[0].shape == [1, 128, 128, 3] and m.input_details[0].dtype == "float32"
    assert len(m.outputs) == 2
    names = {op.name for op in m.ops}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "DEQUANTIZE"} <= names
    # fp16 weights behind DEQUANTIZE: about 2 bytes per parameter.
    assert "float16" in {t.dtype for t in m.tensors if t.is_constant}
    assert 1.5 < m.weight_bytes / m.parameters < 2.5
    assert m.total_macs > 10_000_000


def test_custom_op_is_named(selfie_segmentation):
    m = tflite_model.load(selfie_segmentation)
    custom = [op for op in m.ops if op.custom]
    assert [op.name for op in custom] == ["Convolution2DTransposeBias"]


def test_describe_is_json(sparse_face_detection):
    doc = artifact.describe(tflite_model.load(sparse_face_detection))
    json.dumps(doc)
    assert any(o["op"] == "DENSIFY" for o in doc["ops"])
    assert doc["labels"] is None and doc["size_bytes"] == sparse_face_detection.stat().st_size


def test_conv_macs_by_hand(sine_float):
    m = tflite_model.load(sine_float)
    # The sine model is three FULLY_CONNECTED layers 1-16-16-1: 16 + 256 + 16 MACs.
    assert [op.name for op in m.ops] == ["FULLY_CONNECTED"] * 3
    assert m.total_macs == 16 + 16 * 16 + 16


def test_embed_metadata_keeps_the_model_working(face_detection):
    raw = face_detection.read_bytes()
    payload = {"labels": ["face"], "preprocess": {"kind": "image"}}
    out = tflite_model.embed_metadata(raw, "edgenn", json.dumps(payload).encode())
    again = tflite_model.embed_metadata(out, "edgenn", json.dumps(payload).encode())
    m = tflite_model.load(again)
    assert artifact.embedded(m) == payload
    assert list(m.metadata).count("edgenn") == 1  # replaced, not duplicated
    x = np.random.default_rng(0).random((1, 128, 128, 3), dtype=np.float32)
    a = Runner(raw, xnnpack=False).run(x)
    b = Runner(again, xnnpack=False).run(x)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "is not a TFLite model"),
        (b"\xff\xd8\xff\xe0" + b"JFIF" * 10, "is not a TFLite model"),
    ],
)
def test_not_a_model(tmp_path, content, match):
    path = tmp_path / "x.tflite"
    path.write_bytes(content)
    with pytest.raises(EdgennError, match=match):
        tflite_model.load(path)


def test_truncated_model(face_detection, tmp_path):
    raw = face_detection.read_bytes()
    path = tmp_path / "cut.tflite"
    path.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(EdgennError, match="damaged TFLite model|points past|names"):
        tflite_model.load(path)


def test_missing_model_and_folder(tmp_path):
    with pytest.raises(EdgennError, match="Model not found"):
        tflite_model.load(tmp_path / "nope.tflite")
    with pytest.raises(EdgennError, match="is a folder"):
        tflite_model.load(tmp_path)


FUZZ = """
import random, sys
import numpy as np
from edgenn.errors import EdgennError
from edgenn.runtime import Runner
data = bytearray(open(sys.argv[1], "rb").read())
rng = random.Random(int(sys.argv[2]))
for _ in range(25):
    data[rng.randrange(len(data))] = rng.randrange(256)
try:
    r = Runner(bytes(data))
    r.run(np.zeros(r.input_shape, np.float32))
    print("RAN")
except EdgennError as exc:
    print("ERROR", exc)
"""


@pytest.mark.parametrize("seed", range(12))
def test_corrupted_model_never_crashes_the_process(sine_float, face_detection, seed):
    """Random byte damage: a clear error or a model that still runs, never a crash or traceback."""
    model = [sine_float, face_detection][seed % 2]
    out = subprocess.run(
        [sys.executable, "-c", FUZZ, str(model), str(seed)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith(("RAN", "ERROR")), out.stdout + out.stderr[-2000:]


def test_fuzzing_reaches_the_error_paths(face_detection):
    """The corruptions above are not all harmless: some must be caught as damage."""
    raw = face_detection.read_bytes()
    caught = 0
    for seed in range(40):
        rng = random.Random(seed)
        data = bytearray(raw)
        for _ in range(25):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            tflite_model.load(bytes(data))
        except EdgennError:
            caught += 1
    assert caught >= 5

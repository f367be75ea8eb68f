"""edgenn.tflite_model on real third-party models: parsing, checks, metadata, damaged files."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from edgenn import artifact, tflite_model
from edgenn.errors import EdgennError
from edgenn.runtime import Runner

from .conftest import REPO


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
    with pytest.raises(EdgennError, match="is a directory"):
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


# --- Sizes, counts and file kinds: refused before anything is allocated ---------------------------

TINY_INT8 = REPO / "tests" / "data" / "tiny_cnn_int8.tflite"


def rewrite(raw: bytes, edit) -> bytes:
    """The model with ``edit(model)`` applied to its object tree, packed again through the schema.

    A crafted file, as an attacker would make one: every offset stays valid, only the facts lie.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(raw), 0)
    edit(model)
    builder = flatbuffers.Builder(len(raw) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def with_input_shape(raw: bytes, shape: list[int]) -> bytes:
    """The model with its first input declaring ``shape``."""

    def edit(model) -> None:
        sg = model.subgraphs[0]
        sg.tensors[sg.inputs[0]].shape = np.array(shape, dtype=np.int32)
        sg.tensors[sg.inputs[0]].shapeSignature = None

    return rewrite(raw, edit)


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging the suite) when the block blocks longer than ``seconds``."""

    def expire(signum, frame):
        raise TimeoutError(f"blocked for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_an_absurd_input_is_refused_while_parsing():
    """A 33 KB model declaring a 252-million-value input: one line, nothing allocated."""
    crafted = with_input_shape(TINY_INT8.read_bytes(), [1, 9_000_000, 28, 1])
    start = time.perf_counter()
    with pytest.raises(EdgennError) as err:
        tflite_model.load(crafted)
    assert time.perf_counter() - start < 2
    message = str(err.value)
    assert "[1, 9000000, 28, 1]" in message and "252,000,000 values" in message
    assert f"{tflite_model.MAX_IO_VALUES:,}" in message and "\n" not in message


def _declare(field: str, value, tensor: int = 3):
    index = tensor

    def edit(model) -> None:
        tensor = model.subgraphs[0].tensors[index]
        setattr(tensor, field, np.array(value, dtype=np.int32))
        tensor.shapeSignature = None

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (_declare("shape", [1] * 40), "rank 40"),
        (_declare("shape", [1, -5, 28]), "dimension -5"),
        (_declare("shape", [65536, 65536, 64]), "274,877,906,944 bytes"),
    ],
    ids=["rank", "negative", "huge-tensor"],
)
def test_declared_sizes_and_counts_are_bounded(edit, message):
    crafted = rewrite(TINY_INT8.read_bytes(), edit)
    with pytest.raises(EdgennError, match=re.escape(message)):
        tflite_model.load(crafted)


def test_tensor_and_op_counts_are_bounded(monkeypatch):
    monkeypatch.setattr(tflite_model, "MAX_TENSORS", 10)
    with pytest.raises(EdgennError, match=r"20 tensors; edgenn reads at most 10"):
        tflite_model.load(TINY_INT8)
    monkeypatch.setattr(tflite_model, "MAX_OPERATORS", 5)
    monkeypatch.setattr(tflite_model, "MAX_TENSORS", 1000)
    with pytest.raises(EdgennError, match=r"10 operators; edgenn reads at most 5"):
        tflite_model.load(TINY_INT8)


def test_a_table_shared_by_many_entries_is_refused_before_decoding():
    """400,000 tensor entries pointing at one table: 1.6 MB that took minutes to decode."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(TINY_INT8.read_bytes()), 0)
    packed = []

    class Shared(schema.TensorT):
        def Pack(self, builder):  # noqa: N802 - the schema's name
            if not packed:
                packed.append(schema.TensorT.Pack(self, builder))
            return packed[0]

    shared = Shared()
    vars(shared).update(vars(model.subgraphs[0].tensors[0]))
    model.subgraphs[0].tensors += [shared] * 400_000
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    start = time.perf_counter()
    with pytest.raises(EdgennError, match="400,020 tensors; edgenn reads at most 100,000"):
        tflite_model.load(bytes(builder.Output()))
    assert time.perf_counter() - start < 2


def test_a_vector_longer_than_the_file_is_damage():
    """A flipped length byte makes a vector claim millions of entries: refused before decoding."""
    from ai_edge_litert import schema_py_generated as schema

    raw = bytearray(TINY_INT8.read_bytes())
    sg = schema.Model.GetRootAs(raw, 0).Subgraphs(0)
    vector = sg._tab.Vector(sg._tab.Offset(4))  # the tensors vector's first entry
    raw[vector - 4 : vector] = (2**24).to_bytes(4, "little")
    start = time.perf_counter()
    with pytest.raises(EdgennError, match="damaged"):
        tflite_model.load(bytes(raw))
    assert time.perf_counter() - start < 2


def test_models_are_read_only_from_regular_files(tmp_path):
    fifo = tmp_path / "fifo.tflite"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.tflite"
    zero.symlink_to("/dev/zero")
    loop = tmp_path / "loop.tflite"
    loop.symlink_to(loop)
    huge = tmp_path / "huge.tflite"
    with open(huge, "wb") as fh:
        fh.truncate(tflite_model.MAX_MODEL_BYTES + 1)  # sparse: no disk used
    cases = {fifo: "not a regular file", zero: "not a regular file", loop: "symlink loop"}
    cases[huge] = f"at most {tflite_model.MAX_MODEL_BYTES:,} bytes"
    for path, message in cases.items():
        with deadline(10), pytest.raises(EdgennError, match=message):
            tflite_model.load(path)


def _quant_of_input(field: str, value):
    def edit(model) -> None:
        sg = model.subgraphs[0]
        q = sg.tensors[sg.inputs[0]].quantization
        setattr(q, field, np.array([value], dtype=np.float32 if field == "scale" else np.int64))

    return edit


def _op_output(op: int, tensor: int):
    def edit(model) -> None:
        model.subgraphs[0].operators[op].outputs = np.array([tensor], dtype=np.int32)

    return edit


def _op_input(op: int, tensor: int):
    def edit(model) -> None:
        inputs = model.subgraphs[0].operators[op].inputs
        inputs[0] = tensor

    return edit


def _op_weights_out(op: int):
    def edit(model) -> None:
        model.subgraphs[0].operators[op].inputs[1] = -1

    return edit


def _input_shape(shape: list[int]):
    def edit(model) -> None:
        sg = model.subgraphs[0]
        sg.tensors[sg.inputs[0]].shape = np.array(shape, dtype=np.int32)

    return edit


def _option(op: int, field: str, value: int):
    def edit(model) -> None:
        setattr(model.subgraphs[0].operators[op].builtinOptions, field, value)

    return edit


def _weights(tensor: int, shape: list[int]):
    """Constant weights of another shape, with as many bytes as that shape needs."""

    def edit(model) -> None:
        t = model.subgraphs[0].tensors[tensor]
        t.shape = np.array(shape, dtype=np.int32)
        model.buffers[t.buffer].data = np.zeros(int(np.prod(shape)), dtype=np.uint8)

    return edit


def _no_inputs(op: int):
    def edit(model) -> None:
        model.subgraphs[0].operators[op].inputs = np.array([], dtype=np.int32)

    return edit


def _unwritten(model) -> None:
    model.buffers[model.subgraphs[0].tensors[3].buffer].data = None  # weights without data


UINT8IO = REPO / "tests" / "data" / "tiny_cnn_uint8io.tflite"
MICRO = REPO / "tests" / "data" / "tiny_cnn_micro.tflite"

# Each of these made LiteRT segfault, hang or fail in the middle of a run before it was refused.
CRASHERS = {
    "scale-nan": (UINT8IO, _quant_of_input("scale", float("nan")), "quantization scale nan"),
    "scale-zero": (UINT8IO, _quant_of_input("scale", 0.0), "quantization scale 0.0"),
    "scale-negative": (UINT8IO, _quant_of_input("scale", -1.0), "quantization scale -1.0"),
    "zero-point": (UINT8IO, _quant_of_input("zeroPoint", 300), "zero point 300, outside uint8"),
    "writes-a-constant": (TINY_INT8, _op_output(0, 3), "writes tensor 3, but it holds constant"),
    "writes-nothing": (TINY_INT8, _op_output(0, -1), "writes tensor -1, but it is not a tensor"),
    "written-twice": (TINY_INT8, _op_output(0, 19), "writes tensor 19, but operator 0 writes"),
    "no-first-input": (TINY_INT8, _op_input(1, -1), "operator 1 (CONV_2D) leaves out input 0"),
    "no-weights": (
        TINY_INT8,
        _op_weights_out(7),
        "operator 7 (FULLY_CONNECTED) leaves out input 1",
    ),
    "sizes-disagree": (UINT8IO, _input_shape([1, 28, 256, 1]), "(QUANTIZE) reads [1, 28, 256, 1]"),
    "conv-output": (
        TINY_INT8,
        _declare("shape", [1, 14, 14, 255], tensor=13),
        "(CONV_2D) computes [1, 14, 14, 16] from its inputs but declares [1, 14, 14, 255]",
    ),
    "dense-output": (
        TINY_INT8,
        _declare("shape", [1, 255], tensor=16),
        "(FULLY_CONNECTED) computes [1, 32] from its inputs but declares [1, 255]",
    ),
    "stride-zero": (
        TINY_INT8,
        _option(1, "strideW", 0),
        "has a stride, dilation or window below 1",
    ),
    "reshape-shape-out": (TINY_INT8, _op_weights_out(5), "operator 5 (RESHAPE) leaves out input 1"),
    "softmax-beta": (TINY_INT8, _option(8, "beta", -2.0), "(SOFTMAX) has beta -2.0"),
    "softmax-no-input": (UINT8IO, _no_inputs(8), "(SOFTMAX) has 0 inputs; it reads at least 1"),
    "conv-rank": (
        TINY_INT8,
        _declare("shape", [1, 28, 28], tensor=10),
        "(CONV_2D) reads [1, 28, 28] with weights [8, 3, 3, 1]; it takes 4-D tensors",
    ),
    "conv-channels": (
        MICRO,
        _input_shape([1, 28, 28, 0]),
        "(CONV_2D) reads [1, 28, 28, 0] with weights [8, 3, 3, 1], whose channels do not fit",
    ),
    "dense-features": (
        TINY_INT8,
        _weights(5, [32, 785]),
        "(FULLY_CONNECTED) reads [1, 784] with weights [32, 785], which do not fit",
    ),
    "pool-output": (
        TINY_INT8,
        _declare("shape", [1, 7, 9, 16], tensor=14),
        "(MAX_POOL_2D) computes [1, 7, 7, 16] from its inputs but declares [1, 7, 9, 16]",
    ),
    "unwritten-input": (TINY_INT8, _unwritten, "reads tensor 3, which nothing writes"),
}


@pytest.mark.parametrize("name", sorted(CRASHERS))
def test_files_that_crash_the_runtime_are_refused_while_parsing(name):
    source, edit, message = CRASHERS[name]
    with pytest.raises(EdgennError, match=re.escape(message)):
        tflite_model.load(rewrite(source.read_bytes(), edit))


def test_predict_on_a_crasher_is_one_line_not_a_segfault(tmp_path):
    """A NaN input scale: LiteRT's XNNPACK delegate segfaulted while allocating."""
    from .conftest import SAMPLES

    model = tmp_path / "nan_scale.tflite"
    model.write_bytes(rewrite(UINT8IO.read_bytes(), _quant_of_input("scale", float("nan"))))
    photo = next(SAMPLES.glob("Bag/*.jpg"))
    out = subprocess.run(
        [sys.executable, "-m", "edgenn", "predict", "-m", str(model), str(photo)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1, (out.returncode, out.stderr[-2000:])
    assert out.stderr.count("\n") == 1 and "quantization scale nan" in out.stderr

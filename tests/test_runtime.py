"""edgenn.runtime and edgenn predict on real models, without TensorFlow."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from edgenn import datasets as data
from edgenn import preprocess, tflite_model
from edgenn.cli import main
from edgenn.errors import EdgennError, MissingDependencyError, UsageError
from edgenn.predict import Classifier
from edgenn.runtime import Runner, find_runtime, load_delegate

from .conftest import REPO, SAMPLES
from .test_tflite_model import with_input_shape

TEST_DATA = REPO / "tests" / "data"
INT8 = TEST_DATA / "tiny_cnn_int8.tflite"
UINT8IO = TEST_DATA / "tiny_cnn_uint8io.tflite"
FP32 = TEST_DATA / "tiny_cnn_fp32.tflite"
MICRO = TEST_DATA / "tiny_cnn_micro.tflite"


@pytest.fixture(scope="module")
def test_inputs():
    splits = data.make_splits(data.DataSpec(), data.load_fashion_mnist(allow_download=False))
    return splits.model_inputs(splits.x_test[:300]), splits.y_test[:300]


def test_quantized_io_matches_float_io(test_inputs):
    """The same int8 network with float I/O and with uint8 I/O: float in, float out, same answers."""
    x, _ = test_inputs
    a = Runner(INT8, xnnpack=False).predict(x)
    b = Runner(UINT8IO, xnnpack=False).predict(x)
    assert b.dtype == np.float32 and np.allclose(b.sum(axis=1), 1, atol=0.02)
    assert np.mean(a.argmax(1) == b.argmax(1)) >= 0.98
    assert np.abs(a - b).max() < 0.03


def test_quantize_round_trip():
    r = Runner(UINT8IO, xnnpack=False)
    scale, zero = r.input_details[0]["quantization"]
    x = np.linspace(0, 1, 784, dtype=np.float32).reshape(1, 28, 28, 1)
    q = r.quantize_input(x)
    assert q.dtype == np.uint8
    np.testing.assert_allclose((q.astype(np.float32) - zero) * scale, x, atol=scale / 2 + 1e-6)
    # Already-quantized input is passed through unchanged.
    r.set_input(q)
    np.testing.assert_array_equal(r.interpreter.get_tensor(r.input_details[0]["index"]), q)


def test_top_k_agrees_with_full_output(test_inputs):
    x, _ = test_inputs
    r = Runner(INT8)
    for xi in x[:20]:
        full = r.run(xi)[0]
        top = r.top_k(3)
        # Best first; equal scores (int8 outputs tie) by the lower index, as argmax.
        assert [i for i, _ in top] == sorted(range(10), key=lambda i: (-full[i], i))[:3]
        assert top[0][1] == pytest.approx(float(full.max()), abs=1e-6)


def test_quantize_any_shape_like_set_input():
    r = Runner(UINT8IO, xnnpack=False)
    values = np.linspace(-0.2, 1.2, 256, dtype=np.float32)
    table = r.quantize(values)
    assert table.dtype == np.uint8 and table.shape == (256,)
    assert table[0] == 0 and table[-1] == 255  # saturated, not wrapped
    x = np.resize(values, 784).reshape(28, 28, 1)
    np.testing.assert_array_equal(r.quantize_input(x).reshape(-1), r.quantize(x).reshape(-1))
    assert Runner(FP32).quantize(values).dtype == np.float32


def test_bind_gives_the_interpreter_buffers(test_inputs):
    x, _ = test_inputs
    r = Runner(INT8)
    expected = [r.run(xi)[0] for xi in x[:5]]
    binding = r.bind()
    assert binding.direct and r.bind() is binding
    assert binding.input.shape == r.input_shape and binding.output.shape == (10,)
    for xi, want in zip(x[:5], expected):
        binding.input[...] = xi.reshape(r.input_shape)
        binding.invoke()
        np.testing.assert_array_equal(binding.output, want)
    # The other helpers keep working on a bound runner (they invoke through the native call).
    np.testing.assert_array_equal(r.run(x[0])[0], expected[0])
    assert r.predict(x[:3]).shape == (3, 10)
    # LiteRT's own invoke() refuses while views exist, as Runner.bind documents.
    with pytest.raises(RuntimeError, match="reference to internal data"):
        r.interpreter.invoke()


def test_staged_binding_matches_the_direct_one(test_inputs):
    x, _ = test_inputs
    direct, staged = Runner(MICRO).bind(), Runner(MICRO)._staged_binding()
    assert not staged.direct and staged.input.dtype == np.int8
    quantized = Runner(MICRO).quantize_input(x[0])
    for binding in (direct, staged):
        binding.input[...] = quantized
        binding.invoke()
    np.testing.assert_array_equal(staged.output, direct.output)
    assert staged.output.dtype == np.int8


def test_int8_and_fp32_agree_on_real_images(test_inputs):
    x, y = test_inputs
    fp32 = Runner(FP32).predict(x)
    int8 = Runner(INT8).predict(x)
    assert np.mean(fp32.argmax(1) == int8.argmax(1)) >= 0.95
    assert np.mean(int8.argmax(1) == y) > 0.6


def test_wrong_input_size_is_an_error():
    with pytest.raises(EdgennError, match=r"does not fit the model input \(1, 28, 28, 1\)"):
        Runner(INT8).run(np.zeros((1, 32, 32, 1), np.float32))


def test_missing_delegate_is_one_clean_line(capfd):
    runtime = find_runtime()
    with pytest.raises(EdgennError) as err:
        load_delegate(runtime, "edgetpu")
    assert "libedgetpu.so.1" in str(err.value) and "libedgetpu1-std" in str(err.value)
    with pytest.raises(EdgennError, match="does not exist"):
        load_delegate(runtime, "/nonexistent/libgpu_delegate.so")
    import gc

    gc.collect()
    assert "AttributeError" not in capfd.readouterr().err


def test_unknown_or_missing_runtime():
    with pytest.raises(UsageError, match="Unknown runtime"):
        find_runtime("tf.lite")
    try:
        import tflite_runtime  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match="pip install"):
            find_runtime("tflite-runtime")


def test_classifier_on_the_sample_jpegs():
    clf = Classifier(INT8)
    results = [clf.classify_file(p, 1) for p in sorted(SAMPLES.glob("*/*.jpg"))]
    # Sample folders are the class names made file-safe (datasets/make_samples.py).
    folder_of = {
        label: re.sub(r"[^A-Za-z0-9-]+", "_", label) for label in data.FASHION_MNIST_LABELS
    }
    correct = sum(folder_of[r.top_k[0].label] in r.image for r in results)
    assert len(results) == 300 and correct / 300 > 0.6


def test_predict_cli_json_and_errors(tmp_path):
    bad = tmp_path / "photos"
    bad.mkdir()
    shutil.copy(next(SAMPLES.glob("Bag/*.jpg")), bad / "bag.jpg")
    (bad / "notes.jpg").write_text("not an image")
    result = CliRunner().invoke(main, ["predict", "-m", str(INT8), str(bad), "-k", "2", "--json"])
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path_(d["image"]) for d in lines] == ["bag.jpg", "notes.jpg"]
    assert len(lines[0]["top_k"]) == 2 and lines[0]["error"] is None
    assert "is not an image Pillow can decode" in lines[1]["error"]
    assert "edgenn: error:" in result.stderr


def Path_(p: str) -> str:
    return p.rsplit("/", 1)[-1]


def test_predict_rgb_image_for_a_grayscale_model(tmp_path):
    from PIL import Image

    img = Image.open(next(SAMPLES.glob("Trouser/*.jpg"))).convert("RGB").resize((300, 300))
    img.save(tmp_path / "big_rgb.png")
    result = CliRunner().invoke(main, ["predict", "-m", str(INT8), str(tmp_path / "big_rgb.png")])
    assert result.exit_code == 0, result.output
    assert "big_rgb.png: " in result.stdout


def test_predict_refuses_a_multi_input_or_unknown_model(tmp_path):
    result = CliRunner().invoke(main, ["predict", "-m", str(tmp_path / "none.tflite"), "x.jpg"])
    assert result.exit_code == 1 and "Model not found" in result.output


def test_predict_options_come_from_the_library():
    from edgenn.classify import DEFAULT_TOP_K
    from edgenn.runtime import RUNTIMES

    params = {p.name: p for p in main.commands["predict"].params}
    assert params["runtime"].type.choices == tuple(RUNTIMES)
    assert params["top_k"].default == DEFAULT_TOP_K
    result = CliRunner().invoke(
        main,
        ["predict", "-m", str(INT8), str(next(SAMPLES.glob("Bag/*.jpg"))), "--runtime", "litert"],
    )
    assert result.exit_code == 0 and ": Bag " in result.stdout
    bad = CliRunner().invoke(main, ["predict", "-m", str(INT8), "x.jpg", "--runtime", "tf.lite"])
    assert bad.exit_code == 2 and "'litert'" in bad.output


def test_classify_file_defaults_to_the_classifier_top_k():
    clf = Classifier(INT8, top_k=5)
    image = next(SAMPLES.glob("Bag/*.jpg"))
    assert len(clf.classify_file(image).top_k) == 5
    assert len(clf.classify_pixels(preprocess.load_pixels(image, clf.spec))[0]) == 5
    assert len(clf.classify(image)) == 5


# --- Sizes checked before the interpreter allocates -------------------------------------------------


def _limited(gigabytes: float):
    """A preexec_fn: the child's address space capped, as a small device's memory would be."""
    import resource

    limit = int(gigabytes * 2**30)
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def test_predict_refuses_an_absurd_input_in_one_line(tmp_path):
    """The 252-million-value input: refused in one line, not 23 GB and 70 s later."""
    import subprocess
    import sys

    model = tmp_path / "absurd.tflite"
    model.write_bytes(with_input_shape(INT8.read_bytes(), [1, 9_000_000, 28, 1]))
    photo = next(SAMPLES.glob("Bag/*.jpg"))
    out = subprocess.run(
        [sys.executable, "-m", "edgenn", "predict", "-m", str(model), str(photo)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limited(2),
    )
    assert out.returncode == 1, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "[1, 9000000, 28, 1]" in lines[0], out.stderr[-2000:]


def test_runner_refuses_an_input_far_larger_than_what_the_model_computes(sparse_face_detection):
    """A declared input 93x the largest tensor the graph computes: shapes that lie.

    The model starts with a PAD, whose output the runtime resizes from the input: the file's
    own checks cannot see the lie, the comparison with the rest of the graph does.
    """
    crafted = with_input_shape(sparse_face_detection.read_bytes(), [1, 192, 50_000, 3])
    with pytest.raises(EdgennError, match=r"28,800,000 values, 93 times the largest tensor"):
        Runner(crafted)


def test_classifier_checks_the_recipe_before_the_runtime(tmp_path, sparse_face_detection):
    """The recipe says 192x192, the file an input 260 times larger: refused before allocating."""
    from edgenn import artifact

    spec = preprocess.PreprocessSpec.for_images(192, 192, "RGB")
    raw = artifact.embed(sparse_face_detection.read_bytes(), [], spec)
    model = tmp_path / "wide.tflite"
    model.write_bytes(with_input_shape(raw, [1, 192, 50_000, 3]))
    with pytest.raises(EdgennError, match=r"recipe says input \[192, 192, 3\] but the model"):
        Classifier(model)


def test_labels_must_fit_the_output_the_runtime_computes(tmp_path, face_detection):
    """The file says 3 outputs, the graph computes 896 x 16: 3 labels would name nothing."""
    from edgenn import artifact

    from .test_tflite_model import rewrite

    def three_outputs(model) -> None:
        sg = model.subgraphs[0]  # its last op, a CONCATENATION, is resized by the runtime
        sg.tensors[sg.outputs[0]].shape = np.array([1, 3], dtype=np.int32)

    raw = rewrite(face_detection.read_bytes(), three_outputs)
    spec = preprocess.PreprocessSpec.for_images(128, 128, "RGB")
    doc = artifact.metadata_bytes(["a", "b", "c"], spec)
    model = tmp_path / "three.tflite"
    model.write_bytes(tflite_model.embed_metadata(raw, artifact.METADATA_ENTRY, doc))
    with pytest.raises(artifact.LabelMismatchError, match="has 3 labels but 14336 outputs"):
        Classifier(model)


def test_a_model_without_inputs_or_outputs_is_one_line():
    import dataclasses

    from .test_tflite_model import rewrite

    def no_outputs(model) -> None:
        model.subgraphs[0].outputs = np.array([], dtype=np.int32)

    with pytest.raises(EdgennError, match="has no output"):
        Runner(rewrite(INT8.read_bytes(), no_outputs))
    with pytest.raises(EdgennError, match="has no input"):
        Runner(dataclasses.replace(tflite_model.load(INT8), inputs=[]))


def test_predict_skips_missing_and_looping_paths_one_line_each(tmp_path):
    """A dangling link, a symlink loop or a missing file is one failed file, not the end."""
    photo = next(SAMPLES.glob("Bag/*.jpg"))
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    (tmp_path / "loop.jpg").symlink_to(tmp_path / "loop.jpg")
    args = [str(tmp_path / n) for n in ("dangling.jpg", "loop.jpg", "missing.jpg")]
    result = CliRunner().invoke(main, ["predict", "-m", str(INT8), *args, str(photo), "--json"])
    assert result.exit_code == 1, result.output
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["error"] is None for d in docs] == [False, False, False, True]
    errors = [line for line in result.stderr.splitlines() if line]
    assert len(errors) == 3 and all(line.startswith("edgenn: error: ") for line in errors)


def test_bench_reads_only_regular_files_and_refuses_a_text_input(tmp_path):
    from ai_edge_litert import schema_py_generated as schema

    from edgenn import bench

    from .test_tflite_model import deadline, rewrite

    options = bench.BenchOptions(dataset=None, runs=2, warmup=0)
    for name in ("fifo.tflite", "fifo.onnx"):
        os.mkfifo(tmp_path / name)
        with deadline(10):
            row = bench.bench_one(tmp_path / name, options)
        assert "not a regular file" in row.error, row.error

    def text_input(model) -> None:
        sg = model.subgraphs[0]
        tensor = schema.TensorT()
        tensor.shape, tensor.type, tensor.name = np.array([1], np.int32), 5, "text"
        sg.tensors.append(tensor)
        sg.inputs = np.array([*sg.inputs, len(sg.tensors) - 1], np.int32)

    model = tmp_path / "text.tflite"
    model.write_bytes(rewrite(INT8.read_bytes(), text_input))
    row = bench.bench_one(model, options)
    assert "input 1 ('text') holds string values" in row.error, row.error


def test_a_complex_output_is_one_line(tmp_path):
    """Scores are ranked: complex numbers cannot be (a traceback in top-k before)."""
    from .test_tflite_model import rewrite

    def complex_output(model) -> None:
        sg = model.subgraphs[0]
        sg.tensors[sg.outputs[0]].type = 8  # COMPLEX64

    model = tmp_path / "complex.tflite"
    model.write_bytes(rewrite(FP32.read_bytes(), complex_output))
    photo = next(SAMPLES.glob("Bag/*.jpg"))
    result = CliRunner().invoke(main, ["predict", "-m", str(model), str(photo)])
    assert result.exit_code == 1 and "output 0" in result.stderr, result.output
    assert "holds complex64 values" in result.stderr and result.stderr.count("\n") == 1

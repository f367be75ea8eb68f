"""edgenn.runtime and edgenn predict on real models, without TensorFlow."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from edgenn import datasets as data
from edgenn import preprocess
from edgenn.cli import main
from edgenn.errors import EdgennError, MissingDependencyError, UsageError
from edgenn.predict import Classifier
from edgenn.runtime import Runner, find_runtime, load_delegate

from .conftest import REPO, SAMPLES

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

"""edgenn.classify: dequantize, scores, top-k, ranking and accuracy, on real model outputs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from edgenn import classify
from edgenn import datasets as data
from edgenn.classify import Class
from edgenn.runtime import Runner

from .conftest import REPO

INT8 = REPO / "tests" / "data" / "tiny_cnn_int8.tflite"
MICRO = REPO / "tests" / "data" / "tiny_cnn_micro.tflite"


@pytest.fixture(scope="module")
def test_split():
    splits = data.make_splits(data.DataSpec(), data.load_fashion_mnist(allow_download=False))
    return splits.model_inputs(splits.x_test[:200]), splits.y_test[:200]


@pytest.fixture(scope="module")
def raw_outputs(test_split):
    """The int8 micro model's raw int8 outputs (int8 I/O) and its output quantization."""
    runner = Runner(MICRO, xnnpack=False)
    raws = []
    for x in test_split[0]:
        runner.set_input(x)
        runner.invoke()
        raws.append(runner.interpreter.get_tensor(runner.output_details[0]["index"]))
    return np.concatenate(raws), runner.output_quantization


def test_dequantize_widens_before_subtracting(raw_outputs):
    raw, (scale, zero) = raw_outputs
    assert raw.dtype == np.int8 and zero == -128
    real = classify.dequantize(raw, scale, zero)
    assert real.dtype == np.float32
    # int8 - (-128) overflows int8: done in int64, the top value 127 maps to 255 * scale.
    np.testing.assert_allclose(real, (raw.astype(np.int64) + 128) * scale, rtol=1e-6)
    assert np.allclose(real.sum(axis=1), 1, atol=0.05)
    floats = np.array([[0.25, 0.75]], np.float32)
    np.testing.assert_array_equal(classify.dequantize(floats, 0.0, 0), floats)


def test_accuracy_and_predictions_on_a_real_model(test_split):
    x, y = test_split
    outputs = Runner(INT8).predict(x)
    assert classify.accuracy(outputs, y) == pytest.approx(np.mean(outputs.argmax(1) == y))
    assert classify.accuracy(outputs, y) > 0.6
    np.testing.assert_array_equal(classify.predictions(outputs), outputs.argmax(1))
    assert classify.accuracy(outputs[:0], y[:0]) == 0.0


def test_scores_from_sigmoid_output():
    scores = classify.scores(np.array([[0.25], [0.9]]))
    np.testing.assert_allclose(scores, [[0.75, 0.25], [0.1, 0.9]])
    assert classify.accuracy(np.array([[0.25], [0.9]]), np.array([0, 1])) == 1.0


def _by_value_then_index(flat: np.ndarray, k: int) -> list[int]:
    values = flat.astype(np.float64)
    return sorted(range(len(values)), key=lambda i: (-values[i], i))[:k]


def test_top_k_on_real_outputs_ranks_ties_by_index(raw_outputs):
    raw, (scale, zero) = raw_outputs
    ties = 0
    for row in raw:
        for k in (1, 2, 3, 10):
            top = classify.top_k(row[None], k, scale, zero)
            assert [i for i, _ in top] == _by_value_then_index(row, k)
            assert top[0][0] == int(row.argmax())
            assert [s for _, s in top] == [(int(row[i]) - zero) * scale for i, _ in top]
        ties += len(set(row.tolist())) < len(row)
    assert ties > 0  # int8 outputs do tie (many classes at exactly 0): the rule matters


@pytest.mark.parametrize("units", [12, 1000])
def test_top_k_small_and_large_outputs_agree_on_ties(units):
    rng = np.random.default_rng(units)
    for _ in range(50):
        raw = rng.integers(-128, -120, (1, units)).astype(np.int8)  # many ties
        for k in (1, 3, 7):
            top = classify.top_k(raw, k, 0.5, -128)
            assert [i for i, _ in top] == _by_value_then_index(raw[0], k)
    floats = rng.random((1, units)).astype(np.float32)
    assert classify.top_k(floats, 2)[0] == (int(floats.argmax()), float(floats.max()))


def test_top_k_of_one_sigmoid_unit():
    top = classify.top_k(np.array([[0.8]], np.float32), 2)
    assert [i for i, _ in top] == [1, 0] and [s for _, s in top] == pytest.approx([0.8, 0.2])
    top = classify.top_k(np.array([[0.3]], np.float32), 1)
    assert [i for i, _ in top] == [0] and top[0][1] == pytest.approx(0.7)
    assert classify.top_k(np.array([[192]], np.uint8), 1, 1 / 256, 0) == [(1, 0.75)]


def test_class_names_fill_missing_labels_with_the_index():
    assert classify.class_names(["cat", "dog"], 3) == ["cat", "dog", "2"]
    assert classify.class_names([], 1) == ["0", "1"]
    assert classify.class_names(["no", "yes"], 1) == ["no", "yes"]


@pytest.mark.parametrize("quantized", [True, False])
def test_ranker_equals_named_top_k(raw_outputs, quantized):
    raw, (scale, zero) = raw_outputs
    labels = data.FASHION_MNIST_LABELS[:8]  # two classes without a label: named by index
    if not quantized:
        raw, scale, zero = classify.dequantize(raw, scale, zero), 0.0, 0
    rank = classify.ranker(labels, raw.shape[1], scale, zero)
    for row in raw[:50]:
        for k in (1, 3):
            expected = classify.named(classify.top_k(row, k, scale, zero), labels)
            assert rank(row, k) == expected
            assert all(isinstance(c.index, int) and isinstance(c.score, float) for c in expected)


def test_ranker_of_a_sigmoid_model():
    rank = classify.ranker(["no", "yes"], 1)
    assert rank(np.array([0.9], np.float32), 2) == [
        Class(1, "yes", pytest.approx(0.9)),
        Class(0, "no", pytest.approx(0.1)),
    ]


def test_class_is_a_small_json_record():
    c = Class(8, "Bag", 0.5)
    assert json.loads(json.dumps(dataclasses.asdict(c))) == {
        "index": 8,
        "label": "Bag",
        "score": 0.5,
    }
    with pytest.raises(AttributeError):
        c.extra = 1  # __slots__: no per-instance dict


def test_a_sigmoid_tie_ranks_as_argmax_does():
    raw = np.array([[0.5]], np.float32)
    assert classify.top_k(raw, 1)[0][0] == int(classify.predictions(raw)[0]) == 0

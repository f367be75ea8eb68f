"""[device] Classification post-processing: dequantize, scores, top-k and accuracy.

Plain numpy functions over a model's raw output, in the spirit of pycoral's
``adapters/classify.py``: every command (predict, bench, tag, camera, convert's scoring, training's
metrics) turns outputs into classes here, so a class is ranked and scored the same way everywhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

#: How many classes a classification returns unless asked otherwise.
DEFAULT_TOP_K = 3


@dataclasses.dataclass
class Class:
    """One class of a classification, best first in a list.

    A plain record with ``__slots__`` and no frozen-instance machinery: one is built per class
    per classified image, on the hot path of :meth:`edgenn.predict.Classifier.classify` (a frozen
    dataclass's ``__init__`` costs three times as much).

    Attributes:
        index: The output index (class id).
        label: Its name (the index as text when the model has no labels).
        score: Its probability (dequantized).
    """

    __slots__ = ("index", "label", "score")
    index: int
    label: str
    score: float


def dequantize(raw: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Real values of a quantized tensor: ``scale * (q - zero_point)``.

    The subtraction is done in int64 (as pycoral does): ``int8 - zero_point`` can overflow int8
    and uint8 - 128 would wrap. A float tensor (``scale`` 0) is returned as float32 unchanged.

    Args:
        raw: The tensor as the interpreter returned it.
        scale: Quantization scale (0 for a float tensor).
        zero_point: Quantization zero point.

    Returns:
        float32 values.
    """
    if not scale:
        return np.asarray(raw, dtype=np.float32)
    return (scale * (np.asarray(raw, dtype=np.int64) - zero_point)).astype(np.float32)


def scores(outputs: np.ndarray) -> np.ndarray:
    """Class probabilities from a classifier's float outputs.

    A single sigmoid unit is a two-class model: it becomes the columns ``(1 - p, p)``.

    Args:
        outputs: Model outputs ``(N, units)`` (already dequantized).

    Returns:
        ``(N, classes)`` float64 probabilities.
    """
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        return np.concatenate([1.0 - outputs, outputs], axis=1)
    return outputs


def predictions(outputs: np.ndarray) -> np.ndarray:
    """The winning class of every row of ``outputs`` ``(N, units)``."""
    return scores(outputs).argmax(axis=1)


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose winning class is the true one.

    Args:
        outputs: Model outputs ``(N, units)``.
        labels: True classes ``(N,)``.

    Returns:
        Accuracy in [0, 1] (0 for no rows).
    """
    labels = np.asarray(labels)
    if len(labels) == 0:
        return 0.0
    return float(np.mean(predictions(outputs) == labels))


#: Outputs up to this size are ranked with Python's sort on a list (one numpy call, ``tolist``);
#: larger ones with a numpy partition. Both rank ties by the lower index first, as ``argmax``.
SMALL_OUTPUT = 64


def top_k(
    raw: np.ndarray, k: int, scale: float = 0.0, zero_point: int = 0
) -> list[tuple[int, float]]:
    """The k best classes of one raw output as ``(index, score)``, best first.

    Works on the raw (possibly quantized) output: dequantization is monotonic (scale > 0), so the
    ranking is taken on the integers and only the k winners are converted. Equal values rank by
    the lower index first, so the first class is always ``argmax``'s.

    Args:
        raw: One output with a batch axis of 1 (or none), as the interpreter returned it.
        k: How many classes.
        scale: Output quantization scale (0: a float output).
        zero_point: Output zero point.

    Returns:
        ``[(class index, score)]``.
    """
    if raw.size == 1:
        # One sigmoid unit: two classes.
        p = (raw.item(0) - zero_point) * scale if scale else raw.item(0)
        ranked = [(1, p), (0, 1.0 - p)] if p > 0.5 else [(0, 1.0 - p), (1, p)]
        return ranked[:k]
    if k == 1:
        i = int(raw.argmax())
        return [(i, (raw.item(i) - zero_point) * scale if scale else raw.item(i))]
    flat = raw.reshape(-1)
    if flat.shape[0] <= SMALL_OUTPUT:
        values = flat.tolist()
        # sorted() is stable, also with reverse=True: equal values keep their index order.
        best = sorted(range(len(values)), key=values.__getitem__, reverse=True)[:k]
        pairs = [(i, values[i]) for i in best]
    else:
        pairs = _top_k_large(flat, k)
    if scale:
        return [(i, (v - zero_point) * scale) for i, v in pairs]
    return [(i, float(v)) for i, v in pairs]


def _top_k_large(flat: np.ndarray, k: int) -> list[tuple[int, int | float]]:
    k = min(k, flat.shape[0])
    kth = np.partition(flat, flat.shape[0] - k)[flat.shape[0] - k]
    candidates = np.flatnonzero(flat >= kth)  # the k best and any value tied with the k-th
    # A stable sort of the negated values (in float64: -(-128) overflows int8) ranks ties by index.
    order = np.argsort(-flat[candidates].astype(np.float64), kind="stable")[:k]
    best = candidates[order]
    return list(zip(best.tolist(), flat[best].tolist()))


def class_names(labels: Sequence[str], units: int) -> list[str]:
    """The name of every class of a model with ``units`` outputs, the index as text where none.

    One sigmoid unit is a two-class model (negative, positive).

    Args:
        labels: The model's labels (may be empty).
        units: Values in the model's output, without the batch axis.

    Returns:
        One name per class index.
    """
    classes = 2 if units == 1 else units
    return [labels[i] if i < len(labels) else str(i) for i in range(classes)]


def named(ranked: list[tuple[int, float]], labels: Sequence[str]) -> list[Class]:
    """Attach names to ``(index, score)`` pairs (the index as text where no label exists)."""
    n = len(labels)
    return [Class(i, labels[i] if i < n else str(i), float(s)) for i, s in ranked]


#: ``rank(raw, k)``: the k best classes of one raw output, named, best first.
Ranker = Callable[[np.ndarray, int], list[Class]]


def ranker(labels: Sequence[str], units: int, scale: float = 0.0, zero_point: int = 0) -> Ranker:
    """A ranking function for one model: ``named(top_k(raw, k, scale, zero_point), labels)``.

    The names are looked up once, and top-1 (a camera frame, a benchmark loop) is two numpy calls:
    an argmax on the raw integers and one ``item``, dequantized in Python arithmetic. The
    classify hot path calls this once per image (``benchmarks/runtime_overhead.py``).

    Args:
        labels: The model's labels (may be empty: classes are named by index).
        units: Values in the model's output, without the batch axis.
        scale: Output quantization scale (0: a float output).
        zero_point: Output zero point.

    Returns:
        ``rank(raw, k)`` taking the raw output (any shape holding ``units`` values).
    """
    names = class_names(labels, units)

    def rank_general(raw: np.ndarray, k: int) -> list[Class]:
        return [Class(i, names[i], float(s)) for i, s in top_k(raw, k, scale, zero_point)]

    if units == 1:
        return rank_general

    def rank_quantized(raw: np.ndarray, k: int) -> list[Class]:
        if k == 1:
            i = int(raw.argmax())
            return [Class(i, names[i], (raw.item(i) - zero_point) * scale)]
        return rank_general(raw, k)

    def rank_float(raw: np.ndarray, k: int) -> list[Class]:
        if k == 1:
            i = int(raw.argmax())
            return [Class(i, names[i], raw.item(i))]
        return rank_general(raw, k)

    return rank_quantized if scale else rank_float

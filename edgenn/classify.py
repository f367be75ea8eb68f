"""[device] Classification post-processing: dequantize, scores, top-k and accuracy.

Plain numpy functions over a model's raw output, in the spirit of pycoral's
``adapters/classify.py``: every command (predict, bench, tag, camera, convert's scoring, training's
metrics) turns outputs into classes here, so a class is ranked and scored the same way everywhere.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Class:
    """One class of a classification, best first in a list.

    Attributes:
        index: The output index (class id).
        label: Its name (the index as text when the model has no labels).
        score: Its probability (dequantized).
    """

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


def top_k(
    raw: np.ndarray, k: int, scale: float = 0.0, zero_point: int = 0
) -> list[tuple[int, float]]:
    """The k best classes of one raw output as ``(index, score)``, best first.

    Works on the raw (possibly quantized) output: dequantization is monotonic (scale > 0), so the
    ranking is taken on the integers and only the k winners are converted. This is the classify
    hot path, kept to a handful of operations (``benchmarks/runtime_overhead.py``).

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
        ranked = [(1, p), (0, 1.0 - p)] if p >= 0.5 else [(0, 1.0 - p), (1, p)]
        return ranked[:k]
    if k == 1:
        i = int(raw.argmax())
        return [(i, (raw.item(i) - zero_point) * scale if scale else raw.item(i))]
    flat = raw.reshape(-1)
    k = min(k, flat.shape[0])
    part = np.argpartition(flat, -k)[-k:]
    best = part[np.argsort(flat[part])[::-1]]
    if scale:
        return [(int(i), (int(flat[i]) - zero_point) * scale) for i in best]
    return [(int(i), float(flat[i])) for i in best]


def named(ranked: list[tuple[int, float]], labels: list[str]) -> list[Class]:
    """Attach names to ``(index, score)`` pairs (the index as text where no label exists)."""
    n = len(labels)
    return [Class(i, labels[i] if i < n else str(i), float(s)) for i, s in ranked]

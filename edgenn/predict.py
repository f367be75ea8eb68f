"""[device] Classify image files with a .tflite model: top-k labels and scores per image.

The model needs nothing beside it: labels and preprocessing come from its embedded metadata (or
``labels.txt`` / ``preprocess.json`` next to it), so on a Pi ``edgenn predict -m model.tflite
photo.jpg`` is enough.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from edgenn import preprocess, tflite_model
from edgenn.artifact import model_info
from edgenn.datasets import IMAGE_SUFFIXES
from edgenn.errors import EdgennError
from edgenn.runtime import Runner


@dataclasses.dataclass
class Label:
    """One class and its score."""

    label: str
    score: float


@dataclasses.dataclass
class Classification:
    """The result for one image (``--json`` prints one per line).

    Attributes:
        image: The file.
        top_k: Best classes first.
        inference_ms: Time of the interpreter's ``invoke``.
        total_ms: Decode, preprocess and inference.
        error: Why the image was not classified (None when it was).
    """

    image: str
    top_k: list[Label]
    inference_ms: float | None = None
    total_ms: float | None = None
    error: str | None = None


class Classifier:
    """A model with its labels and preprocessing, ready to classify images.

    Args:
        model: Path of the .tflite file.
        threads: Interpreter threads.
        xnnpack: Use LiteRT's XNNPACK delegate.
        delegate: External delegate (see :class:`edgenn.runtime.Runner`).

    Raises:
        EdgennError: The model is damaged, not an image classifier, or has several inputs.
    """

    def __init__(
        self,
        model: Path,
        threads: int | None = None,
        xnnpack: bool = True,
        delegate: str | None = None,
    ) -> None:
        parsed = tflite_model.load(model)
        if len(parsed.inputs) != 1:
            raise EdgennError(
                f"{model} has {len(parsed.inputs)} inputs; edgenn predict classifies images with "
                "single-input models.",
                "edgenn bench still measures it (with generated inputs).",
            )
        self.info = model_info(parsed)
        if self.info.spec.kind != "image":
            raise EdgennError(
                f"{model} is a {self.info.spec.kind} model; edgenn predict classifies images."
            )
        self.runner = Runner(parsed, threads=threads, xnnpack=xnnpack, delegate=delegate)
        self.spec = self.info.spec
        self.labels = self.info.labels
        self._input = np.empty(self.spec.input_shape, dtype=np.float32)

    def label(self, index: int) -> str:
        """Class name of an output index (the index itself when the model has no labels)."""
        return self.labels[index] if index < len(self.labels) else str(index)

    def classify_pixels(self, pixels: np.ndarray, k: int = 3) -> tuple[list[Label], float]:
        """Classify uint8 pixels already shaped as the model input.

        Args:
            pixels: uint8 array of ``spec.input_shape``.
            k: How many classes to return.

        Returns:
            ``(top_k, inference_ms)``.
        """
        preprocess.pixels_to_input(pixels, self.spec, out=self._input)
        self.runner.set_input(self._input)
        start = time.perf_counter()
        self.runner.invoke()
        inference_ms = (time.perf_counter() - start) * 1000
        return [Label(self.label(i), s) for i, s in self.runner.top_k(k)], inference_ms

    def classify_file(self, path: Path, k: int = 3) -> Classification:
        """Decode, preprocess and classify one image file; a bad file gives ``error``, not a raise.

        Args:
            path: The image.
            k: How many classes to return.

        Returns:
            The classification.
        """
        start = time.perf_counter()
        try:
            pixels = preprocess.load_pixels(path, self.spec)
        except EdgennError as exc:
            return Classification(str(path), [], error=exc.message)
        top, inference_ms = self.classify_pixels(pixels, k)
        total = (time.perf_counter() - start) * 1000
        return Classification(str(path), top, round(inference_ms, 4), round(total, 4))


def expand_images(paths: Iterable[Path]) -> Iterator[Path]:
    """Files as given, and the image files inside folders (recursively, sorted).

    Args:
        paths: Files and folders.

    Yields:
        Image paths.

    Raises:
        EdgennError: A path does not exist.
    """
    for path in paths:
        path = Path(path)
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        elif path.exists():
            yield path
        else:
            raise EdgennError(f"{path} does not exist.")

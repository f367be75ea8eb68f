"""[device] The types every data source shares: the request (:class:`DataSpec`) and the result.

A source module (``fashion_mnist``, ``digits``, ``image_folder``, ``csv_table``) turns its files
into a :class:`Dataset`; :mod:`edgenn.datasets.splits` cuts one into train / validation / test.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from PIL import Image

from edgenn import preprocess
from edgenn.preprocess import PreprocessSpec

#: What a target column is: ``auto`` decides from its values (see :func:`edgenn.datasets.csv_table.load_csv`).
TASKS = ("auto", "classification", "regression")
#: The data set every command uses unless told otherwise (train, bench's scoring, firmware's check).
DEFAULT_DATASET = "fashion-mnist"
#: What a user passes as ``--dataset`` to mean "no data set" (bench, firmware).
NO_DATASET = "none"


@dataclasses.dataclass
class Dataset:
    """A whole data set in memory, before splitting.

    Attributes:
        name: Data set name or path, as the user gave it.
        x: uint8 images ``(N, H, W, C)`` or float32 features ``(N, F)``.
        y: int64 class indices, or float64 regression targets.
        labels: Class names (index = class id); empty for regression.
        spec: How raw inputs become model inputs.
        x_test: The data set's own test split, when it has one (Fashion-MNIST).
        y_test: Labels of ``x_test``.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    labels: list[str]
    spec: PreprocessSpec
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None

    @property
    def task(self) -> str:
        """``"classification"`` or ``"regression"``."""
        return self.spec.task


@dataclasses.dataclass
class DataSpec:
    """Everything needed to rebuild the same splits; saved as ``data.json`` in a run directory.

    Attributes:
        dataset: ``fashion-mnist``, ``digits``, a folder of class sub-folders or a ``.csv`` file.
        data_dir: ``--data-dir`` for Fashion-MNIST (None: look in the usual places).
        target_column: CSV column to predict.
        task: ``auto``, ``classification`` or ``regression`` (CSV).
        input_size: ``[height, width]`` to resize images to (None: the data set's own size).
        color_mode: ``L`` or ``RGB`` to convert images to (None: the data set's own).
        seed: Seed of the splits.
        val_fraction: Share of the training pool kept for validation.
        test_fraction: Share kept for the test split (data sets without their own test split).
        limit: Use at most this many examples of the training pool (stratified); None: all.
    """

    dataset: str = DEFAULT_DATASET
    data_dir: str | None = None
    target_column: str | None = None
    task: str = "auto"
    input_size: list[int] | None = None
    color_mode: str | None = None
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    limit: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON document."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> DataSpec:
        """Inverse of :meth:`to_dict`, ignoring unknown keys.

        Args:
            doc: The document.

        Returns:
            The spec.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in names})


def adapt_images(x: np.ndarray, src: PreprocessSpec, dst: PreprocessSpec) -> np.ndarray:
    """Resize and colour-convert a stack of uint8 images from one recipe's shape to another's.

    Args:
        x: uint8 images ``(N, H, W, C)`` shaped as ``src``.
        src: Their current recipe.
        dst: The recipe to match.

    Returns:
        uint8 images shaped as ``dst.input_shape``.
    """
    if list(x.shape[1:]) == list(dst.input_shape):
        return x
    src_mode = "L" if x.shape[-1] == 1 else "RGB"
    out = np.empty((len(x), *dst.input_shape), dtype=np.uint8)
    for i, image in enumerate(x):
        img = Image.fromarray(np.ascontiguousarray(image[..., 0] if src_mode == "L" else image))
        out[i] = preprocess.resize_pixels(preprocess.convert_mode(img, dst.color_mode), dst)
    return out


def dataset_option(value: str | None) -> str | None:
    """``--dataset`` as given on a command line: :data:`NO_DATASET` (or empty) means none."""
    return None if value in (None, "", NO_DATASET) else value

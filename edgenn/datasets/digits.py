"""[device] scikit-learn's bundled 8x8 handwritten digits, read from its CSV without importing it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from edgenn import optional
from edgenn.datasets.dataset import Dataset
from edgenn.errors import EdgennError
from edgenn.preprocess import PreprocessSpec


def _digits_csv() -> Path:
    """Where scikit-learn keeps ``digits.csv.gz``, found without importing scikit-learn.

    Importing sklearn takes seconds; only the location of its bundled file is needed.

    Raises:
        MissingDependencyError: scikit-learn is not installed.
    """
    spec = importlib.util.find_spec("sklearn") if optional.available("sklearn") else None
    if spec is None or not spec.submodule_search_locations:
        raise optional.missing("sklearn", "The digits data set")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"


def load_digits() -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes).

    The CSV that scikit-learn ships is read directly (scikit-learn itself is not imported, so this
    stays light). Pixel values 0-16 are scaled to 0-255 so that they are ordinary uint8 images.

    Returns:
        The data set.

    Raises:
        MissingDependencyError: scikit-learn is not installed.
        EdgennError: The bundled file is not what this version expects.
    """
    path = _digits_csv()
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise EdgennError(f"Cannot read scikit-learn's digits file {path}: {exc}.") from None
    if table.ndim != 2 or table.shape[1] != 65:
        raise EdgennError(f"{path} has shape {table.shape}; expected (1797, 65).")
    pixels = np.rint(table[:, :64] * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 8, 8, 1)
    return Dataset(
        name="digits",
        x=pixels,
        y=table[:, 64].astype(np.int64),
        labels=[str(i) for i in range(10)],
        spec=PreprocessSpec.for_images(8, 8, "L"),
    )

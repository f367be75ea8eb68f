"""[device] From a :class:`DataSpec` to a loaded :class:`Dataset`: which source a name means."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgenn.datasets.csv_table import load_csv
from edgenn.datasets.dataset import TASKS, Dataset, DataSpec, adapt_images
from edgenn.datasets.digits import load_digits
from edgenn.datasets.fashion_mnist import load_fashion_mnist
from edgenn.datasets.image_folder import load_image_folder
from edgenn.errors import UsageError
from edgenn.preprocess import PreprocessSpec

#: Built-in data sets by name: the one list that drives the CLI choices and validation.
BUILTIN_DATASETS: dict[str, Callable[[DataSpec], Dataset]] = {
    "fashion-mnist": lambda s: load_fashion_mnist(Path(s.data_dir) if s.data_dir else None),
    "digits": lambda s: load_digits(),
}


def _reshape(ds: Dataset, size: tuple[int, int] | None, color_mode: str | None) -> Dataset:
    """Resize / colour-convert a built-in data set's images (both splits) in place."""
    height, width = size or ds.spec.image_size
    mode = color_mode or ds.spec.color_mode
    spec = PreprocessSpec.for_images(height, width, mode)
    ds.x = adapt_images(ds.x, ds.spec, spec)
    if ds.x_test is not None:
        ds.x_test = adapt_images(ds.x_test, ds.spec, spec)
    ds.spec = spec
    return ds


def load_dataset(data: DataSpec) -> Dataset:
    """Load the data set a :class:`DataSpec` names, with its images resized / converted.

    Args:
        data: What to load.

    Returns:
        The data set.

    Raises:
        UsageError: The name is neither a built-in data set nor an existing folder or CSV file.
        EdgennError: Loading failed.
    """
    if data.task not in TASKS:
        raise UsageError(f"--task {data.task!r} is unknown; expected one of {', '.join(TASKS)}.")
    name = data.dataset
    path = Path(name)
    size = tuple(data.input_size) if data.input_size else None
    if name in BUILTIN_DATASETS:
        ds = BUILTIN_DATASETS[name](data)
    elif path.is_dir():
        return load_image_folder(path, size, data.color_mode)
    elif path.suffix.lower() == ".csv":
        return load_csv(path, data.target_column, data.task)
    else:
        raise UsageError(
            f"Unknown data set {name!r}: expected one of {', '.join(BUILTIN_DATASETS)}, a folder "
            "of class sub-folders, or a .csv file."
        )
    if size is not None or data.color_mode is not None:
        ds = _reshape(ds, size, data.color_mode)
    return ds

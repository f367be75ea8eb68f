"""[device] Data sets for training and scoring, with numpy and Pillow only.

``edgenn bench`` scores models on a Pi with the same test split that training set aside, so
everything here runs without TensorFlow or any optional extra. One module per source, plus the
pieces they share:

- :mod:`.dataset`: :class:`DataSpec` (what to load and how to split it), :class:`Dataset` (a whole
  data set in memory), :data:`TASKS`, :func:`adapt_images`.
- :mod:`.idx`: IDX files (the MNIST format), read and validated fully.
- :mod:`.fashion_mnist`: found via ``--data-dir``, ``datasets/``, Debian's package or the user
  cache, else downloaded and checked against ``checksums/``.
- :mod:`.digits`: scikit-learn's bundled 8x8 digits, read without importing scikit-learn.
- :mod:`.image_folder`: one sub-folder per class, images inside.
- :mod:`.csv_table`: numeric feature columns and one named target column.
- :mod:`.sources`: which source a :class:`DataSpec` names (:func:`load_dataset`).
- :mod:`.splits`: deterministic, stratified train / validation / test splits and ``data.json``.
"""

from __future__ import annotations

from edgenn.datasets.csv_table import MAX_AUTO_CLASSES, load_csv
from edgenn.datasets.dataset import (
    DEFAULT_DATASET,
    NO_DATASET,
    TASKS,
    Dataset,
    DataSpec,
    adapt_images,
    dataset_option,
)
from edgenn.datasets.digits import load_digits
from edgenn.datasets.fashion_mnist import (
    CHECKSUM_FILE,
    DEBIAN_FASHION_MNIST,
    FASHION_MNIST_FILES,
    FASHION_MNIST_LABELS,
    FASHION_MNIST_URL,
    REPO_DATASETS,
    download_fashion_mnist,
    load_fashion_mnist,
    locate_fashion_mnist,
    user_cache_dir,
)
from edgenn.datasets.idx import find_idx, read_idx
from edgenn.datasets.image_folder import (
    DEFAULT_MAX_SIDE,
    GRAYSCALE_MODES,
    list_image_folder,
    load_image_folder,
)
from edgenn.datasets.sources import BUILTIN_DATASETS, load_dataset
from edgenn.datasets.splits import (
    DATA_FILE,
    Splits,
    load_data_spec,
    make_splits,
    representative_sample,
    save_data_spec,
    stratified_indices,
)

__all__ = [
    "BUILTIN_DATASETS",
    "CHECKSUM_FILE",
    "DATA_FILE",
    "DEBIAN_FASHION_MNIST",
    "DEFAULT_DATASET",
    "DEFAULT_MAX_SIDE",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_LABELS",
    "FASHION_MNIST_URL",
    "GRAYSCALE_MODES",
    "MAX_AUTO_CLASSES",
    "NO_DATASET",
    "REPO_DATASETS",
    "TASKS",
    "DataSpec",
    "Dataset",
    "Splits",
    "adapt_images",
    "dataset_option",
    "download_fashion_mnist",
    "find_idx",
    "list_image_folder",
    "load_csv",
    "load_data_spec",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_image_folder",
    "locate_fashion_mnist",
    "make_splits",
    "read_idx",
    "representative_sample",
    "save_data_spec",
    "stratified_indices",
    "user_cache_dir",
]

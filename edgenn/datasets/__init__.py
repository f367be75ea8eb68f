"""[device] Data sets: IDX (Fashion-MNIST), scikit-learn's 8x8 digits, image folders, CSV tables.

Everything here uses numpy and pillow only, because ``edgenn bench`` scores models on a Pi with
the same test split that training set aside. Splits are deterministic and stratified: the same
:class:`DataSpec` always gives the same train / validation / test examples, and the test split does
not depend on ``limit`` or the validation fraction, so every stage scores on the same images.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import gzip
import hashlib
import importlib.util
import json
import os
import struct
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edgenn import optional, preprocess
from edgenn.errors import EdgennError, UsageError
from edgenn.preprocess import PreprocessSpec

FASHION_MNIST_LABELS = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
#: Where Debian's package dataset-fashion-mnist installs the IDX files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
#: The data set's official download location (Zalando Research's S3 bucket).
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
#: The repository's own copy (``datasets/fashion-mnist/``), relative to the checkout.
REPO_DATASETS = Path(__file__).resolve().parent.parent / "datasets"
CHECKSUM_FILE = Path(__file__).resolve().parent / "checksums" / "fashion-mnist.sha256.txt"

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
#: Largest side of an image-folder model's input when the user gives no --input-size.
DEFAULT_MAX_SIDE = 96
#: A numeric CSV target with at most this many distinct integer values is taken as classes.
MAX_AUTO_CLASSES = 20

TASKS = ("auto", "classification", "regression")


# ---------------------------------------------------------------------------------------------
# IDX files


_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not, validating it fully.

    The header is checked (two zero bytes, a known type code, 1-4 dimensions) and the payload must
    hold exactly the product of the dimensions: a truncated or padded file is an error, never a
    silently short array.

    Args:
        path: ``*.gz`` or uncompressed IDX file.

    Returns:
        The array, in native byte order.

    Raises:
        EdgennError: The file is missing, not IDX, or its length does not match its header.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except FileNotFoundError:
        raise EdgennError(f"IDX file not found: {path}.") from None
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise EdgennError(
            f"{path} is not a readable gzip file ({exc}); it may be truncated.",
            "Delete it and let edgenn find or download the data set again.",
        ) from None
    if (
        len(raw) < 4
        or raw[0] != 0
        or raw[1] != 0
        or raw[2] not in _IDX_DTYPES
        or not 1 <= raw[3] <= 4
    ):
        raise EdgennError(
            f"{path} is not an IDX file: magic bytes {raw[:4].hex() or '(empty)'}, expected "
            "0000 then a type code (08 for uint8) and 1-4 dimensions."
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise EdgennError(f"{path} is truncated inside its IDX header ({len(raw)} bytes).")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header
    if actual != expected:
        raise EdgennError(
            f"{path} holds {actual} data bytes but its header {list(dims)} says {expected}; "
            "the file is truncated or damaged.",
            "Delete it and reinstall the data set (Debian: apt-get install --reinstall "
            "dataset-fashion-mnist).",
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))
    )


def _load_checksums() -> dict[str, str]:
    sums = {}
    for line in CHECKSUM_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            digest, name = line.split()
            sums[name] = digest
    return sums


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def user_cache_dir() -> Path:
    """The per-user cache for downloaded data sets (``$XDG_CACHE_HOME/edgenn`` or ``~/.cache``).

    Returns:
        The folder (not created).
    """
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgenn"


def download_fashion_mnist(dest: Path, base_url: str | None = None) -> Path:
    """Download the four Fashion-MNIST files, verifying each SHA-256 against the repo's list.

    The checksum is of the decompressed IDX content (mirrors and Debian re-compress the files).
    Each file is written under a temporary name and renamed only once its checksum matches.

    Args:
        dest: Folder to download into.
        base_url: Mirror to use; defaults to ``$EDGENN_FASHION_MNIST_URL`` or the official one.

    Returns:
        ``dest``.

    Raises:
        EdgennError: The network is unreachable or a checksum does not match.
    """
    base_url = base_url or os.environ.get("EDGENN_FASHION_MNIST_URL") or FASHION_MNIST_URL
    if not base_url.endswith("/"):
        base_url += "/"
    sums = _load_checksums()
    dest.mkdir(parents=True, exist_ok=True)
    for stem in FASHION_MNIST_FILES.values():
        name = f"{stem}.gz"
        target = dest / name
        if target.is_file() and _content_sha256(target) == sums[stem]:
            continue
        url = base_url + name
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                data = resp.read()
        except (urllib.error.URLError, OSError) as exc:
            raise EdgennError(
                f"Fashion-MNIST was not found locally and downloading {url} failed ({exc}).",
                "Install Debian's package (apt-get install dataset-fashion-mnist) or pass "
                "--data-dir with the four *-ubyte.gz files.",
            ) from None
        try:
            digest = hashlib.sha256(gzip.decompress(data)).hexdigest()
        except (OSError, EOFError) as exc:
            digest = f"(not a gzip file: {exc})"
        if digest != sums[stem]:
            raise EdgennError(
                f"Downloaded {name} decompresses to SHA-256 {digest}, expected {sums[stem]}; "
                "it was not kept.",
                "Try again later, or pass --data-dir with files you trust.",
            )
        from edgenn.fileio import atomic_write_bytes

        atomic_write_bytes(target, data)
    return dest


def _content_sha256(path: Path) -> str:
    """SHA-256 of a .gz file's decompressed content ('' when it is not a readable gzip file)."""
    h = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except (OSError, EOFError):
        return ""
    return h.hexdigest()


def locate_fashion_mnist(data_dir: Path | None = None, allow_download: bool = True) -> Path:
    """Find the Fashion-MNIST IDX files.

    Looked up in order: ``data_dir``; ``datasets/fashion-mnist/`` in the working directory and in
    the edgenn checkout; Debian's ``/usr/share/datasets/fashion-mnist``; the user cache; and last,
    when ``allow_download``, a download from the official location into the user cache.

    Args:
        data_dir: Folder given with ``--data-dir``; when given, it is the only place looked in.
        allow_download: Whether to download when no local copy exists.

    Returns:
        The folder holding the four files.

    Raises:
        EdgennError: No complete copy was found (and none could be downloaded).
    """

    def complete(folder: Path) -> bool:
        return all(_find_idx(folder, stem) for stem in FASHION_MNIST_FILES.values())

    if data_dir is not None:
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise EdgennError(f"--data-dir {data_dir} is not a folder.")
        if not complete(data_dir):
            missing = [s for s in FASHION_MNIST_FILES.values() if not _find_idx(data_dir, s)]
            raise EdgennError(
                f"--data-dir {data_dir} lacks Fashion-MNIST files: {', '.join(missing)} "
                "(.gz or uncompressed).",
                "Point --data-dir at the folder holding all four IDX files.",
            )
        return data_dir
    candidates = [
        Path.cwd() / "datasets" / "fashion-mnist",
        REPO_DATASETS / "fashion-mnist",
        DEBIAN_FASHION_MNIST,
        user_cache_dir() / "fashion-mnist",
    ]
    for folder in candidates:
        if complete(folder):
            return folder
    if allow_download:
        return download_fashion_mnist(user_cache_dir() / "fashion-mnist")
    raise EdgennError(
        "Fashion-MNIST was not found in " + ", ".join(str(c) for c in candidates) + ".",
        "Install it with: apt-get install dataset-fashion-mnist (or pass --data-dir).",
    )


# ---------------------------------------------------------------------------------------------
# Data sets


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

    dataset: str = "fashion-mnist"
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


@dataclasses.dataclass
class Splits:
    """Train / validation / test arrays of one data set.

    Attributes:
        x_train: Training inputs (raw: uint8 images or unscaled features).
        y_train: Training targets.
        x_val: Validation inputs (model selection, early stopping).
        y_val: Validation targets.
        x_test: Test inputs: never seen in training or model selection.
        y_test: Test targets.
        labels: Class names.
        spec: Preprocessing recipe (for tabular data: mean and std of the training split).
        data: The spec that rebuilds these splits.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels: list[str]
    spec: PreprocessSpec
    data: DataSpec

    @property
    def task(self) -> str:
        """``"classification"`` or ``"regression"``."""
        return self.spec.task

    def model_inputs(self, x: np.ndarray) -> np.ndarray:
        """Raw inputs of any split as float32 model inputs.

        Args:
            x: Raw inputs from one of the splits.

        Returns:
            float32 array ready for the model.
        """
        if self.spec.kind == "image":
            return preprocess.pixels_to_input(x, self.spec)
        return preprocess.features_to_input(x, self.spec)

    def summary(self) -> dict[str, Any]:
        """Sizes of the splits, for metrics.json."""
        return {
            "n_train": int(len(self.y_train)),
            "n_val": int(len(self.y_val)),
            "n_test": int(len(self.y_test)),
        }


def load_fashion_mnist(data_dir: Path | None = None, allow_download: bool = True) -> Dataset:
    """Fashion-MNIST: 60,000 training and 10,000 test images, 28x28 grayscale, 10 classes.

    Args:
        data_dir: Folder with the IDX files (see :func:`locate_fashion_mnist`).
        allow_download: Whether a download may be tried when no local copy exists.

    Returns:
        The data set, with the official test split in ``x_test``/``y_test``.

    Raises:
        EdgennError: The files are missing, damaged or inconsistent.
    """
    folder = locate_fashion_mnist(data_dir, allow_download)
    arrays = {key: read_idx(_find_idx(folder, stem)) for key, stem in FASHION_MNIST_FILES.items()}
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise EdgennError(
                f"Fashion-MNIST {part} files in {folder} disagree: images {images.shape}, labels "
                f"{labels.shape}; expected (N, 28, 28) and (N,)."
            )
        if labels.size and labels.max() >= len(FASHION_MNIST_LABELS):
            raise EdgennError(f"Fashion-MNIST {part} labels in {folder} exceed 9.")
    return Dataset(
        name="fashion-mnist",
        x=arrays["train_images"][..., None],
        y=arrays["train_labels"].astype(np.int64),
        labels=list(FASHION_MNIST_LABELS),
        spec=PreprocessSpec.for_images(28, 28, "L"),
        x_test=arrays["test_images"][..., None],
        y_test=arrays["test_labels"].astype(np.int64),
    )


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
    # Only the location of scikit-learn's bundled CSV is needed: importing sklearn takes seconds.
    spec = importlib.util.find_spec("sklearn") if optional.available("sklearn") else None
    if spec is None or not spec.submodule_search_locations:
        raise optional.missing("sklearn", "The digits data set")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
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


def list_image_folder(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """List an image folder: one sub-folder per class, images inside (searched recursively).

    Args:
        root: The folder.

    Returns:
        ``(labels, [(path, class_index), ...])`` with labels sorted by name.

    Raises:
        EdgennError: The folder is missing, has fewer than two classes, or a class has no image.
    """
    root = Path(root)
    if not root.is_dir():
        raise EdgennError(f"Image folder {root} does not exist.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise EdgennError(
            f"{root} has {len(classes)} class sub-folder(s); an image-folder data set needs at "
            "least 2 (one sub-folder per class, images inside).",
        )
    items = []
    for index, name in enumerate(classes):
        files = sorted(
            p
            for p in (root / name).rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        if not files:
            raise EdgennError(
                f"Class folder {root / name} holds no images (expected JPEG or PNG files).",
                "Add images or remove the empty folder.",
            )
        items.extend((f, index) for f in files)
    return classes, items


def load_image_folder(
    root: Path, input_size: tuple[int, int] | None = None, color_mode: str | None = None
) -> Dataset:
    """Load a folder of class sub-folders, each image upright (EXIF), converted and resized.

    Args:
        root: The folder.
        input_size: ``(height, width)``; default: the most common image size if both sides are at
            most 96 pixels, else 96x96.
        color_mode: ``"L"`` or ``"RGB"``; default ``"L"`` when every image is grayscale.

    Returns:
        The data set.

    Raises:
        EdgennError: The folder layout is wrong or an image cannot be decoded.
    """
    labels, items = list_image_folder(root)
    sizes: collections.Counter = collections.Counter()
    gray = True
    for path, _ in items:
        try:
            with Image.open(path) as img:
                sizes[img.size] += 1
                gray = gray and img.mode in ("1", "L", "LA", "I", "I;16", "F")
        except Exception as exc:  # noqa: BLE001 - any decoder failure is the same user error
            raise EdgennError(
                f"{path} is not a readable image ({exc.__class__.__name__}: {exc}).",
                "Remove or replace the file.",
            ) from None
    if input_size is None:
        (width, height), _ = sizes.most_common(1)[0]
        if max(width, height) > DEFAULT_MAX_SIDE:
            width = height = DEFAULT_MAX_SIDE
        input_size = (height, width)
    mode = color_mode or ("L" if gray else "RGB")
    spec = PreprocessSpec.for_images(input_size[0], input_size[1], mode)
    x = np.stack([preprocess.load_pixels(path, spec) for path, _ in items])
    y = np.array([label for _, label in items], dtype=np.int64)
    return Dataset(name=str(root), x=x, y=y, labels=labels, spec=spec)


def _parse_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def load_csv(path: Path, target_column: str | None, task: str = "auto") -> Dataset:
    """Load a CSV table: numeric feature columns and one named target column.

    Args:
        path: CSV file with a header row.
        target_column: Column to predict.
        task: ``auto`` (classes when the target is text, or integers with at most 20 values),
            ``classification`` or ``regression``.

    Returns:
        The data set (features as float32; standardization is fitted later on the train split).

    Raises:
        EdgennError: The file, the target column or a value is unusable; the message names it.
        UsageError: No target column was given.
    """
    path = Path(path)
    if not target_column:
        raise UsageError(
            f"{path} is a CSV data set; pass --target-column NAME (the column to predict)."
        )
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except FileNotFoundError:
        raise EdgennError(f"CSV file not found: {path}.") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EdgennError(f"Cannot read {path} as a UTF-8 CSV file: {exc}.") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if len(rows) < 2:
        raise EdgennError(f"{path} has no data rows (expected a header row and data rows).")
    header = [h.strip() for h in rows[0]]
    if target_column not in header:
        raise EdgennError(
            f"{path} has no column {target_column!r}; its columns are: {', '.join(header)}.",
            "Pass --target-column with one of them.",
        )
    target_index = header.index(target_column)
    feature_names = [h for i, h in enumerate(header) if i != target_index]
    if not feature_names:
        raise EdgennError(f"{path} has only the target column; expected feature columns too.")
    features = np.empty((len(rows) - 1, len(feature_names)), dtype=np.float32)
    targets = []
    for line_no, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise EdgennError(
                f"{path} line {line_no} has {len(row)} fields; the header has {len(header)}."
            )
        col = 0
        for i, cell in enumerate(row):
            if i == target_index:
                targets.append(cell.strip())
                continue
            value = _parse_float(cell.strip())
            if value is None:
                raise EdgennError(
                    f"{path} line {line_no}, column {header[i]!r}: {cell!r} is not a number; "
                    "feature columns must be numeric.",
                    "Encode categories as numbers or drop the column.",
                )
            features[line_no - 2, col] = value
            col += 1
    numeric = [_parse_float(t) for t in targets]
    all_numeric = all(v is not None for v in numeric)
    if task == "auto":
        integral = all_numeric and all(float(v).is_integer() for v in numeric)
        distinct = len(set(targets))
        task = (
            "classification"
            if (not all_numeric or (integral and distinct <= MAX_AUTO_CLASSES))
            else "regression"
        )
    if task == "regression":
        if not all_numeric:
            bad = next(t for t, v in zip(targets, numeric) if v is None)
            raise EdgennError(
                f"{path}: target {target_column!r} holds {bad!r}, which is not a number; "
                "regression needs a numeric target.",
                "Use --task classification for a categorical target.",
            )
        y = np.array(numeric, dtype=np.float64)
        labels: list[str] = []
    else:
        if all_numeric:
            keys = sorted(set(targets), key=lambda t: float(t))
        else:
            keys = sorted(set(targets))
        if len(keys) < 2:
            raise EdgennError(
                f"{path}: target {target_column!r} has a single class ({keys[0]!r}); "
                "classification needs at least 2.",
            )
        index = {k: i for i, k in enumerate(keys)}
        y = np.array([index[t] for t in targets], dtype=np.int64)
        labels = keys
    spec = PreprocessSpec(
        kind="tabular",
        input_shape=[len(feature_names)],
        task=task,
        feature_names=feature_names,
        target_name=target_column,
    )
    return Dataset(name=str(path), x=features, y=y, labels=labels, spec=spec)


#: Built-in data sets by name: the one list that drives the CLI choices and validation.
BUILTIN_DATASETS: dict[str, Callable[[DataSpec], Dataset]] = {
    "fashion-mnist": lambda s: load_fashion_mnist(Path(s.data_dir) if s.data_dir else None),
    "digits": lambda s: load_digits(),
}


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
        height, width = size or ds.spec.image_size
        mode = data.color_mode or ds.spec.color_mode
        spec = PreprocessSpec.for_images(height, width, mode)
        ds.x = adapt_images(ds.x, ds.spec, spec)
        if ds.x_test is not None:
            ds.x_test = adapt_images(ds.x_test, ds.spec, spec)
        ds.spec = spec
    return ds


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


# ---------------------------------------------------------------------------------------------
# Splits


def _strata(y: np.ndarray, task: str) -> np.ndarray:
    if task == "classification":
        return y
    # Regression: stratify on quantile bins so each split spans the range of the target.
    edges = np.quantile(y, [0.2, 0.4, 0.6, 0.8])
    return np.searchsorted(edges, y)


def stratified_indices(
    strata: np.ndarray, fraction_or_count: float | int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (taken, rest), keeping each stratum's share.

    Args:
        strata: One stratum id per example (the class, or a target bin).
        fraction_or_count: Share (float < 1) or number of examples (int) to take.
        seed: Seed; the same seed gives the same split.

    Returns:
        Sorted index arrays ``(taken, rest)``.
    """
    n = len(strata)
    if isinstance(fraction_or_count, float) and fraction_or_count < 1:
        want = fraction_or_count * n
    else:
        want = min(int(fraction_or_count), n)
    rng = np.random.default_rng(seed)
    taken = []
    groups = np.unique(strata)
    # Largest-remainder allocation: exact total, every stratum gets its share.
    counts = {g: int(np.sum(strata == g)) for g in groups}
    quotas = {g: want * counts[g] / n for g in groups}
    alloc = {g: int(np.floor(quotas[g])) for g in groups}
    remainder = int(round(want)) - sum(alloc.values())
    for g in sorted(groups, key=lambda g: quotas[g] - alloc[g], reverse=True)[: max(remainder, 0)]:
        alloc[g] += 1
    for g in groups:
        members = np.flatnonzero(strata == g)
        taken.append(rng.permutation(members)[: alloc[g]])
    taken_idx = np.sort(np.concatenate(taken)) if taken else np.array([], dtype=np.int64)
    mask = np.ones(n, dtype=bool)
    mask[taken_idx] = False
    return taken_idx, np.flatnonzero(mask)


def make_splits(data: DataSpec, dataset: Dataset | None = None) -> Splits:
    """Deterministic, stratified train / validation / test splits.

    The test split is fixed first (the data set's own test split, or ``test_fraction`` of all
    examples) and does not depend on ``limit`` or ``val_fraction``. ``limit`` then takes a
    stratified subset of the remaining pool, and ``val_fraction`` of that becomes validation.

    Args:
        data: What to load and how to split it.
        dataset: An already loaded data set (loaded from ``data`` when None).

    Returns:
        The splits. For tabular data the recipe gets the training split's mean and std.

    Raises:
        UsageError: Fractions or limit out of range.
        EdgennError: A split would be empty.
    """
    if not 0 < data.val_fraction < 1 or not 0 < data.test_fraction < 1:
        raise UsageError(
            f"--val-fraction {data.val_fraction} and --test-fraction {data.test_fraction} must be "
            "between 0 and 1."
        )
    if data.limit is not None and data.limit < 10:
        raise UsageError(f"--limit {data.limit} is too small; expected at least 10 examples.")
    ds = dataset if dataset is not None else load_dataset(data)
    # Seeds for each step derive from the user's seed so that changing one step leaves the others.
    if ds.x_test is not None:
        pool_x, pool_y, x_test, y_test = ds.x, ds.y, ds.x_test, ds.y_test
    else:
        test_idx, pool_idx = stratified_indices(
            _strata(ds.y, ds.task), data.test_fraction, data.seed
        )
        pool_x, pool_y = ds.x[pool_idx], ds.y[pool_idx]
        x_test, y_test = ds.x[test_idx], ds.y[test_idx]
    if data.limit is not None and data.limit < len(pool_y):
        keep, _ = stratified_indices(_strata(pool_y, ds.task), int(data.limit), data.seed + 1)
        pool_x, pool_y = pool_x[keep], pool_y[keep]
    val_idx, train_idx = stratified_indices(
        _strata(pool_y, ds.task), data.val_fraction, data.seed + 2
    )
    if len(train_idx) == 0 or len(val_idx) == 0 or len(y_test) == 0:
        raise EdgennError(
            f"{ds.name} has {len(ds.y)} examples: too few for non-empty train "
            f"({len(train_idx)}), validation ({len(val_idx)}) and test ({len(y_test)}) splits.",
            "Add data or raise --limit.",
        )
    spec = dataclasses.replace(ds.spec)
    x_train, y_train = pool_x[train_idx], pool_y[train_idx]
    if spec.kind == "tabular":
        mean = x_train.mean(axis=0)
        std = x_train.std(axis=0)
        std[std == 0] = 1.0  # constant column: leave it centred, do not divide by zero
        spec.mean = [float(v) for v in mean]
        spec.std = [float(v) for v in std]
        if spec.task == "regression":
            spec.target_mean = float(np.mean(y_train))
            spec.target_std = float(np.std(y_train)) or 1.0
    return Splits(
        x_train=x_train,
        y_train=y_train,
        x_val=pool_x[val_idx],
        y_val=pool_y[val_idx],
        x_test=x_test,
        y_test=y_test,
        labels=list(ds.labels),
        spec=spec,
        data=data,
    )


def representative_sample(
    x: np.ndarray, y: np.ndarray, count: int, seed: int = 0, task: str = "classification"
) -> np.ndarray:
    """A stratified sample of inputs, e.g. to calibrate int8 quantization on the training split.

    Args:
        x: Inputs (normally the training split).
        y: Their targets.
        count: How many to take.
        seed: Seed.
        task: ``classification`` or ``regression`` (how to stratify).

    Returns:
        The sampled inputs.
    """
    idx, _ = stratified_indices(_strata(y, task), int(count), seed)
    return x[idx]


DATA_FILE = "data.json"


def save_data_spec(data: DataSpec, run_dir: Path) -> None:
    """Write ``data.json`` into a run directory.

    Args:
        data: The spec.
        run_dir: The run directory.
    """
    from edgenn.fileio import atomic_write_text

    atomic_write_text(Path(run_dir) / DATA_FILE, json.dumps(data.to_dict(), indent=2) + "\n")


def load_data_spec(run_dir: Path) -> DataSpec:
    """Read ``data.json`` from a run directory.

    Args:
        run_dir: The run directory.

    Returns:
        The spec.

    Raises:
        EdgennError: The file is missing or unreadable.
    """
    path = Path(run_dir) / DATA_FILE
    try:
        return DataSpec.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise EdgennError(
            f"{run_dir} has no {DATA_FILE}; it is not an edgenn run directory."
        ) from None
    except ValueError as exc:
        raise EdgennError(f"{path} is not valid JSON: {exc}.") from None

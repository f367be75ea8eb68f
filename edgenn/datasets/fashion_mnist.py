"""[device] Fashion-MNIST: found locally or downloaded once, every file checked against SHA-256.

Looked up in order: ``--data-dir``; ``datasets/fashion-mnist/`` in the working directory and in the
edgenn checkout; Debian's package ``dataset-fashion-mnist``; the user cache; and last, a download
from the official location into the user cache, verified against ``checksums/``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from edgenn.datasets.dataset import Dataset
from edgenn.datasets.idx import find_idx, read_idx
from edgenn.errors import EdgennError
from edgenn.fileio import atomic_write_bytes
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
#: The repository's own copy (``datasets/`` at the top of the checkout, beside ``edgenn/``).
REPO_DATASETS = Path(__file__).resolve().parents[2] / "datasets"
#: SHA-256 of each file's decompressed IDX content, one ``digest  name`` line per file.
CHECKSUM_FILE = Path(__file__).resolve().parent / "checksums" / "fashion-mnist.sha256.txt"


def _load_checksums() -> dict[str, str]:
    """File stem -> expected SHA-256, from :data:`CHECKSUM_FILE`."""
    sums = {}
    for line in CHECKSUM_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            digest, name = line.split()
            sums[name] = digest
    return sums


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


def user_cache_dir() -> Path:
    """The per-user cache for downloaded data sets (``$XDG_CACHE_HOME/edgenn`` or ``~/.cache``).

    Returns:
        The folder (not created).
    """
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgenn"


def _fetch(url: str) -> bytes:
    """The body at ``url``; a network failure says how to get the data set without one."""
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.read()
    except (urllib.error.URLError, OSError) as exc:
        raise EdgennError(
            f"Fashion-MNIST was not found locally and downloading {url} failed ({exc}).",
            "Install Debian's package (apt-get install dataset-fashion-mnist) or pass "
            "--data-dir with the four *-ubyte.gz files.",
        ) from None


def _verify(name: str, data: bytes, expected: str) -> None:
    """Raise unless the gzip ``data`` downloaded as ``name`` decompresses to ``expected``."""
    try:
        digest = hashlib.sha256(gzip.decompress(data)).hexdigest()
    except (OSError, EOFError) as exc:
        digest = f"(not a gzip file: {exc})"
    if digest != expected:
        raise EdgennError(
            f"Downloaded {name} decompresses to SHA-256 {digest}, expected {expected}; "
            "it was not kept.",
            "Try again later, or pass --data-dir with files you trust.",
        )


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
        data = _fetch(base_url + name)
        _verify(name, data, sums[stem])
        atomic_write_bytes(target, data)
    return dest


def _complete(folder: Path) -> bool:
    """Whether ``folder`` holds all four IDX files."""
    return all(find_idx(folder, stem) for stem in FASHION_MNIST_FILES.values())


def _check_data_dir(data_dir: Path) -> Path:
    """``data_dir`` when it holds the four files; otherwise an error naming the missing ones."""
    if not data_dir.is_dir():
        raise EdgennError(f"--data-dir {data_dir} is not a folder.")
    if not _complete(data_dir):
        missing = [s for s in FASHION_MNIST_FILES.values() if not find_idx(data_dir, s)]
        raise EdgennError(
            f"--data-dir {data_dir} lacks Fashion-MNIST files: {', '.join(missing)} "
            "(.gz or uncompressed).",
            "Point --data-dir at the folder holding all four IDX files.",
        )
    return data_dir


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
    if data_dir is not None:
        return _check_data_dir(Path(data_dir))
    candidates = [
        Path.cwd() / "datasets" / "fashion-mnist",
        REPO_DATASETS / "fashion-mnist",
        DEBIAN_FASHION_MNIST,
        user_cache_dir() / "fashion-mnist",
    ]
    for folder in candidates:
        if _complete(folder):
            return folder
    if allow_download:
        return download_fashion_mnist(user_cache_dir() / "fashion-mnist")
    raise EdgennError(
        "Fashion-MNIST was not found in " + ", ".join(str(c) for c in candidates) + ".",
        "Install it with: apt-get install dataset-fashion-mnist (or pass --data-dir).",
    )


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
    arrays = {key: read_idx(find_idx(folder, stem)) for key, stem in FASHION_MNIST_FILES.items()}
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

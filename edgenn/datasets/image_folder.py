"""[device] A folder of class sub-folders: one class per sub-folder, its images inside."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np

from edgenn import preprocess
from edgenn.datasets.dataset import Dataset
from edgenn.errors import EdgennError
from edgenn.preprocess import IMAGE_SUFFIXES, PreprocessSpec

#: Largest side of an image-folder model's input when the user gives no --input-size.
DEFAULT_MAX_SIDE = 96
#: Pillow modes without colour: a folder of only these trains a grayscale ("L") model.
GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "F")


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


def _survey(paths: list[Path]) -> tuple[collections.Counter, bool]:
    """Count the images' sizes and tell whether all are grayscale, reading headers only.

    Returns:
        ``(Counter of (width, height), all_grayscale)``.

    Raises:
        EdgennError: A file is not a readable image.
    """
    sizes: collections.Counter = collections.Counter()
    gray = True
    for path in paths:
        try:
            size, mode = preprocess.image_header(path)
        except EdgennError as exc:
            raise EdgennError(exc.message, "Remove or replace the file.") from None
        sizes[size] += 1
        gray = gray and mode in GRAYSCALE_MODES
    return sizes, gray


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
    sizes, gray = _survey([path for path, _ in items])
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

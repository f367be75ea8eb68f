"""[device] Turn an image or a table row into the model's input, exactly as in training.

Training (``edgenn.datasets``) and every device command (predict, bench, camera, tag) call the same
functions here, so that a model on a Pi sees its inputs prepared the way it was trained: EXIF
orientation applied, colour mode converted, resized with the same filter, scaled the same way.
The recipe (:class:`PreprocessSpec`) travels with the model; :mod:`edgenn.artifact` stores it.

An image file becomes pixels in one function, :func:`load_pixels`, whichever command reads it, so
that the same photo is the same model input everywhere. Only regular files are opened, and Pillow
decodes from the descriptor that was checked. A JPEG much larger than the model input is decoded at
reduced scale (libjpeg's DCT scaling) down to no less than twice the input, then resized with the
recipe's filter like any image: a 1600x1200 photo for a 28x28 model decodes at 200x150, several
times faster, and training, predict, tag, camera and bench all see exactly those pixels.

numpy and pillow only.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
import warnings
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edgenn import optional
from edgenn.errors import EdgennError
from edgenn.fileio import open_regular

#: Colour modes a model can be trained on: Pillow's names.
COLOR_MODES = ("L", "RGB")
#: File suffixes taken as images by every command that walks a folder of images (training's
#: image folders, predict, camera folder sources; tag adds HEIC). Kept here, beside decoding, so
#: that a device command can list images without importing the data-set loaders.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
#: Resize filters, by the name stored in the recipe.
RESIZE_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
SPEC_VERSION = 1
#: A JPEG is decoded at reduced scale down to no less than this many times the model input's
#: larger side (see :func:`decode_side`): enough for the resize filter to average over.
DECODE_MARGIN = 2
#: ``ftyp`` brands of HEIC/HEIF files (iPhone photos), which Pillow reads through pillow-heif.
HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
)
HEIF_SUFFIXES = (".heic", ".heif")

# Pillow warns about an image over its pixel limit from Image.open. edgenn refuses such images
# itself, with one message; silencing Pillow's warning changes the process-wide warning filters, so
# the opens that do it take turns (header parsing only: decoding still runs in parallel).
_OPEN_LOCK = threading.Lock()
_HEIF_OPENER: list[bool] = []


@dataclasses.dataclass
class PreprocessSpec:
    """How raw data becomes the model's float input; :mod:`edgenn.artifact` stores it.

    For images the model input is ``pixel * scale + offset`` where ``pixel`` is the uint8 value
    after EXIF orientation, conversion to ``color_mode`` and resizing to ``input_shape`` with
    ``resize``. For tables it is ``(value - mean) / std`` per feature, in ``feature_names`` order.

    Attributes:
        kind: ``"image"`` or ``"tabular"``.
        input_shape: The model input without the batch axis, e.g. ``[28, 28, 1]``.
        task: ``"classification"`` or ``"regression"``.
        color_mode: Pillow mode for images (``"L"`` or ``"RGB"``).
        resize: Resize filter name (a key of :data:`RESIZE_FILTERS`).
        scale: Multiplier applied to uint8 pixels.
        offset: Added after scaling.
        feature_names: Column names of a tabular model, in input order.
        mean: Per-feature mean subtracted (tabular).
        std: Per-feature standard deviation divided by (tabular).
        target_mean: For regression: the model predicts ``(y - target_mean) / target_std``.
        target_std: See ``target_mean``.
        target_name: Name of the predicted column (tabular).
    """

    kind: str
    input_shape: list[int]
    task: str = "classification"
    color_mode: str | None = None
    resize: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    feature_names: list[str] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    target_mean: float | None = None
    target_std: float | None = None
    target_name: str | None = None
    version: int = SPEC_VERSION

    @classmethod
    def for_images(cls, height: int, width: int, color_mode: str) -> PreprocessSpec:
        """The default image recipe: uint8 pixels scaled to [0, 1], bilinear resize.

        Args:
            height: Model input height in pixels.
            width: Model input width in pixels.
            color_mode: ``"L"`` (1 channel) or ``"RGB"`` (3 channels).

        Returns:
            The spec.
        """
        channels = 1 if color_mode == "L" else 3
        return cls(
            kind="image",
            input_shape=[int(height), int(width), channels],
            color_mode=color_mode,
            resize="bilinear",
            scale=1.0 / 255.0,
            offset=0.0,
        )

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of an image model's input."""
        return int(self.input_shape[0]), int(self.input_shape[1])

    def to_dict(self) -> dict[str, Any]:
        """The JSON document, without empty fields."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(
        cls, doc: dict[str, Any], source: str = "the preprocessing recipe"
    ) -> PreprocessSpec:
        """Validate and build a spec from its JSON document.

        Args:
            doc: The parsed document.
            source: Where it came from, for error messages.

        Returns:
            The spec.

        Raises:
            EdgennError: A field is missing or has a value this version cannot use.
        """
        if not isinstance(doc, dict) or "kind" not in doc or "input_shape" not in doc:
            raise EdgennError(
                f"{source} is not an edgenn preprocessing recipe (expected an object with 'kind' "
                f"and 'input_shape', got {str(doc)[:80]!r}).",
                "Re-create it with edgenn train or edgenn convert.",
            )
        names = {f.name for f in dataclasses.fields(cls)}
        spec = cls(**{k: v for k, v in doc.items() if k in names})
        if spec.kind not in ("image", "tabular"):
            raise EdgennError(f"{source}: kind is {spec.kind!r}; expected 'image' or 'tabular'.")
        if spec.kind == "image" and spec.color_mode not in COLOR_MODES:
            raise EdgennError(
                f"{source}: color_mode is {spec.color_mode!r}; expected one of {COLOR_MODES}."
            )
        if spec.kind == "image" and spec.resize not in RESIZE_FILTERS:
            raise EdgennError(
                f"{source}: resize is {spec.resize!r}; expected one of {sorted(RESIZE_FILTERS)}."
            )
        return spec


def image_files(folder: Path) -> list[Path]:
    """The image files inside a folder (recursively), in name order.

    Args:
        folder: The folder.

    Returns:
        Paths whose suffix is one of :data:`IMAGE_SUFFIXES`.
    """
    return sorted(
        p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def decode_side(spec: PreprocessSpec) -> int:
    """The smallest side a JPEG may be reduced to when decoded for this model.

    Args:
        spec: The model's recipe.

    Returns:
        :data:`DECODE_MARGIN` times the larger side of the model input.
    """
    return DECODE_MARGIN * max(spec.image_size)


def open_image(path: Path, color_mode: str, min_side: int | None = None) -> Image.Image:
    """Open an image file with its EXIF orientation applied, converted to ``color_mode``.

    The file is only read, never written; only a regular file is opened, and Pillow decodes from
    the checked descriptor (a FIFO, a device or a link swapped in meanwhile is never read).

    Args:
        path: Image file (anything Pillow decodes: JPEG, PNG, WebP, TIFF, BMP; HEIC with
            pillow-heif).
        color_mode: ``"L"`` or ``"RGB"``.
        min_side: Decode a JPEG at the smallest DCT scale (1/2, 1/4, 1/8) that keeps both sides
            at least this long (None: full size). :func:`load_pixels` passes
            :func:`decode_side`; so must anything that should see the pixels a model sees.

    Returns:
        The decoded image, upright, in the requested mode.

    Raises:
        EdgennError: The file is missing or not a regular file, not an image, truncated, or over
            Pillow's pixel limit (``PIL.Image.MAX_IMAGE_PIXELS``).
    """
    path = Path(path)
    if not os.path.lexists(path):
        raise EdgennError(f"Image not found: {path}.")
    with os.fdopen(open_regular(path, "an image"), "rb") as fh:
        try:
            with _open_pillow(fh, path) as img:
                if min_side and img.format == "JPEG":
                    # The image's own mode: libjpeg's colour conversion stays that of a full decode.
                    img.draft(img.mode, (min_side, min_side))
                img.load()
                return convert_mode(ImageOps.exif_transpose(img), color_mode)
        except (OSError, SyntaxError, ValueError) as exc:
            raise EdgennError(
                f"{path} could not be decoded ({exc}); the file is truncated or damaged."
            ) from None


def image_header(path: Path) -> tuple[tuple[int, int], str]:
    """An image file's ``(width, height)`` and Pillow mode, from its header only.

    The same checks as :func:`open_image` (regular file, identified format, pixel limit), without
    decoding the pixels: what a data set survey needs.

    Raises:
        EdgennError: The file is missing, not a regular file, not an image, or over the limit.
    """
    path = Path(path)
    with os.fdopen(open_regular(path, "an image"), "rb") as fh, _open_pillow(fh, path) as img:
        return img.size, img.mode


def _open_pillow(fh: IO[bytes], path: Path) -> Image.Image:
    """Pillow's (lazy) image of an open file, identified and within the pixel limit.

    Raises:
        EdgennError: Not an image, a HEIC without pillow-heif, or over the pixel limit.
    """
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fh)
    except Image.DecompressionBombError as exc:
        # Pillow refuses past twice its limit before giving the size; its message has the count.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_many_pixels(path, int(found.group(1)) if found else None) from None
    except UnidentifiedImageError:
        if not _is_heif(fh, path) or _HEIF_OPENER:
            raise EdgennError(
                f"{path} is not an image Pillow can decode (expected JPEG, PNG, WebP, TIFF or BMP)."
            ) from None
        _register_heif(path)
        fh.seek(0)
        return _open_pillow(fh, path)
    limit = Image.MAX_IMAGE_PIXELS
    if limit and img.width * img.height > limit:
        img.close()
        raise _too_many_pixels(path, img.width * img.height)
    return img


def _too_many_pixels(path: Path, pixels: int | None) -> EdgennError:
    limit = Image.MAX_IMAGE_PIXELS
    count = f"{pixels:,} pixels" if pixels else f"more than {2 * limit:,} pixels"
    return EdgennError(
        f"{path} is refused as a decompression bomb: {count}; edgenn decodes at most {limit:,} "
        "(PIL.Image.MAX_IMAGE_PIXELS); downscale it first."
    )


def _is_heif(fh: IO[bytes], path: Path) -> bool:
    fh.seek(0)
    head = fh.read(12)
    return path.suffix.lower() in HEIF_SUFFIXES or (
        head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS
    )


def _register_heif(path: Path) -> None:
    """Teach Pillow HEIC/HEIF through pillow-heif, once.

    Raises:
        EdgennError: pillow-heif is not installed (the message says how to install it).
    """
    heif = optional.try_import("pillow_heif")
    if heif is None:
        dep = optional.dependency("pillow_heif")
        raise EdgennError(
            f"{path} is a HEIC/HEIF image; reading it needs {dep.package}, which is not "
            f"installed: {dep.install}."
        )
    with _OPEN_LOCK:
        if not _HEIF_OPENER:
            heif.register_heif_opener()
            _HEIF_OPENER.append(True)


def convert_mode(img: Image.Image, color_mode: str) -> Image.Image:
    """Convert any Pillow mode to ``"L"`` or ``"RGB"``, flattening transparency onto white.

    Args:
        img: The image.
        color_mode: Target mode.

    Returns:
        The converted image (the same object when it is already in that mode).
    """
    if img.mode == color_mode:
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit and float images: scale to 8 bits rather than clip.
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size and arr.max() > 0 else 1.0
        img = Image.fromarray(np.clip(arr * (255.0 / hi), 0, 255).astype(np.uint8))
    if color_mode == "L" and img.mode not in ("L", "RGB"):
        # Through RGB, as a camera frame (an RGB array) goes: YCbCr, LAB or HSV straight to L
        # round differently, and the same file would not be the same input everywhere.
        img = img.convert("RGB")
    return img.convert(color_mode)


def resize_pixels(img: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """Resize an upright image in the model's colour mode to the model input, as uint8 HxWxC.

    Args:
        img: Image already in ``spec.color_mode``.
        spec: The model's recipe.

    Returns:
        uint8 array of shape ``spec.input_shape``.
    """
    height, width = spec.image_size
    if img.size != (width, height):
        img = img.resize((width, height), RESIZE_FILTERS[spec.resize or "bilinear"])
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr


def load_pixels(path: Path, spec: PreprocessSpec) -> np.ndarray:
    """Read an image file as the uint8 pixels the model expects (before scaling).

    The one way a file becomes model input: training's image folders, predict, tag, bench and
    the Python API all call it (a JPEG far larger than the model input is decoded at reduced
    scale, see :func:`decode_side`, then resized with the recipe's filter).

    Args:
        path: Image file.
        spec: The model's recipe.

    Returns:
        uint8 array of shape ``spec.input_shape``.

    Raises:
        EdgennError: The file cannot be decoded.
    """
    return resize_pixels(open_image(path, spec.color_mode or "RGB", decode_side(spec)), spec)


def image_to_pixels(img: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """An in-memory Pillow image as the uint8 pixels the model expects, as for a file.

    The same steps as :func:`load_pixels` after decoding: EXIF orientation applied, colour mode
    converted, resized with the recipe's filter. The image is used at the size it has: for the
    exact input a file gives, pass its path (a large JPEG is decoded at reduced scale).

    Args:
        img: The image, any Pillow mode and size.
        spec: The model's recipe.

    Returns:
        uint8 array of shape ``spec.input_shape``.
    """
    upright = ImageOps.exif_transpose(img)
    return resize_pixels(convert_mode(upright, spec.color_mode or "RGB"), spec)


def array_to_pixels(array: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Decoded uint8 pixels of any size and mode as the uint8 pixels the model expects.

    ``HxW`` (grey), ``HxWx1``, ``HxWx3`` (RGB) or ``HxWx4`` (RGBA), with or without a leading
    batch axis of 1: converted to the model's colour mode and resized exactly as an image file
    is (an array already in the model's shape is returned as it is: both steps are no-ops).

    Args:
        array: The pixels.
        spec: The model's recipe.

    Returns:
        uint8 array of shape ``spec.input_shape``.

    Raises:
        EdgennError: Not uint8, or not a shape of pixels.
    """
    arr = np.asarray(array)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[2] == 1 and arr.dtype == np.uint8:
        if list(arr.shape) == list(spec.input_shape):
            return arr
        arr = arr[:, :, 0]
    if (
        arr.dtype != np.uint8
        or arr.ndim not in (2, 3)
        or (arr.ndim == 3 and arr.shape[2] not in (3, 4))
    ):
        raise EdgennError(
            f"Received a {arr.dtype} array of shape {tuple(np.shape(array))}; expected uint8 "
            "pixels shaped HxW, HxWx1, HxWx3 or HxWx4.",
            "Pass decoded 8-bit pixels (e.g. np.asarray(PIL image)), an image path, or the "
            f"already preprocessed float input of shape {list(spec.input_shape)}.",
        )
    if list(arr.shape) == list(spec.input_shape):
        return arr
    return resize_pixels(convert_mode(Image.fromarray(arr), spec.color_mode or "RGB"), spec)


def pixels_to_input(pixels: np.ndarray, spec: PreprocessSpec, out: np.ndarray | None = None):
    """Scale uint8 pixels to the model's float input.

    Args:
        pixels: uint8 array of shape ``(..., H, W, C)``.
        spec: The model's recipe.
        out: Optional float32 array to write into (reused on a hot path).

    Returns:
        float32 array of the same shape.
    """
    if out is None:
        out = np.empty(pixels.shape, dtype=np.float32)
    np.multiply(pixels, np.float32(spec.scale), out=out, casting="unsafe")
    if spec.offset:
        out += np.float32(spec.offset)
    return out


def features_to_input(features: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Standardize raw tabular features with the training mean and standard deviation.

    Args:
        features: float array of shape ``(N, F)`` or ``(F,)`` in ``spec.feature_names`` order.
        spec: The model's recipe (kind ``"tabular"``).

    Returns:
        float32 array of the same shape.
    """
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    return ((np.asarray(features, dtype=np.float32) - mean) / std).astype(np.float32)


def output_to_target(values: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Undo the target standardization of a regression model.

    Args:
        values: The model's raw outputs.
        spec: The model's recipe.

    Returns:
        Predictions in the units of the original target column.
    """
    mean = spec.target_mean or 0.0
    std = spec.target_std or 1.0
    return np.asarray(values, dtype=np.float64) * std + mean

"""[device] IDX files (the MNIST format): find, read and validate them fully.

A truncated or padded file is an error that says so, never a silently short array: Debian's
package, a mirror and a half-finished download all end up here.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from edgenn.errors import EdgennError

#: IDX type code (third magic byte) -> element type; multi-byte types are big-endian.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def find_idx(folder: Path, stem: str) -> Path | None:
    """The IDX file ``stem`` in ``folder``, gzip-compressed (preferred) or not.

    Args:
        folder: Where to look.
        stem: File name without ``.gz``, e.g. ``t10k-labels-idx1-ubyte``.

    Returns:
        The path, or None when neither form exists.
    """
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _read_bytes(path: Path) -> bytes:
    """The whole file, decompressed when it ends in ``.gz``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise EdgennError(f"IDX file not found: {path}.") from None
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise EdgennError(
            f"{path} is not a readable gzip file ({exc}); it may be truncated.",
            "Delete it and let edgenn find or download the data set again.",
        ) from None


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
    raw = _read_bytes(path)
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

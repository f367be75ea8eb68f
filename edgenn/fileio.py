"""[device] Atomic writes: a temp file (or folder) beside the target, fsync, then rename.

A crash or Ctrl-C never leaves a half-written file under the final name, and an existing output is
never replaced unless the caller says ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgenn.errors import EdgennError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def refuse_existing(path: Path, overwrite: bool) -> None:
    """Raise when ``path`` exists and the user did not pass ``--overwrite``.

    Args:
        path: The output the command is about to write.
        overwrite: Whether replacing it was asked for.

    Raises:
        EdgennError: ``path`` exists and ``overwrite`` is false.
    """
    if path.exists() and not overwrite:
        raise EdgennError(
            f"{path} already exists; edgenn does not replace outputs unasked.",
            "Pass --overwrite to replace it, or choose another output path.",
        )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename.

    Args:
        path: Destination.
        data: Content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; give the output the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically.

    Args:
        path: Destination.
        text: Content.
    """
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_directory(path: Path, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name and move it into place when the block succeeds.

    If the block raises, the temporary directory is removed and ``path`` is untouched.

    Args:
        path: The final directory.
        overwrite: Replace an existing ``path`` (only once the new one is complete).

    Yields:
        The temporary directory to write into.

    Raises:
        EdgennError: ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    refuse_existing(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        # Move the old output aside first so that a failure in between keeps one complete copy.
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
        os.replace(path, old / "previous")
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

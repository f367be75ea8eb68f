"""[device] Atomic writes: a temp file (or folder) beside the target, fsync, then rename.

A crash or Ctrl-C never leaves a half-written file under the final name, and an existing output is
never replaced unless the caller says ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgenn.errors import EdgennError

#: Default read limit for files edgenn reads whole: models and photos are far smaller.
MAX_READ_BYTES = 256 * 1024 * 1024


def _size(n: int) -> str:
    return f"{n:,} bytes"


def open_regular(path: Path, what: str, max_bytes: int = MAX_READ_BYTES) -> int:
    """Open ``path`` for reading only if it is a regular file no larger than ``max_bytes``.

    The file is opened non-blocking and checked on the open descriptor (not by name first), so a
    FIFO, a device, a directory or a file swapped after a check never blocks or floods the reader.

    Args:
        path: The file.
        what: What was expected there, for the message (``a photo``, ``an XMP sidecar``).
        max_bytes: Largest accepted size.

    Returns:
        A file descriptor in blocking mode; the caller closes it.

    Raises:
        EdgennError: Missing, not a regular file, too large, or unreadable; one line each.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise EdgennError(f"{path} is a symlink loop; expected {what}.") from None
        if exc.errno == errno.ENOENT:
            kind = "a dangling symlink" if os.path.islink(path) else "not found"
            raise EdgennError(f"{path} is {kind}; expected {what}.") from None
        raise EdgennError(f"Cannot read {path} ({exc.strerror or exc}); expected {what}.") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise EdgennError(f"{path} is {kind}; expected {what} (a regular file).")
        if info.st_size > max_bytes:
            raise EdgennError(
                f"{path} has {_size(info.st_size)}; {what} is at most {_size(max_bytes)}."
            )
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: Path, what: str, max_bytes: int = MAX_READ_BYTES) -> bytes:
    """Read a whole regular file of at most ``max_bytes`` (see :func:`open_regular`).

    Reads at most ``max_bytes + 1`` bytes, so a file that grows while being read is refused too.

    Args:
        path: The file.
        what: What was expected there, for the message.
        max_bytes: Largest accepted size.

    Returns:
        The file's content.

    Raises:
        EdgennError: Not a regular file, too large, or unreadable.
    """
    fd = open_regular(path, what, max_bytes)
    with os.fdopen(fd, "rb") as fh:
        try:
            data = fh.read(max_bytes + 1)
        except OSError as exc:
            raise EdgennError(
                f"Cannot read {path} ({exc.strerror or exc}); expected {what}."
            ) from None
    if len(data) > max_bytes:
        raise EdgennError(f"{path} grew past {_size(max_bytes)} while read; expected {what}.")
    return data


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

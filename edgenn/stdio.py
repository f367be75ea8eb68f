"""[device] Capture or silence what C++ libraries write straight to file descriptor 2.

TensorFlow's converter, LiteRT and TFLite Micro log from C++ to fd 2, which redirecting
``sys.stderr`` does not catch; these helpers swap the descriptor itself.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


class Captured:
    """Text written to fd 2 inside :func:`capture_stderr` (set when the block ends)."""

    text = ""


@contextlib.contextmanager
def capture_stderr(enabled: bool = True) -> Iterator[Captured]:
    """Redirect fd 2 into a temporary file for the block and keep what was written.

    Args:
        enabled: When false, do nothing (the output stays on the screen).

    Yields:
        A :class:`Captured` whose ``text`` holds the output after the block.
    """
    captured = Captured()
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    if not enabled or fd is None:
        yield captured
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            captured.text = tmp.read().decode("utf-8", "replace")

"""[host] Import TensorFlow and Keras on demand, quietly, with a clear error when they are missing.

Only host-side modules (models, train, convert) call this, and only inside functions, so that
``edgenn --help`` and every device command run without TensorFlow installed.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from types import ModuleType

from edgenn import optional
from edgenn.stdio import capture_stderr


def import_tensorflow(purpose: str = "This command", verbose: bool = False) -> ModuleType:
    """Import TensorFlow with its C++ log noise turned down.

    Args:
        purpose: What needs it, for the error message ("edgenn train").
        verbose: Keep TensorFlow's own logging.

    Returns:
        The ``tensorflow`` module.

    Raises:
        MissingDependencyError: TensorFlow is not installed; the message names the pip line.
    """
    if not verbose:
        # Must be set before the first import: it is read by the C++ runtime at load time.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    with quiet_stderr(not verbose):
        tf = optional.require("tensorflow", purpose)
    if not verbose:
        tf.get_logger().setLevel("ERROR")
        with contextlib.suppress(ImportError):
            import absl.logging

            absl.logging.set_verbosity(absl.logging.ERROR)
    return tf


def import_keras(purpose: str = "This command", verbose: bool = False) -> ModuleType:
    """Import Keras 3 (TensorFlow backend).

    Args:
        purpose: What needs it, for the error message.
        verbose: Keep TensorFlow's own logging.

    Returns:
        The ``keras`` module.

    Raises:
        MissingDependencyError: TensorFlow / Keras is not installed.
    """
    import_tensorflow(purpose, verbose)
    return optional.require("keras", purpose)


@contextlib.contextmanager
def quiet_stderr(enabled: bool = True) -> Iterator[None]:
    """Silence fd 2 (C++ log lines included) for the block, and Python warnings with it.

    Args:
        enabled: When false, do nothing (``--verbose``).

    Yields:
        Nothing.
    """
    if not enabled:
        yield
        return
    with capture_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield

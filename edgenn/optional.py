"""[device] Optional dependencies in one table, imported lazily, with one install line each.

A device install brings numpy, pillow, click and a LiteRT runtime only. Everything else is an
extra, imported where it is used through :func:`require`, so that a missing package is one line
that names the ``pip install`` (never a traceback, and never an install at run time).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from types import ModuleType

from edgenn.errors import MissingDependencyError

#: What pip installs for LiteRT where it has wheels (64-bit x86 and ARM).
LITERT_PACKAGES = "ai-edge-litert"
#: What pip installs where LiteRT has no wheel (32-bit Pi OS): the last tflite-runtime, numpy 1.
TFLITE_RUNTIME_PACKAGES = "tflite-runtime==2.14.0 'numpy<2'"
#: How to install a LiteRT runtime, by platform (LiteRT has no wheel for 32-bit Pi OS).
RUNTIME_INSTALL = (
    f"pip install {LITERT_PACKAGES} (on 32-bit Raspberry Pi OS: "
    f"pip install {TFLITE_RUNTIME_PACKAGES})"
)
#: The tflite-micro release edgenn is verified with (PyPI has pre-releases only).
TFLM_VERSION = "0.dev20261023182759"


@dataclasses.dataclass(frozen=True)
class Dependency:
    """An optional package.

    Attributes:
        package: The distribution's name on PyPI (or Debian).
        extra: The edgenn extra that brings it (None when no extra does).
        install: The line that installs it.
    """

    package: str
    extra: str | None
    install: str


def _extra(name: str, note: str = "") -> str:
    return f"pip install 'edgenn[{name}]'" + (f"  ({note})" if note else "")


#: Top-level module name -> how to get it. The one place an install line is written.
DEPENDENCIES: dict[str, Dependency] = {
    "tensorflow": Dependency("tensorflow", "train", _extra("train")),
    "keras": Dependency("keras", "train", _extra("train")),
    "sklearn": Dependency("scikit-learn", "train", _extra("train", "or: pip install scikit-learn")),
    "matplotlib": Dependency("matplotlib", "plot", _extra("plot", "or: pip install matplotlib")),
    "cv2": Dependency("opencv-python-headless", "camera", _extra("camera")),
    "picamera2": Dependency(
        "picamera2", None, "sudo apt install python3-picamera2  (Raspberry Pi OS)"
    ),
    "tflite_micro": Dependency(
        "tflite-micro",
        "micro",
        _extra("micro", f"or: pip install --pre tflite-micro=={TFLM_VERSION}"),
    ),
    "optuna": Dependency("optuna", "tune", _extra("train,tune", "or: pip install optuna")),
    "psycopg2": Dependency(
        "psycopg2-binary", "tune", _extra("tune", "or: pip install psycopg2-binary")
    ),
    "onnx": Dependency("onnx", "onnx", _extra("onnx")),
    "tf2onnx": Dependency("tf2onnx", "onnx", _extra("onnx")),
    "onnxruntime": Dependency("onnxruntime", "onnx", _extra("onnx", "or: pip install onnxruntime")),
    "pillow_heif": Dependency("pillow-heif", None, "pip install pillow-heif"),
    "ai_edge_litert": Dependency("ai-edge-litert", None, RUNTIME_INSTALL),
    "tflite_runtime": Dependency("tflite-runtime", None, RUNTIME_INSTALL),
}


def dependency(module: str) -> Dependency:
    """The table's entry for ``module`` (a dotted name is looked up by its top-level package).

    Raises:
        KeyError: The module is not an optional dependency of edgenn (a programming error).
    """
    return DEPENDENCIES[module.split(".")[0]]


def missing(module: str, purpose: str) -> MissingDependencyError:
    """The error for a missing optional module, with the table's install line.

    Args:
        module: The module that could not be imported.
        purpose: What needed it (``edgenn camera``, ``--plot``...).

    Returns:
        The error, to raise.
    """
    dep = dependency(module)
    return MissingDependencyError(dep.package, purpose, dep.install)


def available(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    dependency(module)
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, purpose: str) -> ModuleType:
    """Import an optional module, or raise one line that says how to install it.

    Args:
        module: Module name, dotted names allowed (``tflite_micro.python.tflite_micro.runtime``).
        purpose: What needs it, for the message.

    Returns:
        The module.

    Raises:
        MissingDependencyError: It is not installed.
    """
    dependency(module)
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        # Only a missing package is the user's to fix by installing; a broken one is a real error.
        top = module.split(".")[0]
        if exc.name is not None and exc.name.split(".")[0] != top:
            raise
        raise missing(module, purpose) from None


def try_import(module: str) -> ModuleType | None:
    """Import an optional module that only adds something (e.g. HEIC decoding); None if absent."""
    dependency(module)
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def pyplot(purpose: str) -> ModuleType:
    """Matplotlib's pyplot on the file-only Agg backend (a device or CI has no display).

    Args:
        purpose: What needs it (``--plot``, ``Plotting``...), for the message.

    Returns:
        ``matplotlib.pyplot``.

    Raises:
        MissingDependencyError: matplotlib is not installed.
    """
    require("matplotlib", purpose).use("Agg")
    return require("matplotlib.pyplot", purpose)

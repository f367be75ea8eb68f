"""edgenn: train compact neural networks and run them on edge devices.

This module imports nothing heavy, so that ``edgenn --help`` and the device-side commands start
fast and never pull in TensorFlow.
"""

from edgenn.errors import EdgennError, MissingDependencyError

__version__ = "0.1.0"

__all__ = ["EdgennError", "MissingDependencyError", "__version__"]

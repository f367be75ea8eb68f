"""[device] TFLite Micro C/C++ sources from an int8 .tflite (``edgenn firmware``).

``generate`` runs the pipeline (refuse, align, measure, render, verify, write), ``render`` fills
the project templates in ``templates/``, ``verify`` checks the result on the host; the TFLite
Micro interpreter itself is reached through :mod:`edgenn.tflm`. ``python -m firmware_export`` and
``edgenn firmware`` are the same command.
"""

from firmware_export.generate import (
    DEFAULT_ARENA_MARGIN,
    DEFAULT_DATASET,
    DEFAULT_LAYOUT,
    LAYOUTS,
    FirmwareResult,
    export_firmware,
    summary,
)

__all__ = [
    "DEFAULT_ARENA_MARGIN",
    "DEFAULT_DATASET",
    "DEFAULT_LAYOUT",
    "LAYOUTS",
    "FirmwareResult",
    "export_firmware",
    "summary",
]

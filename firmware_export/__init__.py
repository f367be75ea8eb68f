"""[device] TFLite Micro C/C++ sources from an int8 .tflite (``edgenn firmware``).

``generate`` runs the pipeline (refuse, align, measure, render, verify, write), ``names`` makes
the C prefix and escapes user text for C++, ``render`` fills the project templates in
``templates/``, ``verify`` checks the result on the host, and ``build`` compiles the project
against a TFLite Micro build and runs its check program (``--verify-build``); the TFLite Micro
Python interpreter itself is reached through :mod:`edgenn.tflm`. ``python -m firmware_export`` and
``edgenn firmware`` are the same command.
"""

from firmware_export.generate import (
    DEFAULT_ARENA_MARGIN,
    DEFAULT_DATASET,
    DEFAULT_LAYOUT,
    DEFAULT_VERIFY_EXAMPLES,
    LAYOUTS,
    TFLM_ENV,
    CompiledCheck,
    FirmwareResult,
    export_firmware,
    summary,
)

__all__ = [
    "DEFAULT_ARENA_MARGIN",
    "DEFAULT_DATASET",
    "DEFAULT_LAYOUT",
    "DEFAULT_VERIFY_EXAMPLES",
    "LAYOUTS",
    "TFLM_ENV",
    "CompiledCheck",
    "FirmwareResult",
    "export_firmware",
    "summary",
]

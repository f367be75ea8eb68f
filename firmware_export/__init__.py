"""[device] TFLite Micro C/C++ sources from an int8 .tflite (``edgenn firmware``).

``python -m firmware_export`` and ``edgenn firmware`` are the same command.
"""

from firmware_export.generate import LAYOUTS, FirmwareResult, export_firmware

__all__ = ["LAYOUTS", "FirmwareResult", "export_firmware"]

"""[device] Live camera classification (``edgenn camera``).

- :mod:`~edgenn.camera.sources`: where frames come from (OpenCV devices, files and URLs, image
  folders, picamera2) and reconnecting a live source with back-off.
- :mod:`~edgenn.camera.pipeline`: the capture thread (newest frame or every frame), classification,
  smoothing, recording and window, the run loop and its summary (:func:`run_camera`).
- :mod:`~edgenn.camera.web`: the web view (live page, MJPEG stream, ``/latest.json``).

OpenCV is the ``camera`` extra (``pip install 'edgenn[camera]'``); ``picamera2`` (the Pi's CSI
camera) is imported only when asked for. Both go through :mod:`edgenn.optional`.
"""

from edgenn.camera.pipeline import (
    NO_SMOOTHING,
    SMOOTH_MODES,
    SMOOTHING,
    VIDEO_CODECS,
    CameraOptions,
    CameraSummary,
    Capture,
    FrameResult,
    Smoother,
    annotate,
    record_codec,
    run_camera,
)
from edgenn.camera.sources import (
    FolderSource,
    OpenCVSource,
    Picamera2Source,
    Source,
    open_source,
    reconnect,
)
from edgenn.camera.web import PAGE, WebView, parse_serve

__all__ = [
    "NO_SMOOTHING",
    "PAGE",
    "SMOOTHING",
    "SMOOTH_MODES",
    "VIDEO_CODECS",
    "CameraOptions",
    "CameraSummary",
    "Capture",
    "FolderSource",
    "FrameResult",
    "OpenCVSource",
    "Picamera2Source",
    "Smoother",
    "Source",
    "WebView",
    "annotate",
    "open_source",
    "parse_serve",
    "reconnect",
    "record_codec",
    "run_camera",
]

"""[device] Where ``edgenn camera`` gets frames: OpenCV, image folders, picamera2; reconnecting.

Every source returns RGB uint8 frames from ``read()`` and None when no frame came. A live source
that stops (a camera unplugged, a stream dropped) is reopened by :func:`reconnect`, which backs off
between attempts until a deadline. OpenCV and picamera2 are optional extras, imported through
:mod:`edgenn.optional` only when a source needs them. A stream URL's password never appears in a
description or message (they reach logs and the web view's page): see :func:`redact`.
"""

from __future__ import annotations

import abc
import glob
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

from edgenn import optional, preprocess
from edgenn.errors import EdgennError

#: Called with a warning the user should see (a skipped frame, a reconnection attempt).
Warn = Callable[[str], None]

#: The ``--source`` text that selects the Raspberry Pi's CSI camera.
PICAMERA2 = "picamera2"
#: picamera2's capture size: VGA keeps the CSI camera's frame rate high on every Pi model.
PICAMERA2_SIZE = (640, 480)
#: First and longest pause between reconnection attempts (seconds); the pause doubles each time.
RECONNECT_FIRST_DELAY = 0.25
RECONNECT_MAX_DELAY = 4.0
#: ``scheme://user:PASSWORD@`` in a URL: the password runs to the authority's last '@'.
_URL_PASSWORD = re.compile(r"(://[^/@:]*:)[^/]*@")


def redact(spec: str) -> str:
    """``spec`` with a URL's password replaced by ``***`` (``rtsp://admin:***@cam/stream``).

    Args:
        spec: A ``--source`` value.

    Returns:
        The same text, without the password.
    """
    return _URL_PASSWORD.sub(r"\1***@", spec, count=1)


def opencv() -> ModuleType:
    """OpenCV (the ``camera`` extra), or a one-line error naming the install.

    Raises:
        MissingDependencyError: OpenCV is not installed.
    """
    return optional.require("cv2", "edgenn camera")


def _ignore(message: str) -> None:
    """The default warning sink: a library caller that passes no callback hears nothing."""


class Source(abc.ABC):
    """A frame source: ``read()`` returns an RGB uint8 frame or None when none came.

    Attributes:
        live: True for cameras and streams (newest frame wins, reconnect when they stop); False
            for files and folders (they end).
        description: How messages name the source ("camera 0", "video file clip.mkv").
    """

    live = True
    description = ""

    @abc.abstractmethod
    def read(self) -> np.ndarray | None:
        """The next frame (RGB), or None."""

    def reopen(self) -> bool:
        """Try to reconnect; True when the source works again."""
        return False

    def release(self) -> None:  # noqa: B027 - sources without a device have nothing to free
        """Free the device or file."""


class OpenCVSource(Source):
    """A camera index, ``/dev/videoN``, a video file or an RTSP/HTTP stream, through OpenCV.

    Args:
        spec: The ``--source`` text.

    Raises:
        EdgennError: OpenCV cannot open it (the message lists the video devices).
        MissingDependencyError: OpenCV is not installed.
    """

    def __init__(self, spec: str) -> None:
        self.cv2 = opencv()
        self.spec = spec
        self.target: int | str = int(spec) if spec.isdigit() else spec
        self.live = not Path(spec).is_file()
        self.description = f"camera {redact(spec)}" if self.live else f"video file {spec}"
        self.cap = None
        if not self._open():
            raise EdgennError(_missing_camera_message(spec))

    def _open(self) -> bool:
        if self.cap is not None:
            self.cap.release()
        self.cap = self.cv2.VideoCapture(self.target)
        return bool(self.cap.isOpened())

    def read(self) -> np.ndarray | None:
        """The next frame (RGB), or None at the end."""
        ok, frame = self.cap.read()
        if not ok or frame is None:
            return None
        if frame.ndim == 2:
            return np.repeat(frame[:, :, None], 3, axis=2)
        return self.cv2.cvtColor(frame, self.cv2.COLOR_BGR2RGB)

    def reopen(self) -> bool:
        """Reopen the device or stream."""
        return self.live and self._open()

    def release(self) -> None:
        """Release the device or file."""
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class FolderSource(Source):
    """An image folder played as frames, in name order; unreadable images are skipped.

    Args:
        folder: The folder.
        on_warning: Told about each image that is skipped.
        min_side: Decode JPEGs at reduced scale down to this side at least
            (:func:`edgenn.preprocess.decode_side`), exactly as predict and tag read the same file.

    Raises:
        EdgennError: The folder holds no images.
    """

    live = False

    def __init__(
        self, folder: Path, on_warning: Warn | None = None, min_side: int | None = None
    ) -> None:
        self.min_side = min_side
        self.files = preprocess.image_files(folder)
        if not self.files:
            raise EdgennError(f"{folder} holds no images to play as frames.")
        self.description = f"image folder {folder} ({len(self.files)} frames)"
        self.index = 0
        self.warn = on_warning or _ignore

    def read(self) -> np.ndarray | None:
        """The next frame (RGB), or None at the end."""
        while self.index < len(self.files):
            path = self.files[self.index]
            self.index += 1
            try:
                return np.asarray(preprocess.open_image(path, "RGB", self.min_side))
            except EdgennError as exc:
                self.warn(f"skipping frame {path}: {exc.message}")
        return None


class Picamera2Source(Source):
    """The Raspberry Pi's CSI camera through libcamera (``picamera2``, imported only here).

    Raises:
        MissingDependencyError: picamera2 is not installed.
    """

    def __init__(self) -> None:
        picamera2 = optional.require("picamera2", f"--source {PICAMERA2}")
        self.cam = picamera2.Picamera2()
        self.cam.configure(
            self.cam.create_video_configuration(main={"format": "RGB888", "size": PICAMERA2_SIZE})
        )
        self.cam.start()
        self.description = "Pi camera (picamera2)"

    def read(self) -> np.ndarray | None:
        """The next frame (RGB), or None at the end."""
        frame = self.cam.capture_array()
        # RGB888 in libcamera is stored B,G,R in memory; flip to RGB.
        return frame[:, :, ::-1].copy() if frame is not None else None

    def release(self) -> None:
        """Release the camera."""
        self.cam.stop()
        self.cam.close()


def _missing_camera_message(spec: str) -> str:
    devices = sorted(glob.glob("/dev/video*"))
    found = ", ".join(devices) if devices else "none"
    return (
        f"Cannot open source {redact(spec)!r}. Video devices on this machine: {found}. Pick one with "
        "--source 0 (or /dev/videoN), a video file, an image folder, an rtsp:// or http:// URL, "
        f"or {PICAMERA2} for the Pi's camera."
    )


def open_source(spec: str, on_warning: Warn | None = None, min_side: int | None = None) -> Source:
    """Open a frame source from its ``--source`` text.

    Args:
        spec: Camera index, ``/dev/videoN``, ``picamera2``, a video file, an image folder or a URL.
        on_warning: Told about frames a folder source skips.
        min_side: An image folder's reduced-scale JPEG decoding limit (see :class:`FolderSource`).

    Returns:
        The source.

    Raises:
        EdgennError: Nothing can be opened there (the message lists the video devices).
        MissingDependencyError: OpenCV or picamera2 is not installed.
    """
    if spec == PICAMERA2:
        return Picamera2Source()
    path = Path(spec)
    if path.is_dir():
        return FolderSource(path, on_warning, min_side)
    if not (spec.isdigit() or spec.startswith("/dev/video") or "://" in spec or path.is_file()):
        raise EdgennError(_missing_camera_message(spec))
    return OpenCVSource(spec)


def reconnect(
    source: Source, seconds: float, stop: threading.Event, on_warning: Warn | None = None
) -> bool:
    """Reopen a live source that stopped, backing off between attempts, until ``seconds`` pass.

    The pause starts at :data:`RECONNECT_FIRST_DELAY` and doubles up to
    :data:`RECONNECT_MAX_DELAY`: a camera that is being replugged comes back within the first
    attempts, and a stream server that is down is not hammered.

    Args:
        source: The source that stopped.
        seconds: How long to keep trying.
        stop: Ends the attempts early when set.
        on_warning: Told about each attempt.

    Returns:
        True when the source works again.
    """
    warn = on_warning or _ignore
    deadline = time.monotonic() + seconds
    delay = RECONNECT_FIRST_DELAY
    while time.monotonic() < deadline and not stop.is_set():
        warn(f"{source.description} stopped; reconnecting")
        if source.reopen():
            return True
        time.sleep(min(delay, max(deadline - time.monotonic(), 0)))
        delay = min(delay * 2, RECONNECT_MAX_DELAY)
    return False

"""[device] Memory, disk space and cameras.

Cameras are V4L2 devices (``/dev/videoN``, named in ``/sys/class/video4linux/videoN/name``) or the
Raspberry Pi's CSI camera through picamera2. A Raspberry Pi also lists its video codec and ISP as
V4L2 nodes; the capability query (``VIDIOC_QUERYCAP``) tells the capture devices from them.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import struct
from pathlib import Path

from edgenn import optional
from edgenn.doctor import FAIL, OK, WARN, Check

MEMINFO = Path("/proc/meminfo")
VIDEO4LINUX = Path("/sys/class/video4linux")
MIB = 1024 * 1024
#: Below this much available memory, a model and its runtime may not fit (the runtime alone takes
#: tens of MiB); with --model the measured peak of its test run is the bar instead.
MEMORY_WARN_BYTES = 128 * MIB
#: Free disk below which writing outputs may fail, and below which installing a runtime may (the
#: ai-edge-litert wheel alone is 59 MB).
DISK_FAIL_BYTES = 16 * MIB
DISK_WARN_BYTES = 256 * MIB
#: ``_IOR('V', 0, struct v4l2_capability)``; the struct is 104 bytes, ``device_caps`` at 88.
VIDIOC_QUERYCAP = 0x80685600
V4L2_CAP_VIDEO_CAPTURE = 0x00000001
V4L2_CAP_VIDEO_CAPTURE_MPLANE = 0x00001000
V4L2_CAP_VIDEO_M2M = 0x00008000
V4L2_CAP_VIDEO_M2M_MPLANE = 0x00004000
V4L2_CAP_DEVICE_CAPS = 0x80000000
VIDEO_GROUP_FIX = "sudo usermod -aG video $USER  (then log out and in again)"


def meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo`` in bytes (``MemTotal``, ``MemAvailable``, ``SwapFree``...)."""
    values = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if sep and parts and parts[0].isdigit():
            values[key.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def _mib(n: int) -> str:
    return f"{n / MIB / 1024:.1f} GiB" if n >= 1024 * MIB else f"{n / MIB:.0f} MiB"


def check_memory(model_peak_bytes: int | None = None) -> Check:
    """Available memory, against what the model's test run took when one ran.

    Args:
        model_peak_bytes: The peak resident memory of loading and running the model once
            (Python, numpy, the runtime and the model), measured in the child process.

    Returns:
        The check.
    """
    try:
        info = meminfo(MEMINFO.read_text())
    except OSError as exc:
        return Check("memory", WARN, f"cannot read {MEMINFO}: {exc.strerror}")
    total, available = info.get("MemTotal", 0), info.get("MemAvailable", info.get("MemFree", 0))
    found = (
        f"{_mib(available)} available of {_mib(total)}, swap {_mib(info.get('SwapFree', 0))} free"
    )
    details = {
        "total_bytes": total,
        "available_bytes": available,
        "model_peak_bytes": model_peak_bytes,
    }
    if model_peak_bytes:
        found += f"; running the model took {_mib(model_peak_bytes)} (measured)"
        if available < model_peak_bytes:
            needed = f"{_mib(model_peak_bytes)} available to run the model"
            return Check("memory", FAIL, found, needed, details=details)
        if available < 2 * model_peak_bytes:
            needed = f"room for two runs of the model ({_mib(2 * model_peak_bytes)}), e.g. camera and tag"
            return Check("memory", WARN, found, needed, details=details)
    elif available < MEMORY_WARN_BYTES:
        return Check("memory", WARN, found, f"{_mib(MEMORY_WARN_BYTES)} available", details=details)
    return Check("memory", OK, found, details=details)


def check_disk(folders: list[Path]) -> Check:
    """Free space where edgenn writes (the working folder, the model's folder).

    Args:
        folders: The folders to check.

    Returns:
        The check (the emptiest folder decides).
    """
    usage: dict[str, int] = {}
    seen = set()
    for folder in folders:
        try:
            # One line per file system: folders on the same one share its free space.
            device = os.stat(folder).st_dev
            if device not in seen:
                seen.add(device)
                usage[str(folder.resolve())] = shutil.disk_usage(folder).free
        except OSError:
            continue
    if not usage:
        return Check("disk", WARN, "cannot read the free space of " + ", ".join(map(str, folders)))
    found = "; ".join(f"{_mib(free)} free in {folder}" for folder, free in usage.items())
    least = min(usage.values())
    details = {"free_bytes": usage}
    if least < DISK_FAIL_BYTES:
        return Check(
            "disk", FAIL, found, f"{_mib(DISK_FAIL_BYTES)} free to write outputs", details=details
        )
    if least < DISK_WARN_BYTES:
        needed = f"{_mib(DISK_WARN_BYTES)} free to install a runtime and write outputs"
        return Check("disk", WARN, found, needed, details=details)
    return Check("disk", OK, found, details=details)


@dataclasses.dataclass
class VideoDevice:
    """A V4L2 device node.

    Attributes:
        path: ``/dev/videoN``.
        name: Its driver's name for it (``/sys/class/video4linux/videoN/name``).
        capture: It captures frames (None when it could not be asked).
        error: Why it could not be asked (``permission denied``...).
    """

    path: str
    name: str
    capture: bool | None
    error: str = ""


def _query_capture(path: str) -> tuple[bool | None, str]:
    """Ask a V4L2 node whether it captures video (a codec or ISP node does not)."""
    import fcntl  # POSIX only; /dev/video* exists on Linux only anyway

    buf = bytearray(104)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        return None, exc.strerror or str(exc)
    try:
        fcntl.ioctl(fd, VIDIOC_QUERYCAP, buf)
    except OSError as exc:
        return None, exc.strerror or str(exc)
    finally:
        os.close(fd)
    caps, device_caps = struct.unpack_from("<II", buf, 84)
    if caps & V4L2_CAP_DEVICE_CAPS:
        caps = device_caps
    m2m = caps & (V4L2_CAP_VIDEO_M2M | V4L2_CAP_VIDEO_M2M_MPLANE)
    return bool(caps & (V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_VIDEO_CAPTURE_MPLANE)) and not m2m, ""


def video_devices() -> list[VideoDevice]:
    """The V4L2 device nodes, in numeric order, with their names and whether they capture."""
    nodes = sorted(Path("/dev").glob("video*"), key=lambda p: (len(p.name), p.name))
    found = []
    for node in nodes:
        try:
            name = (VIDEO4LINUX / node.name / "name").read_text().strip()
        except OSError:
            name = "unknown"
        capture, error = _query_capture(str(node))
        found.append(VideoDevice(str(node), name, capture, error))
    return found


def check_cameras() -> Check:
    """V4L2 cameras and picamera2 (a warning when there is none: files and folders still work).

    Returns:
        The check.
    """
    nodes = video_devices()
    cameras = [d for d in nodes if d.capture]
    denied = [d for d in nodes if d.capture is None and d.error == os.strerror(errno.EACCES)]
    picamera2 = optional.available("picamera2")
    opencv = optional.available("cv2")
    listed = ", ".join(f"{d.path} ({d.name})" for d in cameras) or "no V4L2 capture device"
    found = f"{listed}; picamera2 {'importable' if picamera2 else 'not installed'}"
    found += f"; OpenCV {'installed' if opencv else 'not installed'}"
    details = {
        "devices": [dataclasses.asdict(d) for d in nodes],
        "picamera2": picamera2,
        "opencv": opencv,
    }
    if denied:
        needed = f"read access to {', '.join(d.path for d in denied)} (the video group)"
        return Check("camera", WARN, found, needed, VIDEO_GROUP_FIX, details=details)
    if cameras and not opencv:
        needed = "OpenCV, which edgenn camera reads V4L2 cameras with"
        return Check(
            "camera", WARN, found, needed, optional.DEPENDENCIES["cv2"].install, details=details
        )
    if not cameras and not picamera2:
        needed = "a camera for edgenn camera (a USB camera shows up as /dev/video0; the Pi's CSI camera needs picamera2)"
        return Check("camera", WARN, found, needed, details=details)
    return Check("camera", OK, found, details=details)

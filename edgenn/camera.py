"""[device] Live camera classification: capture thread, inference loop, overlay, web view.

Capture runs in its own thread. For a live source it keeps only the newest frame, so inference
never lags behind reality; for a file or a folder with ``every_frame`` it hands over every frame in
order (a bounded queue, no drops), so results are reproducible. Each classified frame gives a
:class:`FrameResult` (one JSON line with ``--headless``); the annotated frame can be shown in a
window, recorded to a video file, and served as an MJPEG stream with a live page
(:class:`WebView`). SIGINT and SIGTERM stop the pipeline cleanly: threads joined, files closed,
camera released.

OpenCV is the ``camera`` extra (``pip install 'edgenn[camera]'``); ``picamera2`` (the Pi's CSI
camera) is imported only when asked for.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import glob
import html
import http.server
import io
import json
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edgenn import optional, preprocess
from edgenn.errors import EdgennError, UsageError
from edgenn.predict import Classifier

SMOOTHING = ("none", "majority", "mean")
VIDEO_CODECS = {".avi": "MJPG", ".mp4": "mp4v", ".mkv": "FFV1"}


def _cv2():
    return optional.require("cv2", "edgenn camera")


# ------------------------------------------------------------------------------------- sources


class Source(abc.ABC):
    """A frame source: ``read()`` returns an RGB uint8 frame or None when none came."""

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
    """A camera index, ``/dev/videoN``, a video file or an RTSP/HTTP stream, through OpenCV."""

    def __init__(self, spec: str) -> None:
        self.cv2 = _cv2()
        self.spec = spec
        self.target: int | str = int(spec) if spec.isdigit() else spec
        self.live = not Path(spec).is_file()
        self.description = f"camera {spec}" if self.live else f"video file {spec}"
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
    """An image folder played as frames, in name order."""

    live = False

    def __init__(self, folder: Path) -> None:
        from edgenn.predict import expand_images

        self.files = list(expand_images([folder]))
        if not self.files:
            raise EdgennError(f"{folder} holds no images to play as frames.")
        self.description = f"image folder {folder} ({len(self.files)} frames)"
        self.index = 0

    def read(self) -> np.ndarray | None:
        """The next frame (RGB), or None at the end."""
        while self.index < len(self.files):
            path = self.files[self.index]
            self.index += 1
            try:
                return np.asarray(preprocess.open_image(path, "RGB"))
            except EdgennError as exc:
                print(f"edgenn: warning: skipping frame {path}: {exc.message}", file=sys.stderr)
        return None


class Picamera2Source(Source):
    """The Raspberry Pi's CSI camera through libcamera (``picamera2``, imported only here)."""

    def __init__(self) -> None:
        Picamera2 = optional.require("picamera2", "--source picamera2").Picamera2
        self.cam = Picamera2()
        self.cam.configure(
            self.cam.create_video_configuration(main={"format": "RGB888", "size": (640, 480)})
        )
        self.cam.start()
        self.description = "Pi camera (picamera2)"

    def read(self) -> np.ndarray | None:
        """The next frame (RGB), or None at the end."""
        frame = self.cam.capture_array()
        # RGB888 in libcamera is stored B,G,R in memory; flip to RGB.
        return frame[:, :, ::-1].copy() if frame is not None else None

    def release(self) -> None:
        """Release the device or file."""
        self.cam.stop()
        self.cam.close()


def _missing_camera_message(spec: str) -> str:
    devices = sorted(glob.glob("/dev/video*"))
    found = ", ".join(devices) if devices else "none"
    return (
        f"Cannot open source {spec!r}. Video devices on this machine: {found}. Pick one with "
        "--source 0 (or /dev/videoN), a video file, an image folder, an rtsp:// or http:// URL, "
        "or picamera2 for the Pi's camera."
    )


def open_source(spec: str) -> Source:
    """Open a frame source from its ``--source`` text.

    Args:
        spec: Camera index, ``/dev/videoN``, ``picamera2``, a video file, an image folder or a URL.

    Returns:
        The source.

    Raises:
        EdgennError: Nothing can be opened there (the message lists the video devices).
        MissingDependencyError: OpenCV or picamera2 is not installed.
    """
    if spec == "picamera2":
        return Picamera2Source()
    path = Path(spec)
    if path.is_dir():
        return FolderSource(path)
    if not (spec.isdigit() or spec.startswith("/dev/video") or "://" in spec or path.is_file()):
        raise EdgennError(_missing_camera_message(spec))
    return OpenCVSource(spec)


# ------------------------------------------------------------------------------------- capture


class Capture(threading.Thread):
    """Reads frames in the background.

    Live sources: only the newest frame is kept (older ones are dropped). ``every_frame``: every
    frame is queued in order and the reader waits when the consumer is behind.
    """

    def __init__(self, source: Source, every_frame: bool, reconnect: float, stop: threading.Event):
        super().__init__(name="edgenn-capture", daemon=True)
        self.source, self.every_frame, self.reconnect, self.stop = (
            source,
            every_frame,
            reconnect,
            stop,
        )
        self.frames: queue.Queue = queue.Queue(maxsize=8 if every_frame else 1)
        self.error: str | None = None
        self.dropped = 0
        self.captured = 0

    def run(self) -> None:
        """Read frames until the source ends or the pipeline stops."""
        try:
            while not self.stop.is_set():
                frame = self.source.read()
                if frame is None:
                    if self.source.live and self._reconnect():
                        continue
                    break
                self.captured += 1
                item = (frame, time.perf_counter())
                if self.every_frame:
                    while not self.stop.is_set():
                        try:
                            self.frames.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                else:
                    try:
                        self.frames.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass
                    self.frames.put(item)
        finally:
            self.frames.put(None)  # end of stream

    def _reconnect(self) -> bool:
        deadline = time.monotonic() + self.reconnect
        delay = 0.25
        while time.monotonic() < deadline and not self.stop.is_set():
            print(
                f"edgenn: warning: {self.source.description} stopped; reconnecting", file=sys.stderr
            )
            if self.source.reopen():
                return True
            time.sleep(min(delay, max(deadline - time.monotonic(), 0)))
            delay = min(delay * 2, 4.0)
        if not self.stop.is_set():
            self.error = (
                f"{self.source.description} stopped and did not come back within --reconnect "
                f"{self.reconnect:g} s."
            )
        return False


# ------------------------------------------------------------------------------------- results


@dataclasses.dataclass
class FrameResult:
    """One classified frame (``--headless`` prints one JSON line each)."""

    frame: int
    timestamp: float
    top_k: list[dict[str, Any]]
    label: str
    score: float
    inference_ms: float
    end_to_end_ms: float
    fps: float


class Smoother:
    """Majority vote or mean scores over the last N frames, against label flicker."""

    def __init__(self, mode: str, window: int) -> None:
        if mode not in SMOOTHING:
            raise UsageError(
                f"Unknown --smooth-mode {mode!r}; expected one of {', '.join(SMOOTHING)}."
            )
        self.mode, self.history = mode, collections.deque(maxlen=max(window, 1))

    def __call__(self, scores: dict[str, float]) -> tuple[str, float]:
        """Add a frame's scores; return the smoothed label and score."""
        self.history.append(scores)
        if self.mode == "none" or len(self.history) == 1:
            best = max(scores, key=scores.get)
            return best, scores[best]
        if self.mode == "majority":
            votes = collections.Counter(max(s, key=s.get) for s in self.history)
            best = votes.most_common(1)[0][0]
            return best, votes[best] / len(self.history)
        totals: dict[str, float] = collections.defaultdict(float)
        for s in self.history:
            for k, v in s.items():
                totals[k] += v / len(self.history)
        best = max(totals, key=totals.get)
        return best, totals[best]


def annotate(frame: np.ndarray, result: FrameResult) -> np.ndarray:
    """Draw the label, score, FPS and latency on a copy of the frame (RGB)."""
    cv2 = _cv2()
    out = frame.copy()
    scale = max(out.shape[1] / 640, 0.4)
    text = f"{result.label} {result.score:.2f}"
    info = f"{result.fps:.1f} fps  {result.inference_ms:.2f} ms"
    for i, line in enumerate((text, info)):
        y = int((28 + 26 * i) * scale)
        cv2.putText(
            out, line, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, (0, 0, 0), 4, cv2.LINE_AA
        )
        cv2.putText(
            out, line, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, (255, 255, 0), 1, cv2.LINE_AA
        )
    return out


# ------------------------------------------------------------------------------------- web view


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>edgenn camera</title>
<style>body{{font-family:sans-serif;background:#111;color:#eee;margin:1em}}
img{{max-width:100%;image-rendering:pixelated;border:1px solid #444}}
#label{{font-size:2em}} td{{padding:0 1em 0 0}}</style></head>
<body><h1>edgenn camera</h1><p>{model} &middot; {source}</p>
<img id="stream" src="/stream.mjpg" width="{width}" alt="live stream">
<p id="label">waiting for frames</p>
<table id="topk"></table>
<p id="stats"></p>
<script>
async function poll() {{
  try {{
    const r = await fetch('/latest.json', {{cache: 'no-store'}});
    if (r.ok) {{
      const d = await r.json();
      if (d.frame !== undefined) {{
        document.getElementById('label').textContent = d.label + ' ' + d.score.toFixed(2);
        document.getElementById('topk').innerHTML = d.top_k.map(
          t => '<tr><td>' + t.label + '</td><td>' + t.score.toFixed(3) + '</td></tr>').join('');
        document.getElementById('stats').textContent =
          'frame ' + d.frame + ' | ' + d.fps.toFixed(1) + ' fps | inference ' +
          d.inference_ms.toFixed(2) + ' ms | end to end ' + d.end_to_end_ms.toFixed(1) + ' ms';
      }}
    }}
  }} catch (e) {{}}
  setTimeout(poll, 250);
}}
poll();
</script></body></html>
"""


class WebView:
    """A small page served by the process: MJPEG stream, live top-k, a JSON endpoint.

    The pipeline only stores the newest annotated frame; each viewer's thread encodes and sends
    it, so viewers never slow inference down, and a viewer that disconnects just ends its thread.
    """

    def __init__(self, host: str, port: int, model: str, source: str) -> None:
        self.cond = threading.Condition()
        self.frame: np.ndarray | None = None
        self.seq = 0
        self.latest: dict[str, Any] = {}
        self.closed = False
        self._jpeg: tuple[int, bytes] = (-1, b"")
        view = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                """Serve the page, the JSON endpoint or the MJPEG stream."""
                if self.path in ("/", "/index.html"):
                    width = 480
                    body = PAGE.format(
                        model=html.escape(model), source=html.escape(source), width=width
                    ).encode()
                    self._send(200, "text/html; charset=utf-8", body)
                elif self.path.startswith("/latest.json"):
                    with view.cond:
                        body = json.dumps(view.latest).encode()
                    self._send(200, "application/json", body)
                elif self.path.startswith("/stream.mjpg"):
                    self._stream()
                else:
                    self._send(404, "text/plain", b"not found")

            def _send(self, code, ctype, body):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def _stream(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                last = -1
                try:
                    while True:
                        with view.cond:
                            view.cond.wait_for(
                                lambda last=last: view.seq != last or view.closed, timeout=1.0
                            )
                            if view.closed:
                                return
                            if view.seq == last:
                                continue
                            last = view.seq
                        jpeg = view.jpeg(last)
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n")
                        self.wfile.write(
                            f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n"
                        )
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError, OSError):
                    return  # the viewer left

        self.server = http.server.ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.address = self.server.server_address
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="edgenn-web", daemon=True
        )
        self.thread.start()

    def publish(self, frame: np.ndarray, result: FrameResult) -> None:
        """Make a new annotated frame and result visible to viewers (cheap: no encoding here)."""
        with self.cond:
            self.frame = frame
            self.seq += 1
            self.latest = dataclasses.asdict(result)
            self.cond.notify_all()

    def jpeg(self, seq: int) -> bytes:
        """The JPEG of frame ``seq``, encoded once however many viewers there are."""
        with self.cond:
            if self._jpeg[0] == seq:
                return self._jpeg[1]
            frame = self.frame
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, "JPEG", quality=80)
        data = buf.getvalue()
        with self.cond:
            if seq >= self._jpeg[0]:
                self._jpeg = (seq, data)
        return data

    def close(self) -> None:
        """Stop serving; viewer threads end."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def parse_serve(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``PORT`` (binds 127.0.0.1).

    Raises:
        UsageError: Not in that form.
    """
    host, _, port = text.rpartition(":")
    host = host or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"--serve expects HOST:PORT such as 127.0.0.1:8000; received {text!r}.")
    return host.strip("[]"), int(port)


# ------------------------------------------------------------------------------------- pipeline


@dataclasses.dataclass
class CameraOptions:
    """Options of :func:`run_camera`."""

    source: str = "0"
    top_k: int = 3
    every_frame: bool = False
    max_frames: int | None = None
    duration: float | None = None
    reconnect: float = 10.0
    smooth: int = 1
    smooth_mode: str = "majority"
    record: Path | None = None
    serve: str | None = None
    window: bool = False
    threads: int | None = None


@dataclasses.dataclass
class CameraSummary:
    """What a run did."""

    frames: int
    dropped: int
    seconds: float
    fps: float
    stopped_by: str
    served_at: str | None = None


def run_camera(
    model: Path,
    options: CameraOptions,
    on_result: Callable[[FrameResult], None] | None = None,
    on_serving: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> CameraSummary:
    """Classify frames from a source until it ends, a limit is reached, or SIGINT/SIGTERM.

    Args:
        model: The .tflite classifier.
        options: Source, outputs and limits.
        on_result: Called with each frame's result (the CLI prints JSON lines).
        on_serving: Called once with the web view's address when ``serve`` is set.
        stop: Set it to stop the pipeline from another thread (as a signal does).

    Returns:
        The summary.

    Raises:
        EdgennError: The source cannot be opened, or stopped and did not come back.
    """
    if options.max_frames is not None and options.max_frames < 1:
        raise UsageError(f"--max-frames must be at least 1; received {options.max_frames}.")
    smoother = Smoother(options.smooth_mode, options.smooth)
    classifier = Classifier(model, threads=options.threads)
    serve_at = parse_serve(options.serve) if options.serve else None
    source = open_source(options.source)
    stop = stop or threading.Event()
    stopped_by = {"reason": "end of source"}

    def on_signal(signum, frame):
        stopped_by["reason"] = signal.Signals(signum).name
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    capture = Capture(source, options.every_frame, options.reconnect, stop)
    web = writer = None
    frames = 0
    start = time.perf_counter()
    times: collections.deque = collections.deque(maxlen=30)
    cv2 = None
    try:
        if serve_at:
            web = WebView(serve_at[0], serve_at[1], Path(model).name, source.description)
            if on_serving:
                host, port = web.address[:2]
                on_serving(f"http://{host}:{port}/")
        capture.start()
        while not stop.is_set():
            if options.duration is not None and time.perf_counter() - start >= options.duration:
                stopped_by["reason"] = "--duration"
                break
            try:
                item = capture.frames.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is None:
                break
            frame, captured_at = item
            img = preprocess.convert_mode(
                Image.fromarray(frame), classifier.spec.color_mode or "RGB"
            )
            pixels = preprocess.resize_pixels(img, classifier.spec)
            top, inference_ms = classifier.classify_pixels(pixels, options.top_k)
            now = time.perf_counter()
            times.append(now)
            fps = (
                (len(times) - 1) / (times[-1] - times[0])
                if len(times) > 1 and times[-1] > times[0]
                else 0.0
            )
            scores = {t.label: float(t.score) for t in top}
            label, score = smoother(scores)
            result = FrameResult(
                frame=frames,
                timestamp=round(time.time(), 4),
                top_k=[{"label": t.label, "score": round(float(t.score), 5)} for t in top],
                label=label,
                score=round(score, 5),
                inference_ms=round(inference_ms, 4),
                end_to_end_ms=round((now - captured_at) * 1000, 3),
                fps=round(fps, 2),
            )
            frames += 1
            if on_result:
                on_result(result)
            if web or options.record or options.window:
                shown = annotate(frame, result)
                if web:
                    web.publish(shown, result)
                if options.record:
                    cv2 = cv2 or _cv2()
                    if writer is None:
                        writer = _open_writer(cv2, options.record, shown.shape)
                    writer.write(cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
                if options.window:
                    options.window = _show(shown)
            if options.max_frames is not None and frames >= options.max_frames:
                stopped_by["reason"] = "--max-frames"
                break
        if stop.is_set() and stopped_by["reason"] == "end of source":
            stopped_by["reason"] = "stop requested"
    finally:
        stop.set()
        # Drain so that a capture thread blocked on a full queue can see the stop and exit.
        while capture.is_alive():
            try:
                capture.frames.get(timeout=0.05)
            except queue.Empty:
                pass
            capture.join(timeout=0.05)
        source.release()
        if writer is not None:
            writer.release()
        if web is not None:
            web.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if capture.error:
        raise EdgennError(capture.error, "Check the cable or the stream, or raise --reconnect.")
    seconds = time.perf_counter() - start
    return CameraSummary(
        frames=frames,
        dropped=capture.dropped,
        seconds=round(seconds, 3),
        fps=round(frames / seconds, 2) if seconds > 0 else 0.0,
        stopped_by=stopped_by["reason"],
        served_at=f"{serve_at[0]}:{serve_at[1]}" if serve_at else None,
    )


def _open_writer(cv2, path: Path, shape: tuple[int, ...]):
    codec = VIDEO_CODECS.get(Path(path).suffix.lower())
    if codec is None:
        raise UsageError(f"--record {path}: use .avi (MJPG), .mp4 (mp4v) or .mkv (FFV1 lossless).")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), 30.0, (shape[1], shape[0]))
    if not writer.isOpened():
        raise EdgennError(f"OpenCV cannot write {path} with the {codec} codec.")
    return writer


def _show(frame: np.ndarray) -> bool:
    """Show a frame in a window; False (and a note) when this OpenCV has no GUI."""
    cv2 = _cv2()
    try:
        cv2.imshow("edgenn camera", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        cv2.waitKey(1)
        return True
    except cv2.error:
        print(
            "edgenn: note: this OpenCV build has no window support (headless); use --serve",
            file=sys.stderr,
        )
        return False

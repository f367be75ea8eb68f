"""[device] The camera pipeline: capture thread, classification, smoothing, outputs, the run loop.

Capture runs in its own thread. For a live source it keeps only the newest frame, so inference
never lags behind reality; for a file or a folder with ``every_frame`` it hands over every frame in
order (a bounded queue, no drops), so results are reproducible. Each classified frame gives a
:class:`FrameResult`; the annotated frame can be shown in a window, recorded to a video file, and
served by the web view (:class:`edgenn.camera.web.WebView`). SIGINT and SIGTERM stop the pipeline
cleanly: threads joined, files closed, camera released.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgenn import preprocess
from edgenn.camera.sources import Source, Warn, open_source, opencv, reconnect
from edgenn.camera.web import WebView, format_address, parse_serve
from edgenn.classify import DEFAULT_TOP_K
from edgenn.errors import EdgennError, UsageError
from edgenn.predict import Classifier

#: Smoothing modes that combine several frames (``--smooth-mode``).
SMOOTH_MODES = ("majority", "mean")
#: Each frame's own winner, which any mode also gives over a window of 1 frame.
NO_SMOOTHING = "none"
#: Every smoothing mode (:class:`Smoother`).
SMOOTHING = (NO_SMOOTHING, *SMOOTH_MODES)
#: Recording container (file suffix) -> OpenCV fourcc. FFV1 in .mkv is lossless.
VIDEO_CODECS = {".avi": "MJPG", ".mp4": "mp4v", ".mkv": "FFV1"}
#: Nominal frame rate written into recordings (frames are written as they are classified).
RECORD_FPS = 30.0
#: Frames queued ahead of the classifier with ``every_frame`` (the reader waits beyond that).
EVERY_FRAME_QUEUE = 8
#: The reported FPS is measured over this many recent frames.
FPS_WINDOW = 30
#: Title of the OpenCV window.
WINDOW_TITLE = "edgenn camera"

#: Why a run ended, as :attr:`CameraSummary.stopped_by` reports it (signals add their name).
END_OF_SOURCE = "end of source"
STOP_REQUESTED = "stop requested"
MAX_FRAMES_REACHED = "--max-frames"
DURATION_REACHED = "--duration"


@dataclasses.dataclass
class FrameResult:
    """One classified frame (``--headless`` prints one JSON line each).

    Attributes:
        frame: Number of the classified frame, from 0.
        timestamp: Wall-clock time (Unix seconds) when it was classified.
        top_k: Best classes first, each ``{"index", "label", "score"}`` (as predict's JSON).
        label: The (smoothed) label.
        score: Its (smoothed) score; with majority smoothing, the share of votes.
        inference_ms: Time of the interpreter's ``invoke``.
        end_to_end_ms: From capture to result.
        fps: Classified frames per second over the last :data:`FPS_WINDOW` frames.
    """

    frame: int
    timestamp: float
    top_k: list[dict[str, Any]]
    label: str
    score: float
    inference_ms: float
    end_to_end_ms: float
    fps: float


@dataclasses.dataclass
class CameraOptions:
    """Options of :func:`run_camera`; the CLI's defaults are these fields' defaults.

    Attributes:
        source: Camera index, ``/dev/videoN``, ``picamera2``, a video file, an image folder or a
            URL (see :func:`edgenn.camera.sources.open_source`).
        top_k: Classes reported per frame.
        every_frame: Classify every frame in order (files) instead of the newest one only.
        max_frames: Stop after this many classified frames.
        duration: Stop after this many seconds.
        reconnect: Seconds to retry a live source that stopped.
        smooth: Frames to smooth the label over (1: no smoothing).
        smooth_mode: One of :data:`SMOOTHING`.
        record: Write the annotated video here (a suffix of :data:`VIDEO_CODECS`).
        serve: Serve the web view at ``HOST:PORT``, ``[IPV6]:PORT`` or ``PORT``.
        window: Show the annotated frames in an OpenCV window.
        threads: Interpreter threads.
    """

    source: str = "0"
    top_k: int = DEFAULT_TOP_K
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
    """What a run did.

    Attributes:
        frames: Frames classified.
        dropped: Frames a live source delivered while the classifier was busy (newest wins).
        seconds: Length of the run.
        fps: Classified frames per second over the whole run.
        stopped_by: Why it ended: end of source, --max-frames, --duration, a signal's name, or
            stop requested.
        served_at: ``HOST:PORT`` the web view listened on (``[IPV6]:PORT``; the port it got
            for port 0), if any.
    """

    frames: int
    dropped: int
    seconds: float
    fps: float
    stopped_by: str
    served_at: str | None = None


class Smoother:
    """Majority vote or mean scores over the last N frames, against label flicker.

    Args:
        mode: One of :data:`SMOOTHING`.
        window: Frames to smooth over.

    Raises:
        UsageError: Unknown mode.
    """

    def __init__(self, mode: str, window: int) -> None:
        if mode not in SMOOTHING:
            raise UsageError(
                f"Unknown --smooth-mode {mode!r}; expected one of {', '.join(SMOOTHING)}."
            )
        self.mode, self.history = mode, collections.deque(maxlen=max(window, 1))

    def __call__(self, scores: dict[str, float]) -> tuple[str, float]:
        """Add a frame's scores; return the smoothed label and score."""
        self.history.append(scores)
        if self.mode == NO_SMOOTHING or len(self.history) == 1:
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


class Capture(threading.Thread):
    """Reads frames in the background.

    Live sources: only the newest frame is kept (older ones are dropped). ``every_frame``: every
    frame is queued in order and the reader waits when the consumer is behind. ``frames`` yields
    ``(frame, perf_counter at capture)`` items, then None at the end of the stream.

    Args:
        source: Where frames come from.
        every_frame: Queue every frame instead of keeping the newest.
        reconnect: Seconds to retry a live source that stopped.
        stop: Set to stop reading.
        on_warning: Told about reconnection attempts.
    """

    def __init__(
        self,
        source: Source,
        every_frame: bool,
        reconnect: float,
        stop: threading.Event,
        on_warning: Warn | None = None,
    ) -> None:
        super().__init__(name="edgenn-capture", daemon=True)
        self.source = source
        self.every_frame = every_frame
        self.reconnect = reconnect
        self.stop = stop
        self.on_warning = on_warning
        self.frames: queue.Queue = queue.Queue(maxsize=EVERY_FRAME_QUEUE if every_frame else 1)
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
                    self._queue(item)
                else:
                    self._replace(item)
        finally:
            self.frames.put(None)  # end of stream

    def _queue(self, item: tuple[np.ndarray, float]) -> None:
        # Wait for room, but look at the stop flag between tries so a stopped run never hangs.
        while not self.stop.is_set():
            try:
                self.frames.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _replace(self, item: tuple[np.ndarray, float]) -> None:
        try:
            self.frames.get_nowait()
            self.dropped += 1
        except queue.Empty:
            pass
        self.frames.put(item)

    def _reconnect(self) -> bool:
        if reconnect(self.source, self.reconnect, self.stop, self.on_warning):
            return True
        if not self.stop.is_set():
            self.error = (
                f"{self.source.description} stopped and did not come back within --reconnect "
                f"{self.reconnect:g} s."
            )
        return False

    def finish(self) -> None:
        """Stop reading and wait for the thread to end."""
        self.stop.set()
        # Drain so that a reader blocked on a full queue can see the stop and exit.
        while self.is_alive():
            try:
                self.frames.get(timeout=0.05)
            except queue.Empty:
                pass
            self.join(timeout=0.05)


def annotate(frame: np.ndarray, result: FrameResult) -> np.ndarray:
    """Draw the label, score, FPS and latency on a copy of the frame (RGB)."""
    cv2 = opencv()
    out = frame.copy()
    scale = max(out.shape[1] / 640, 0.4)
    text = f"{result.label} {result.score:.2f}"
    info = f"{result.fps:.1f} fps  {result.inference_ms:.2f} ms"
    for i, line in enumerate((text, info)):
        y = int((28 + 26 * i) * scale)
        # A thick black outline under thin yellow text stays readable on any background.
        for colour, thickness in (((0, 0, 0), 4), ((255, 255, 0), 1)):
            cv2.putText(
                out,
                line,
                (8, y),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.7 * scale,
                colour,
                thickness,
                cv2.LINE_AA,
            )
    return out


def record_codec(path: Path) -> str:
    """The OpenCV fourcc for a recording's file name.

    Raises:
        UsageError: The suffix is not one of :data:`VIDEO_CODECS`.
    """
    codec = VIDEO_CODECS.get(Path(path).suffix.lower())
    if codec is None:
        known = ", ".join(f"{suffix} ({fourcc})" for suffix, fourcc in VIDEO_CODECS.items())
        raise UsageError(f"--record {path}: use one of {known}.")
    return codec


def _open_writer(path: Path, shape: tuple[int, ...]) -> Any:
    cv2 = opencv()
    codec = record_codec(path)
    size = (shape[1], shape[0])
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), RECORD_FPS, size)
    if not writer.isOpened():
        raise EdgennError(f"OpenCV cannot write {path} with the {codec} codec.")
    return writer


def _show_window(frame: np.ndarray) -> bool:
    """Show a frame in a window; False when this OpenCV build has no GUI."""
    cv2 = opencv()
    try:
        cv2.imshow(WINDOW_TITLE, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        cv2.waitKey(1)
        return True
    except cv2.error:
        return False


class _Outputs:
    """Where annotated frames go: the web view, a recording, a window (any, all or none)."""

    def __init__(self, options: CameraOptions, on_warning: Warn | None) -> None:
        self.record = options.record
        self.window = options.window
        self.on_warning = on_warning
        self.web: WebView | None = None
        self.writer: Any = None

    def serve(
        self, at: tuple[str, int], model: str, source: str, on_serving: Callable[[str], None] | None
    ) -> None:
        """Start the web view and tell ``on_serving`` its URL."""
        self.web = WebView(at[0], at[1], model, source)
        if on_serving:
            on_serving(self.web.url)

    def show(self, frame: np.ndarray, result: FrameResult) -> None:
        """Annotate the frame (only when some output wants it) and hand it to each output."""
        if not (self.web or self.record or self.window):
            return
        shown = annotate(frame, result)
        if self.web:
            self.web.publish(shown, result)
        if self.record:
            if self.writer is None:
                self.writer = _open_writer(self.record, shown.shape)
            cv2 = opencv()
            self.writer.write(cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
        if self.window:
            self.window = _show_window(shown)
            if not self.window and self.on_warning:
                self.on_warning("this OpenCV build has no window support (headless); use --serve")

    def close(self) -> None:
        """Close the recording and stop the web view."""
        if self.writer is not None:
            self.writer.release()
        if self.web is not None:
            self.web.close()


class _FrameRate:
    """Frames per second over the last :data:`FPS_WINDOW` frames."""

    def __init__(self) -> None:
        self.times: collections.deque[float] = collections.deque(maxlen=FPS_WINDOW)

    def tick(self, now: float) -> float:
        """Count a frame at ``now`` (perf_counter seconds); the current rate."""
        self.times.append(now)
        span = self.times[-1] - self.times[0]
        return (len(self.times) - 1) / span if span > 0 else 0.0


class _Run:
    """One run's state: classify queued frames and count them until something stops the run."""

    def __init__(
        self,
        classifier: Classifier,
        smoother: Smoother,
        options: CameraOptions,
        on_result: Callable[[FrameResult], None] | None,
    ) -> None:
        self.classifier = classifier
        self.smoother = smoother
        self.options = options
        self.on_result = on_result
        self.rate = _FrameRate()
        self.frames = 0
        self.stopped_by = END_OF_SOURCE
        self.start = time.perf_counter()

    def classify(self, frame: np.ndarray, captured_at: float) -> FrameResult:
        """Preprocess as in training, classify, smooth: the frame's result."""
        pixels = preprocess.array_to_pixels(frame, self.classifier.spec)
        top, inference_ms = self.classifier.classify_pixels(pixels, self.options.top_k)
        now = time.perf_counter()
        label, score = self.smoother({t.label: float(t.score) for t in top})
        result = FrameResult(
            frame=self.frames,
            timestamp=round(time.time(), 4),
            top_k=[
                {"index": t.index, "label": t.label, "score": round(float(t.score), 5)} for t in top
            ],
            label=label,
            score=round(score, 5),
            inference_ms=round(inference_ms, 4),
            end_to_end_ms=round((now - captured_at) * 1000, 3),
            fps=round(self.rate.tick(now), 2),
        )
        self.frames += 1
        return result

    def loop(self, capture: Capture, outputs: _Outputs, stop: threading.Event) -> None:
        """Classify frames until the source ends, a limit is reached or ``stop`` is set."""
        duration, max_frames = self.options.duration, self.options.max_frames
        while not stop.is_set():
            if duration is not None and time.perf_counter() - self.start >= duration:
                self.stopped_by = DURATION_REACHED
                break
            try:
                item = capture.frames.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is None:
                break
            result = self.classify(*item)
            if self.on_result:
                self.on_result(result)
            outputs.show(item[0], result)
            if max_frames is not None and self.frames >= max_frames:
                self.stopped_by = MAX_FRAMES_REACHED
                break
        if stop.is_set() and self.stopped_by == END_OF_SOURCE:
            self.stopped_by = STOP_REQUESTED

    def summary(self, dropped: int, served_at: str | None) -> CameraSummary:
        """The run's summary, timed up to now."""
        seconds = time.perf_counter() - self.start
        return CameraSummary(
            frames=self.frames,
            dropped=dropped,
            seconds=round(seconds, 3),
            fps=round(self.frames / seconds, 2) if seconds > 0 else 0.0,
            stopped_by=self.stopped_by,
            served_at=served_at,
        )


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event, run: _Run) -> Iterator[None]:
    """Let SIGINT and SIGTERM stop the run (main thread only); restore the handlers after."""

    def on_signal(signum: int, frame: Any) -> None:
        run.stopped_by = signal.Signals(signum).name
        stop.set()

    previous = {}
    # Python only lets the main thread install handlers; elsewhere the caller's ``stop`` rules.
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _check_options(options: CameraOptions) -> None:
    if options.max_frames is not None and options.max_frames < 1:
        raise UsageError(f"--max-frames must be at least 1; received {options.max_frames}.")
    if options.record is not None:
        record_codec(options.record)
    if options.record is not None or options.serve or options.window:
        # The overlay is drawn with OpenCV: say it is missing before any frame, not after one.
        opencv()


def run_camera(
    model: Path,
    options: CameraOptions,
    on_result: Callable[[FrameResult], None] | None = None,
    on_serving: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
    on_warning: Warn | None = None,
) -> CameraSummary:
    """Classify frames from a source until it ends, a limit is reached, or SIGINT/SIGTERM.

    Args:
        model: The .tflite classifier.
        options: Source, outputs and limits.
        on_result: Called with each frame's result (the CLI prints JSON lines).
        on_serving: Called once with the web view's address when ``serve`` is set.
        stop: Set it to stop the pipeline from another thread (as a signal does).
        on_warning: Called with each warning (a skipped frame, a reconnection attempt, no window
            support); called from the capture thread too.

    Returns:
        The summary.

    Raises:
        EdgennError: The model is not an image classifier or its labels do not fit its outputs,
            the source cannot be opened, or it stopped and did not come back; the web view
            cannot listen at ``serve`` (port in use, not this machine's address, unknown host).
        UsageError: An option is invalid.
        MissingDependencyError: OpenCV is missing for the source or an output (window, record,
            web view), or picamera2 for ``--source picamera2``.
    """
    _check_options(options)
    smoother = Smoother(options.smooth_mode, options.smooth)
    classifier = Classifier(model, threads=options.threads)
    serve_at = parse_serve(options.serve) if options.serve else None
    source = open_source(options.source, on_warning, preprocess.decode_side(classifier.spec))
    stop = stop or threading.Event()
    capture = Capture(source, options.every_frame, options.reconnect, stop, on_warning)
    outputs = _Outputs(options, on_warning)
    run = _Run(classifier, smoother, options, on_result)
    with _stop_on_signals(stop, run):
        try:
            if serve_at:
                outputs.serve(serve_at, Path(model).name, source.description, on_serving)
            capture.start()
            run.loop(capture, outputs, stop)
        finally:
            capture.finish()
            source.release()
            outputs.close()
    if capture.error:
        raise EdgennError(capture.error, "Check the cable or the stream, or raise --reconnect.")
    served_at = format_address(*outputs.web.address[:2]) if outputs.web else None
    return run.summary(capture.dropped, served_at)

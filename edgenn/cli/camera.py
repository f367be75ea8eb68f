"""``edgenn camera``: classify live frames."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from edgenn.camera import SMOOTH_MODES, VIDEO_CODECS, CameraOptions, FrameResult, run_camera
from edgenn.camera.web import DEFAULT_HOST, MAX_CONNECTIONS
from edgenn.camera.web import log as web_log
from edgenn.cli.base import main

#: The library's defaults (:class:`CameraOptions`) are the options' defaults.
DEFAULTS = {field.name: field.default for field in dataclasses.fields(CameraOptions)}


@main.command(
    epilog="""\b
Examples:
  edgenn camera -m model.tflite --source 0 --serve 127.0.0.1:8000
  edgenn camera -m model.tflite --source picamera2 --headless --smooth 5
  edgenn camera -m model.tflite --source clip.mkv --every-frame --headless --record out.avi
  edgenn camera -m model.tflite --source rtsp://192.168.1.20/stream --serve 0.0.0.0:8000
  edgenn camera -m model.tflite --source 0 --headless --serve '[::1]:8000'
"""
)
@click.option(
    "-m", "--model", type=click.Path(path_type=Path), required=True, help="The .tflite classifier."
)
@click.option(
    "--source",
    default=DEFAULTS["source"],
    show_default=True,
    help="Camera index, /dev/videoN, picamera2, a video file, an image folder or an rtsp:// / http:// URL.",
)
@click.option(
    "-k", "--top-k", type=click.IntRange(min=1), default=DEFAULTS["top_k"], show_default=True
)
@click.option(
    "--every-frame",
    is_flag=True,
    default=DEFAULTS["every_frame"],
    help="Classify every frame in order (files); default: newest frame only.",
)
@click.option(
    "--headless", is_flag=True, help="Print one JSON line per classified frame; no window."
)
@click.option(
    "--record",
    type=click.Path(path_type=Path),
    default=DEFAULTS["record"],
    help=f"Write the annotated video ({', '.join(VIDEO_CODECS)}).",
)
@click.option(
    "--serve",
    default=DEFAULTS["serve"],
    help="Serve a live page and MJPEG stream at HOST:PORT, [IPV6]:PORT or PORT (host "
    f"{DEFAULT_HOST}); at most {MAX_CONNECTIONS} connections at once. Against DNS rebinding, "
    "it answers only requests for HOST, localhost on a loopback HOST, and an IP address or this "
    "machine's name on 0.0.0.0 (others get 421): bind NAME:PORT to open it by another name.",
)
@click.option(
    "--max-frames", type=int, default=DEFAULTS["max_frames"], help="Stop after N classified frames."
)
@click.option("--duration", type=float, default=DEFAULTS["duration"], help="Stop after S seconds.")
@click.option(
    "--reconnect",
    type=float,
    default=DEFAULTS["reconnect"],
    show_default=True,
    help="Seconds to retry a camera that stopped.",
)
@click.option(
    "--smooth",
    type=click.IntRange(min=1),
    default=DEFAULTS["smooth"],
    show_default=True,
    help="Frames to smooth the label over.",
)
@click.option(
    "--smooth-mode",
    type=click.Choice(SMOOTH_MODES),
    default=DEFAULTS["smooth_mode"],
    show_default=True,
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=DEFAULTS["threads"],
    help="Interpreter threads.",
)
def camera(model: Path, headless: bool, **opts: Any) -> None:
    """Classify live camera frames: headless JSON lines, a window, a recording or a web view."""
    # A window needs a display; headless runs (and SSH sessions without X) get none.
    options = CameraOptions(window=not headless and bool(os.environ.get("DISPLAY")), **opts)

    def printed(result: FrameResult) -> None:
        if headless:
            click.echo(json.dumps(dataclasses.asdict(result)))
            sys.stdout.flush()

    with _web_warnings_on_stderr():
        summary = run_camera(
            model, options, on_result=printed, on_serving=_serving, on_warning=_warning
        )
    click.echo(
        f"edgenn: {summary.frames} frames in {summary.seconds:.1f}s ({summary.fps} fps, {summary.dropped} "
        f"dropped); stopped by {summary.stopped_by}",
        err=True,
    )


def _serving(url: str) -> None:
    public = not url.startswith(("http://127.", "http://localhost", "http://[::1]"))
    warning = " (listening on every interface: anyone on the network can watch)" if public else ""
    click.echo(f"edgenn: web view at {url}{warning}", err=True)


def _warning(message: str) -> None:
    click.echo(f"edgenn: warning: {message}", err=True)


class _WarningHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        _warning(record.getMessage())


@contextlib.contextmanager
def _web_warnings_on_stderr() -> Iterator[None]:
    """Print the web view's logged warnings (refused requests) like the pipeline's own."""
    handler = _WarningHandler(logging.WARNING)
    web_log.addHandler(handler)
    try:
        yield
    finally:
        web_log.removeHandler(handler)

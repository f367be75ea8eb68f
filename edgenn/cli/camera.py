"""``edgenn camera``: classify live frames."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import click

from edgenn.cli.base import main


@main.command(
    epilog="""\b
Examples:
  edgenn camera -m model.tflite --source 0 --serve 127.0.0.1:8000
  edgenn camera -m model.tflite --source picamera2 --headless --smooth 5
  edgenn camera -m model.tflite --source clip.mkv --every-frame --headless --record out.avi
  edgenn camera -m model.tflite --source rtsp://192.168.1.20/stream --serve 0.0.0.0:8000
"""
)
@click.option(
    "-m", "--model", type=click.Path(path_type=Path), required=True, help="The .tflite classifier."
)
@click.option(
    "--source",
    default="0",
    show_default=True,
    help="Camera index, /dev/videoN, picamera2, a video file, an image folder or an rtsp:// / http:// URL.",
)
@click.option("-k", "--top-k", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--every-frame",
    is_flag=True,
    help="Classify every frame in order (files); default: newest frame only.",
)
@click.option(
    "--headless", is_flag=True, help="Print one JSON line per classified frame; no window."
)
@click.option(
    "--record",
    type=click.Path(path_type=Path),
    help="Write the annotated video (.avi, .mp4, .mkv).",
)
@click.option(
    "--serve", help="Serve a live page and MJPEG stream at HOST:PORT (default host 127.0.0.1)."
)
@click.option("--max-frames", type=int, help="Stop after N classified frames.")
@click.option("--duration", type=float, help="Stop after S seconds.")
@click.option(
    "--reconnect",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds to retry a camera that stopped.",
)
@click.option(
    "--smooth",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Frames to smooth the label over.",
)
@click.option(
    "--smooth-mode", type=click.Choice(["majority", "mean"]), default="majority", show_default=True
)
@click.option("--threads", type=click.IntRange(min=1), help="Interpreter threads.")
def camera(model: Path, **opts: Any) -> None:
    """Classify live camera frames: headless JSON lines, a window, a recording or a web view."""
    import os

    from edgenn.camera import CameraOptions, run_camera

    window = not opts["headless"] and bool(os.environ.get("DISPLAY"))
    options = CameraOptions(
        source=opts["source"],
        top_k=opts["top_k"],
        every_frame=opts["every_frame"],
        max_frames=opts["max_frames"],
        duration=opts["duration"],
        reconnect=opts["reconnect"],
        smooth=opts["smooth"],
        smooth_mode=opts["smooth_mode"] if opts["smooth"] > 1 else "none",
        record=opts["record"],
        serve=opts["serve"],
        window=window,
        threads=opts["threads"],
    )

    def serving(url: str) -> None:
        public = not url.startswith(("http://127.", "http://localhost", "http://[::1]"))
        warning = (
            " (listening on every interface: anyone on the network can watch)" if public else ""
        )
        click.echo(f"edgenn: web view at {url}{warning}", err=True)

    def printed(result) -> None:
        if opts["headless"]:
            click.echo(json.dumps(dataclasses.asdict(result)))
            sys.stdout.flush()

    summary = run_camera(
        model, options, on_result=printed, on_serving=serving if opts["serve"] else None
    )
    click.echo(
        f"edgenn: {summary.frames} frames in {summary.seconds:.1f}s ({summary.fps} fps, {summary.dropped} "
        f"dropped); stopped by {summary.stopped_by}",
        err=True,
    )

"""edgenn camera with video files, an image folder and an MJPEG stream as cameras; the web view in
a real headless Chromium."""

from __future__ import annotations

import http.server
import io
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgenn.camera import CameraOptions, run_camera
from edgenn.cli import main
from edgenn.errors import EdgennError

from .conftest import REPO, SAMPLES

cv2 = pytest.importorskip("cv2", reason="OpenCV is the [camera] extra, part of [test]")

MODEL = REPO / "tests" / "data" / "tiny_cnn_int8.tflite"
FRAMES = sorted(SAMPLES.glob("*/*.jpg"))[::10][:30]  # 30 real test images, 3 per class


def _rgb(path: Path, size: int = 112) -> np.ndarray:
    return np.asarray(
        Image.open(path).convert("RGB").resize((size, size), Image.Resampling.NEAREST)
    )


def _video(path: Path, codec: str) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), 10, (112, 112))
    assert writer.isOpened(), codec
    for f in FRAMES:
        writer.write(cv2.cvtColor(_rgb(f), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _headless(args: list[str]) -> list[dict]:
    result = CliRunner().invoke(main, ["camera", "-m", str(MODEL), "--headless", *args])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_labels_equal_predict_frame_by_frame(tmp_path):
    """A lossless video (FFV1) of real images: the camera's label for each frame is edgenn
    predict's label for the same image."""
    video = _video(tmp_path / "clip.mkv", "FFV1")
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for i, f in enumerate(FRAMES):
        Image.fromarray(_rgb(f)).save(frames_dir / f"{i:03d}.png")
    results = _headless(["--source", str(video), "--every-frame", "-k", "1"])
    assert [r["frame"] for r in results] == list(range(30))
    predicted = CliRunner().invoke(
        main, ["predict", "-m", str(MODEL), str(frames_dir), "-k", "1", "--json"]
    )
    labels = [json.loads(line)["top_k"][0]["label"] for line in predicted.stdout.splitlines()]
    assert [r["top_k"][0]["label"] for r in results] == labels
    for r in results:
        assert r["inference_ms"] > 0 and r["end_to_end_ms"] >= r["inference_ms"]
        assert set(r) == {
            "frame",
            "timestamp",
            "top_k",
            "label",
            "score",
            "inference_ms",
            "end_to_end_ms",
            "fps",
        }


@pytest.mark.parametrize("codec, suffix", [("mp4v", ".mp4"), ("MJPG", ".avi")])
def test_lossy_codecs_play_every_frame(tmp_path, codec, suffix):
    results = _headless(
        ["--source", str(_video(tmp_path / f"clip{suffix}", codec)), "--every-frame"]
    )
    assert len(results) == 30


def test_image_folder_source_max_frames_and_smoothing(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    for f in FRAMES:
        shutil.copy(f, folder / f"{f.parent.name}-{f.name}")
    results = _headless(
        ["--source", str(folder), "--every-frame", "--max-frames", "12", "--smooth", "5"]
    )
    assert len(results) == 12
    # Majority smoothing: the reported label is one of the last frames' winners.
    for i, r in enumerate(results):
        winners = [x["top_k"][0]["label"] for x in results[max(0, i - 4) : i + 1]]
        assert r["label"] in winners


def test_record_writes_the_annotated_video(tmp_path):
    out = tmp_path / "annotated.avi"
    _headless(
        [
            "--source",
            str(_video(tmp_path / "clip.mkv", "FFV1")),
            "--every-frame",
            "--record",
            str(out),
        ]
    )
    cap = cv2.VideoCapture(str(out))
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    assert count == 30


def test_missing_camera_lists_the_devices():
    result = CliRunner().invoke(main, ["camera", "-m", str(MODEL), "--source", "7", "--headless"])
    assert result.exit_code == 1
    assert (
        "Cannot open source '7'" in result.output
        and "Video devices on this machine" in result.output
    )


class _Stream:
    """An MJPEG camera on 127.0.0.1 (like an IP camera): frames from real images at ~30 fps;
    after ``limit`` frames it stops for good (the camera is unplugged)."""

    def __init__(self, limit: int | None = None):
        jpegs = []
        for f in FRAMES:
            buf = io.BytesIO()
            Image.fromarray(_rgb(f)).save(buf, "JPEG", quality=95)
            jpegs.append(buf.getvalue())
        stream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if stream.gone:
                    self.send_error(503)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    while not stream.gone:
                        jpeg = jpegs[stream.sent % len(jpegs)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n")
                        self.wfile.write(
                            f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n"
                        )
                        stream.sent += 1
                        if limit is not None and stream.sent >= limit:
                            stream.gone = True
                        time.sleep(1 / 30)
                except OSError:
                    pass

        self.sent, self.gone = 0, False
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"

    def close(self):
        self.gone = True
        self.server.shutdown()
        self.server.server_close()


def test_stream_that_stops_mid_way_retries_then_fails_clearly():
    stream = _Stream(limit=40)
    try:
        result = CliRunner().invoke(
            main,
            [
                "camera",
                "-m",
                str(MODEL),
                "--source",
                stream.url,
                "--headless",
                "--reconnect",
                "1.5",
            ],
        )
    finally:
        stream.close()
    assert result.exit_code == 1
    frames = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(frames) > 5
    assert "stopped and did not come back within --reconnect 1.5 s" in result.output


SIGTERM_SCRIPT = """
import sys
from edgenn.cli import main
main(["camera", "-m", sys.argv[1], "--source", sys.argv[2], "--headless", "--record", sys.argv[3]])
"""


def test_sigterm_stops_cleanly(tmp_path):
    stream = _Stream()
    record = tmp_path / "rec.avi"
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", SIGTERM_SCRIPT, str(MODEL), stream.url, str(record)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if len(lines) >= 15:
                break
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        stream.close()
    assert proc.returncode == 0, err
    assert "stopped by SIGTERM" in err
    # The recording was closed properly: it plays back.
    cap = cv2.VideoCapture(str(record))
    assert cap.read()[0]
    cap.release()


def test_web_view_in_a_real_browser():
    """Debian's Chromium, driven by Playwright (no browser is downloaded): the page loads, the
    stream shows frames, the label updates; viewers leaving do not leak threads."""
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is installed by scripts/setup.sh test"
    stream = _Stream()
    urls: list[str] = []
    results = []
    options = CameraOptions(source=stream.url, serve="127.0.0.1:0", duration=60.0)
    done, stop = threading.Event(), threading.Event()

    def run():
        try:
            results.append(run_camera(MODEL, options, on_serving=urls.append, stop=stop))
        finally:
            done.set()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    try:
        for _ in range(100):
            if urls:
                break
            time.sleep(0.05)
        assert urls and urls[0].startswith("http://127.0.0.1:")
        url = urls[0]
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=chromium,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                ],
            )
            baseline = threading.active_count()
            pages = [browser.new_page() for _ in range(3)]
            for page in pages:
                page.goto(url)
            page = pages[0]
            page.wait_for_function(
                "document.getElementById('stream').naturalWidth > 0", timeout=15000
            )
            page.wait_for_function(
                "document.getElementById('label').textContent !== 'waiting for frames'",
                timeout=15000,
            )
            first = page.inner_text("#stats")
            page.wait_for_function(
                f"document.getElementById('stats').textContent !== {json.dumps(first)}",
                timeout=15000,
            )
            assert page.locator("#topk tr").count() == 3
            latest = json.loads(page.evaluate("fetch('/latest.json').then(r => r.text())"))
            assert latest["label"] and latest["fps"] >= 0
            for p_ in pages:
                p_.close()
            browser.close()
        # Viewer threads end when the viewers leave.
        for _ in range(100):
            if threading.active_count() <= baseline:
                break
            time.sleep(0.05)
        assert threading.active_count() <= baseline
    finally:
        stop.set()
        done.wait(timeout=40)
        stream.close()
    assert results and results[0].frames > 10 and results[0].stopped_by == "stop requested"


def test_source_errors():
    with pytest.raises(EdgennError, match="Cannot open source 'nothing-here'"):
        run_camera(MODEL, CameraOptions(source="nothing-here"))

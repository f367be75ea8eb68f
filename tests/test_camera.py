"""edgenn camera with video files, an image folder and an MJPEG stream as cameras; the web view in
a real headless Chromium."""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import io
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgenn import artifact, tflite_model
from edgenn.camera import (
    SMOOTH_MODES,
    SMOOTHING,
    CameraOptions,
    FrameResult,
    WebView,
    parse_serve,
    run_camera,
)
from edgenn.cli import main
from edgenn.errors import EdgennError, UsageError

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
    # Each attempt is a warning the CLI prints on stderr, never a JSON line.
    assert f"edgenn: warning: camera {stream.url} stopped; reconnecting" in result.stderr
    assert "reconnecting" not in result.stdout


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


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _watch_in_chromium(playwright, chromium: str, url: str) -> int:
    """Three viewers open the page; the first checks stream, label, top-k and /latest.json.
    Returns the thread count before the viewers came."""
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        baseline = threading.active_count()
        pages = [browser.new_page() for _ in range(3)]
        for page in pages:
            page.goto(url)
        page = pages[0]
        page.wait_for_function("document.getElementById('stream').naturalWidth > 0", timeout=15000)
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
        # Labels are the model's data: shown as text, never run as HTML.
        assert page.inner_text("#topk td").startswith("<img src=x onerror=")
        assert page.evaluate("window.pwned === undefined")
        latest = json.loads(page.evaluate("fetch('/latest.json').then(r => r.text())"))
        assert latest["label"] and latest["fps"] >= 0
        for p_ in pages:
            p_.close()
        browser.close()
    return baseline


def test_web_view_in_a_real_browser(tmp_path):
    """Debian's Chromium, driven by Playwright (no browser is downloaded): the page loads, the
    stream shows frames, the label updates; viewers leaving do not leak threads. The model's
    labels are HTML that would run script if the page inserted them as markup."""
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is installed by scripts/setup.sh test"
    stream = _Stream()
    urls: list[str] = []
    results = []
    options = CameraOptions(source=stream.url, serve="127.0.0.1:0", duration=60.0)
    done, stop = threading.Event(), threading.Event()
    info = artifact.model_info(tflite_model.load(MODEL))
    hostile = tmp_path / "hostile_labels.tflite"
    labels = [f'<img src=x onerror="window.pwned=1">{name}' for name in info.labels]
    hostile.write_bytes(artifact.embed(MODEL.read_bytes(), labels, info.spec))

    def run():
        try:
            results.append(run_camera(hostile, options, on_serving=urls.append, stop=stop))
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    try:
        for _ in range(100):
            if urls:
                break
            time.sleep(0.05)
        assert urls and urls[0].startswith("http://127.0.0.1:")
        baseline = _watch_in_chromium(playwright, chromium, urls[0])
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


def test_labels_that_do_not_fit_the_outputs_fail_as_one_line(tmp_path):
    """The tiny CNN with one label too few embedded: the run stops before any frame with one line
    that says both numbers."""
    info = artifact.model_info(tflite_model.load(MODEL))
    wrong = info.labels[:-1]
    bad = tmp_path / "wrong_labels.tflite"
    # Written past embed()'s own check, as a hand-made or older model would be.
    payload = artifact.metadata_bytes(wrong, info.spec)
    bad.write_bytes(
        tflite_model.embed_metadata(MODEL.read_bytes(), artifact.METADATA_ENTRY, payload)
    )
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(FRAMES[0], folder / FRAMES[0].name)
    result = CliRunner().invoke(
        main, ["camera", "-m", str(bad), "--source", str(folder), "--headless"]
    )
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("edgenn: error: ")
    assert f"has {len(wrong)} labels but {len(info.labels)} outputs" in lines[0]
    with pytest.raises(EdgennError, match=f"{len(wrong)} labels but {len(info.labels)} outputs"):
        run_camera(bad, CameraOptions(source=str(folder)))


def test_warnings_go_to_the_callback_and_the_cli_prints_them(tmp_path, capfd):
    """A folder with a broken image: the library hands the warning to on_warning and prints
    nothing itself; the CLI prints it as "edgenn: warning: ..."."""
    folder = tmp_path / "folder"
    folder.mkdir()
    for f in FRAMES[:3]:
        shutil.copy(f, folder / f.name)
    broken = folder / "0-broken.jpg"
    broken.write_bytes(b"not a jpeg")
    warnings: list[str] = []
    summary = run_camera(
        MODEL, CameraOptions(source=str(folder), every_frame=True), on_warning=warnings.append
    )
    assert summary.frames == 3 and summary.stopped_by == "end of source"
    assert len(warnings) == 1 and warnings[0].startswith(f"skipping frame {broken}: ")
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""
    result = CliRunner().invoke(
        main, ["camera", "-m", str(MODEL), "--source", str(folder), "--headless", "--every-frame"]
    )
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 3
    assert f"edgenn: warning: skipping frame {broken}: " in result.stderr


def test_cli_choices_and_defaults_come_from_the_library():
    command = main.commands["camera"]
    params = {p.name: p for p in command.params}
    assert list(params["smooth_mode"].type.choices) == list(SMOOTH_MODES)
    assert set(SMOOTH_MODES) < set(SMOOTHING)
    for field in dataclasses.fields(CameraOptions):
        if field.name in params:
            assert params[field.name].default == field.default, field.name
    assert {"source", "top_k", "reconnect", "smooth", "smooth_mode"} <= set(params)


def test_unknown_recording_suffix_is_refused_before_the_camera_opens(tmp_path):
    with pytest.raises(UsageError, match=r"--record .*clip\.mov: use one of \.avi \(MJPG\)"):
        run_camera(MODEL, CameraOptions(source="nothing-here", record=tmp_path / "clip.mov"))
    assert not (tmp_path / "clip.mov").exists()


NO_OPENCV_SCRIPT = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "cv2":
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
sys.meta_path.insert(0, Block())
from edgenn.cli import main
main(["camera", "-m", sys.argv[1], "--source", sys.argv[2], "--headless", "--record", sys.argv[3]])
"""


def test_without_opencv_an_output_that_needs_it_fails_before_the_first_frame(tmp_path):
    """An image folder needs no OpenCV, the overlay of a recording does: one line naming the
    install, and no frame is classified first."""
    folder = tmp_path / "folder"
    folder.mkdir()
    for f in FRAMES[:3]:
        shutil.copy(f, folder / f.name)
    out = subprocess.run(
        [sys.executable, "-c", NO_OPENCV_SCRIPT, str(MODEL), str(folder), str(tmp_path / "a.avi")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1, out.stderr
    assert out.stdout == ""
    errors = [line for line in out.stderr.splitlines() if line.startswith("edgenn: error: ")]
    assert len(errors) == 1 and "pip install 'edgenn[camera]'" in errors[0]


def test_serve_values():
    """HOST:PORT, [IPV6]:PORT and PORT; a bare IPv6 address is ambiguous and says so."""
    assert parse_serve("8000") == ("127.0.0.1", 8000)
    assert parse_serve("[::1]:8000") == ("::1", 8000)
    assert parse_serve("0.0.0.0:0") == ("0.0.0.0", 0)
    assert parse_serve("camera.local:8080") == ("camera.local", 8080)
    for bad, message in [
        ("::1:8000", r"\[::1\]:8000"),
        ("[::1]", "HOST:PORT"),
        ("[]:80", "HOST:PORT"),
        ("host:", "HOST:PORT"),
        ("host:65536", "HOST:PORT"),
        ("host:８０", "HOST:PORT"),
        ("bad host:80", "HOST:PORT"),
    ]:
        with pytest.raises(UsageError, match=message):
            parse_serve(bad)


def test_serve_on_ipv6_loopback(tmp_path):
    """--serve [::1]:0 listens on IPv6: the page answers there (to its own name only), and the URL
    and summary put the address in brackets with the port it got."""
    folder = tmp_path / "folder"
    folder.mkdir()
    for f in FRAMES[:3]:
        shutil.copy(f, folder / f.name)
    answers: list[tuple[str, int, bytes]] = []
    misdirected: list[int] = []

    def fetch(url: str) -> None:
        with urllib.request.urlopen(url + "latest.json", timeout=5) as reply:
            answers.append((url, reply.status, reply.read()))
        address = ("::1", int(url.rstrip("/").rpartition(":")[2]))
        misdirected.append(_ask(address, "Host: evil.example", path="/latest.json")[0])

    summary = run_camera(
        MODEL,
        CameraOptions(source=str(folder), every_frame=True, serve="[::1]:0"),
        on_serving=fetch,
    )
    ((url, status, body),) = answers
    port = int(summary.served_at.rpartition(":")[2])
    assert port > 0 and summary.served_at == f"[::1]:{port}" and url == f"http://[::1]:{port}/"
    assert status == 200 and json.loads(body) == {} and misdirected == [421]
    assert summary.frames == 3


def test_serve_errors_are_one_line(tmp_path):
    """A port in use, a host that does not resolve, an address of another machine: one line
    each with the fix, before any frame; a bare IPv6 address is a usage error."""
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(FRAMES[0], folder / FRAMES[0].name)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        for serve, code, message in [
            (f"127.0.0.1:{port}", 1, f"port {port} is in use by another program"),
            ("no-such-host.invalid:8000", 1, "cannot be resolved"),
            ("192.0.2.1:8000", 1, "192.0.2.1 is not an address of this machine"),
            ("::1:8000", 2, "[::1]:8000"),
        ]:
            result = CliRunner().invoke(
                main,
                ["camera", "-m", str(MODEL), "--source", str(folder), "--headless"]
                + ["--serve", serve],
            )
            assert result.exit_code == code, result.output
            assert result.stdout == ""
            lines = result.stderr.splitlines()
            assert len(lines) == 1 and message in lines[0], lines
    finally:
        busy.close()


def _frame_result(n: int) -> FrameResult:
    return FrameResult(n, time.time(), [], "Bag", 1.0, 1.0, 1.0, 10.0)


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """True once the server has closed ``sock`` (end of file or reset) within ``within`` s."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass  # a 503 answer before the end
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_web_view_caps_connections_and_times_out_idle_ones():
    """Hundreds of idle and half-sent connections: the view never holds more than its cap of
    threads, answers 503 over the cap at once, hangs up on each within its timeout (also one
    that trickles a byte at a time), and still serves the page and a stream that outlives the
    timeout."""
    baseline = threading.active_count()
    view = WebView("127.0.0.1", 0, "model", "source", max_connections=8, timeout=1.5)
    address = view.address[:2]
    try:
        idle = [socket.create_connection(address, timeout=5) for _ in range(8)]
        for _ in range(100):
            if view.server.active == 8:
                break
            time.sleep(0.01)
        # Over the cap: an answer at once, not a wait.
        started = time.monotonic()
        with pytest.raises(urllib.error.HTTPError) as busy:
            urllib.request.urlopen(view.url, timeout=5)
        assert busy.value.code == 503 and time.monotonic() - started < 1.0
        for i in range(400):
            s = socket.create_connection(address, timeout=5)
            if i % 4 == 0:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            idle.append(s)
            if i % 50 == 0:
                assert view.server.active <= 8
                assert threading.active_count() <= baseline + 1 + 8
        assert all(_closed_by_server(s, 3.0) for s in idle)
        # A client that sends a byte every 0.2 s never times out a read; the deadline ends it.
        trickle = [socket.create_connection(address, timeout=5) for _ in range(8)]
        started = time.monotonic()
        while time.monotonic() - started < 3.0:
            for s in trickle:
                with contextlib.suppress(OSError):
                    s.send(b"X")
            time.sleep(0.2)
        assert all(_closed_by_server(s, 0.5) for s in trickle)
        for s in idle + trickle:
            s.close()
        with urllib.request.urlopen(view.url, timeout=5) as page:
            assert page.status == 200 and b"edgenn camera" in page.read()
        _stream_outlives_the_timeout(view, 3.0)
    finally:
        view.close()
    for _ in range(100):
        if threading.active_count() <= baseline and view.server.active == 0:
            break
        time.sleep(0.05)
    assert threading.active_count() <= baseline and view.server.active == 0


def _stream_outlives_the_timeout(view: WebView, seconds: float) -> None:
    """A viewer reading /stream.mjpg for ``seconds`` gets frames all along."""
    stop = threading.Event()

    def publish():
        n = 0
        while not stop.is_set():
            view.publish(np.full((32, 32, 3), n % 256, np.uint8), _frame_result(n))
            n += 1
            time.sleep(0.05)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        with urllib.request.urlopen(view.url + "stream.mjpg", timeout=5) as stream:
            started = last = time.monotonic()
            data = b""
            while time.monotonic() - started < seconds:
                chunk = stream.read1(65536)
                assert chunk, "the stream ended"
                data, last = data + chunk, time.monotonic()
        assert data.count(b"--frame") >= 20 and last - started > seconds - 0.5
    finally:
        stop.set()
        publisher.join()


def test_stream_password_is_never_shown():
    """A camera URL with a password: the web page, the warnings and the error say ``***``."""
    with pytest.raises(EdgennError) as error:
        run_camera(MODEL, CameraOptions(source="rtsp://viewer:s3cret@127.0.0.1:1/x"))
    assert "viewer:***@127.0.0.1:1" in str(error.value) and "s3cret" not in str(error.value)
    stream = _Stream(limit=20)
    url = stream.url.replace("http://", "http://viewer:s3cret@")
    pages: list[str] = []
    warnings: list[str] = []

    def fetch(page_url: str) -> None:
        with urllib.request.urlopen(page_url, timeout=5) as reply:
            pages.append(reply.read().decode())

    try:
        with pytest.raises(EdgennError, match="did not come back") as stopped:
            run_camera(
                MODEL,
                CameraOptions(source=url, serve="127.0.0.1:0", reconnect=0.5),
                on_serving=fetch,
                on_warning=warnings.append,
            )
    finally:
        stream.close()
    assert "camera http://viewer:***@127.0.0.1:" in pages[0] and "s3cret" not in pages[0]
    assert warnings and not any("s3cret" in w for w in [*warnings, str(stopped.value)])


def _ask(address: tuple, *headers: str, path: str = "/") -> tuple[int, bytes]:
    """GET ``path`` over a real socket with exactly these header lines: status and body (the
    body only when it has a length: a stream that is served never ends)."""
    with socket.create_connection(address[:2], timeout=5) as s:
        lines = [f"GET {path} HTTP/1.1", *headers, "Connection: close", "", ""]
        s.sendall("\r\n".join(lines).encode("latin-1"))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        length = [
            int(h.split(b":")[1])
            for h in head.lower().split(b"\r\n")
            if h.startswith(b"content-length:")
        ]
        while length and len(body) < length[0]:
            chunk = s.recv(65536)
            assert chunk, body
            body += chunk
        return status, body


def _hosts_answered(view: WebView, hosts: list[str], path: str = "/") -> dict[str, int]:
    return {host: _ask(view.address, f"Host: {host}", path=path)[0] for host in hosts}


def _foreign_hosts(port: int) -> list[list[str]]:
    """Host header lines a view on 127.0.0.1:``port`` must refuse."""
    return [
        ["Host: evil.example"],
        [f"Host: evil.example:{port}"],
        [f"Host: 127.0.0.1.evil.example:{port}"],
        ["Host: localhost.evil.example"],
        [],  # no Host header at all
        [f"Host: 127.0.0.1:{port}", "Host: evil.example"],
        [f"Host: 127.0.0.1:{port}x"],
        ["Host: [::1"],
        ["Host: ::1"],
        ["Host: [127.0.0.1]"],
        ["Host: 192.0.2.7"],  # an address, but not the one bound
        [f"Host: {socket.gethostname()}"],  # this machine's name, but the view is loopback only
    ]


def test_web_view_refuses_other_host_names(caplog, capfd):
    """DNS rebinding: a page on evil.example whose name now points at 127.0.0.1 must not read the
    view. Every path answers 421 with one line to a Host header that does not name the view (also
    none, two, or malformed ones), logs it once, prints nothing; the view's own names still work."""
    view = WebView("127.0.0.1", 0, "model", "source")
    port = view.address[1]
    view.publish(np.zeros((8, 8, 3), np.uint8), _frame_result(0))
    good = [f"127.0.0.1:{port}", "127.0.0.1", f"localhost:{port}", "LocalHost.", "[::1]:80"]
    try:
        with caplog.at_level("DEBUG", logger="edgenn.camera.web"):
            for path in ["/", "/latest.json", "/stream.mjpg", "/missing"]:
                for headers in _foreign_hosts(port):
                    status, body = _ask(view.address, *headers, path=path)
                    assert status == 421, (path, headers)
                    assert body.count(b"\n") == 1 and view.url.encode() in body, body
        assert _hosts_answered(view, good + ["[0:0::1]"]) == dict.fromkeys(good + ["[0:0::1]"], 200)
        assert _hosts_answered(view, good, path="/latest.json") == dict.fromkeys(good, 200)
        # The stream starts for the view's own name (a 200, then frames).
        assert _ask(view.address, f"Host: localhost:{port}", path="/stream.mjpg")[0] == 200
    finally:
        view.close()
    refused = [r for r in caplog.records if r.levelname == "WARNING"]
    assert refused and all(r.name == "edgenn.camera.web" for r in refused)
    # Once per Host header at WARNING (a hostile page retrying in a loop does not flood the log).
    assert sum("Host 'evil.example':" in r.getMessage() for r in refused) == 1
    assert sum("Host missing:" in r.getMessage() for r in refused) == 1
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_web_view_on_every_interface_answers_addresses_and_this_machines_names():
    """Bound to 0.0.0.0: any IP literal (the viewer on the network types the Pi's address),
    localhost and this machine's names answer; other names still get 421."""
    view = WebView("0.0.0.0", 0, "model", "source")
    port = view.address[1]
    name = socket.gethostname()
    good = [
        f"192.0.2.7:{port}",
        "10.1.2.3",
        "[2001:db8::1]:80",
        f"0.0.0.0:{port}",
        "localhost",
        name,
        f"{name.upper()}:{port}",
        socket.getfqdn(),
        f"{name.split('.')[0]}.local",
    ]
    try:
        assert _hosts_answered(view, good) == dict.fromkeys(good, 200)
        bad = ["evil.example", f"{name}.evil.example", f"evil-{name}", "192.0.2.7.nip.io"]
        assert _hosts_answered(view, bad, path="/latest.json") == dict.fromkeys(bad, 421)
    finally:
        view.close()


def test_web_view_on_ipv6_loopback_and_by_name_checks_the_host_too():
    """[::1] answers [::1] and localhost; a view bound by name answers that name."""
    for bound, good, bad in [
        ("::1", ["[::1]", "localhost", "127.0.0.1"], ["evil.example", "[2001:db8::1]"]),
        ("localhost", ["localhost", "127.0.0.1"], ["evil.example", "192.0.2.7"]),
    ]:
        view = WebView(bound, 0, "model", "source")
        port = view.address[1]
        try:
            hosts = [f"{h}:{port}" for h in good + bad]
            assert _hosts_answered(view, hosts) == {
                f"{h}:{port}": 200 if h in good else 421 for h in good + bad
            }
        finally:
            view.close()


SERVE_SCRIPT = """
import sys
from edgenn.cli import main
main(["camera", "-m", sys.argv[1], "--source", sys.argv[2], "--serve", "127.0.0.1:0"])
"""


def test_cli_serve_prints_each_refused_host_once_as_a_warning():
    """edgenn camera --serve: a request for another host name gets 421 and one warning line on
    stderr (not a traceback, not one line per retry); the view still answers its own address."""
    stream = _Stream()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVE_SCRIPT, str(MODEL), stream.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        first = proc.stderr.readline()
        assert first.startswith("edgenn: web view at http://127.0.0.1:"), first
        port = int(first.split()[4].rstrip("/").rpartition(":")[2])
        answers = [_ask(("127.0.0.1", port), "Host: evil.example")[0] for _ in range(3)]
        answers.append(_ask(("127.0.0.1", port), f"Host: 127.0.0.1:{port}")[0])
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        stream.close()
    assert proc.returncode == 0, err
    assert answers == [421, 421, 421, 200]
    refused = [line for line in err.splitlines() if "refused" in line]
    assert len(refused) == 1 and refused[0].startswith(
        "edgenn: warning: web view refused a request from 127.0.0.1 with Host 'evil.example': "
    ), err
    assert "Traceback" not in err

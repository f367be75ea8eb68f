"""[device] The camera's web view: a live page, an MJPEG stream and ``/latest.json``.

The pipeline only stores the newest annotated frame (:meth:`WebView.publish`); each viewer's thread
encodes and sends it, so viewers never slow inference down, and a viewer that disconnects just
ends its thread. Standard library only: ``http.server`` with one thread per viewer.
"""

from __future__ import annotations

import dataclasses
import html
import http.server
import io
import json
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from edgenn.errors import UsageError

if TYPE_CHECKING:
    from edgenn.camera.pipeline import FrameResult

#: Host the web view binds when ``--serve`` gives only a port: this machine only.
DEFAULT_HOST = "127.0.0.1"
#: Width of the stream on the page (CSS pixels); the image keeps its aspect ratio.
PAGE_WIDTH = 480
#: JPEG quality of the stream: small enough for Wi-Fi, sharp enough to read the overlay.
JPEG_QUALITY = 80

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

    Args:
        host: Address to bind.
        port: Port to bind (0 picks a free one; see :attr:`address`).
        model: The model's name, shown on the page.
        source: The source's description, shown on the page.

    Raises:
        OSError: The address cannot be bound.
    """

    def __init__(self, host: str, port: int, model: str, source: str) -> None:
        self.cond = threading.Condition()
        self.frame: np.ndarray | None = None
        self.seq = 0
        self.latest: dict[str, Any] = {}
        self.closed = False
        self._jpeg: tuple[int, bytes] = (-1, b"")
        self.page = PAGE.format(
            model=html.escape(model), source=html.escape(source), width=PAGE_WIDTH
        ).encode()
        self.server = _Server((host, port), self)
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

    def latest_json(self) -> bytes:
        """The newest result as JSON (``{}`` before the first frame)."""
        with self.cond:
            return json.dumps(self.latest).encode()

    def wait_for_frame(self, last: int) -> int | None:
        """Block until a frame newer than ``last`` is published; its number, or None once closed."""
        with self.cond:
            self.cond.wait_for(lambda: self.seq != last or self.closed)
            return None if self.closed else self.seq

    def jpeg(self, seq: int) -> bytes:
        """The JPEG of frame ``seq``, encoded once however many viewers there are."""
        with self.cond:
            if self._jpeg[0] == seq:
                return self._jpeg[1]
            frame = self.frame
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, "JPEG", quality=JPEG_QUALITY)
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


class _Server(http.server.ThreadingHTTPServer):
    """One thread per request; the handler reaches the view through ``server.view``."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], view: WebView) -> None:
        self.view = view
        super().__init__(address, _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``/``, ``/latest.json`` and ``/stream.mjpg``."""

    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: stderr belongs to the pipeline's own messages."""

    def do_GET(self) -> None:
        """Serve the page, the JSON endpoint or the MJPEG stream."""
        view = self.server.view
        if self.path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", view.page)
        elif self.path.startswith("/latest.json"):
            self._send(200, "application/json", view.latest_json())
        elif self.path.startswith("/stream.mjpg"):
            self._stream(view)
        else:
            self._send(404, "text/plain", b"not found")

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, view: WebView) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        last = -1
        try:
            while (seq := view.wait_for_frame(last)) is not None:
                last = seq
                jpeg = view.jpeg(seq)
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n")
                self.wfile.write(f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            return  # the viewer left


def parse_serve(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``PORT`` (binds :data:`DEFAULT_HOST`).

    Args:
        text: The ``--serve`` value.

    Returns:
        ``(host, port)``.

    Raises:
        UsageError: Not in that form.
    """
    host, _, port = text.rpartition(":")
    host = host or DEFAULT_HOST
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"--serve expects HOST:PORT such as 127.0.0.1:8000; received {text!r}.")
    return host.strip("[]"), int(port)

"""[device] The camera's web view: a live page, an MJPEG stream and ``/latest.json``.

The pipeline only stores the newest annotated frame (:meth:`WebView.publish`); each viewer's thread
encodes and sends it, so viewers never slow inference down, and a viewer that disconnects just
ends its thread. Standard library only: ``http.server`` with one thread per connection, at most
:data:`MAX_CONNECTIONS` of them (more get 503), and :data:`REQUEST_TIMEOUT` for a connection to
send its request and for each send to a viewer, so idle, half-sent or stalled connections end.
Labels reach the page as text only (never as HTML). A request whose ``Host`` header does not name
the view gets 421 (:class:`HostCheck`), so a web page cannot read it through DNS rebinding.
"""

from __future__ import annotations

import dataclasses
import errno
import html
import http.server
import io
import ipaddress
import json
import logging
import socket
import socketserver
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from edgenn.errors import EdgennError, UsageError

if TYPE_CHECKING:
    from edgenn.camera.pipeline import FrameResult

#: Host the web view binds when ``--serve`` gives only a port: this machine only.
DEFAULT_HOST = "127.0.0.1"
#: Width of the stream on the page (CSS pixels); the image keeps its aspect ratio.
PAGE_WIDTH = 480
#: JPEG quality of the stream: small enough for Wi-Fi, sharp enough to read the overlay.
JPEG_QUALITY = 80
#: Connections served at once, each a thread: a few viewers and their page requests fit; more
#: get 503 until one ends, so a flood of connections cannot take every thread or file handle.
MAX_CONNECTIONS = 32
#: Seconds a connection has to send its whole request, and a send to a viewer may block.
REQUEST_TIMEOUT = 10.0
#: Host names that reach this machine only: a view on a loopback address or on every interface
#: answers to them (see :class:`HostCheck`).
LOOPBACK_NAMES = ("localhost",)
#: Addresses a view bound to a loopback address answers to, besides its own.
LOOPBACK_ADDRESSES = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
#: Distinct refused ``Host`` headers logged as warnings; the rest (a page retrying in a loop, a
#: scan) go to debug, so they cannot flood the log.
LOGGED_REFUSALS = 32

log = logging.getLogger(__name__)

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
        // Labels come from the model's files: text nodes only, never parsed as HTML.
        document.getElementById('topk').replaceChildren(...d.top_k.map(t => {{
          const row = document.createElement('tr');
          for (const text of [t.label, t.score.toFixed(3)]) {{
            row.appendChild(document.createElement('td')).textContent = text;
          }}
          return row;
        }}));
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
        max_connections: Connections served at once (more get 503).
        timeout: Seconds a connection has to send its request, and a send may block.

    Requests must name the view in their ``Host`` header (:class:`HostCheck`); others get 421.

    Raises:
        EdgennError: The address cannot be bound (in use, not this machine's, unresolvable).
    """

    def __init__(
        self,
        host: str,
        port: int,
        model: str,
        source: str,
        max_connections: int = MAX_CONNECTIONS,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.cond = threading.Condition()
        self.frame: np.ndarray | None = None
        self.seq = 0
        self.latest: dict[str, Any] = {}
        self.closed = False
        self._jpeg: tuple[int, bytes] = (-1, b"")
        self.page = PAGE.format(
            model=html.escape(model), source=html.escape(source), width=PAGE_WIDTH
        ).encode()
        self.server = _bind(host, port, self, max_connections, timeout)
        self.address = self.server.server_address
        self.hosts = HostCheck(self.address[0], host)
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="edgenn-web", daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        """The page's URL (an IPv6 address in brackets)."""
        return f"http://{format_address(*self.address[:2])}/"

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
        self.server.hang_up_all()
        self.server.server_close()
        self.thread.join(timeout=5)


def format_address(host: str, port: int) -> str:
    """``HOST:PORT``, with an IPv6 address in brackets (``[::1]:8000``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip(text: str) -> IPAddress | None:
    """The address ``text`` spells, without an IPv6 zone (``%eth0``), or None for a name."""
    try:
        return ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None


def host_of(header: str) -> str | None:
    """The host of a ``Host`` header value, lower case, without port, brackets or final dot.

    Args:
        header: ``NAME``, ``NAME:PORT``, ``ADDRESS:PORT`` or ``[IPV6]:PORT`` (port optional).

    Returns:
        The host (an IPv6 address without brackets), or None when the value is not of that form.
    """
    value = header.strip().lower()
    if value.startswith("["):
        host, closed, port = value[1:].partition("]")
        if not closed or (port and not port.startswith(":")):
            return None
        if not isinstance(_ip(host), ipaddress.IPv6Address):
            return None  # brackets hold an IPv6 address only
        port = port[1:]
    else:
        host, _, port = value.partition(":")  # a bare IPv6 address leaves a "port" with colons
        host = host.rstrip(".")  # "localhost." is the absolute form of "localhost"
    if port and not (port.isascii() and port.isdigit()):
        return None
    if not host or not host.isascii() or any(c.isspace() or not c.isprintable() for c in host):
        return None
    return host


class HostCheck:
    """Which ``Host`` headers the view answers: its guard against DNS rebinding.

    A page on a name its author controls (evil.example) can re-point that name at 127.0.0.1 or at
    this machine's LAN address once the browser has loaded it; the browser then lets its script
    read the view as same-origin, but still sends ``Host: evil.example``. So the view answers only
    a request with one ``Host`` header naming it: always its bound address and the host given to
    ``--serve``; on a loopback address also ``localhost``, ``127.0.0.1`` and ``[::1]``; on any other
    address also this machine's names (:meth:`machine_names`); on 0.0.0.0 or ``::`` also any IP
    address (a page's own origin is a name, so it cannot make the browser send an address) and
    ``localhost``. The port is not compared: an SSH tunnel or a proxy may forward another port.

    Args:
        bound: The address the view's socket is bound to.
        named: The host given to ``--serve`` (an address or a name).
    """

    def __init__(self, bound: str, named: str) -> None:
        self.bound = _ip(bound)
        self.loopback = bool(self.bound and self.bound.is_loopback)
        self.anywhere = bool(self.bound and self.bound.is_unspecified)
        self.names = {named.lower().rstrip(".")}
        if self.loopback or self.anywhere:
            self.names.update(LOOPBACK_NAMES)
        self.lock = threading.Lock()
        self._machine: frozenset[str] | None = None
        self.logged: set[str | None] = set()

    def allows(self, headers: list[str] | None) -> bool:
        """True if ``headers`` (every ``Host`` header of a request) is one value naming the view."""
        host = host_of(headers[0]) if headers and len(headers) == 1 else None
        if host is None:
            return False
        address = _ip(host)
        if address is not None:
            return (
                self.anywhere
                or address == self.bound
                or (self.loopback and address in LOOPBACK_ADDRESSES)
            )
        return host in self.names or (not self.loopback and host in self.machine_names())

    def machine_names(self) -> frozenset[str]:
        """This machine's names: its host name, short name, FQDN and mDNS name (``NAME.local``).

        Looked up on the first request that needs them, not at start-up: the FQDN look-up can
        stall for seconds on a machine without DNS.
        """
        with self.lock:
            if self._machine is None:
                name = socket.gethostname().lower().rstrip(".")
                short = name.partition(".")[0]
                fqdn = socket.getfqdn(name).lower().rstrip(".")
                # Raspberry Pi OS (avahi) announces NAME.local: how viewers on the LAN find it.
                self._machine = frozenset({name, short, fqdn, f"{short}.local"} - {""})
            return self._machine

    def first_refusal(self, headers: list[str] | None) -> bool:
        """True the first time these ``Host`` headers are refused (for the first few values)."""
        key = None if not headers else "\n".join(h[:100] for h in headers)
        with self.lock:
            if key in self.logged or len(self.logged) >= LOGGED_REFUSALS:
                return False
            self.logged.add(key)
            return True


def _bind(host: str, port: int, view: WebView, max_connections: int, timeout: float) -> _Server:
    """Listen on ``host:port`` (each address it resolves to in turn); errors in one line."""
    where = format_address(host, port)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise EdgennError(
            f"--serve {where}: the host {host!r} cannot be resolved ({exc.strerror}).",
            "Use an address of this machine: 127.0.0.1 or [::1] (this machine only) or 0.0.0.0 "
            "(every interface), e.g. --serve 127.0.0.1:8000.",
        ) from None
    errors: list[OSError] = []
    for family, _, _, _, address in found:
        try:
            return _Server(address, family, view, max_connections, timeout)
        except OSError as exc:
            errors.append(exc)
    raise _bind_error(where, host, port, errors[0])


def _bind_error(where: str, host: str, port: int, exc: OSError) -> EdgennError:
    """One line for a failed bind: what is wrong with the address and another to try."""
    other = 8001 if port == 8000 else 8000
    if exc.errno == errno.EADDRINUSE:
        message = f"port {port} is in use by another program"
        hint = f"Pick another port, e.g. --serve {format_address(host, other)}, or stop it."
    elif exc.errno == errno.EADDRNOTAVAIL:
        message = f"{host} is not an address of this machine"
        hint = "Use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)."
    elif exc.errno == errno.EACCES:
        message = f"port {port} needs root (ports below 1024 are privileged)"
        hint = f"Use a port from 1024 up, e.g. --serve {format_address(host, other)}."
    else:
        message, hint = f"cannot listen there ({exc.strerror or exc})", None
    return EdgennError(f"--serve {where}: {message}.", hint)


def _status(code: int, text: str) -> bytes:
    body = f"{text}\n".encode()
    head = (
        f"HTTP/1.0 {code} {http.HTTPStatus(code).phrase}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 5\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


#: The answer to a connection over :data:`MAX_CONNECTIONS`.
BUSY = _status(503, "too many viewers; try again in a few seconds")


def _hang_up(sock: socket.socket) -> None:
    """Wake the thread blocked on ``sock`` (its read returns end-of-file); it then closes it."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by its thread


class _Server(http.server.ThreadingHTTPServer):
    """One thread per connection, at most ``max_connections`` at once (more get :data:`BUSY`).

    Each connection's socket times out after ``timeout`` seconds without progress, and one that
    has not sent its whole request ``timeout`` seconds after it came is hung up on
    (:meth:`service_actions`): a client that trickles a byte at a time never times out a read.
    The handler reaches the view through ``server.view``.
    """

    daemon_threads = True
    # Threads end when their sockets are hung up on (close); never wait for one at exit.
    block_on_close = False
    # A burst of page loads waits in the kernel's queue instead of being refused.
    request_queue_size = 64

    def __init__(
        self,
        address: tuple,
        family: socket.AddressFamily,
        view: WebView,
        max_connections: int,
        timeout: float,
    ) -> None:
        self.address_family = family
        self.view = view
        self.request_timeout = timeout
        self.slots = threading.BoundedSemaphore(max_connections)
        self.lock = threading.Lock()
        self.connections: dict[socket.socket, float | None] = {}  # socket -> request deadline
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's FQDN look-up, which can stall on a machine without DNS."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    @property
    def active(self) -> int:
        """Connections being served now."""
        with self.lock:
            return len(self.connections)

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        """Serve the connection in a thread if a slot is free, else answer 503 and close it."""
        if not self.slots.acquire(blocking=False):
            try:
                request.setblocking(False)
                request.send(BUSY)  # a fresh socket's empty buffer takes it without blocking
            except OSError:
                pass
            self.shutdown_request(request)
            return
        request.settimeout(self.request_timeout)
        with self.lock:
            self.connections[request] = time.monotonic() + self.request_timeout
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._forget(request)
            self.shutdown_request(request)
            raise

    def process_request_thread(self, request: socket.socket, client_address: Any) -> None:
        """Serve, then give the slot back."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def _forget(self, request: socket.socket) -> None:
        with self.lock:
            self.connections.pop(request, None)
        self.slots.release()

    def request_read(self, request: socket.socket) -> None:
        """The connection sent its whole request: no more request deadline."""
        with self.lock:
            if request in self.connections:
                self.connections[request] = None

    def service_actions(self) -> None:
        """Hang up on connections past their request deadline (runs every poll of the loop)."""
        now = time.monotonic()
        with self.lock:
            late = [s for s, end in self.connections.items() if end is not None and end < now]
            for sock in late:
                self.connections[sock] = None
        for sock in late:
            _hang_up(sock)

    def hang_up_all(self) -> None:
        """Hang up on every connection (closing the view)."""
        with self.lock:
            open_now = list(self.connections)
        for sock in open_now:
            _hang_up(sock)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A viewer's connection failed: log it; never print (stderr is the pipeline's)."""
        log.debug("web view connection from %s failed", client_address, exc_info=True)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``/``, ``/latest.json`` and ``/stream.mjpg``."""

    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: stderr belongs to the pipeline's own messages."""

    def parse_request(self) -> bool:
        """Parse the request, lift the connection's request deadline, check its ``Host``."""
        ok = super().parse_request()
        self.server.request_read(self.connection)
        if ok and not self.server.view.hosts.allows(self.headers.get_all("Host")):
            self._misdirected()
            return False
        return ok

    def _misdirected(self) -> None:
        """Answer 421 to a request whose ``Host`` does not name the view, and log it."""
        view, headers = self.server.view, self.headers.get_all("Host")
        shown = None if headers is None else [h[:100] for h in headers]
        level = logging.WARNING if view.hosts.first_refusal(headers) else logging.DEBUG
        log.log(
            level,
            "web view refused a request from %s with Host %s: not this view's address or name "
            "(protection against DNS rebinding); open it at %s, or bind the name it is opened "
            "by (--serve NAME:PORT)",
            self.client_address[0],
            "missing" if shown is None else ", ".join(map(repr, shown)),
            view.url,
        )
        self.close_connection = True
        body = (
            "The Host header does not name this camera view (refused against DNS rebinding); "
            f"open it by its address, e.g. {view.url}\n"
        )
        self._send(http.HTTPStatus.MISDIRECTED_REQUEST, "text/plain; charset=utf-8", body.encode())

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
    """``HOST:PORT``, ``[IPV6]:PORT`` or ``PORT`` (binds :data:`DEFAULT_HOST`).

    Args:
        text: The ``--serve`` value.

    Returns:
        ``(host, port)``, an IPv6 address without its brackets.

    Raises:
        UsageError: Not in that form (a bare IPv6 address is ambiguous: it needs brackets).
    """
    expected = (
        f"--serve expects HOST:PORT such as 127.0.0.1:8000, [::1]:8000 or 8000; received {text!r}."
    )
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or not host or not rest.startswith(":"):
            raise UsageError(expected)
        port = rest[1:]
    else:
        host, _, port = text.rpartition(":")
        if ":" in host:
            raise UsageError(expected, f"Write an IPv6 address in brackets: [{host}]:{port}.")
        host = host or DEFAULT_HOST
    if not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise UsageError(expected)
    if any(c.isspace() or not c.isprintable() for c in host):
        raise UsageError(expected)
    return host, int(port)

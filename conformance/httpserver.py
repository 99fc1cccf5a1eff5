"""A scriptable HTTP file server on 127.0.0.1 for the download tests.

It runs in a thread of the test process (other processes reach it by URL) and misbehaves on request:
it fails the first requests with a status, closes connections early, ignores Range, stalls, trickles bytes,
redirects. Every request is logged (path, Range header, status, body bytes sent) so tests can assert what
went over the wire.

    with FileServer() as server:
        route = server.route("/models/x.pt", data, truncate_after=1000, truncate_times=1)
        download(server.url("/models/x.pt"), ...)
        assert [hit.range for hit in server.hits("/models/x.pt")] == [None, "bytes=1000-"]
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

__all__ = ["FileServer", "Hit", "Route"]

_RANGE = re.compile(r"bytes=(\d+)-")


@dataclass
class Route:
    """How one path answers. Attributes may be changed between (or during) downloads."""

    data: bytes = b""
    status: int = 200  # anything else: answered with this status and a short body
    redirect: str | None = None  # answer 302 with this Location
    fail_first: int = 0  # answer `fail_status` to this many requests first
    fail_status: int = 500
    retry_after: str | None = None  # sent with the failures
    ranges: bool = True  # honour "Range: bytes=N-" (else always 200 with the whole file)
    truncate_after: int | None = None  # close the connection after this many body bytes ...
    truncate_times: int = 1  # ... in this many answers
    stall_after: int | None = None  # send the headers and this many body bytes, then nothing
    stall_before_headers: bool = False  # accept the request and never answer
    garbage_first: int = 0  # answer this many requests (after `fail_first`) with bytes that are not HTTP
    rate: float | None = None  # bytes per second
    content_length: bool = True  # False: a body delimited by closing the connection
    headers: dict[str, str] = field(default_factory=dict)
    bad_content_range: bool = False  # answer ranges with a Content-Range that starts at 0
    requests: int = 0
    truncated: int = 0


@dataclass
class Hit:
    path: str
    method: str
    range: str | None
    status: int = 0
    sent: int = 0  # body bytes written to the socket


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: FileServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: a closed connection ends the body

    def do_GET(self) -> None:
        self.server.owner._serve(self)

    def log_message(self, format: str, *args: object) -> None:
        pass


class FileServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.log: list[Hit] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    # -- set-up and inspection

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @property
    def base(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def route(self, path: str, data: bytes = b"", **options: object) -> Route:
        self.routes[path] = route = Route(data=data, **options)
        return route

    def hits(self, path: str | None = None) -> list[Hit]:
        with self._lock:
            return [h for h in self.log if path is None or h.path == path]

    def bytes_sent(self, path: str | None = None) -> int:
        return sum(h.sent for h in self.hits(path))

    # -- answering

    def _serve(self, h: _Handler) -> None:
        path = urlsplit(h.path).path
        hit = Hit(path, h.command, h.headers.get("Range"))
        with self._lock:
            self.log.append(hit)
            route = self.routes.get(path)
            n = route.requests if route else 0
            if route:
                route.requests += 1
        if route is None:
            return self._short(h, hit, 404)
        if route.stall_before_headers:
            self.stopping.wait(60)
            return None
        if route.redirect is not None:
            return self._short(h, hit, 302, {"Location": route.redirect})
        if n < route.fail_first:
            extra = {"Retry-After": route.retry_after} if route.retry_after is not None else None
            return self._short(h, hit, route.fail_status, extra)
        if n < route.fail_first + route.garbage_first:
            h.wfile.write(b"SSH-2.0-not-http\r\n\r\n")
            h.close_connection = True
            return None
        if route.status != 200:
            return self._short(h, hit, route.status)

        data, start, status, headers = route.data, 0, 200, dict(route.headers)
        match = _RANGE.fullmatch((hit.range or "").strip()) if route.ranges else None
        if match:
            start = int(match[1])
            if start >= len(data):
                return self._short(h, hit, 416, {"Content-Range": f"bytes */{len(data)}"})
            status = 206
            first = 0 if route.bad_content_range else start
            headers["Content-Range"] = f"bytes {first}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        h.send_response(status)
        if route.content_length:
            h.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            h.send_header(key, value)
        h.end_headers()
        hit.status = status

        limit = len(body)
        with self._lock:
            if route.truncate_after is not None and route.truncated < route.truncate_times:
                route.truncated += 1
                limit = min(limit, route.truncate_after)
        if route.stall_after is not None:
            limit = min(limit, route.stall_after)
        self._send(h, hit, route, body[:limit])
        if route.stall_after is not None:
            self.stopping.wait(60)
        h.close_connection = True
        return None

    def _send(self, h: _Handler, hit: Hit, route: Route, body: bytes) -> None:
        step = 64 * 1024 if route.rate is None else max(1, int(route.rate / 50))
        try:
            for i in range(0, len(body), step):
                piece = body[i : i + step]
                h.wfile.write(piece)
                h.wfile.flush()
                with self._lock:
                    hit.sent += len(piece)
                rate = route.rate  # read each time: a test may lift the limit mid-transfer
                if rate is not None:
                    time.sleep(len(piece) / rate)
        except OSError:  # the client went away (killed, timed out)
            h.close_connection = True

    def _short(self, h: _Handler, hit: Hit, status: int, headers: dict[str, str] | None = None) -> None:
        body = f"status {status}\n".encode()
        h.send_response(status)
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
        hit.status = status
        h.close_connection = True

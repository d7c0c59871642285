"""A fault-injecting HTTP proxy on 127.0.0.1, for testing gateway clients against a real
gateway (``torch_ipfs.serve``) that misbehaves in the ways real ones do.

    with FaultProxy(server.url) as proxy:
        proxy.set("truncate", only="car")          # every CAR cut in half, status 200
        GatewaySource([proxy.url, server.url]).fetch_car(root)

Modes (``proxy.set(mode, only=None|"raw"|"car", times=None|n, **options)``):

- ``pass``: forward untouched;
- ``flip``: flip one bit of the body at ``offset`` (default -1, the last byte);
- ``truncate``: cut the body after ``after`` bytes (default half); a well-formed,
  shorter response, or with ``abrupt=True`` the full Content-Length then a closed socket;
- ``drop_block`` / ``reorder``: re-encode a CAR body without block ``index`` (default 1)
  or with blocks ``index`` and ``index + 1`` swapped;
- ``status``: answer ``status`` (default 500) with a short body;
- ``retry_after``: answer ``status`` (default 429) with ``Retry-After: value`` (default "0.1");
- ``stall``: send the headers and ``after`` bytes (default 16) then sleep ``seconds``
  (default 2.0) and close;
- ``delay``: sleep ``seconds`` then forward (a slow but honest gateway);
- ``reset``: drop the connection with a TCP RST instead of answering;
- ``oversize``: a 200 with a body of 2 MiB + ``extra`` bytes (default 100).

``times=n`` applies the fault to the next n matching requests only. The proxy records
every request path in :attr:`requests`, counts :attr:`faults` injected and
:attr:`completed` responses. All sleeps are short: tests stay fast.
"""

from __future__ import annotations

import http.client
import io
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from torch_ipfs.car import CarReader, write_car

__all__ = ["MODES", "FaultProxy"]

MODES = (
    "pass", "flip", "truncate", "drop_block", "reorder", "status", "retry_after", "stall", "delay", "reset",
    "oversize",
)
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer", "upgrade"}


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def handle_error(self, request, client_address) -> None:
        pass  # clients hanging up on a faulty answer is the point of this proxy


class FaultProxy:
    """A threaded HTTP/1.1 proxy in front of ``upstream`` (``http://127.0.0.1:PORT``)."""

    def __init__(self, upstream: str) -> None:
        split = urlsplit(upstream)
        self.upstream_host = split.hostname or "127.0.0.1"
        self.upstream_port = split.port or 80
        self.mode = "pass"
        self.only: str | None = None
        self.times: int | None = None
        self.options: dict[str, object] = {}
        self.requests: list[str] = []
        self.faults = 0
        self.completed = 0
        self._lock = threading.Lock()
        self._server = _ProxyServer(("127.0.0.1", 0), _ProxyHandler)
        self._server.proxy = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def set(self, mode: str, *, only: str | None = None, times: int | None = None, **options: object) -> None:
        """Switch the fault mode (see the module docstring)."""
        if mode not in MODES:
            raise ValueError(f"unknown fault mode {mode!r}; valid: {', '.join(MODES)}")
        with self._lock:
            self.mode, self.only, self.times, self.options = mode, only, times, options

    def wait_completed(self, n: int, timeout: float = 5.0) -> int:
        """Wait until ``n`` responses are counted (or ``timeout`` passes); return the count.

        The handler counts a response after its last byte is written, so a client can hold the
        whole body a moment before the count moves: a test reading ``completed`` at once races it."""
        deadline = time.monotonic() + timeout
        while self.completed < n and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.completed

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fault-proxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _fault_for(self, kind: str) -> tuple[str, dict[str, object]]:
        """The fault to apply to a request of ``kind`` ("raw", "car", "path")."""
        with self._lock:
            if self.mode == "pass" or (self.only is not None and self.only != kind):
                return "pass", {}
            if self.times is not None:
                if self.times <= 0:
                    return "pass", {}
                self.times -= 1
            self.faults += 1
            return self.mode, dict(self.options)


def _kind(path: str, accept: str) -> str:
    fmt = parse_qs(urlsplit(path).query).get("format", [""])[0]
    if fmt in ("raw", "car"):
        return fmt
    if "application/vnd.ipld.raw" in accept:
        return "raw"
    if "application/vnd.ipld.car" in accept:
        return "car"
    return "path"


def _rewrite_car(body: bytes, mode: str, index: int) -> bytes:
    reader = CarReader(io.BytesIO(body), verify=False)
    blocks = list(reader)
    if mode == "drop_block" and index < len(blocks):
        del blocks[index]
    elif mode == "reorder" and index + 1 < len(blocks):
        blocks[index], blocks[index + 1] = blocks[index + 1], blocks[index]
    out = io.BytesIO()
    write_car(out, reader.roots, blocks)
    return out.getvalue()


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stalls

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:
        proxy: FaultProxy = self.server.proxy  # type: ignore[attr-defined]
        with proxy._lock:
            proxy.requests.append(self.path)
        mode, opts = proxy._fault_for(_kind(self.path, self.headers.get("Accept", "")))
        if mode == "reset":
            self.close_connection = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            return
        if mode in ("status", "retry_after"):
            status = int(opts.get("status", 500 if mode == "status" else 429))  # type: ignore[arg-type]
            extra = {"Retry-After": str(opts.get("retry_after", "0.1"))} if mode == "retry_after" else {}
            self._answer(status, {"Content-Type": "text/plain"}, b"injected fault\n", extra)
            return
        if mode == "oversize":
            body = b"\0" * (2 * 1024 * 1024 + int(opts.get("extra", 100)))  # type: ignore[arg-type]
            self._answer(200, {"Content-Type": "application/vnd.ipld.raw"}, body)
            return
        if mode == "delay":
            time.sleep(float(opts.get("seconds", 1.0)))  # type: ignore[arg-type]
        status, headers, body = self._forward()
        if status == 200 and body:
            if mode == "flip":
                body = bytearray(body)
                body[int(opts.get("offset", -1))] ^= 0x01  # type: ignore[arg-type]
                body = bytes(body)
            elif mode in ("drop_block", "reorder"):
                body = _rewrite_car(body, mode, int(opts.get("index", 1)))  # type: ignore[arg-type]
            elif mode == "truncate":
                after = int(opts.get("after", len(body) // 2))  # type: ignore[arg-type]
                if opts.get("abrupt"):
                    self._send_head(status, headers, len(body))
                    self.wfile.write(body[:after])
                    self.close_connection = True
                    return
                body = body[:after]
            elif mode == "stall":
                self._send_head(status, headers, len(body))
                self.wfile.write(body[: int(opts.get("after", 16))])  # type: ignore[arg-type]
                self.wfile.flush()
                time.sleep(float(opts.get("seconds", 2.0)))  # type: ignore[arg-type]
                self.close_connection = True
                return
        self._answer(status, headers, body)
        with proxy._lock:
            proxy.completed += 1

    do_HEAD = do_GET

    def _forward(self) -> tuple[int, dict[str, str], bytes]:
        proxy: FaultProxy = self.server.proxy  # type: ignore[attr-defined]
        conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP | {"host"}}
            conn.request(self.command, self.path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            out = {k: v for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP}
            return resp.status, out, body
        finally:
            conn.close()

    def _send_head(self, status: int, headers: dict[str, str], length: int) -> None:
        self.send_response(status)
        for k, v in headers.items():
            if k.lower() not in ("server", "date"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _answer(self, status: int, headers: dict[str, str], body: bytes, extra: dict | None = None) -> None:
        self._send_head(status, {**headers, **(extra or {})}, len(body))
        if self.command != "HEAD":
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (hedging, timeouts)
                self.close_connection = True

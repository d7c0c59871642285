"""``torch-ipfs serve``: a read-only trustless HTTP gateway over a block store.

Serves what the trustless gateway spec asks for, so any trustless client (ours, Kubo,
Helia, boxo) can fetch and verify from it, plus the plain path gateway for people:

- ``GET /ipfs/{cid}[/path]?format=raw`` (or ``Accept: application/vnd.ipld.raw``): one block.
- ``GET /ipfs/{cid}[/path]?format=car`` (or ``Accept: application/vnd.ipld.car``): a CARv1
  streamed in DFS order: the blocks on the path, then the terminal element per
  ``dag-scope=block|entity|all``; ``entity-bytes=from:to`` (inclusive, ``*``, negatives
  from the end) sends only the root-to-leaf paths covering that byte range;
  ``dups=y|n`` (Accept parameter or query).
- ``GET /ipfs/{cid}[/path]`` without a format: file bytes with ``Range`` support (206), a
  small HTML listing for directories. ``HEAD`` everywhere.

The walk that decides which blocks a CAR holds is :class:`~torch_ipfs.unixfs.walk.CarWalk`,
the one the client's verifier (:class:`~torch_ipfs.carverify.CarBlockVerifier`) runs, so
the two agree by construction; it is iterative and bounded, whatever the DAG. A block
missing midway truncates the response (the status was already 200), as real gateways do.
Loopback by default; read-only (other methods: 405); ``..`` or oversized requests are
refused. ``delay`` injects a per-request latency (benchmarks).
"""

from __future__ import annotations

import html
import io
import logging
import mimetypes
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from torch_ipfs.car import encode_header
from torch_ipfs.cid import CID
from torch_ipfs.errors import (
    BlockNotFoundError,
    FormatError,
    InvalidCIDError,
    IPFSError,
    NotADirectoryError,  # noqa: A004 - ours subclasses the builtin
    NotAFileError,
    PathNotFoundError,
)
from torch_ipfs.sources.base import BlockSource
from torch_ipfs.unixfs.reader import UnixFSFile, ls
from torch_ipfs.unixfs.walk import (
    CarWalk,
    is_directory_kind,
    is_file_kind,
    node_kind,
    parse_entity_bytes,
    resolve_prefixes,
)
from torch_ipfs.varint import encode_varint

__all__ = ["GatewayServer", "car_blocks", "make_server", "serve_forever"]

log = logging.getLogger(__name__)

MAX_URL_BYTES = 8 * 1024
MAX_HEADER_BYTES = 16 * 1024
#: CAR responses are written in chunks of about this size (many small blocks per write).
CAR_CHUNK_BYTES = 256 * 1024
_IMMUTABLE = "public, max-age=29030400, immutable"
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
#: Any well-formed byte-ranges value (RFC 9110 14.1.2), several ranges included.
_RANGES = re.compile(r"^bytes=\s*(\d*-\d*)(\s*,\s*\d*-\d*)*\s*$")
#: Offsets are 64-bit: a longer number cannot be satisfied (and int() of a huge string
#: is slow and, past 4300 digits, an error).
_MAX_OFFSET_DIGITS = 20


#: Concurrent connections served; more are answered 503 with Retry-After at once.
DEFAULT_MAX_CONNECTIONS = 64
#: Seconds a connection may take to send a request line and its headers (slowloris).
DEFAULT_HEADER_TIMEOUT = 10.0
#: Seconds a socket may sit without one byte moving either way, mid-request or between
#: keep-alive requests (a client that stops reading its response is dropped too).
DEFAULT_IDLE_TIMEOUT = 30.0
RETRY_AFTER_SECONDS = 1


class GatewayServer(ThreadingHTTPServer):
    """The HTTP server; ``source`` is any BlockSource (usually the embedded store).

    Bounded against slow or many clients: at most ``max_connections`` are served at once
    (one thread each; the rest get ``503`` + ``Retry-After`` without a thread), a
    request's line and headers must arrive within ``header_timeout`` seconds, and any
    socket idle for ``idle_timeout`` seconds is closed.
    """

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # parallel clients open many connections at once

    def __init__(
        self,
        address: tuple[str, int],
        source: BlockSource,
        *,
        delay: float = 0.0,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        self.source = source
        self.delay = delay
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self._active = 0
        self._active_lock = threading.Lock()
        super().__init__(address, _Handler)

    @property
    def active_connections(self) -> int:
        """Connections being served right now."""
        return self._active

    def process_request(self, request, client_address) -> None:
        with self._active_lock:
            full = self._active >= self.max_connections
            if not full:
                self._active += 1
        if full:
            self._refuse_busy(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            with self._active_lock:
                self._active -= 1
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._active_lock:
                self._active -= 1

    def _refuse_busy(self, request) -> None:
        """Answer 503 on the accepting thread: a short write, never a read, then close."""
        body = b"too many connections; retry later\n"
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: {RETRY_AFTER_SECONDS}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        log.warning("refusing a connection: %d connections already served", self.max_connections)
        try:
            request.settimeout(1.0)
            request.sendall(head + body)
        except OSError:
            pass
        self.shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        # A client that hangs up mid-response is routine (timeouts, hedged requests);
        # anything else is a bug worth seeing.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("connection from %s ended with an error", client_address, exc_info=True)
        else:
            log.warning("connection from %s failed", client_address, exc_info=True)

    @property
    def url(self) -> str:
        """Base URL of this gateway (``http://127.0.0.1:PORT``)."""
        host, port = self.server_address[:2]
        text = host.decode() if isinstance(host, bytes) else str(host)
        text = f"[{text}]" if ":" in text else text
        return f"http://{text}:{port}"

    def start(self) -> threading.Thread:
        """Serve in a daemon thread (tests, benchmarks); stop with ``shutdown()`` + ``server_close()``."""
        thread = threading.Thread(
            target=self.serve_forever, args=(0.05,), name="torch-ipfs-serve", daemon=True
        )
        thread.start()
        return thread


def make_server(
    store: BlockSource, host: str = "127.0.0.1", port: int = 8080, *, delay: float = 0.0, **limits: Any
) -> GatewayServer:
    """A gateway server bound to ``host:port`` (port 0 picks a free one), not yet serving.
    ``limits``: ``max_connections``, ``header_timeout``, ``idle_timeout`` (see
    :class:`GatewayServer`)."""
    return GatewayServer((host, port), store, delay=delay, **limits)


def serve_forever(
    store: BlockSource, host: str = "127.0.0.1", port: int = 8080, *, delay: float = 0.0, **limits: Any
) -> None:
    """Serve ``store`` until interrupted (Ctrl-C)."""
    server = make_server(store, host, port, delay=delay, **limits)
    log.info("serving %s on %s/ipfs/", store, server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


class _DeadlineSocketIO(io.RawIOBase):
    """The reading side of a connection: every ``recv`` waits at most the idle timeout,
    and, while a deadline is set (the request line and headers), no later than it.
    ``arm_on_first_byte(budget)`` starts such a deadline when the next byte arrives (a
    kept-alive connection may wait for its next request for the idle timeout)."""

    def __init__(self, sock: socket.socket, idle: float) -> None:
        super().__init__()
        self.sock, self.idle = sock, idle
        self.deadline: float | None = None
        self._budget: float | None = None

    def readable(self) -> bool:
        return True

    def arm_on_first_byte(self, budget: float) -> None:
        self.deadline, self._budget = None, budget

    def readinto(self, buffer) -> int:
        if self._budget is not None:
            n = self.sock.recv_into(buffer)  # the socket's timeout is always the idle one here
            self.deadline, self._budget = time.monotonic() + self._budget, None
            return n
        timeout = self.idle
        if self.deadline is not None:
            timeout = min(timeout, self.deadline - time.monotonic())
            if timeout <= 0:
                raise TimeoutError("request headers took too long")
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv_into(buffer)
        finally:
            self.sock.settimeout(self.idle)  # writes: idle timeout only


# -- which blocks a CAR response holds ----------------------------------------------------


def car_blocks(
    source: BlockSource,
    root: CID,
    segments: list[str],
    *,
    scope: str = "all",
    entity_bytes: tuple[int, int | None] | None = None,
    dups: bool = False,
) -> Iterator[tuple[CID, bytes]]:
    """The blocks of a trustless CAR response, in order: the path blocks, then the
    terminal element per ``scope`` (``entity_bytes`` implies ``entity``). With ``dups``
    a block is sent each time the walk meets it; without, only the first time.

    The order is :class:`~torch_ipfs.unixfs.walk.CarWalk`'s, the walk the client's
    verifier runs: iterative and depth-limited, whatever the DAG."""
    walk = CarWalk(root, tuple(segments), scope=scope, entity_bytes=entity_bytes, dups=dups)
    while (cid := walk.next_cid()) is not None:
        block = source.get(cid)
        walk.accept(cid, block)
        yield cid, block


# -- HTTP ------------------------------------------------------------------------------------


class _HTTPProblem(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message
        super().__init__(message)


def _media_params(accept: str, media_type: str) -> dict[str, str] | None:
    """Parameters of ``media_type`` in an Accept header, or None if it is not there."""
    for item in accept.split(","):
        parts = [p.strip() for p in item.split(";")]
        if parts[0].lower() == media_type:
            params = {}
            for p in parts[1:]:
                key, _, value = p.partition("=")
                params[key.strip().lower()] = value.strip().strip('"').lower()
            return params
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "torch-ipfs-gateway"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stalls
    server: GatewayServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s - " + format, self.address_string(), *args)

    # -- connection limits ------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.idle_timeout)  # writes too: a client must read
        self._reader = _DeadlineSocketIO(self.connection, self.server.idle_timeout)
        self._requests = 0
        self.rfile = io.BufferedReader(self._reader, 64 * 1024)

    def handle_one_request(self) -> None:
        # A request line and its headers must arrive within header_timeout: counted from
        # the accept for a connection's first request, from the first byte for the next
        # ones (a kept-alive connection may sit idle for idle_timeout in between). _serve
        # lifts the deadline once they are in.
        if self._requests == 0:
            self._reader.deadline = time.monotonic() + self.server.header_timeout
        else:
            self._reader.arm_on_first_byte(self.server.header_timeout)
        self._requests += 1
        self._headers_sent = False
        super().handle_one_request()

    # -- methods ----------------------------------------------------------------------

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _refuse_method(self) -> None:
        self.close_connection = True  # we do not read the body, so the connection is done
        self._plain(405, "read-only gateway: only GET and HEAD\n", extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method

    # -- dispatch ---------------------------------------------------------------------

    def _serve(self, *, head: bool) -> None:
        self._reader.deadline = None  # headers are in: only the idle timeout applies now
        try:
            root, segments, query = self._parse_target()
            if self.server.delay:
                time.sleep(self.server.delay)
            fmt = self._format(query)
            if fmt == "raw":
                self._serve_raw(root, segments, head=head)
            elif fmt == "car":
                self._serve_car(root, segments, query, head=head)
            else:
                self._serve_path(root, segments, head=head)
        except _HTTPRangeProblem as p:
            self._plain(p.status, p.message + "\n", extra={"Content-Range": f"bytes */{p.size}"})
        except _HTTPProblem as p:
            self._plain(p.status, p.message + "\n")
        except (BlockNotFoundError, PathNotFoundError) as e:
            self._plain(404, f"{e}\n")
        except InvalidCIDError as e:
            self._plain(400, f"{e}\n")
        except (NotADirectoryError, NotAFileError) as e:
            self._plain(400, f"{e}\n")
        except IPFSError as e:  # _plain logs it (every 5xx, once)
            self._plain(502 if not isinstance(e, FormatError) else 500, f"{e}\n")
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except Exception:
            # A bug, not the client's doing: seen at warning level, answered 500 if the
            # status line has not gone out yet, and the connection is not reused.
            log.warning("unexpected error serving %s", self.path, exc_info=True)
            self.close_connection = True
            if not self._headers_sent:
                self._plain(500, "internal error\n")

    def _parse_target(self) -> tuple[CID, list[str], dict[str, list[str]]]:
        if len(self.path) > MAX_URL_BYTES:
            self.close_connection = True
            raise _HTTPProblem(414, f"URL longer than {MAX_URL_BYTES} bytes")
        header_bytes = sum(len(k) + len(v) + 4 for k, v in self.headers.items())
        if header_bytes > MAX_HEADER_BYTES:
            self.close_connection = True
            raise _HTTPProblem(431, f"request headers larger than {MAX_HEADER_BYTES} bytes")
        split = urlsplit(self.path)
        raw_segments = split.path.split("/")
        segments = [unquote(s) for s in raw_segments]
        for seg in segments:
            if seg in (".", "..") or "/" in seg or "\\" in seg or "\x00" in seg:
                raise _HTTPProblem(400, "path traversal ('.', '..', encoded slashes) is refused")
        if len(segments) < 3 or segments[0] != "" or segments[1] != "ipfs" or not segments[2]:
            raise _HTTPProblem(404, "only /ipfs/<cid>[/path] is served here")
        root = CID.decode(segments[2])
        return root, [s for s in segments[3:] if s], parse_qs(split.query, keep_blank_values=True)

    def _format(self, query: dict[str, list[str]]) -> str | None:
        fmt = query.get("format", [""])[0]
        if fmt:
            if fmt not in ("raw", "car"):
                raise _HTTPProblem(400, f"unsupported format {fmt!r}; this gateway serves raw and car")
            return fmt
        accept = self.headers.get("Accept", "")
        if _media_params(accept, "application/vnd.ipld.raw") is not None:
            return "raw"
        if _media_params(accept, "application/vnd.ipld.car") is not None:
            return "car"
        return None

    # -- responses ------------------------------------------------------------------------

    def end_headers(self) -> None:
        self._headers_sent = True
        super().end_headers()

    def _plain(self, status: int, text: str, *, extra: dict[str, str] | None = None) -> None:
        if status >= 500:
            log.warning("%s %s -> %d: %s", self.command, self.path, status, text.strip())
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _common_headers(self, content_type: str, etag: str, ipfs_path: str, roots: list[CID]) -> None:
        """The headers Kubo's gateway sends with every answer, which clients rely on
        (ipfsspec reads X-Ipfs-Roots: one CID per path segment, the root first, as
        :func:`resolve_prefixes` resolved them)."""
        self.send_header("Content-Type", content_type)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", _IMMUTABLE)
        self.send_header("ETag", etag)
        self.send_header("X-Ipfs-Path", ipfs_path)
        self.send_header("X-Ipfs-Roots", ",".join(str(c) for c in roots))

    def _serve_raw(self, root: CID, segments: list[str], *, head: bool) -> None:
        roots = resolve_prefixes(self.server.source, root, segments)
        terminal = roots[-1]
        block = self.server.source.get(terminal)
        self.send_response(200)
        ipfs_path = _ipfs_path(root, segments)
        self._common_headers("application/vnd.ipld.raw", f'"{terminal}.raw"', ipfs_path, roots)
        self.send_header("Content-Length", str(len(block)))
        self.end_headers()
        if not head:
            self.wfile.write(block)

    def _serve_car(self, root: CID, segments: list[str], query: dict[str, list[str]], *, head: bool) -> None:
        params = _media_params(self.headers.get("Accept", ""), "application/vnd.ipld.car") or {}
        if params.get("version", "1") != "1":
            raise _HTTPProblem(400, "only CAR version=1 is served")
        if params.get("order", "dfs") not in ("dfs", "unk"):
            raise _HTTPProblem(400, f"unsupported CAR order {params['order']!r}; use dfs")
        dups_value = query.get("dups", [params.get("dups", "n")])[0]
        if dups_value not in ("y", "n"):
            raise _HTTPProblem(400, f"dups must be y or n, got {dups_value!r}")
        scope = query.get("dag-scope", ["all"])[0]
        if scope not in ("all", "entity", "block"):
            raise _HTTPProblem(400, f"invalid dag-scope {scope!r}; valid: all, entity, block")
        entity_bytes = None
        if "entity-bytes" in query:
            try:
                entity_bytes = parse_entity_bytes(query["entity-bytes"][0])
            except ValueError as e:
                raise _HTTPProblem(400, str(e)) from None
        source = self.server.source
        roots = resolve_prefixes(source, root, segments)  # 404 now, before the 200 is sent
        source.get(roots[-1])
        blocks = car_blocks(
            source, root, segments, scope=scope, entity_bytes=entity_bytes, dups=dups_value == "y"
        )
        tag = scope if entity_bytes is None else f"entity.{query['entity-bytes'][0]}"
        self.send_response(200)
        self._common_headers(
            f"application/vnd.ipld.car; version=1; order=dfs; dups={dups_value}",
            f'"{root}.car.{quote(tag, safe="")}.{dups_value}"',
            _ipfs_path(root, segments),
            roots,
        )
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if head:
            return
        header = encode_header([root])
        pending = [encode_varint(len(header)), header]
        size = sum(map(len, pending))
        try:
            for cid, block in blocks:
                raw = cid.to_bytes()
                pending += (encode_varint(len(raw) + len(block)), raw, block)
                size += len(pending[-3]) + len(raw) + len(block)
                if size >= CAR_CHUNK_BYTES:
                    self._chunk(pending)
                    pending, size = [], 0
        except IPFSError as e:
            # The status is already 200: the only honest signal left is to cut the stream.
            log.warning("CAR for %s cut short: %s", self.path, e)
            self.close_connection = True
            return
        if pending:
            self._chunk(pending)
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, parts: list[bytes]) -> None:
        data = b"".join(parts)
        self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))

    def _serve_path(self, root: CID, segments: list[str], *, head: bool) -> None:
        source = self.server.source
        roots = resolve_prefixes(source, root, segments)
        terminal = roots[-1]
        block = terminal.digest if terminal.is_identity else source.get(terminal)
        kind = node_kind(terminal, block)
        if is_directory_kind(kind):
            self._serve_listing(root, segments, roots, head=head)
            return
        if not is_file_kind(kind):
            raise _HTTPProblem(501, f"{terminal} is not a file or directory; fetch it with ?format=raw")
        file = UnixFSFile(source, terminal)
        size = file.size
        start, end, status = 0, size, 200
        content_range = None
        wanted = self.headers.get("Range")
        if wanted:
            m = _check_range(wanted.strip(), size)
            if m and (m.group(1) or m.group(2)):  # one range; several are ignored (RFC 9110)
                if m.group(1):
                    start = int(m.group(1))
                    end = min(size, int(m.group(2)) + 1) if m.group(2) else size
                else:
                    start, end = max(0, size - int(m.group(2))), size
                if start >= size or start >= end:
                    raise _HTTPRangeProblem(size)
                status = 206
                content_range = f"bytes {start}-{end - 1}/{size}"
        name = segments[-1] if segments else ""
        ctype = (mimetypes.guess_type(name)[0] if name else None) or "application/octet-stream"
        self.send_response(status)
        self._common_headers(ctype, f'"{terminal}"', _ipfs_path(root, segments), roots)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start))
        if content_range:
            self.send_header("Content-Range", content_range)
        self.end_headers()
        if head or start >= end:
            return
        try:
            for chunk in file.iter_chunks(start, end - start):
                self.wfile.write(chunk)
        except IPFSError as e:
            log.warning("file %s cut short: %s", self.path, e)
            self.close_connection = True

    def _serve_listing(self, root: CID, segments: list[str], roots: list[CID], *, head: bool) -> None:
        terminal = roots[-1]
        entries = ls(self.server.source, terminal, resolve_types=False)
        here = _ipfs_path(root, segments)
        rows = []
        for entry in entries:
            href = quote(here.rstrip("/") + "/" + entry.name)
            rows.append(
                f'<tr><td><a href="{html.escape(href)}">{html.escape(entry.name)}</a></td>'
                f"<td>{entry.cid}</td><td>{entry.size if entry.size is not None else ''}</td></tr>"
            )
        body = (
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>"
            f"{html.escape(here)}</title></head><body><h1>{html.escape(here)}</h1>\n"
            f"<p>{terminal}</p>\n<table>\n<tr><th>name</th><th>CID</th><th>size</th></tr>\n"
            + "\n".join(rows)
            + "\n</table></body></html>\n"
        ).encode()
        self.send_response(200)
        self._common_headers("text/html; charset=utf-8", f'"DirIndex-{terminal}"', here, roots)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)


class _HTTPRangeProblem(_HTTPProblem):
    def __init__(self, size: int) -> None:
        super().__init__(416, f"range not satisfiable (size {size})")
        self.size = size


def _check_range(value: str, size: int) -> re.Match[str] | None:
    """The match of a single ``bytes=a-b`` range, or None for a value to ignore (several
    ranges, another unit). 400 for a malformed ``bytes=`` value, 416 for offsets no file
    can have."""
    if not value.lower().startswith("bytes="):
        return None  # another range unit: ignored, as RFC 9110 allows
    if len(value) > 1024 or not _RANGES.match(value):
        raise _HTTPProblem(400, f"malformed Range header {value[:80]!r}")
    if any(len(n) > _MAX_OFFSET_DIGITS for n in re.findall(r"\d+", value)):
        raise _HTTPRangeProblem(size)
    return _RANGE.match(value)


def _ipfs_path(root: CID, segments: list[str]) -> str:
    return "/ipfs/" + "/".join([str(root), *(quote(s, safe="") for s in segments)])

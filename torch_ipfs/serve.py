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

The walk that decides which blocks a CAR holds is written here independently of the
client's verifier (:class:`~torch_ipfs.carverify.CarBlockVerifier`), so the two check each
other. A block missing midway truncates the response (the status was already 200), as
real gateways do. Loopback by default; read-only (other methods: 405); ``..`` or
oversized requests are refused. ``delay`` injects a per-request latency (benchmarks).
"""

from __future__ import annotations

import html
import logging
import mimetypes
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

from torch_ipfs.car import encode_header
from torch_ipfs.carverify import parse_entity_bytes
from torch_ipfs.cid import CID, DAG_PB, RAW
from torch_ipfs.dag import child_cids
from torch_ipfs.dagpb import DataType, UnixFSData, decode_node
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
from torch_ipfs.unixfs.reader import UnixFSFile, decode_file_node, ls, resolve_path
from torch_ipfs.varint import encode_varint

__all__ = ["GatewayServer", "car_blocks", "make_server", "serve_forever"]

log = logging.getLogger(__name__)

MAX_URL_BYTES = 8 * 1024
MAX_HEADER_BYTES = 16 * 1024
#: CAR responses are written in chunks of about this size (many small blocks per write).
CAR_CHUNK_BYTES = 256 * 1024
_IMMUTABLE = "public, max-age=29030400, immutable"
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class GatewayServer(ThreadingHTTPServer):
    """The HTTP server; ``source`` is any BlockSource (usually the embedded store)."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # parallel clients open many connections at once

    def __init__(self, address: tuple[str, int], source: BlockSource, *, delay: float = 0.0) -> None:
        self.source = source
        self.delay = delay
        super().__init__(address, _Handler)

    def handle_error(self, request, client_address) -> None:
        # A client that hangs up mid-response is routine (timeouts, hedged requests).
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    @property
    def url(self) -> str:
        """Base URL of this gateway (``http://127.0.0.1:PORT``)."""
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}"

    def start(self) -> threading.Thread:
        """Serve in a daemon thread (tests, benchmarks); stop with ``shutdown()`` + ``server_close()``."""
        thread = threading.Thread(
            target=self.serve_forever, args=(0.05,), name="torch-ipfs-serve", daemon=True
        )
        thread.start()
        return thread


def make_server(
    store: BlockSource, host: str = "127.0.0.1", port: int = 8080, *, delay: float = 0.0
) -> GatewayServer:
    """A gateway server bound to ``host:port`` (port 0 picks a free one), not yet serving."""
    return GatewayServer((host, port), store, delay=delay)


def serve_forever(
    store: BlockSource, host: str = "127.0.0.1", port: int = 8080, *, delay: float = 0.0
) -> None:
    """Serve ``store`` until interrupted (Ctrl-C)."""
    server = make_server(store, host, port, delay=delay)
    log.info("serving %s on %s/ipfs/", store, server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


# -- which blocks a CAR response holds ----------------------------------------------------


class _Recorder(BlockSource):
    """Remembers the blocks fetched through it, in order (the path blocks of a request)."""

    def __init__(self, source: BlockSource) -> None:
        self.source = source
        self.name = source.name
        self.fetched: list[tuple[CID, bytes]] = []

    def get(self, cid: CID) -> bytes:
        block = self.source.get(cid)
        self.fetched.append((cid, block))
        return block

    def _get_raw(self, cid: CID) -> bytes:
        return self.get(cid)


def _unixfs_type(cid: CID, block: bytes) -> DataType | None:
    if cid.codec == RAW:
        return DataType.Raw
    if cid.codec != DAG_PB:
        return None
    node = decode_node(block)
    return UnixFSData.decode(node.data).type if node.data is not None else None


def resolve(source: BlockSource, root: CID, segments: list[str]) -> tuple[CID, list[tuple[CID, bytes]]]:
    """The terminal CID of ``root/segments`` and the blocks the resolution read, in order."""
    recorder = _Recorder(source)
    terminal = resolve_path(recorder, root, segments) if segments else root
    return terminal, recorder.fetched


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
    a block is sent each time the walk meets it; without, only the first time."""
    sent: set[bytes] = set()

    def emit(cid: CID, block: bytes) -> Iterator[tuple[CID, bytes]]:
        if cid.is_identity:
            return
        if not dups:
            if cid.multihash in sent:
                return
            sent.add(cid.multihash)
        yield cid, block

    def subtree(cid: CID, block: bytes, follow: set[DataType] | None) -> Iterator[tuple[CID, bytes]]:
        """DFS from a block already emitted; ``follow`` limits which node types are expanded
        (None: everything); with dups=n a repeated subtree is not walked again."""
        if follow is not None and _unixfs_type(cid, block) not in follow:
            return
        for child in child_cids(cid, block):
            if not dups and child.multihash in sent:
                continue
            child_block = child.digest if child.is_identity else source.get(child)
            yield from emit(child, child_block)
            yield from subtree(child, child_block, follow)

    def hamt_shards(cid: CID, block: bytes) -> Iterator[tuple[CID, bytes]]:
        for link in decode_node(block).links:
            if len(link.name or "") != 2 or (not dups and link.cid.multihash in sent):
                continue
            child_block = source.get(link.cid)
            yield from emit(link.cid, child_block)
            yield from hamt_shards(link.cid, child_block)

    def byte_range(cid: CID, block: bytes, start: int, lo: int, hi: int) -> Iterator[tuple[CID, bytes]]:
        node = decode_file_node(cid, block)
        for i, child in enumerate(node.links):
            child_start, size = start + node.offsets[i], node.sizes[i]
            if size == 0 or child_start + size <= lo:
                continue
            if child_start >= hi:
                break
            child_block = child.digest if child.is_identity else source.get(child)
            yield from emit(child, child_block)
            yield from byte_range(child, child_block, child_start, lo, hi)

    terminal, path_blocks = resolve(source, root, segments)
    for cid, block in path_blocks:
        yield from emit(cid, block)
    block = terminal.digest if terminal.is_identity else source.get(terminal)
    yield from emit(terminal, block)
    if entity_bytes is not None:
        scope = "entity"
    if scope == "block":
        return
    if scope == "all":
        yield from subtree(terminal, block, None)
        return
    kind = _unixfs_type(terminal, block)
    if kind in (DataType.File, DataType.Raw):
        if entity_bytes is None:
            yield from subtree(terminal, block, {DataType.File, DataType.Raw})
            return
        size = decode_file_node(terminal, block).size
        lo, hi = _resolve_entity_bytes(entity_bytes, size)
        if lo < hi:
            yield from byte_range(terminal, block, 0, lo, hi)
    elif kind == DataType.HAMTShard:
        yield from hamt_shards(terminal, block)


def _resolve_entity_bytes(entity_bytes: tuple[int, int | None], size: int) -> tuple[int, int]:
    """Inclusive ``from:to`` (negatives from the end, None = end) -> half-open, clamped."""
    start, end = entity_bytes
    lo = max(size + start if start < 0 else start, 0)
    last = size - 1 if end is None else (size + end if end < 0 else end)
    return lo, min(last + 1, size)


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
        except IPFSError as e:
            log.warning("error serving %s: %s", self.path, e)
            self._plain(502 if not isinstance(e, FormatError) else 500, f"{e}\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

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

    def _plain(self, status: int, text: str, *, extra: dict[str, str] | None = None) -> None:
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

    def _common_headers(
        self, content_type: str, etag: str, ipfs_path: str, root: CID, segments: list[str]
    ) -> None:
        """The headers Kubo's gateway sends with every answer, which clients rely on
        (ipfsspec reads X-Ipfs-Roots: one CID per path segment, the root first)."""
        self.send_header("Content-Type", content_type)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", _IMMUTABLE)
        self.send_header("ETag", etag)
        self.send_header("X-Ipfs-Path", ipfs_path)
        roots = _path_roots(self.server.source, root, segments)
        self.send_header("X-Ipfs-Roots", ",".join(str(c) for c in roots))

    def _serve_raw(self, root: CID, segments: list[str], *, head: bool) -> None:
        terminal, _ = resolve(self.server.source, root, segments)
        block = self.server.source.get(terminal)
        self.send_response(200)
        self._common_headers(
            "application/vnd.ipld.raw", f'"{terminal}.raw"', _ipfs_path(root, segments), root, segments
        )
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
        terminal, _ = resolve(source, root, segments)  # 404 now, before the 200 is sent
        source.get(terminal)
        blocks = car_blocks(
            source, root, segments, scope=scope, entity_bytes=entity_bytes, dups=dups_value == "y"
        )
        tag = scope if entity_bytes is None else f"entity.{query['entity-bytes'][0]}"
        self.send_response(200)
        self._common_headers(
            f"application/vnd.ipld.car; version=1; order=dfs; dups={dups_value}",
            f'"{root}.car.{quote(tag, safe="")}.{dups_value}"',
            _ipfs_path(root, segments),
            root,
            segments,
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
        terminal, _ = resolve(source, root, segments)
        block = terminal.digest if terminal.is_identity else source.get(terminal)
        kind = _unixfs_type(terminal, block)
        if kind in (DataType.Directory, DataType.HAMTShard):
            self._serve_listing(root, segments, terminal, head=head)
            return
        if kind not in (DataType.File, DataType.Raw):
            raise _HTTPProblem(501, f"{terminal} is not a file or directory; fetch it with ?format=raw")
        file = UnixFSFile(source, terminal)
        size = file.size
        start, end, status = 0, size, 200
        content_range = None
        wanted = self.headers.get("Range")
        if wanted:
            m = _RANGE.match(wanted.strip())
            if m and (m.group(1) or m.group(2)):  # one range; anything else is ignored (RFC 9110)
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
        self._common_headers(ctype, f'"{terminal}"', _ipfs_path(root, segments), root, segments)
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

    def _serve_listing(self, root: CID, segments: list[str], terminal: CID, *, head: bool) -> None:
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
        self._common_headers("text/html; charset=utf-8", f'"DirIndex-{terminal}"', here, root, segments)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)


class _HTTPRangeProblem(_HTTPProblem):
    def __init__(self, size: int) -> None:
        super().__init__(416, f"range not satisfiable (size {size})")
        self.size = size


def _path_roots(source: BlockSource, root: CID, segments: list[str]) -> list[CID]:
    """The CID each path prefix resolves to: ``root``, then one per segment (Kubo's
    ``X-Ipfs-Roots``). The blocks were just read to resolve the path: local reads."""
    roots = [root]
    for segment in segments:
        roots.append(resolve_path(source, roots[-1], [segment]))
    return roots


def _ipfs_path(root: CID, segments: list[str]) -> str:
    return "/ipfs/" + "/".join([str(root), *(quote(s, safe="") for s in segments)])

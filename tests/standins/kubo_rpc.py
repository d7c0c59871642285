"""A STAND-IN for a Kubo daemon's RPC API, for tests only.

Kubo's daemon cannot be installed on these machines (no registry ships the ``ipfs``
binary), so this is a real HTTP/1.1 server on loopback (TCP or a unix socket) built from
the published RPC protocol (https://docs.ipfs.tech/reference/kubo/rpc/ and go-ipfs-cmds,
the library Kubo serves it with):

- ``POST /api/v0/<command>`` only; any other method answers ``405``; unknown commands ``404``.
- Positional arguments are repeated ``arg=`` query parameters; flags are query parameters
  (``true``/``false``).
- Success: status 200, ``Transfer-Encoding: chunked`` with ``Trailer: X-Stream-Error``;
  byte streams carry ``X-Stream-Output: 1`` (and ``X-Content-Length`` when known), value
  streams ``X-Chunked-Output: 1`` with newline-delimited JSON.
- Errors before the response started: ``{"Message", "Code", "Type": "error"}`` with 400
  for client errors (Code 1) and 500 otherwise. Errors after it started: the stream ends
  and the ``X-Stream-Error`` trailer carries the message (written by hand: the chunked
  encoding and its trailer are produced here, not by a library).
- ``API.Authorizations`` (Kubo >= 0.25): with ``authorizations=["bearer:T", "basic:u:p"]``
  every command but ``version`` needs a matching ``Authorization`` header, else 403.
- Request bodies (``add``, ``block/put``, ``dag/import``) are multipart/form-data as
  Kubo's client sends them, with or without chunked transfer encoding; file names are
  url-escaped paths and directories are ``application/x-directory`` parts.

It serves REAL blocks from a real store (a ``MemoryStore`` unless one is given) and
builds them with torch_ipfs's own importer (the Kubo-identical one tested against Kubo
v0.22 elsewhere), so the client is exercised against true CIDs and bytes. Like
``ipfs --offline`` it never looks anywhere else for a missing block.

Fault injection (``standin.faults``) makes the error paths testable: a tampered block,
a failure after streaming started, an error JSON for any command.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import posixpath
import socketserver
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from torch_ipfs.cid import CID, DAG_PB, RAW
from torch_ipfs.dag import walk_dfs
from torch_ipfs.dagpb import decode_node
from torch_ipfs.errors import BlockNotFoundError, IPFSError
from torch_ipfs.sources.base import BlockStore, MemoryStore, NullStore

__all__ = ["STANDIN_VERSION", "Faults", "KuboStandIn"]

STANDIN_VERSION = "0.40.0-standin"
ERR_NORMAL, ERR_CLIENT = 0, 1  # go-ipfs-cmds error codes: 400 for ErrClient, 500 otherwise
_CHUNK = 64 * 1024


class CommandError(Exception):
    """An error a command reports before its response starts (-> error JSON)."""

    def __init__(self, message: str, code: int = ERR_NORMAL) -> None:
        super().__init__(message)
        self.message, self.code = message, code


@dataclass
class Faults:
    """Switches that make the stand-in misbehave, to test the client's error paths.

    - ``tampered``: CIDs whose ``block/get`` answer has one byte flipped.
    - ``stream_error``: ``{command: message}``: stream half the output, then end with
      ``X-Stream-Error: message`` in the trailer (as Kubo does when a stream fails).
    - ``error``: ``{command: (message, code)}``: answer the error JSON at once.
    - ``truncate``: commands whose byte stream stops half-way *without* a trailer.
    - ``delay``: ``{command: seconds}``: wait this long before answering.
    """

    tampered: set[CID] = field(default_factory=set)
    stream_error: dict[str, str] = field(default_factory=dict)
    error: dict[str, tuple[str, int]] = field(default_factory=dict)
    truncate: set[str] = field(default_factory=set)
    delay: dict[str, float] = field(default_factory=dict)

    def clear(self) -> None:
        self.delay.clear()
        self.tampered.clear()
        self.stream_error.clear()
        self.error.clear()
        self.truncate.clear()


@dataclass
class _Request:
    args: list[str]
    options: dict[str, str]
    body: bytes
    content_type: str

    def flag(self, name: str, default: bool) -> bool:
        value = self.options.get(name)
        if value is None:
            return default
        if value.lower() in ("", "true", "1"):
            return True
        if value.lower() in ("false", "0"):
            return False
        raise CommandError(f"invalid value for option {name!r}: {value!r}", ERR_CLIENT)

    def int_option(self, name: str) -> int | None:
        value = self.options.get(name)
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            raise CommandError(f"invalid integer for option {name!r}: {value!r}", ERR_CLIENT) from None

    def arg(self, what: str) -> str:
        if not self.args:
            raise CommandError(f"argument {what!r} is required", ERR_CLIENT)
        return self.args[0]


@dataclass
class _Single:
    value: Any


@dataclass
class _Values:
    values: Iterable[Any]


@dataclass
class _Bytes:
    chunks: Iterable[bytes]
    length: int | None = None


_Result = _Single | _Values | _Bytes


class KuboStandIn:
    """The stand-in server. Use as a context manager; ``api`` is its multiaddr.

    Args:
        store: the block store it serves (a fresh ``MemoryStore`` by default).
        authorizations: Kubo ``AuthSecret`` strings (``"bearer:TOKEN"``,
            ``"basic:user:pass"``); empty means no authorization required.
        unix_socket: listen on this unix socket path instead of 127.0.0.1.
    """

    def __init__(
        self,
        store: BlockStore | None = None,
        *,
        authorizations: Iterable[str] = (),
        unix_socket: str | os.PathLike[str] | None = None,
    ) -> None:
        self.store: BlockStore = store if store is not None else MemoryStore()
        self.pins: dict[CID, str] = {}
        self.authorizations = list(authorizations)
        self.faults = Faults()
        self.requests: list[tuple[str, str]] = []  # (method, path) log, for assertions
        self.bodies: dict[str, bytes] = {}  # the last request body per command, for assertions
        self.max_concurrent = 0  # the most commands ever in progress at once
        self._active = 0
        self._lock = threading.Lock()
        self.unix_socket = os.fspath(unix_socket) if unix_socket is not None else None
        self._server: socketserver.BaseServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> KuboStandIn:
        handler = _make_handler(self)
        if self.unix_socket is not None:
            self._server = _UnixHTTPServer(self.unix_socket, handler)
        else:
            self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="kubo-standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> KuboStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def api(self) -> str:
        """The multiaddr clients connect to (``/ip4/127.0.0.1/tcp/N`` or ``/unix/...``)."""
        if self._server is None:
            raise RuntimeError("the stand-in is not running")
        if self.unix_socket is not None:
            return f"/unix{self.unix_socket}"
        host, port = self._server.server_address[:2]  # type: ignore[index,misc]
        return f"/ip4/{host}/tcp/{port}"

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]  # type: ignore[union-attr,index,misc]
        return f"http://{host}:{port}"

    # -- authorization ----------------------------------------------------------------

    def authorized(self, header: str | None) -> bool:
        if not self.authorizations:
            return True
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            presented = f"bearer:{value}"
        elif scheme.lower() == "basic":
            try:
                presented = "basic:" + base64.b64decode(value, validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                return False
        else:
            return False
        return presented in self.authorizations

    # -- commands ---------------------------------------------------------------------

    def commands(self) -> dict[str, Callable[[_Request], _Result]]:
        return {
            "version": self.cmd_version,
            "add": self.cmd_add,
            "cat": self.cmd_cat,
            "ls": self.cmd_ls,
            "block/get": self.cmd_block_get,
            "block/stat": self.cmd_block_stat,
            "block/put": self.cmd_block_put,
            "dag/export": self.cmd_dag_export,
            "dag/import": self.cmd_dag_import,
            "pin/add": self.cmd_pin_add,
            "pin/ls": self.cmd_pin_ls,
            "pin/rm": self.cmd_pin_rm,
        }

    def cmd_version(self, req: _Request) -> _Result:
        return _Single(
            {
                "Version": STANDIN_VERSION,
                "Commit": "",
                "Repo": "16",
                "System": "amd64/linux",
                "Golang": "go1.24",
            }
        )

    def _cid_arg(self, req: _Request, what: str = "cid") -> CID:
        text = req.arg(what)
        if text.startswith("/ipfs/"):
            text = text[len("/ipfs/") :]
        try:
            return CID.decode(text.strip("/"))
        except ValueError as e:
            raise CommandError(f"invalid path {req.args[0]!r}: {e}", ERR_CLIENT) from None

    def _block(self, cid: CID) -> bytes:
        try:
            return self.store.get(cid)
        except BlockNotFoundError:
            raise CommandError(f"block was not found locally (offline): ipld: could not find {cid}") from None

    def cmd_block_get(self, req: _Request) -> _Result:
        cid = self._cid_arg(req)
        data = self._block(cid)
        if cid in self.faults.tampered and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        return _Bytes([data], len(data))

    def cmd_block_stat(self, req: _Request) -> _Result:
        cid = self._cid_arg(req)
        return _Single({"Key": str(cid), "Size": len(self._block(cid))})

    def cmd_block_put(self, req: _Request) -> _Result:
        parts = _parse_multipart(req)
        if len(parts) != 1:
            raise CommandError("block/put takes exactly one file", ERR_CLIENT)
        data = parts[0][2]
        codec = {"raw": RAW, "dag-pb": DAG_PB}.get(req.options.get("cid-codec", "raw"))
        if codec is None or req.options.get("mhtype", "sha2-256") != "sha2-256":
            raise CommandError("stand-in supports cid-codec raw|dag-pb and mhtype sha2-256", ERR_CLIENT)
        cid = CID.compute(data, codec=codec)
        self.store.put(cid, data)
        if req.flag("pin", False):
            self.pins[cid] = "recursive"
        return _Single({"Key": str(cid), "Size": len(data)})

    def _resolve(self, req: _Request) -> CID:
        from torch_ipfs.unixfs.reader import resolve_path

        text = req.arg("ipfs-path")
        path = text[len("/ipfs/") :] if text.startswith("/ipfs/") else text
        root, _, rest = path.partition("/")
        try:
            return resolve_path(self.store, CID.decode(root), rest)
        except ValueError as e:
            raise CommandError(f"invalid path {text!r}: {e}", ERR_CLIENT) from None
        except IPFSError as e:
            raise CommandError(str(e)) from None

    def cmd_cat(self, req: _Request) -> _Result:
        from torch_ipfs.unixfs.reader import UnixFSFile

        cid = self._resolve(req)
        try:
            f = UnixFSFile(self.store, cid)
        except IPFSError as e:
            raise CommandError(str(e)) from None
        offset = req.int_option("offset") or 0
        length = req.int_option("length")
        if offset < 0 or (length is not None and length < 0):
            raise CommandError("cannot specify negative offset or length", ERR_CLIENT)
        size = max(0, min(f.size - offset, length if length is not None else f.size))
        return _Bytes(f.iter_chunks(offset, size), size)

    def cmd_ls(self, req: _Request) -> _Result:
        from torch_ipfs.unixfs.reader import DirEntry, ls

        cid = self._resolve(req)
        kinds = {"file": 2, "dir": 1, "symlink": 4}
        try:
            if _is_file(self, cid):
                # `ipfs ls` of a file lists its chunks: unnamed links, each reported as a file.
                node = decode_node(self._block(cid)) if cid.codec == DAG_PB else None
                entries = [
                    DirEntry("", link.cid, link.tsize, "file") for link in (node.links if node else [])
                ]
            else:
                entries = ls(self.store, cid)
        except IPFSError as e:
            raise CommandError(str(e)) from None
        links = [
            {
                "Name": e.name,
                "Hash": str(e.cid),
                "Size": e.size or 0,
                "Type": kinds.get(e.type, 0),
                "Target": "",
            }
            for e in entries
        ]
        return _Single({"Objects": [{"Hash": req.args[0], "Links": links}]})

    def cmd_dag_export(self, req: _Request) -> _Result:
        from torch_ipfs.car import export_car

        root = self._cid_arg(req)
        out = io.BytesIO()
        try:
            export_car(self.store, root, out)
        except IPFSError as e:
            raise CommandError(str(e)) from None
        data = out.getvalue()
        return _Bytes(data[i : i + _CHUNK] for i in range(0, len(data), _CHUNK))

    def cmd_dag_import(self, req: _Request) -> _Result:
        from torch_ipfs.car import import_car

        roots: list[CID] = []
        for _, _, data in _parse_multipart(req):
            try:
                roots += import_car(io.BytesIO(data), self.store)
            except IPFSError as e:
                raise CommandError(str(e)) from None
        out = []
        for root in dict.fromkeys(roots):
            msg = ""
            if req.flag("pin-roots", True):
                try:
                    self._pin(root, recursive=True)
                except CommandError as e:
                    msg = e.message
            out.append({"Root": {"Cid": {"/": str(root)}, "PinErrorMsg": msg}})
        return _Values(out)

    def _pin(self, cid: CID, recursive: bool) -> None:
        try:
            if recursive:
                for _ in walk_dfs(self.store, cid):  # Kubo fetches the whole DAG before pinning it
                    pass
            else:
                self.store.get(cid)
        except BlockNotFoundError as e:
            raise CommandError(
                f"pin: block was not found locally (offline): ipld: could not find {e.cid}"
            ) from None
        self.pins[cid] = "recursive" if recursive else "direct"

    def cmd_pin_add(self, req: _Request) -> _Result:
        cids = [self._cid_arg(_Request([a], {}, b"", "")) for a in req.args] if req.args else []
        if not cids:
            raise CommandError('argument "ipfs-path" is required', ERR_CLIENT)
        for cid in cids:
            self._pin(cid, req.flag("recursive", True))
        return _Single({"Pins": [str(c) for c in cids]})

    def cmd_pin_ls(self, req: _Request) -> _Result:
        kind = req.options.get("type", "all")
        keys = {str(c): {"Type": t} for c, t in self.pins.items() if kind in ("all", t)}
        return _Single({"Keys": keys})

    def cmd_pin_rm(self, req: _Request) -> _Result:
        cid = self._cid_arg(req)
        if cid not in self.pins:
            raise CommandError(f"{cid} is not pinned")
        del self.pins[cid]
        return _Single({"Pins": [str(cid)]})

    def cmd_add(self, req: _Request) -> _Result:
        from torch_ipfs.unixfs.importer import ImportOptions, import_file, import_path

        options = ImportOptions(
            cid_version=req.int_option("cid-version") or 0,
            raw_leaves=req.flag("raw-leaves", False) if "raw-leaves" in req.options else None,
            chunker=req.options.get("chunker") or "size-262144",
            hidden=req.flag("hidden", False),
        )
        store: BlockStore = NullStore() if req.flag("only-hash", False) else self.store
        wrap = req.flag("wrap-with-directory", False)
        parts = _parse_multipart(req)
        if not parts:
            raise CommandError("no files given", ERR_CLIENT)
        entries = []
        with tempfile.TemporaryDirectory(prefix="kubo-standin-add-") as tmp:
            top = Path(tmp) / "wrap"
            top.mkdir()
            tops: list[str] = []
            single_files: list[tuple[str, bytes]] = []
            for name, ctype, data in parts:
                rel = posixpath.normpath("/" + name).lstrip("/")
                if "/" not in rel and ctype == "application/octet-stream" and not wrap:
                    single_files.append((rel, data))  # also unnamed bytes, named by their CID
                    continue
                target = top / rel
                if rel and rel.split("/")[0] not in tops:
                    tops.append(rel.split("/")[0])
                target.parent.mkdir(parents=True, exist_ok=True)
                if ctype == "application/x-directory":
                    target.mkdir(exist_ok=True)
                elif ctype == "application/symlink":
                    os.symlink(data.decode(), target)
                else:
                    target.write_bytes(data)
            for name, data in single_files:
                entry = import_file(io.BytesIO(data), store, options, name=name)
                entries.append((entry.name or str(entry.cid), entry.cid, entry.size))
            if wrap:
                for e in import_path(top, store, options):
                    name = "" if e.name == "wrap" else e.name[len("wrap/") :]
                    entries.append((name, e.cid, e.size))
            else:
                for t in tops:
                    entries += [(e.name, e.cid, e.size) for e in import_path(top / t, store, options)]
        if req.flag("pin", True) and not req.flag("only-hash", False):
            self.pins[entries[-1][1]] = "recursive"
        return _Values({"Name": n, "Hash": str(c), "Size": str(s)} for n, c, s in entries)


# --------------------------------------------------------------------------- HTTP


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _make_handler(standin: KuboStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        pass

    Handler.standin = standin
    Handler.disable_nagle_algorithm = standin.unix_socket is None  # TCP_NODELAY is TCP-only
    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked responses, as Go's net/http
    disable_nagle_algorithm = True  # as Go does; else delayed ACKs stall each small write
    server_version = "kubo/" + STANDIN_VERSION
    standin: KuboStandIn

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet; unix peers have no address
        pass

    def address_string(self) -> str:
        return "unix" if not isinstance(self.client_address, tuple) else self.client_address[0]

    # Everything but POST is refused, as Kubo's RPC does.
    def do_GET(self) -> None:
        self._refuse_method()

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    def _refuse_method(self) -> None:
        self.standin.requests.append((self.command, self.path))
        self._drain_body()
        self._plain(405, "405 - Method Not Allowed\n")

    def do_POST(self) -> None:
        self.standin.requests.append((self.command, self.path))
        url = urllib.parse.urlsplit(self.path)
        body = self._drain_body()
        if not url.path.startswith("/api/v0/"):
            self._plain(404, "404 page not found\n")
            return
        command = url.path[len("/api/v0/") :].strip("/")
        if command != "version" and not self.standin.authorized(self.headers.get("Authorization")):
            self._plain(403, "403 - Forbidden\n")
            return
        handler = self.standin.commands().get(command)
        if handler is None:
            self._plain(404, "404 page not found\n")
            return
        query = urllib.parse.parse_qsl(url.query, keep_blank_values=True)
        req = _Request(
            args=[v for k, v in query if k == "arg"],
            options={k: v for k, v in query if k != "arg"},
            body=body,
            content_type=self.headers.get("Content-Type", ""),
        )
        standin = self.standin
        standin.bodies[command] = body
        with standin._lock:
            standin._active += 1
            standin.max_concurrent = max(standin.max_concurrent, standin._active)
        try:
            time.sleep(standin.faults.delay.get(command, 0.0))
            injected = standin.faults.error.get(command)
            try:
                if injected is not None:
                    raise CommandError(*injected)
                result = handler(req)
            except CommandError as e:
                self._error(e.message, e.code)
                return
            self._respond(command, result)
        finally:
            with standin._lock:
                standin._active -= 1

    # -- request bodies ---------------------------------------------------------------

    def _drain_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        out = bytearray()
        while True:
            size_line = self.rfile.readline(1024)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):  # request trailers
                    pass
                return bytes(out)
            out += self.rfile.read(size)
            self.rfile.readline(16)  # the CRLF after each chunk

    # -- responses ----------------------------------------------------------------------

    def _plain(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, message: str, code: int) -> None:
        body = json.dumps({"Message": message, "Code": code, "Type": "error"}).encode() + b"\n"
        self.send_response(400 if code == ERR_CLIENT else 500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header(
            "Access-Control-Allow-Headers", "X-Stream-Output, X-Chunked-Output, X-Content-Length"
        )
        self.end_headers()
        self.wfile.write(body)

    def _respond(self, command: str, result: _Result) -> None:
        self.send_response(200)
        self.send_header("Trailer", "X-Stream-Error")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header(
            "Access-Control-Expose-Headers", "X-Stream-Output, X-Chunked-Output, X-Content-Length"
        )
        if isinstance(result, _Bytes):
            self.send_header("Content-Type", "text/plain")
            self.send_header("X-Stream-Output", "1")
            if result.length is not None:
                self.send_header("X-Content-Length", str(result.length))
            chunks: Iterator[bytes] = iter(result.chunks)
        else:
            self.send_header("Content-Type", "application/json")
            if isinstance(result, _Values):
                self.send_header("X-Chunked-Output", "1")
                chunks = (json.dumps(v).encode() + b"\n" for v in result.values)
            else:
                chunks = iter([json.dumps(result.value).encode() + b"\n"])
        self.end_headers()
        faults = self.standin.faults
        stop_early = command in faults.stream_error or command in faults.truncate
        error = None
        try:
            data = b"".join(chunks) if stop_early else None
            if data is not None:  # send the first half, then fail the way Kubo does
                self._chunk(data[: len(data) // 2])
                error = faults.stream_error.get(command)
            else:
                for chunk in chunks:
                    self._chunk(chunk)
        except IPFSError as e:  # a failure mid-stream: Kubo reports it in the trailer
            error = str(e)
        if command in faults.truncate and error is None:
            self.close_connection = True  # the peer sees a body that ends early
            return
        self._end(error)

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")

    def _end(self, error: str | None) -> None:
        trailer = b""
        if error:
            clean = " ".join(error.split())  # a header value cannot hold CR/LF
            trailer = f"X-Stream-Error: {clean}\r\n".encode()
        self.wfile.write(b"0\r\n" + trailer + b"\r\n")
        self.wfile.flush()


def _is_file(standin: KuboStandIn, cid: CID) -> bool:
    from torch_ipfs.unixfs.reader import stat

    return stat(standin.store, cid).type == "file"


def _parse_multipart(req: _Request) -> list[tuple[str, str, bytes]]:
    """``[(name, content type, data)]`` of a multipart/form-data body; names are
    url-unescaped as boxo's ``files.fileName`` does."""
    ctype, _, params = req.content_type.partition(";")
    if ctype.strip().lower() not in ("multipart/form-data", "multipart/mixed"):
        raise CommandError(f"expected a multipart/form-data body, got {req.content_type!r}", ERR_CLIENT)
    boundary = ""
    for p in params.split(";"):
        k, _, v = p.strip().partition("=")
        if k.lower() == "boundary":
            boundary = v.strip('"')
    if not boundary:
        raise CommandError("multipart body without a boundary", ERR_CLIENT)
    # Prefix a CRLF so every delimiter, the first included, reads "\r\n--boundary".
    pieces = (b"\r\n" + req.body).split(b"\r\n--" + boundary.encode())
    parts = []
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            break
        head, sep, data = piece[2:].partition(b"\r\n\r\n")
        if not sep:
            raise CommandError("malformed multipart part", ERR_CLIENT)
        headers = {}
        for line in head.split(b"\r\n"):
            if b":" in line:
                k, _, v = line.decode("utf-8", "replace").partition(":")
                headers[k.strip().lower()] = v.strip()
        name = ""
        for p in headers.get("content-disposition", "").split(";"):
            k, _, v = p.strip().partition("=")
            if k == "filename":
                name = urllib.parse.unquote_plus(v.strip('"'))
        parts.append(
            (name, headers.get("content-type", "application/octet-stream").split(";")[0].strip(), data)
        )
    return parts


@contextlib.contextmanager
def running(**kwargs: Any) -> Iterator[KuboStandIn]:
    """``with running() as kubo: KuboSource(kubo.api)``."""
    standin = KuboStandIn(**kwargs)
    with standin:
        yield standin

"""A Kubo RPC client over httpx, and a verified block source on top of it.

:class:`KuboSource` talks to a Kubo node's RPC API (``POST /api/v0/...``; see
https://docs.ipfs.tech/reference/kubo/rpc/). It is a :class:`BlockSource`: blocks come
from ``block/get`` and are hashed against their CID by the base class like those of any
other source, so a compromised or buggy node cannot feed wrong bytes into a dataset.

What is verified and what is not:

* ``get``, ``get_many``, ``read_file``, ``open_file`` and ``dag_blocks`` — verified: every
  block is hashed against its CID (``read_file`` walks the UnixFS DAG block by block,
  ``dag_blocks`` checks the CAR of ``dag/export`` block by block and in DFS order).
* ``cat``, ``cat_stream``, ``dag_export`` and ``block_get_raw`` — raw passthrough of what
  the node sends (for CLI compatibility and for piping CARs to files); nothing is checked.
  Dataset code never uses them.

Errors are typed: an unreachable node, a 5xx that is not Kubo's error JSON or a 401/403
is :class:`SourceUnavailableError`; a stall is :class:`SourceTimeoutError`; Kubo's own
error JSON (``{"Message", "Code", "Type": "error"}``) and the ``X-Stream-Error`` trailer
Kubo sends when a streamed response fails mid-way are :class:`KuboError`; a block the
node does not have is :class:`BlockNotFoundError`. httpx exceptions are translated in one
place, :meth:`KuboSource._translate_errors`.

Authorization (Kubo >= 0.25, ``API.Authorizations``): ``auth="bearer:TOKEN"``,
``auth="basic:user:pass"`` or ``auth=("user", "pass")``. The secret only ever lives in
the HTTP client's headers: it is not logged, not in ``repr()`` and not in error messages.

Trailers: httpx (httpcore) drops HTTP trailers, and Kubo reports mid-stream failures only
there, so the client uses :mod:`torch_ipfs.sources.trailers`' transport, which records them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import random
import re
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import httpx

from torch_ipfs import config
from torch_ipfs.cid import CID
from torch_ipfs.errors import (
    BlockNotFoundError,
    KuboError,
    SourceTimeoutError,
    SourceUnavailableError,
)
from torch_ipfs.multiaddr import DEFAULT_API, parse_api_address
from torch_ipfs.sources.base import BlockSource, fetch_in_order
from torch_ipfs.sources.retry import OutageLog, Refused, backoff_delay
from torch_ipfs.sources.trailers import ResponseTrailers, TrailerAwareTransport

if TYPE_CHECKING:
    from torch_ipfs.unixfs.importer import AddedEntry

__all__ = ["KuboSource", "LsEntry", "authorization_header"]

log = logging.getLogger(__name__)

_CHUNK = 256 * 1024
_STREAM_ERROR = "x-stream-error"
# How Kubo (boxo, go-ipld) words "this block is not here" in block/get and block/stat errors.
_NOT_FOUND = re.compile(r"not found|could not find|no such block", re.IGNORECASE)
# UnixFS type numbers as `ipfs ls` reports them.
_LS_TYPES = {0: "raw", 1: "directory", 2: "file", 3: "metadata", 4: "symlink", 5: "directory"}


def authorization_header(auth: str | tuple[str, str]) -> str:
    """The ``Authorization`` header value for a Kubo ``API.Authorizations`` secret.

    ``"bearer:TOKEN"`` (or a bare ``"TOKEN"``) -> ``Bearer TOKEN``;
    ``"basic:user:pass"`` or ``("user", "pass")`` -> ``Basic base64(user:pass)``.
    Raises :class:`ValueError` (without echoing the secret) when malformed.
    """
    if isinstance(auth, tuple):
        if len(auth) != 2 or not all(isinstance(x, str) for x in auth):
            raise ValueError("auth tuple must be (user, password) strings")
        user, password = auth
    elif isinstance(auth, str):
        scheme, sep, rest = auth.partition(":")
        if sep and scheme.lower() == "basic":
            user, sep, password = rest.partition(":")
            if not sep or not user:
                raise ValueError("auth 'basic:...' must be 'basic:user:password'")
        else:
            token = rest if sep and scheme.lower() == "bearer" else auth
            if not token or any(c.isspace() for c in token):
                raise ValueError("auth bearer token must be non-empty and contain no whitespace")
            return f"Bearer {token}"
    else:
        raise ValueError("auth must be 'bearer:TOKEN', 'basic:user:password' or a (user, password) tuple")
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


@dataclass(frozen=True)
class LsEntry:
    """One link of ``ipfs ls``: ``type`` is ``"file"``, ``"directory"``, ``"raw"``, ``"symlink"``..."""

    name: str
    cid: CID
    size: int
    type: str


# --------------------------------------------------------------------------- the client


class KuboSource(BlockSource):
    """A Kubo node's RPC API as a verified block source plus a small typed RPC client.

    ``api`` is a multiaddr (``/ip4/127.0.0.1/tcp/5001``, ``/dns/host/tcp/443/https``,
    ``/unix/path``) or a URL. ``timeout`` bounds each wait for bytes (a stall), not a
    whole transfer; ``connect_timeout`` (default: ``timeout``, at most 5 s) bounds
    connecting. ``max_connections`` bounds parallel requests.
    ``offline=True`` asks the node for blocks it already has only (``--offline``), so a
    missing block fails at once instead of the node searching the network until timeout.
    ``retry_budget`` (seconds, default 0 = fail at once, as an RPC client should; the
    datasets' client sets ``TORCH_IPFS_RETRY_BUDGET``) keeps retrying a block read while
    the node cannot be reached or answers 5xx. A timeout is not retried: a node that
    holds a request open is searching for a block it lacks, and asking again only
    costs another ``timeout``.
    """

    def __init__(
        self,
        api: str = DEFAULT_API,
        *,
        auth: str | tuple[str, str] | None = None,
        timeout: float = 30.0,
        connect_timeout: float | None = None,
        max_connections: int = 16,
        offline: bool = False,
        retry_budget: float = 0.0,
        backoff: float = 0.1,
        max_retry_wait: float = 5.0,
    ) -> None:
        if max_connections < 1 or not retry_budget >= 0:
            raise ValueError("max_connections must be >= 1 and retry_budget >= 0")
        self.address = parse_api_address(api)
        self.url = str(self.address)
        self.name = f"kubo {self.url}"
        self.prefetch_window = 4 * max_connections  # hide the RPC round trip
        self.parallel_get_many = True
        self.timeout = timeout
        self.max_connections = max_connections
        self.offline = offline
        self.retry_budget = retry_budget
        self.backoff = backoff
        self.max_retry_wait = max_retry_wait
        if connect_timeout is None:
            connect_timeout = min(timeout, config.DEFAULT_CONNECT_TIMEOUT)
        self.connect_timeout = connect_timeout
        self._random = random.Random()
        self._outage = OutageLog(log, self.name)
        headers = {"Authorization": authorization_header(auth)} if auth is not None else {}
        self._client = httpx.Client(
            base_url=self.address.base_url,
            transport=TrailerAwareTransport(uds=self.address.uds, max_connections=max_connections),
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=self.connect_timeout),
            trust_env=False,
            follow_redirects=False,
        )
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"KuboSource({self.url!r})"

    # ---------------------------------------------------------------- BlockSource

    def _get_raw(self, cid: CID) -> bytes:
        return self.block_get_raw(cid)

    def get(self, cid: CID) -> bytes:
        """The verified block (``block/get``), retried within ``retry_budget`` while the
        node is unreachable or answers 5xx."""
        if cid.is_identity:
            return cid.digest
        started = time.monotonic()
        round_no = 0
        while True:
            try:
                data = super().get(cid)
            except SourceUnavailableError as e:
                remaining = started + self.retry_budget - time.monotonic()
                if isinstance(e, Refused) or self._closed or remaining <= 0:
                    if round_no:
                        raise SourceUnavailableError(
                            f"{e}; retried for {time.monotonic() - started:.1f} s", source=self.url, cid=cid
                        ) from e
                    raise
                round_no += 1
                self._outage.started(_cause(e), self.retry_budget)
                delay = backoff_delay(round_no, self.backoff, self.max_retry_wait, self._random)
                time.sleep(min(delay, remaining))
                continue
            self._outage.ended()
            return data

    def get_many(self, cids: Iterable[CID]) -> Iterator[tuple[CID, bytes]]:
        """Fetch blocks in parallel (at most ``max_connections`` at once), yield them in
        the order given, each verified. The first failure is raised in order; requests
        still pending are cancelled."""
        yield from fetch_in_order(cids, self.get, self._executor(), window=2 * self.max_connections)

    def has(self, cid: CID) -> bool:
        """True if the node has ``cid`` (``block/stat``; with ``offline=True`` locally only)."""
        if cid.is_identity:
            return True
        try:
            self.block_stat(cid)
        except BlockNotFoundError:
            return False
        return True

    def close(self) -> None:
        """Close the connection pool and the fetch threads. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_connections, thread_name_prefix="kubo-fetch")
            return self._pool

    # ---------------------------------------------------------------- verified reads

    def read_file(self, cid: CID | str, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes ``[offset, offset+length)`` of a UnixFS file, fetched block by block
        (only the blocks covering the range) and verified. Use this, not :meth:`cat`."""
        from torch_ipfs.unixfs.reader import UnixFSFile

        f = UnixFSFile(self, _cid(cid))
        if length is None:
            length = max(0, f.size - offset)
        return f.read_range(offset, length)

    def open_file(self, cid: CID | str) -> IO[bytes]:
        """A seekable, verified file object over a UnixFS file on the node."""
        from torch_ipfs.unixfs.reader import UnixFSFile

        return UnixFSFile(self, _cid(cid)).open()

    def dag_blocks(self, root: CID | str) -> Iterator[tuple[CID, bytes]]:
        """Every block of the DAG under ``root`` in one ``dag/export`` request, each
        hashed against its CID and checked to be the block a DFS walk expects next;
        a truncated or reordered CAR raises."""
        from torch_ipfs.car import CarReader
        from torch_ipfs.carverify import verify_car_stream

        root_cid = _cid(root)
        yield from verify_car_stream(CarReader(self.dag_export(root_cid)), root_cid)

    # ---------------------------------------------------------------- RPC: misc

    def version(self) -> dict[str, Any]:
        """``version``: ``{"Version", "Commit", "Repo", "System", "Golang"}``."""
        return self._json("version")

    # ---------------------------------------------------------------- RPC: blocks

    def block_get_raw(self, cid: CID | str) -> bytes:
        """``block/get``: the bytes the node sends, *unverified* (``get`` verifies)."""
        c = _cid(cid)
        params = {"offline": True} if self.offline else {}
        with self._request("block/get", [c], params, cid=c) as resp:
            return b"".join(resp.chunks())

    def block_get(self, cid: CID | str) -> bytes:
        """``block/get``, verified against the CID."""
        return self.get(_cid(cid))

    def block_stat(self, cid: CID | str) -> dict[str, Any]:
        """``block/stat``: ``{"Key", "Size"}``; :class:`BlockNotFoundError` if absent."""
        c = _cid(cid)
        params = {"offline": True} if self.offline else {}
        return self._json("block/stat", [c], params, cid=c)

    def block_put(
        self, data: bytes, *, cid_codec: str = "raw", mhtype: str = "sha2-256", pin: bool = False
    ) -> CID:
        """``block/put``: store one block; returns the CID the node computed."""
        body, ctype = _multipart([("", "application/octet-stream", data)])
        out = self._json(
            "block/put",
            [],
            {"cid-codec": cid_codec, "mhtype": mhtype, "pin": pin},
            content=body,
            headers={"Content-Type": ctype},
        )
        return CID.decode(out["Key"])

    # ---------------------------------------------------------------- RPC: files

    def add(
        self,
        data: bytes | str | os.PathLike[str] | IO[bytes],
        *,
        name: str = "",
        cid_version: int = 0,
        raw_leaves: bool | None = None,
        chunker: str | None = None,
        pin: bool = True,
        wrap_with_directory: bool = False,
        only_hash: bool = False,
        hidden: bool = False,
    ) -> list[AddedEntry]:
        """``add``: import bytes, a file object, a file or a directory (recursively).

        Directories are sent the way Kubo's own client sends them: one multipart part
        per entry, directories as ``application/x-directory`` parts, names relative to
        the parent of the added path and url-escaped (``dir%2Fsub%2Ffile``). Returns the
        entries Kubo reports, in its order (the root last), as ``AddedEntry``.
        """
        from torch_ipfs.unixfs.importer import AddedEntry

        parts = _add_parts(data, name, hidden)
        body, ctype = _multipart(parts)
        params: dict[str, Any] = {
            "cid-version": cid_version,
            "raw-leaves": raw_leaves,
            "chunker": chunker,
            "pin": pin,
            "wrap-with-directory": wrap_with_directory,
            "only-hash": only_hash,
            "hidden": hidden or None,
            "progress": False,
        }
        entries = []
        for obj in self._json_lines("add", [], params, content=body, headers={"Content-Type": ctype}):
            if "Hash" not in obj:  # progress events
                continue
            entries.append(
                AddedEntry(name=obj.get("Name", ""), cid=CID.decode(obj["Hash"]), size=int(obj["Size"]))
            )
        return entries

    def cat(self, path: CID | str, offset: int | None = None, length: int | None = None) -> bytes:
        """``cat``: file bytes as the node sends them. NOT verified — raw passthrough for
        CLI compatibility; use :meth:`read_file` for verified bytes."""
        return b"".join(self.cat_stream(path, offset, length))

    def cat_stream(
        self, path: CID | str, offset: int | None = None, length: int | None = None
    ) -> Iterator[bytes]:
        """``cat`` as a stream of chunks. NOT verified (see :meth:`cat`). A failure after
        the stream started (Kubo's ``X-Stream-Error`` trailer) raises :class:`KuboError`
        at the end; a body shorter than the ``X-Content-Length`` Kubo announced, too."""
        target = str(path)
        with self._request("cat", [target], {"offset": offset, "length": length}) as resp:
            announced = resp.headers.get("x-content-length")
            got = 0
            for chunk in resp.chunks():
                got += len(chunk)
                yield chunk
            if announced is not None and announced.isdigit() and got < int(announced):
                raise KuboError(
                    f"Kubo RPC cat of {target} at {self.url} ended after {got} of {announced} bytes",
                    source=self.url,
                )

    def ls(self, path: CID | str) -> list[LsEntry]:
        """``ls``: the links of a directory (or the blocks of a file)."""
        out = self._json("ls", [str(path)], {"resolve-type": True, "size": True})
        entries = []
        for obj in out.get("Objects") or []:
            for link in obj.get("Links") or []:
                entries.append(
                    LsEntry(
                        name=link.get("Name", ""),
                        cid=CID.decode(link["Hash"]),
                        size=int(link.get("Size", 0)),
                        type=_LS_TYPES.get(int(link.get("Type", -1)), "unknown"),
                    )
                )
        return entries

    # ---------------------------------------------------------------- RPC: DAGs

    def dag_export(self, root: CID | str) -> Iterator[bytes]:
        """``dag/export``: the CAR bytes as the node sends them, NOT verified (write them
        to a file, or use :meth:`dag_blocks` to read verified blocks)."""
        c = _cid(root)
        params = {"offline": True} if self.offline else {}
        with self._request("dag/export", [c], params, cid=c) as resp:
            yield from resp.chunks()

    def dag_import(self, car: bytes | IO[bytes] | Iterable[bytes], *, pin_roots: bool = True) -> list[CID]:
        """``dag/import``: load a CAR into the node (the node verifies the blocks); returns its roots."""
        if isinstance(car, (bytes, bytearray, memoryview)):
            payload: bytes | IO[bytes] | Iterable[bytes] = bytes(car)
        else:
            payload = car
        body, ctype = _multipart([("", "application/octet-stream", payload)])
        roots = []
        for obj in self._json_lines(
            "dag/import", [], {"pin-roots": pin_roots}, content=body, headers={"Content-Type": ctype}
        ):
            root = obj.get("Root")
            if root:
                if root.get("PinErrorMsg"):
                    raise KuboError(
                        f"Kubo could not pin imported root: {root['PinErrorMsg']}", source=self.url
                    )
                roots.append(CID.decode(root["Cid"]["/"]))
        return roots

    # ---------------------------------------------------------------- RPC: pins

    def pin_add(self, cid: CID | str, *, recursive: bool = True) -> list[CID]:
        """``pin/add``: pin (recursively by default); returns the pinned CIDs."""
        out = self._json("pin/add", [str(cid)], {"recursive": recursive}, cid=cid)
        return [CID.decode(p) for p in out.get("Pins") or []]

    def pin_ls(self, *, type: str = "all") -> dict[CID, str]:  # noqa: A002 - Kubo's option name
        """``pin/ls``: ``{cid: "recursive" | "direct" | "indirect"}``."""
        out = self._json("pin/ls", [], {"type": type})
        return {CID.decode(k): v.get("Type", "") for k, v in (out.get("Keys") or {}).items()}

    def pin_rm(self, cid: CID | str, *, recursive: bool = True) -> list[CID]:
        """``pin/rm``: unpin; returns the unpinned CIDs."""
        out = self._json("pin/rm", [str(cid)], {"recursive": recursive}, cid=cid)
        return [CID.decode(p) for p in out.get("Pins") or []]

    # ---------------------------------------------------------------- HTTP plumbing

    @contextlib.contextmanager
    def _translate_errors(self, cid: object = None) -> Iterator[None]:
        """The one boundary where httpx exceptions become torch_ipfs errors.

        Everything that touches the network (sending, reading headers, reading bodies)
        runs inside it; our own errors pass through unchanged.
        """
        try:
            yield
        except httpx.TimeoutException as e:
            raise SourceTimeoutError(
                f"Kubo RPC at {self.url} sent nothing for {self.timeout}s ({type(e).__name__})",
                source=self.url,
                cid=cid,
            ) from e
        except httpx.TransportError as e:
            raise SourceUnavailableError(
                f"cannot reach the Kubo RPC API at {self.url}: {e or type(e).__name__}; "
                "is the daemon running (ipfs daemon) and is the address right?",
                source=self.url,
                cid=cid,
            ) from e

    @contextlib.contextmanager
    def _request(
        self,
        command: str,
        args: Iterable[object] = (),
        params: dict[str, Any] | None = None,
        *,
        cid: object = None,
        content: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Iterator[_Reply]:
        """POST ``/api/v0/<command>`` and yield the streamed 200 reply; other statuses
        raise the matching typed error. Body reads inside the ``with`` are translated too."""
        if self._closed:
            raise SourceUnavailableError(f"{self.name} is closed", source=self.url, cid=cid)
        query = [("arg", str(a)) for a in args]
        query += [(k, _flag(v)) for k, v in (params or {}).items() if v is not None]
        with self._translate_errors(cid):
            log.debug("POST %s/api/v0/%s", self.url, command)
            with self._client.stream(
                "POST", f"/api/v0/{command}", params=tuple(query), content=content, headers=headers
            ) as resp:
                if resp.status_code != 200:
                    resp.read()
                    raise self._status_error(command, resp, cid)
                yield _Reply(resp, f"Kubo RPC {command} at {self.url}", self.url, cid)

    def _json(self, command: str, args: Iterable[object] = (), params=None, *, cid=None, **kw) -> Any:
        values = self._json_lines(command, args, params, cid=cid, **kw)
        if len(values) != 1:
            raise KuboError(
                f"Kubo RPC {command} at {self.url} sent {len(values)} JSON values, expected 1",
                source=self.url,
                cid=cid,
            )
        return values[0]

    def _json_lines(self, command: str, args: Iterable[object] = (), params=None, *, cid=None, **kw) -> list:
        """A JSON or newline-delimited JSON response as a list of values. Kubo versions
        before the trailer era put errors in the stream as ``{"Type": "error"}`` values."""
        with self._request(command, args, params, cid=cid, **kw) as resp:
            raw = b"".join(resp.chunks())
        values = []
        for line in raw.splitlines():
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                raise KuboError(
                    f"Kubo RPC {command} at {self.url} sent a line that is not JSON: {line[:80]!r}",
                    source=self.url,
                    cid=cid,
                ) from None
            if isinstance(obj, dict) and obj.get("Type") == "error" and "Message" in obj:
                raise KuboError(
                    f"Kubo RPC {command} at {self.url} failed: {obj['Message']}",
                    source=self.url,
                    cid=cid,
                    code=_int_or_none(obj.get("Code")),
                )
            values.append(obj)
        return values

    def _status_error(self, command: str, resp: httpx.Response, cid: object) -> Exception:
        status = resp.status_code
        if status in (401, 403):
            return Refused(
                f"Kubo RPC at {self.url} refused {command} ({status}): the node requires "
                "authorization (API.Authorizations); pass auth='bearer:TOKEN' or "
                "auth=('user', 'password'), or check the credentials",
                source=self.url,
                cid=cid,
            )
        err = _error_json(resp.content)
        if err is not None:
            message, code = err
            if command in ("block/get", "block/stat") and cid is not None and _NOT_FOUND.search(message):
                return BlockNotFoundError(cid, [self.name])
            return KuboError(
                f"Kubo RPC {command} at {self.url} failed: {message}",
                source=self.url,
                cid=cid,
                code=code,
            )
        if status >= 500:
            return SourceUnavailableError(
                f"Kubo RPC at {self.url} answered {status} {resp.reason_phrase} to {command}",
                source=self.url,
                cid=cid,
            )
        if status == 404:
            return KuboError(
                f"{self.url} has no /api/v0/{command} (404): not a Kubo RPC API, or a Kubo too old for it",
                source=self.url,
                cid=cid,
                code=None,
            )
        text = resp.content[:200].decode("utf-8", "replace").strip()
        return KuboError(
            f"Kubo RPC {command} at {self.url} answered {status} {resp.reason_phrase}: {text}",
            source=self.url,
            cid=cid,
        )


# --------------------------------------------------------------------------- helpers


def _cause(error: Exception) -> str:
    return str(error)[:200]


def _cid(value: CID | str) -> CID:
    return value if isinstance(value, CID) else CID.decode(value)


def _flag(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _error_json(body: bytes) -> tuple[str, int | None] | None:
    """``(Message, Code)`` if ``body`` is Kubo's error JSON, else None."""
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    if isinstance(obj, dict) and obj.get("Type") == "error" and isinstance(obj.get("Message"), str):
        return obj["Message"], _int_or_none(obj.get("Code"))
    return None


class _Reply:
    """A 200 streamed response whose end is checked for Kubo's ``X-Stream-Error`` trailer."""

    def __init__(self, resp: httpx.Response, what: str, source: str, cid: object) -> None:
        self.resp, self.what, self.source, self.cid = resp, what, source, cid
        self.headers = resp.headers
        self._trailers = ResponseTrailers(resp)  # before the body is read (see its docstring)

    def chunks(self) -> Iterator[bytes]:
        """The body, then a :class:`KuboError` if the node reported a mid-stream failure."""
        yield from self.resp.iter_bytes(_CHUNK)
        if not self._trailers.recorded:
            return
        trailers = self._trailers.pop()
        if trailers is None:
            raise KuboError(
                f"{self.what}: response ended without its end marker", source=self.source, cid=self.cid
            )
        message = trailers.get(_STREAM_ERROR)
        if message:
            raise KuboError(f"{self.what} failed mid-stream: {message}", source=self.source, cid=self.cid)


# ---- multipart/form-data, the way Kubo's own client (boxo/files.MultiFileReader) writes it

_Part = tuple[str, str, "bytes | IO[bytes] | Iterable[bytes] | Path"]


def _add_parts(data: bytes | str | os.PathLike[str] | IO[bytes], name: str, hidden: bool) -> list[_Part]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return [(name, "application/octet-stream", bytes(data))]
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if path.is_dir():
            return _dir_parts(path, name or path.name, hidden)
        if not path.is_file():
            raise FileNotFoundError(f"cannot add {str(path)!r}: no such file or directory")
        return [(name or path.name, "application/octet-stream", path)]
    if hasattr(data, "read"):
        return [(name, "application/octet-stream", data)]
    raise TypeError(f"cannot add a {type(data).__name__}: pass bytes, a path or a binary file object")


def _dir_parts(root: Path, top: str, hidden: bool) -> list[_Part]:
    """Depth-first parts for a directory tree: each directory before its entries,
    entries sorted by name (the order Kubo's client walks a directory in)."""
    parts: list[_Part] = [(top, "application/x-directory", b"")]
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not hidden and entry.name.startswith("."):
            continue
        rel = f"{top}/{entry.name}"
        if entry.is_dir(follow_symlinks=False):
            parts += _dir_parts(Path(entry.path), rel, hidden)
        elif entry.is_symlink():
            parts.append((rel, "application/symlink", os.readlink(entry.path).encode()))
        elif entry.is_file():
            parts.append((rel, "application/octet-stream", Path(entry.path)))
    return parts


def _multipart(parts: list[_Part]) -> tuple[Iterator[bytes], str]:
    """A streamed multipart/form-data body and its Content-Type."""
    boundary = uuid.uuid4().hex

    def gen() -> Iterator[bytes]:
        for name, ctype, payload in parts:
            # Percent-encode everything (space -> %20, "/" -> %2F): Go's url.PathUnescape /
            # QueryUnescape and JavaScript's decodeURIComponent all decode it the same way,
            # while "+" for a space (quote_plus) is a space only to Go's query decoding.
            filename = urllib.parse.quote(name, safe="")
            yield (
                f"--{boundary}\r\n"
                f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                f"Content-Type: {ctype}\r\n\r\n"
            ).encode()
            yield from _payload_chunks(payload)
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    return gen(), f"multipart/form-data; boundary={boundary}"


def _payload_chunks(payload: bytes | IO[bytes] | Iterable[bytes] | Path) -> Iterator[bytes]:
    if isinstance(payload, bytes):
        if payload:
            yield payload
    elif isinstance(payload, Path):
        with open(payload, "rb") as f:
            while chunk := f.read(_CHUNK):
                yield chunk
    elif hasattr(payload, "read"):
        while chunk := payload.read(_CHUNK):  # type: ignore[union-attr]
            yield chunk
    else:
        yield from payload  # type: ignore[misc]

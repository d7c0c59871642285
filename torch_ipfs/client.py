"""The client: one object that knows where blocks come from and offers the Kubo-like
operations (add, cat, open, ls, stat, CAR import/export, pins) on top of them.

Resolution order for reads (see docs/sources.md):

1. the embedded local store (``$TORCH_IPFS_HOME``, always present, no daemon);
2. a verified disk cache in front of the remote sources;
3. a Kubo node's RPC API, when ``api`` / ``TORCH_IPFS_API`` is set;
4. trustless HTTP gateways, when ``gateways`` / ``TORCH_IPFS_GATEWAYS`` is set.

No remote source is contacted unless configured. Every block from every source is
verified against its CID before it is used.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import queue
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from torch_ipfs import config
from torch_ipfs.cid import CID, IPFSPath, parse_address
from torch_ipfs.config import Settings, parse_size
from torch_ipfs.errors import IPFSError, PathNotFoundError, UnixFSFormatError, UnsafePathError
from torch_ipfs.sources.base import BlockSource
from torch_ipfs.sources.chain import SourceChain
from torch_ipfs.stoppable import put_until_stopped

if TYPE_CHECKING:
    from torch_ipfs.carverify import Scope
    from torch_ipfs.metrics import MetricsCollector
    from torch_ipfs.sources.cache import CachedSource
    from torch_ipfs.sources.gateway import GatewaySource
    from torch_ipfs.unixfs.reader import UnixFSFile

__all__ = ["Client", "default_client"]

T = TypeVar("T")

log = logging.getLogger(__name__)


class Client:
    """Reads through the resolution order and writes to the embedded store.

    Args:
        home: directory of the embedded store (default ``$TORCH_IPFS_HOME`` or the user cache dir).
        api: a Kubo RPC address (multiaddr or URL); default ``$TORCH_IPFS_API``; ``""`` for none.
        gateways: trustless gateway base URLs; default ``$TORCH_IPFS_GATEWAYS`` (comma-separated).
        cache_bytes: size limit of the disk cache in front of remote sources.
        retry_budget: seconds one block read keeps retrying a remote source that is down
            (default ``$TORCH_IPFS_RETRY_BUDGET``, 60); the connect/read timeouts and
            Kubo's offline flag come from the environment (:class:`~torch_ipfs.config.Settings`).
        sources: replace the whole read order with these sources (advanced; tests, custom setups).
        metrics: a :class:`~torch_ipfs.metrics.MetricsCollector`; every source is then
            wrapped to count blocks, bytes, latency and verification failures.

    A client can be pickled (spawned DataLoader workers get one built from the same
    settings) and :meth:`for_this_process` gives forked workers their own connections.
    """

    def __init__(
        self,
        *,
        home: str | os.PathLike[str] | None = None,
        api: str | None = None,
        gateways: Sequence[str] | str | None = None,
        cache_bytes: int | str | None = None,
        retry_budget: float | None = None,
        sources: Sequence[BlockSource] | None = None,
        metrics: MetricsCollector | None = None,
    ) -> None:
        from torch_ipfs.sources.local import LocalStore

        settings = Settings.from_env()
        self.store = LocalStore(home)
        self.api = (settings.api or "") if api is None else api
        if gateways is None:
            gateways = settings.gateways
        elif isinstance(gateways, str):
            gateways = [g.strip() for g in gateways.split(",") if g.strip()]
        self.gateways = list(gateways)
        # "10G", "512MiB" or a plain byte count
        self.cache_bytes = settings.cache_bytes if cache_bytes is None else parse_size(cache_bytes)
        if retry_budget is not None and not retry_budget >= 0:
            raise ValueError(f"retry_budget must be >= 0 seconds, got {retry_budget!r}")
        self.retry_budget = settings.retry_budget if retry_budget is None else float(retry_budget)
        self._network = settings  # connect/read timeouts and kubo_offline for the remote sources
        self.metrics = metrics
        self._pid = os.getpid()
        self._forked: tuple[int, Client] | None = None
        self._prefetcher: _Prefetcher | None = None
        self._pasted: dict[str, SourceChain] = {}  # gateway URL -> [configured sources, that gateway]
        self._pasted_pid = self._pid
        self._remote: list[BlockSource] = []
        self._custom_sources = list(sources) if sources is not None else None
        if self._custom_sources is not None:
            self.source: BlockSource = SourceChain(self._custom_sources)
        else:
            self.source = self._default_chain()
        if metrics is not None:
            from torch_ipfs.metrics import instrument_client

            instrument_client(self, metrics)

    def _default_chain(self) -> BlockSource:
        """store -> cache -> (Kubo, gateways), with the timeouts and retry budget of the
        settings. With both remote kinds, Kubo fails over to the gateways at once (no
        budget of its own) and the gateways carry the budget."""
        t = self._network
        if self.api:
            from torch_ipfs.sources.kubo import KuboSource

            self._remote.append(KuboSource(
                self.api,
                timeout=t.read_timeout,
                connect_timeout=t.connect_timeout,
                offline=t.kubo_offline,
                retry_budget=0.0 if self.gateways else self.retry_budget,
            ))
        if self.gateways:
            self._remote.append(self._gateway_source(self.gateways))
        chain: list[BlockSource] = [self.store]
        if self._remote:
            from torch_ipfs.sources.cache import CachedSource

            remote = self._remote[0] if len(self._remote) == 1 else SourceChain(self._remote)
            chain.append(CachedSource(remote, Path(self.store.root) / "cache", max_bytes=self.cache_bytes))
        return SourceChain(chain, hint=self._not_found_hint())

    def _gateway_source(self, urls: list[str]) -> BlockSource:
        """A gateway source with the settings' timeouts and this client's retry budget."""
        from torch_ipfs.sources.gateway import GatewaySource

        t = self._network
        return GatewaySource(
            urls,
            timeout=max(30.0, t.read_timeout),
            connect_timeout=t.connect_timeout,
            stall_timeout=t.read_timeout,
            retry_budget=self.retry_budget,
        )

    def _not_found_hint(self) -> str:
        """How to add a source that has a missing block, suggesting only what is not set."""
        ways = ["add it to the local store (torch-ipfs dag import / add)"]
        if not self.api:
            ways.append(f"{config.ENV_API}=/ip4/127.0.0.1/tcp/5001 for a Kubo node that has it")
        if not self.gateways:
            ways.append(f"{config.ENV_GATEWAYS}=http://host:8080 for trustless gateways")
        else:
            ways.append(f"another gateway in {config.ENV_GATEWAYS} (the configured ones answered 404)")
        return "; ".join(ways)

    # -- processes ----------------------------------------------------------------------

    @property
    def settings(self) -> dict[str, object]:
        """The arguments that rebuild an equivalent client in another process."""
        return {
            "home": self.store.root,
            "api": self.api,
            "gateways": list(self.gateways),
            "cache_bytes": self.cache_bytes,
            "retry_budget": self.retry_budget,
            "metrics": self.metrics,
        }

    def for_this_process(self) -> Client:
        """This client, or, in a forked child (a DataLoader worker), an equivalent one built
        from the same settings: HTTP connection pools and threads do not survive a fork.
        A client with caller-supplied ``sources`` is returned as is (they are the caller's)."""
        pid = os.getpid()
        if pid == self._pid or not self._remote or self._custom_sources is not None:
            return self
        if self._forked is None or self._forked[0] != pid:
            self._forked = (pid, Client(**self.settings))  # type: ignore[arg-type]
        return self._forked[1]

    def __getstate__(self) -> dict[str, object]:
        # Pickled for spawned workers: settings travel, connections do not.
        if self._custom_sources is not None:
            return {"settings": {**self.settings, "sources": self._custom_sources}}
        return {"settings": self.settings}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(**state["settings"])  # type: ignore[arg-type,misc]

    # -- reading ----------------------------------------------------------------------

    def _source_for(self, address: IPFSPath) -> BlockSource:
        """A pasted gateway URL adds that gateway (trustlessly) after the configured sources:
        one source per gateway, kept for later calls and closed by :meth:`close`."""
        gateway = address.gateway
        if not gateway or gateway in self.gateways:
            return self.source
        if self._pasted_pid != os.getpid():  # connection pools do not survive a fork
            self._pasted, self._pasted_pid = {}, os.getpid()
        chain = self._pasted.get(gateway)
        if chain is None:
            pasted = self._gateway_source([gateway])
            chain = self._pasted[gateway] = SourceChain([self.source, pasted], hint=self._not_found_hint())
        return chain

    def resolve(self, address: str | CID | IPFSPath) -> CID:
        """The CID an address points at (following its path through directories)."""
        from torch_ipfs.unixfs.reader import resolve_path

        path = parse_address(address)
        if not path.path:
            return path.cid
        return resolve_path(self._source_for(path), path.cid, path.path)

    def file(self, address: str | CID | IPFSPath):
        """A random-access :class:`~torch_ipfs.unixfs.reader.UnixFSFile` for a file address."""
        from torch_ipfs.unixfs.reader import UnixFSFile

        path = parse_address(address)
        return UnixFSFile(self._source_for(path), self.resolve(path))

    def prefetch(
        self, address: str | CID | IPFSPath, offset: int = 0, length: int | None = None
    ) -> Future[int] | None:
        """Start fetching the blocks of a file (or of ``[offset, offset + length)``) into
        the verified cache, in a background thread, and return at once.

        Streaming datasets call this for the next shard while the current one is read, so
        a remote source's round trips are paid before the data is needed. Returns
        ``None`` when there is nothing to gain (no remote source with a cache in front:
        local reads, or a pasted gateway URL read uncached); otherwise a future of the
        number of bytes covered. A failure is logged at debug level and left in the
        future: the real read will meet it and raise.
        """
        path = parse_address(address)
        if not self._remote or self._custom_sources is not None:
            return None
        if path.gateway and path.gateway not in self.gateways:
            return None
        return self._background(lambda: self._warm_range(path, offset, length), str(path))

    @property
    def fetch_width(self) -> int:
        """How many blocks the remote sources fetch at once (their connections): a batch
        of up to this many small blocks costs one round trip. 0 without a remote source."""
        if not self._remote or self._custom_sources is not None:
            return 0
        return min(getattr(s, "max_connections", 1) for s in self._remote)

    def prefetch_blocks(self, cids: Sequence[CID]) -> Future[int] | None:
        """Start fetching these blocks into the verified cache in the background (in
        parallel, through the read order's ``get_many``); a future of how many, or None
        without a remote source (see :meth:`prefetch`). Used to fetch the few small
        blocks every DataLoader worker needs first (shard indexes, shard root nodes)
        once, in the main process, while the workers start."""
        if not self._remote or self._custom_sources is not None or not cids:
            return None
        route = self._car_route()
        held = route[0].holds if route is not None else (lambda cid: False)
        # blocks the open's first round trip brought are not fetched again (and a fork
        # then has no job to wait for)
        wanted = [cid for cid in dict.fromkeys(cids) if not held(cid)]
        if not wanted:
            return None

        def job() -> int:
            return sum(1 for _ in self.source.get_many(wanted))

        return self._background(job, f"{len(wanted)} blocks")

    def _background(self, job: Callable[[], int], what: str) -> Future[int]:
        if self._prefetcher is None or self._prefetcher.pid != os.getpid():
            self._prefetcher = _Prefetcher()  # its thread does not survive a fork
        return self._prefetcher.submit(job, what)

    def _warm_range(self, path: IPFSPath, offset: int, length: int | None) -> int:
        """The prefetch job: one CAR request for the range when a gateway can serve it
        (:meth:`warm_car`: root and leaves in one round trip), then the block-by-block
        warm-up for whatever it did not deliver (nothing to do when it delivered all),
        where every retry and failover of the sources applies."""
        cid = self.resolve(path)
        # One streamed CAR beats parallel block requests even when the root node is
        # cached already (it comes again, a few hundred bytes): one request's overhead
        # on both ends instead of one per leaf.
        if (length is None or length > 0) and offset >= 0:
            end = None if length is None else offset + length - 1
            if self.warm_car(cid, entity_bytes=None if (offset, end) == (0, None) else (offset, end)):
                size = self.file(cid).size  # the root node: a cache hit now
                return max(0, min(size, offset + (size if length is None else length)) - min(offset, size))
        return self.file(cid).warm(offset, length)

    # -- multi-block requests -------------------------------------------------------------

    def _car_route(self) -> tuple[CachedSource, GatewaySource] | None:
        """``(cache, gateway)`` when the read order is store -> cache -> gateways only: a
        gateway's CAR response can then fill the cache in one request. None otherwise
        (a Kubo node first in the order, custom or instrumented sources)."""
        if self._custom_sources is not None or len(self._remote) != 1:
            return None
        from torch_ipfs.sources.cache import CachedSource
        from torch_ipfs.sources.gateway import GatewaySource

        members = getattr(self.source, "sources", [])
        cache = members[-1] if members else None
        if not isinstance(cache, CachedSource) or not isinstance(cache.source, GatewaySource):
            return None
        return cache, cache.source

    def warm_car(
        self,
        root: CID | str,
        path: str = "",
        *,
        entity_bytes: tuple[int, int | None] | None = None,
        max_bytes: int | None = None,
        scope: Scope = "entity",
    ) -> bool:
        """Fetch the blocks of ``/ipfs/root/path`` (``dag-scope=entity``: the path's
        blocks, then the file, or only the part covering ``entity_bytes``, inclusive;
        ``scope="all"``: everything below the path; ``"block"``: the target's own block)
        into the verified cache with **one** CAR request, each block checked by the CAR
        verifier against our own walk of the DAG as it arrives.

        Purely an optimisation, so it never raises: True when every block of the request
        is now cached (or a cached directory on the path shows the name is not there: the
        request is then not made); False when there is no gateway-only read order, the
        gateway does not have the path, the response failed (a bad block marks the gateway unhealthy,
        as any read does) or was longer than ``max_bytes`` (reading stops there). The
        reads that follow fetch what is missing block by block, with the sources'
        retries. Concurrent identical requests (threads, DataLoader workers, processes
        sharing the cache) are made once.
        """
        route = self._car_route()
        if route is None:
            return False
        cache, gateway = route
        cid = CID.decode(root)
        key = f"car {cid}/{path} {scope} {entity_bytes}"

        def blocks() -> Iterator[tuple[CID, bytes]]:
            return gateway.fetch_car(
                cid, path, dag_scope=scope, entity_bytes=entity_bytes, fallback=False
            )

        def cached() -> bool:
            # The same walk the verifier runs, over the cache alone: complete means
            # another reader made this request a moment ago (a few local reads; it stops
            # at the first block missing).
            from torch_ipfs.unixfs.walk import CarWalk

            segments = tuple(s for s in path.split("/") if s)
            walk = CarWalk(cid, segments, scope=scope, entity_bytes=entity_bytes)
            try:
                while (want := walk.next_cid()) is not None:
                    block = cache.peek(want)
                    if block is None:
                        return False
                    walk.accept(want, block)
            except PathNotFoundError:
                return True  # a cached (verified) directory lacks the name: the answer is a 404
            except IPFSError:  # e.g. a block that is not what it should be: the request will say
                return False
            return True

        try:
            return cache.fill(key, blocks, max_bytes=max_bytes, done=cached)
        except (IPFSError, OSError) as e:
            log.debug("CAR request for /ipfs/%s/%s failed (%s); reading block by block", cid, path, e)
            return False

    def stream_range(
        self, address: str | CID | IPFSPath | UnixFSFile, offset: int, length: int, *, size: int | None = None
    ) -> Iterator[bytes | memoryview] | None:
        """The bytes ``[offset, offset + length)`` of a file (an address, or a
        :class:`~torch_ipfs.unixfs.reader.UnixFSFile` already open) from **one** CAR request, as
        they arrive (each block verified, and cached for later reads), or None when that
        would not pay: no gateway-only read order (see :meth:`warm_car`), a range under
        :data:`STREAM_MIN_BYTES`, or its first block already cached (reading the cache is
        faster than the network).

        For a span nothing has prefetched (a DataLoader worker's first): its blocks come
        at the gateway's pace, one request instead of one per block, fetched by a thread
        at most :data:`STREAM_AHEAD_BLOCKS` blocks ahead of the reader. When the CAR
        fails midway, the rest comes block by block with the sources' retries
        (``GatewaySource.fetch_car``); what cannot be had raises. A fork stops the thread
        first (it holds a connection); the reader then goes on block by block.

        Given a CID whose root block is held nowhere here and the file's ``size`` (a
        shard table's), the root is not fetched first: it comes as the stream's first
        block, one round trip less. The range is clamped to ``size``; the walk checks the
        real DAG (a caller that trusts ``size`` for more should compare it with the file's
        once the stream has begun: the root is cached then).
        """
        route = self._car_route()
        if route is None or length < STREAM_MIN_BYTES:
            return None
        cache, gateway = route
        held = isinstance(address, CID) and (cache.holds(address) or self.store.has(address))
        if size is not None and isinstance(address, CID) and not held:
            lo = min(offset, size)
            hi = min(size, lo + length)
            if hi - lo < STREAM_MIN_BYTES:
                return None
            return _RangeStream(cache, gateway, self.source).read(address, lo, hi)
        from torch_ipfs.unixfs.reader import UnixFSFile

        # a file the caller holds already is not opened again (its root decoded again)
        f = address if isinstance(address, UnixFSFile) else self.file(address)
        lo = min(offset, f.size)
        hi = min(f.size, lo + length)
        if hi - lo < STREAM_MIN_BYTES:
            return None
        first = f.first_block_of(lo, hi - lo)
        if first is None or cache.holds(first):
            return None
        return _RangeStream(cache, gateway, self.source).read(f.cid, lo, hi)

    def warm_paths(
        self,
        root: CID | str,
        paths: Sequence[str],
        *,
        max_bytes: int | None = None,
        more: Sequence[tuple[str, Scope, int | None]] = (),
    ) -> int:
        """:meth:`warm_car` for several paths below ``root`` at once, in parallel (one
        round trip for all of them), each capped at ``max_bytes``; ``more`` adds requests
        of another scope and cap, as ``(path, scope, max_bytes)``. Returns how many
        requests delivered all they asked for. Paths the gateway does not have cost
        nothing but their parallel request."""
        requests: list[tuple[str, Scope, int | None]] = [(p, "entity", max_bytes) for p in paths]
        requests += more
        if self._car_route() is None or not requests:
            return 0

        def warm(request: tuple[str, Scope, int | None]) -> bool:
            path, scope, cap = request
            return self.warm_car(root, path, max_bytes=cap, scope=scope)

        if len(requests) == 1:
            return int(warm(requests[0]))
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(requests), thread_name_prefix="torch-ipfs-open") as pool:
            return sum(pool.map(warm, requests))

    def cat(self, address: str | CID | IPFSPath, offset: int = 0, length: int | None = None) -> bytes:
        """The bytes of a file (or a byte range of it), every block verified."""
        f = self.file(address)
        if length is None:
            length = max(0, f.size - offset)
        return f.read_range(offset, length)

    def open(self, address: str | CID | IPFSPath) -> BinaryIO:
        """A seekable, read-only binary file object over a UnixFS file."""
        return self.file(address).open()

    def ls(self, address: str | CID | IPFSPath, *, resolve_types: bool = True):
        """Entries of a directory (plain or HAMT-sharded). ``resolve_types=False`` does
        not fetch each child to tell files from directories (dag-pb children are then
        ``"unknown"``): the directory's own blocks only."""
        from torch_ipfs.unixfs.reader import ls

        path = parse_address(address)
        return ls(self._source_for(path), self.resolve(path), resolve_types=resolve_types)

    def stat(self, address: str | CID | IPFSPath):
        """Type, size and block count of the node at an address."""
        from torch_ipfs.unixfs.reader import stat

        path = parse_address(address)
        return stat(self._source_for(path), self.resolve(path))

    def get(
        self, address: str | CID | IPFSPath, target: str | os.PathLike[str], *, symlinks: bool = False
    ) -> None:
        """Write the file or directory tree at ``address`` to ``target`` (like ``ipfs get``).

        The DAG is untrusted, so extraction never leaves ``target``:

        - entry names that are empty, ``.``/``..``, or contain ``/`` or NUL, and two
          entries with the same name in one directory, are refused;
        - nothing below ``target`` is reached through a path: every file and directory is
          created relative to its verified parent directory's descriptor with
          ``O_NOFOLLOW``, so an existing symlink is never followed (it is an error, or,
          for a file, replaced by the new file);
        - each file is written into a private temporary directory beside ``target``
          (created ``O_EXCL``, mode 0700) and renamed into place once complete and
          verified: a failed read leaves no partial file, and no ``name.part`` beside it;
        - symlinks are written as links only with ``symlinks=True`` (never followed while
          writing); otherwise a symlink entry is refused.

        A refused entry raises :class:`~torch_ipfs.errors.UnsafePathError` naming its
        path; the files written before it stay (each complete).
        """
        from torch_ipfs.unixfs.reader import UnixFSFile, stat

        path = parse_address(address)
        source = self._source_for(path)
        root = self.resolve(path)
        dest = Path(target)
        kind = stat(source, root).type
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _Extraction(dest.parent, symlinks) as out:
            if kind == "dir":
                dest.mkdir(exist_ok=True)
                top = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    out.tree(source, root, top, str(dest))
                finally:
                    os.close(top)
                return
            parent = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                if kind == "symlink":
                    out.symlink(parent, dest.name, _symlink_target(root, source.get(root)), str(dest))
                elif kind == "file":
                    out.file(parent, dest.name, UnixFSFile(source, root).iter_chunks(), str(dest))
                else:
                    raise UnsafePathError(str(dest), f"{root} is neither a file, a directory nor a symlink")
            finally:
                os.close(parent)

    def block_get(self, cid: str | CID) -> bytes:
        """One verified block."""
        return self.source.get(CID.decode(cid))

    # -- writing ----------------------------------------------------------------------

    def add_all(
        self,
        target: str | os.PathLike[str] | bytes | BinaryIO,
        *,
        pin: bool = True,
        only_hash: bool = False,
        wrap: bool = False,
        **options: object,
    ) -> list:
        """Import a file, directory, bytes or stream; return every
        :class:`~torch_ipfs.unixfs.importer.AddedEntry` in the order ``ipfs add -r`` prints them
        (the root last). ``options`` are :class:`~torch_ipfs.unixfs.importer.ImportOptions` fields."""
        from torch_ipfs.sources.base import NullStore
        from torch_ipfs.unixfs.importer import ImportOptions, import_bytes, import_file, import_path

        opts = ImportOptions(**options)  # type: ignore[arg-type]
        store = NullStore() if only_hash else self.store
        with self.store.writer():  # holds off a concurrent gc until the root is pinned
            if isinstance(target, (bytes, bytearray, memoryview)):
                entries = [import_bytes(bytes(target), store, opts)]
            elif isinstance(target, (str, os.PathLike)):
                entries = list(import_path(target, store, opts, wrap=wrap))
            else:
                entries = [import_file(target, store, opts)]
            if pin and not only_hash:
                self.store.pin(entries[-1].cid, check=False)
        return entries

    def add(self, target: str | os.PathLike[str] | bytes | BinaryIO, **kwargs: object) -> CID:
        """Import and pin; return the root CID (same CID as ``ipfs add`` with the same options)."""
        return self.add_all(target, **kwargs)[-1].cid  # type: ignore[arg-type]

    # -- CAR and pins -------------------------------------------------------------------

    def export_car(self, address: str | CID | IPFSPath, out: BinaryIO | str | os.PathLike[str]) -> int:
        """Write the whole DAG under an address as a CARv1 (DFS order, no duplicates)."""
        from torch_ipfs.car import export_car

        path = parse_address(address)
        root = self.resolve(path)
        if isinstance(out, (str, os.PathLike)):
            source = self._source_for(path)
            return _write_atomically(Path(out), lambda fh: export_car(source, root, fh))
        return export_car(self._source_for(path), root, out)

    def import_car(self, car: BinaryIO | str | os.PathLike[str] | bytes, *, pin: bool = True) -> list[CID]:
        """Import a CAR (v1 or v2) into the embedded store, verifying every block; pin its roots."""
        from torch_ipfs.car import import_car

        with self.store.writer():
            if isinstance(car, (bytes, bytearray)):
                roots = import_car(io.BytesIO(car), self.store)
            elif isinstance(car, (str, os.PathLike)):
                with open(car, "rb") as fh:
                    roots = import_car(fh, self.store)
            else:
                roots = import_car(car, self.store)
            if pin:
                for root in roots:
                    self.store.pin(root, check=False)
        return roots

    def close(self) -> None:
        self.source.close()
        for chain in self._pasted.values():
            chain.sources[-1].close()  # the pasted gateway; the rest is self.source
        self._pasted = {}

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Prefetcher:
    """One daemon thread running warm-up jobs in the order submitted.

    A daemon, so a DataLoader worker or a script never waits at exit for a prefetch it
    no longer needs (the cache writes each block atomically, so an interrupted job
    leaves nothing half-written).
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._jobs: queue.SimpleQueue[tuple[Callable[[], int], str, Future[int]]] = queue.SimpleQueue()
        self._pending: set[Future[int]] = set()
        _PREFETCHERS.add(self)
        threading.Thread(target=self._run, name="torch-ipfs-prefetch", daemon=True).start()

    def submit(self, job: Callable[[], int], what: str) -> Future[int]:
        future: Future[int] = Future()
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        self._jobs.put((job, what, future))
        return future

    def wait_idle(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for every submitted job to end."""
        wait_futures(list(self._pending), timeout=timeout)

    def _run(self) -> None:
        while True:
            job, what, future = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except Exception as e:  # kept in the future; the real read raises it
                log.debug("prefetch of %s failed: %s", what, e)
                future.set_exception(e)


_PREFETCHERS: weakref.WeakSet[_Prefetcher] = weakref.WeakSet()

#: Ranges shorter than this are read block by block (see :meth:`Client.stream_range`).
STREAM_MIN_BYTES = 1024 * 1024
#: Blocks a streamed range's thread holds ahead of its reader (memory: this many blocks).
STREAM_AHEAD_BLOCKS = 16
_END = object()


class _RangeStream:
    """:meth:`Client.stream_range`'s stream: a thread reads the CAR response (verified
    blocks, each cached) into a bounded queue; the reader walks them into bytes, and
    fetches block by block whatever the response did not bring (it stopped early)."""

    def __init__(self, cache: CachedSource, gateway: GatewaySource, source: BlockSource) -> None:
        self.cache, self.gateway, self.source = cache, gateway, source
        self.pid = os.getpid()
        self.stop = threading.Event()
        self.blocks: queue.Queue = queue.Queue(STREAM_AHEAD_BLOCKS)
        self.thread: threading.Thread | None = None

    def read(self, root: CID, lo: int, hi: int) -> Iterator[bytes | memoryview]:
        from torch_ipfs.unixfs.streamed import range_from_blocks

        self.thread = threading.Thread(
            target=self._fetch, args=(root, lo, hi), name="torch-ipfs-stream", daemon=True
        )
        _STREAMS.add(self)
        self.thread.start()
        try:
            yield from range_from_blocks(self._arrived(), root, lo, hi, self.source.get)
        finally:
            self.halt(5.0)

    def halt(self, timeout: float) -> None:
        """Stop the thread (a reader that stopped early, or a fork coming)."""
        self.stop.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def _put(self, item: object) -> bool:
        return put_until_stopped(self.blocks, item, self.stop)

    def _fetch(self, root: CID, lo: int, hi: int) -> None:
        response = self.gateway.fetch_car(root, dag_scope="entity", entity_bytes=(lo, hi - 1))
        try:
            for cid, block in response:
                if not cid.is_identity:
                    self.cache.put_verified(cid, block)
                if not self._put((cid, block)):
                    return
            self._put(_END)
        except BaseException as e:  # handed to the reader, who raises it
            self._put(e)
        finally:
            close = getattr(response, "close", None)
            if close is not None:
                close()  # stopped early: the connection goes back to the pool

    def _arrived(self) -> Iterator[tuple[CID, bytes]]:
        while True:
            try:
                item = self.blocks.get(timeout=0.1)
            except queue.Empty:
                if self.stop.is_set() and not (self.thread and self.thread.is_alive()):
                    return  # halted (a fork): the walk fetches the rest block by block
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]


_STREAMS: weakref.WeakSet[_RangeStream] = weakref.WeakSet()


#: How long a fork waits for this process's warm-up jobs (see :func:`_quiesce_before_fork`).
FORK_WAIT_S = 30.0


def _quiesce_before_fork() -> None:
    # A fork copies whatever locks a running warm-up job holds at that instant (the HTTP
    # connection pool's, the cache's single-flight locks) into the child, held by a
    # thread that does not exist there: a DataLoader worker then hangs on them. Let the
    # jobs started in this process (the open's warm-up) finish first; they are short.
    for prefetcher in list(_PREFETCHERS):
        if prefetcher.pid == os.getpid():
            prefetcher.wait_idle(FORK_WAIT_S)
    # A streamed range's thread holds a gateway connection: stop it (its reader fetches
    # the rest of the range block by block).
    for stream in list(_STREAMS):
        if stream.pid == os.getpid():
            stream.halt(FORK_WAIT_S)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_quiesce_before_fork)


def _write_atomically(dest: Path, write: Callable[[BinaryIO], T]) -> T:
    """Run ``write(fh)`` on a fresh temporary file beside ``dest`` (random name, created
    ``O_EXCL``, so never an existing file or link) and rename it to ``dest`` when it
    returns; on any error the partial file is removed. Returns what ``write`` returned."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            result = write(fh)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return result


def _symlink_target(cid: CID, block: bytes) -> str:
    from torch_ipfs.dagpb import UnixFSData, decode_node

    data = UnixFSData.decode(decode_node(block).data or b"").data or b""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UnixFSFormatError(f"{cid}: symlink target is not UTF-8") from None


def _check_name(name: str, where: str) -> None:
    """Refuse a directory entry name that could leave its directory."""
    if name in ("", ".", ".."):
        raise UnsafePathError(f"{where}/{name}", f"entry name {name!r} is not a file name")
    if "/" in name or "\0" in name:
        raise UnsafePathError(f"{where}/{name}", f"entry name {name!r} contains '/' or NUL")


#: errno values that mean "the tree on disk is not what the DAG says" (a symlink where a
#: directory goes, a directory where a file goes, ...): refused, never worked around.
_UNSAFE_ERRNOS = {
    errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOTEMPTY, errno.ENAMETOOLONG, errno.EMLINK
}

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class _Extraction:
    """The file system side of :meth:`Client.get`: a private temporary directory in
    ``parent`` and operations relative to directory descriptors, none following links."""

    def __init__(self, parent: Path, symlinks: bool) -> None:
        self.parent = parent
        self.symlinks = symlinks
        self.tmp = ""
        self.tmp_fd = -1
        self._count = 0

    def __enter__(self) -> _Extraction:
        self.tmp = tempfile.mkdtemp(prefix=".torch-ipfs-get-", dir=self.parent)  # 0700, O_EXCL
        self.tmp_fd = os.open(self.tmp, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in os.listdir(self.tmp_fd):  # only after a failure
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=self.tmp_fd)
        os.close(self.tmp_fd)
        with contextlib.suppress(OSError):
            os.rmdir(self.tmp)

    def _temp_name(self) -> str:
        self._count += 1
        return f"{self._count}"

    def _into_place(self, tmp_name: str, dir_fd: int, name: str, where: str) -> None:
        try:
            os.rename(tmp_name, name, src_dir_fd=self.tmp_fd, dst_dir_fd=dir_fd)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name, dir_fd=self.tmp_fd)
            if e.errno in _UNSAFE_ERRNOS:
                raise UnsafePathError(where, f"cannot put it in place ({e.strerror})") from e
            raise

    def file(self, dir_fd: int, name: str, pieces: Iterable[bytes], where: str) -> None:
        """Write ``pieces`` to a fresh temporary file, then rename it to ``dir_fd/name``
        (replacing a file or symlink there, never writing through one)."""
        tmp_name = self._temp_name()
        fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644, dir_fd=self.tmp_fd)
        try:
            with os.fdopen(fd, "wb") as fh:
                for piece in pieces:
                    fh.write(piece)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name, dir_fd=self.tmp_fd)
            raise
        self._into_place(tmp_name, dir_fd, name, where)

    def symlink(self, dir_fd: int, name: str, target: str, where: str) -> None:
        if not self.symlinks:
            raise UnsafePathError(where, f"is a symlink (to {target!r}); pass symlinks=True to write links")
        if "\0" in target:
            raise UnsafePathError(where, f"symlink target {target!r} contains NUL")
        tmp_name = self._temp_name()
        os.symlink(target, tmp_name, dir_fd=self.tmp_fd)
        self._into_place(tmp_name, dir_fd, name, where)

    def subdir(self, dir_fd: int, name: str, where: str) -> int:
        """Create (or reuse a real directory) ``dir_fd/name``; return its descriptor."""
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=dir_fd)
            return os.open(name, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW, dir_fd=dir_fd)
        except OSError as e:
            if e.errno in _UNSAFE_ERRNOS:
                raise UnsafePathError(where, f"exists and is not a directory ({e.strerror})") from e
            raise

    def tree(self, source: BlockSource, root: CID, top_fd: int, top: str) -> None:
        """Write the directory ``root`` into ``top_fd``. Iterative: a stack of directories
        still to write, each opened from its parent's descriptor when its turn comes (a
        parent's descriptor stays open while children of it wait: at most one per level
        of the current path)."""
        from torch_ipfs.unixfs.reader import UnixFSFile, ls
        from torch_ipfs.unixfs.walk import MAX_DAG_DEPTH

        # (cid, the parent directory, entry name, path for messages, depth); the root's
        # parent is None: it is filled through top_fd itself.
        stack: list[tuple[CID, _DirHandle | None, str, str, int]] = [(root, None, "", top, 0)]
        try:
            while stack:
                cid, parent, name, where, depth = stack.pop()
                if depth > MAX_DAG_DEPTH:
                    if parent is not None:
                        parent.release()
                    raise UnsafePathError(where, f"more than {MAX_DAG_DEPTH} nested directories")
                if parent is None:
                    here_dir = _DirHandle(os.dup(top_fd))
                else:
                    try:
                        here_dir = _DirHandle(self.subdir(parent.fd, name, where))
                    finally:
                        parent.release()
                try:
                    entries = ls(source, cid)
                    seen: set[str] = set()
                    for entry in entries:
                        _check_name(entry.name, where)
                        if entry.name in seen:
                            raise UnsafePathError(f"{where}/{entry.name}", "a second entry with this name")
                        seen.add(entry.name)
                    subdirs = []
                    for entry in entries:
                        path = f"{where}/{entry.name}"
                        if entry.type == "dir":
                            subdirs.append((entry.cid, here_dir, entry.name, path, depth + 1))
                        elif entry.type == "file":
                            pieces = UnixFSFile(source, entry.cid).iter_chunks()
                            self.file(here_dir.fd, entry.name, pieces, path)
                        elif entry.type == "symlink":
                            block = source.get(entry.cid)
                            self.symlink(here_dir.fd, entry.name, _symlink_target(entry.cid, block), path)
                        else:
                            raise UnsafePathError(path, f"{entry.cid} is not a file, directory or symlink")
                    here_dir.refs += len(subdirs)  # released as each is opened
                    stack.extend(reversed(subdirs))
                finally:
                    here_dir.release()
        finally:
            for _, waiting, _, _, _ in stack:
                if waiting is not None:
                    waiting.release()


class _DirHandle:
    """A directory descriptor shared by the entries still to be created in it."""

    __slots__ = ("fd", "refs")

    def __init__(self, fd: int) -> None:
        self.fd, self.refs = fd, 1

    def release(self) -> None:
        self.refs -= 1
        if self.refs == 0:
            os.close(self.fd)


_ENV_VARS = (
    config.ENV_HOME,
    config.ENV_API,
    config.ENV_GATEWAYS,
    config.ENV_CACHE_BYTES,
    config.ENV_CONNECT_TIMEOUT,
    config.ENV_READ_TIMEOUT,
    config.ENV_RETRY_BUDGET,
    config.ENV_KUBO_OFFLINE,
)
_default: tuple[tuple[object, ...], Client] | None = None


def default_client() -> Client:
    """The process-wide client built from the environment.

    Re-created after a fork (DataLoader workers), since HTTP connection pools and thread
    pools do not survive one, and when one of the ``TORCH_IPFS_*`` variables changed
    (a test or a notebook pointing ``TORCH_IPFS_HOME`` elsewhere must not keep reading
    the old store).
    """
    global _default
    key = (os.getpid(), *(os.environ.get(name) for name in _ENV_VARS))
    if _default is None or _default[0] != key:
        _default = (key, Client())
    return _default[1]

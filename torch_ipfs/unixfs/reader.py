"""Reading UnixFS: files by byte range, directories (plain and HAMT), paths, stat.

A UnixFS file is a tree: each dag-pb node holds some bytes of its own (``Data.Data``)
followed by its children, and ``blocksizes[i]`` says how many file bytes live under
link ``i``. That is what lets :meth:`UnixFSFile.read_range` descend straight to the
leaves covering a range and never fetch a skipped subtree. Leaves are raw blocks
(``bafkrei…``) or dag-pb ``File`` nodes with no links.

Every block comes through ``source.get`` / ``source.get_many``, which verify it against
its CID; on top of that each node is checked against what its parent promised (types,
sizes), so a well-hashed but inconsistent DAG is a :class:`UnixFSFormatError`, never
wrong bytes. A missing block is a :class:`BlockNotFoundError`, never a short read.
"""

from __future__ import annotations

import bisect
import io
import itertools
import logging
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from typing import Literal

from torch_ipfs.cid import CID, DAG_PB, RAW
from torch_ipfs.dagpb import DataType
from torch_ipfs.errors import UnixFSFormatError
from torch_ipfs.unixfs.blockcache import default_cache, stored_data_offset
from torch_ipfs.unixfs.walk import (
    FileNode,
    _decode_leaf,
    _decode_unixfs,
    check_child_size,
    check_depth,
    decode_file_node,
    directory_links,
    node_kind,
    overlapping_children,
    resolve_segments,
)

__all__ = [
    "DirEntry",
    "FileNode",
    "NodeStat",
    "UnixFSFile",
    "decode_file_node",
    "ls",
    "resolve_path",
    "stat",
]

log = logging.getLogger(__name__)

EntryType = Literal["file", "dir", "symlink", "unknown"]

#: Blocks requested ahead of the reader while streaming (bounded memory: at most about
#: this many blocks are held, plus the inner nodes on the current path).
DEFAULT_PREFETCH = 16
#: A stream's first request asks for this many blocks; from a remote source the window
#: then grows by one block per block read, and doubles whenever the reader had to wait
#: (from a local one it doubles at each block read), up to ``prefetch``
#: (see :meth:`UnixFSFile._pieces`): the first bytes come in one round trip, without a
#: whole window's fetching, hashing and caching competing with the reader for the CPU.
RAMP_START = 4
#: Worker threads fetching (and hashing: hashlib releases the GIL) ahead while streaming.
PREFETCH_THREADS = 4
#: Reads at least this long are fetched like a stream (blocks in parallel, ahead of use).
STREAM_THRESHOLD = 1024 * 1024
#: A leaf first read for at most 1/SPOT_WORTH of its bytes gets spot-check digests when
#: evicted (see blockcache): later small reads of it then hash a few KB, not the leaf.
#: At 1/4 a 40 KB JPEG in a 256 KiB leaf qualifies: its spot read hashes ~44 KB where a
#: re-read would hash 256 KiB (shuffled JPEG epochs at 2 workers ran 5-15% faster than at 1/8).
SPOT_WORTH = 4


# -- the prefetch threads ----------------------------------------------------------------
# One small pool per process, shared by every stream: starting threads for each
# iter_chunks call would cost more than reading a small file. Its tasks only call
# source.get_many (never wait on each other), so sharing it cannot deadlock.

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _prefetch_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(PREFETCH_THREADS, thread_name_prefix="unixfs-prefetch")
        return _pool


def cpu_bound_parts() -> int:
    """How many parallel ``get_many`` calls a batch of a local source is split into: one
    per CPU this process may run on, at most ``PREFETCH_THREADS``. A local block costs
    CPU only (a page-cache read and its SHA-256), so more parts than cores only preempt
    the reader: on 2 cores, 4 parts made a loaded machine's decoding loop about 8% slower
    than 2, and 1 part left raw JPEG reads waiting on one hashing thread."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(PREFETCH_THREADS, cpus))


def _forget_pool_after_fork() -> None:
    # A forked child (DataLoader worker) has none of its parent's threads: start afresh.
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


# -- file nodes: decoded and checked in torch_ipfs.unixfs.walk ------------------------------


@dataclass(slots=True)
class _Span:
    """A subtree still to read: ``cid`` covers file bytes ``[start, start + size)``."""

    cid: CID
    start: int
    size: int
    parent: CID
    depth: int = 1
    future: Future[FileNode] | None = None
    buffer: bytearray | None = None  # the pooled buffer the node's bytes live in


class _BufferPool:
    """Block buffers recycled within one stream (filled by a source's ``get_into``).

    A fresh ``bytes`` per block means fresh memory per block, which the allocator often
    takes from (and gives back to) the OS, page-faulting it in every time: as costly as
    reading the block. A stream needs only about ``prefetch`` buffers at once.
    """

    def __init__(self) -> None:
        self._free: list[bytearray] = []
        self._lock = threading.Lock()

    def take(self, size: int) -> bytearray:
        with self._lock:
            while self._free:
                buf = self._free.pop()
                if len(buf) >= size:
                    return buf
        return bytearray(size)

    def give(self, buf: bytearray) -> None:
        with self._lock:
            self._free.append(buf)


class _LRU:
    """A small LRU map bounded by entry count and total bytes."""

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.max_items, self.max_bytes = max_items, max_bytes
        self._items: OrderedDict[bytes, FileNode] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: bytes) -> FileNode | None:
        with self._lock:
            node = self._items.get(key)
            if node is not None:
                self._items.move_to_end(key)
            return node

    def put(self, key: bytes, node: FileNode, cost: int) -> None:
        if cost > self.max_bytes or self.max_items <= 0:
            return
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return
            self._items[key] = node
            self._bytes += cost
            while len(self._items) > self.max_items or self._bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= _node_cost(old)


def _node_cost(node: FileNode) -> int:
    return len(node.data) + 48 * len(node.links)


# -- files -----------------------------------------------------------------------------


class UnixFSFile:
    """Random access to a UnixFS file (raw leaf, single dag-pb leaf or a DAG of any depth).

    Args:
        source: a :class:`~torch_ipfs.sources.base.BlockSource` (blocks come back verified).
        cid: the file's root CID.
        prefetch: how many blocks :meth:`iter_chunks` keeps requested ahead of the reader
            (default: the source's ``prefetch_window``: 16 locally, more for remote sources).
        leaf_cache: how many recently read leaves :meth:`read_range` keeps decoded (so many
            small reads inside one 256 KiB leaf fetch and hash it once); 0 disables.

    Memory stays bounded: one root node, an LRU of up to 64 inner nodes, ``leaf_cache``
    leaves, and while streaming about ``prefetch`` blocks.
    """

    def __init__(
        self,
        source,
        cid: CID | str,
        *,
        prefetch: int | None = None,
        leaf_cache: int = 4,
    ) -> None:
        self.source = source
        self.cid = CID.decode(cid)
        if prefetch is None:  # remote sources ask for a deeper window to hide latency
            prefetch = getattr(source, "prefetch_window", DEFAULT_PREFETCH)
        self.prefetch = max(1, prefetch)
        self._root = decode_file_node(self.cid, source.get(self.cid), root=True)
        self._inner = _LRU(64, 8 * 1024 * 1024)
        self._leaves = _LRU(leaf_cache, max(leaf_cache, 1) * 2 * 1024 * 1024 + 1)
        #: the process's verified-block cache (leaves of small reads; shared by every file)
        self._shared = default_cache()
        #: reads part of a stored block back (unverified) for the cache's spot checks
        self._read_stored = source.read_stored if getattr(source, "reads_stored", False) else None
        #: the root's children as flat lists, made on the first small read (see leaf_bytes)
        self._table: tuple[list[int], list[int], list[bytes | None]] | None = None

    @property
    def size(self) -> int:
        """The file's length in bytes."""
        return self._root.size

    def __len__(self) -> int:
        return self._root.size

    def first_block_of(self, offset: int, length: int) -> CID | None:
        """The root's first child covering ``[offset, offset + length)`` (None for a
        one-block file or an empty range): e.g. to ask a cache whether the range is in."""
        children = overlapping_children(self._root, 0, offset, offset + length)
        return children[0][0] if children else None

    def __repr__(self) -> str:
        return f"UnixFSFile({str(self.cid)!r}, size={self.size})"

    # -- public reads --------------------------------------------------------------

    def read_range(self, offset: int, length: int) -> bytes:
        """Return ``length`` bytes from ``offset`` (fewer at the end of the file, ``b""``
        past it), fetching only the blocks that cover the range."""
        start, end = self._clamp(offset, length)
        if start >= end:
            return b""
        if end - start < STREAM_THRESHOLD:
            small = self._read_one_leaf(start, end)
            if small is not None:
                return small
        parts = list(self._pieces(start, end, background=end - start >= STREAM_THRESHOLD))
        if len(parts) == 1 and isinstance(parts[0], bytes):
            return parts[0]
        return b"".join(parts)

    def read_into(self, offset: int, buffer) -> int:
        """Fill ``buffer`` (any writable bytes-like object) with the bytes from ``offset``;
        return how many were written (fewer at the end of the file). Copies each block's
        bytes once, straight into ``buffer``."""
        view = memoryview(buffer).cast("B")
        start, end = self._clamp(offset, len(view))
        if start >= end:
            return 0
        large = end - start >= STREAM_THRESHOLD
        return _fill(view, self._pieces(start, end, background=large, recycle=large))

    def iter_chunks(self, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Yield the bytes of ``[offset, offset + length)`` (to the end if ``length`` is
        None) as they arrive, one piece per leaf, keeping up to ``prefetch`` blocks in
        flight through ``source.get_many`` (which remote sources run in parallel)."""
        start, end = self._clamp(offset, self.size if length is None else length)
        if start >= end:
            return
        for piece in self._pieces(start, end, background=True, recycle=True):
            # pieces may be memoryviews into recycled buffers: hand out plain bytes
            yield piece if isinstance(piece, bytes) else bytes(piece)

    def warm(self, offset: int = 0, length: int | None = None) -> int:
        """Fetch (and verify) every block covering ``[offset, offset + length)`` without
        keeping the bytes: a read-through cache in front of a remote source then holds
        them. Blocks are requested ``prefetch`` at a time from the calling thread; returns
        the number of file bytes covered."""
        start, end = self._clamp(offset, self.size if length is None else length)
        covered = 0
        if start < end:
            for piece in self._pieces(start, end, background=False):
                covered += len(piece)
        return covered

    def read(self) -> bytes:
        """The whole file."""
        return self.read_range(0, self.size)

    def open(self, buffer_size: int = 256 * 1024) -> io.BufferedReader:
        """A seekable, read-only binary file object over this file."""
        return io.BufferedReader(UnixFSRawIO(self), buffer_size=buffer_size)

    # -- the walk --------------------------------------------------------------------

    def leaf_bytes(self, lo: int, hi: int) -> tuple[bytes | memoryview, int] | None:
        """``(data, start)``: the verified bytes of the leaf holding all of ``[lo, hi)``
        and that leaf's file offset (slice ``data[lo - start : hi - start]``), when the
        leaf is the root itself or one of the root's children (a range across two
        children: their parts joined); None otherwise (a deeper tree, a root with bytes
        of its own): read it with :meth:`read_range`. The caller keeps ``0 <= lo < hi <= size``.

        The map-style hot path: a bisect over the root's child offsets and one lookup in
        the verified-block cache. A child not cached is fetched through ``source.get``
        (verified against its CID) and checked against the size its parent promised,
        exactly as :meth:`read_range` does; a cached one is checked against that size
        too (the cache is keyed by multihash and shared by every file of the process).
        """
        root = self._root
        if not root.links:
            return root.data, 0
        table = self._table
        if table is None:
            table = self._table = self._child_table()
        starts, ends, keys = table
        k = bisect.bisect_right(starts, lo) - 1
        if k < 0:
            return None
        if hi > ends[k]:
            return self._across_children(k, lo, hi)
        if keys[k] is None:  # not a plain leaf: the general walk reads it
            return None
        got = self._leaf_slice(k, lo - starts[k], hi - starts[k])
        return None if got is None else (got, lo)

    def _leaf_slice(self, k: int, a: int, b: int) -> bytes | memoryview | None:
        """Bytes ``[a, b)`` of the root's child ``k``, a plain leaf: from the shared cache,
        by its spot-check digests when it was evicted (or a sibling process verified it),
        else fetched, verified and cached. None when the child is an inner node."""
        starts, ends, _ = self._table  # type: ignore[misc]
        node = self._cached_child(k)
        if node is None:
            size = ends[k] - starts[k]
            if self._read_stored is not None:
                # its digests may prove the few KB we need, read back from the store
                spot = self._shared.spot_read(self._root.links[k], size, a, b, self._read_stored)
                if spot is not None:
                    return spot
            # digests pay off when reads are much smaller than the leaf (a re-read then
            # checks a few KB instead of hashing 256 KiB); for large samples they would not
            node = self._load_child(k, spot=(b - a) * SPOT_WORTH <= size)
            if node is None:
                return None
        return memoryview(node.data)[a:b]

    def _cached_child(self, k: int) -> FileNode | None:
        """Root child ``k`` from the shared cache when it is there as the leaf the root
        promises (a leaf of exactly its size: the cache is shared by every file), else None."""
        starts, ends, keys = self._table  # type: ignore[misc]
        node = self._shared.get(keys[k])  # type: ignore[arg-type]
        if node is None or node.links or node.size != ends[k] - starts[k]:
            return None
        return node

    def _across_children(self, k: int, lo: int, hi: int) -> tuple[bytes, int] | None:
        """:meth:`leaf_bytes` of a range from child ``k`` into the next ones (a sample
        across a leaf boundary): the pieces joined, each as :meth:`_leaf_slice` reads it."""
        starts, ends, keys = self._table  # type: ignore[misc]
        if hi - lo >= STREAM_THRESHOLD:
            return None
        parts = []
        while True:
            if k >= len(keys) or keys[k] is None:
                return None
            part = self._leaf_slice(k, max(lo, starts[k]) - starts[k], min(hi, ends[k]) - starts[k])
            if part is None:
                return None
            parts.append(part)
            if hi <= ends[k]:
                return b"".join(parts), lo
            k += 1

    def _child_table(self) -> tuple[list[int], list[int], list[bytes | None]]:
        root = self._root
        if root.data:  # bytes of its own before the children: the general walk reads it
            return [], [], []
        starts = list(root.offsets)
        ends = [a + n for a, n in zip(root.offsets, root.sizes)]
        keys: list[bytes | None] = [None if c.is_identity else c.multihash for c in root.links]
        return starts, ends, keys

    def _load_child(self, k: int, spot: bool = False) -> FileNode | None:
        """Fetch (verified), decode and size-check the root's child ``k``; cache it when it
        is a leaf (with ``spot``, spot-checkable once evicted, when the source can read it
        back). None when it is an inner node (not for :meth:`leaf_bytes`)."""
        root = self._root
        cid = root.links[k]
        check_depth(root.cid, 1)
        block = self.source.get(cid)
        child = decode_file_node(cid, block)
        check_child_size(child.cid, child.size, root.cid, root.sizes[k])
        if child.links:
            # a deeper tree: this child's ranges go the general way from now on (which
            # keeps inner nodes in its own LRU), never fetched again to learn the same
            self._inner.put(cid.multihash, child, _node_cost(child))
            if self._table is not None and k < len(self._table[2]):
                self._table[2][k] = None
            return None
        spot = spot and self._read_stored is not None
        offset = stored_data_offset(cid, block, child.data) if spot else None
        self._shared.put(cid.multihash, child, offset)
        return child

    def _read_one_leaf(self, lo: int, hi: int) -> bytes | None:
        """``[lo, hi)`` when it lies inside one leaf: straight down the tree, no frontier
        or futures (a map-style sample read). None when it spans several children (or a
        node with bytes of its own): the general walk reads it.

        The same checks as the walk: depth, each child's size against its parent's
        promise; every block fetched comes verified from ``source.get``, and is kept in
        the process's verified-block cache (:mod:`torch_ipfs.unixfs.blockcache`)."""
        node, start, depth = self._root, 0, 0
        while node.links:
            if node.data:
                return None
            children = overlapping_children(node, start, lo, hi)
            if len(children) != 1:
                return None
            depth += 1
            check_depth(node.cid, depth)
            cid, start, size = children[0]
            child = self._cached(cid)
            if child is None:
                child = decode_file_node(cid, self.source.get(cid))
                if child.links:
                    self._inner.put(cid.multihash, child, _node_cost(child))
                else:
                    self._shared.put(cid.multihash, child)
            check_child_size(child.cid, child.size, node.cid, size)
            node = child
        data = node.data
        return bytes(memoryview(data)[lo - start : hi - start])

    def _clamp(self, offset: int, length: int) -> tuple[int, int]:
        if offset < 0 or length < 0:
            raise ValueError(f"offset and length must be non-negative, got {offset}, {length}")
        start = min(offset, self.size)
        return start, min(self.size, start + length)

    def _pieces(
        self, lo: int, hi: int, *, background: bool, recycle: bool = False
    ) -> Iterator[bytes | memoryview]:
        """Yield the file bytes of ``[lo, hi)`` in order.

        The frontier holds the subtrees still to read, in file order. Blocks for the
        first ``prefetch`` of them are requested in batches (through ``get_many``, in
        worker threads when ``background``), so fetching overlaps consuming. An inner
        node that arrives is replaced in the frontier by its children that overlap the
        range.

        With ``recycle`` (the caller copies each piece before asking for the next one),
        leaves are read into a few reused buffers when the source supports ``get_into``:
        a yielded memoryview is only valid until the next piece is requested.
        """
        frontier: deque[_Span] = deque()
        yield from self._expand(self._root, 0, lo, hi, frontier, 0)
        if not frontier:
            return
        executor = _prefetch_pool() if background else None
        pool = _BufferPool() if recycle and hasattr(self.source, "get_into") else None
        tasks: deque[Future[None]] = deque()
        ahead = min(self.prefetch, RAMP_START)
        remote = self.source.parallel_get_many
        try:
            first = True
            while frontier:
                self._schedule(frontier, ahead, executor, tasks, pool, keep_leaves=not background)
                span = frontier.popleft()
                stalled = not span.future.done()  # type: ignore[union-attr]
                node = span.future.result()  # type: ignore[union-attr]
                # Slow start from a remote source: one more block ahead per block read,
                # twice as many when the reader had to wait (the window is shorter than a
                # round trip). Blocks the reader does not wait for are not fetched early:
                # fetching them would only take CPU from what it does with the first ones.
                # A local source doubles at once (nothing to wait for; ~5% faster).
                grow = (stalled and not first) or not remote
                ahead = min(self.prefetch, 2 * ahead if grow else ahead + 1)
                first = False
                yield from self._expand(node, span.start, lo, hi, frontier, span.depth)
                if span.buffer is not None:
                    pool.give(span.buffer)  # type: ignore[union-attr]  # the caller has copied it
        finally:
            if tasks:
                # Stopped early (or failed): drop what is queued, tell running fetches to
                # stop at their next block, and wait for them, so nothing of ours still
                # uses the source when this returns.
                for span in frontier:
                    if span.future is not None:
                        span.future.cancel()
                for task in tasks:
                    task.cancel()
                wait_futures(tasks)

    def _expand(
        self, node: FileNode, start: int, lo: int, hi: int, frontier: deque[_Span], depth: int
    ) -> Iterator[bytes | memoryview]:
        """Yield ``node``'s own bytes within range and push its overlapping children to
        the front of the frontier (in order)."""
        data = node.data
        if data and start < hi and start + len(data) > lo:
            a, b = max(lo - start, 0), min(hi - start, len(data))
            yield data if (a == 0 and b == len(data)) else memoryview(data)[a:b]
        if not node.links:
            return
        check_depth(node.cid, depth + 1)
        children = [
            _Span(cid, child_start, size, node.cid, depth + 1)
            for cid, child_start, size in overlapping_children(node, start, lo, hi)
        ]
        frontier.extendleft(reversed(children))

    def _schedule(
        self,
        frontier: deque[_Span],
        ahead: int,
        executor: ThreadPoolExecutor | None,
        tasks: deque[Future[None]],
        pool: _BufferPool | None,
        *,
        keep_leaves: bool,
    ) -> None:
        """Make sure the first ``ahead`` spans of the frontier are requested.

        Refills only when at least half the window is not requested yet, so batches stay
        large enough for a parallel ``get_many`` to pay off; near the end of the frontier
        the window is what is left, so its last blocks are requested ahead of the reader
        too (not once it reaches them). Submitted fetches are appended to ``tasks``.
        """
        window = list(itertools.islice(frontier, ahead))
        todo = [s for s in window if s.future is None]
        if window[0].future is not None and len(todo) < max(1, len(window) // 2):
            return
        batch: list[_Span] = []
        for span in todo:
            cached = self._cached(span.cid)
            span.future = Future()
            if cached is not None:
                self._check_child(cached, span)
                span.future.set_result(cached)
            else:
                batch.append(span)
        if not batch:
            return
        if executor is None:
            self._fetch(batch, keep_leaves, pool)
            return
        while tasks and tasks[0].done():
            tasks.popleft()
        # One get_many per core, so block reads and hashing run in parallel. Spans are
        # dealt round-robin (part k gets k, k+n, ...): the next blocks the reader needs
        # are all being worked on at once, instead of queued behind one part. A source
        # that fetches in parallel itself gets the batch whole: dealt out, its shared
        # first-come pool would start the first call's whole list before the second
        # call's first block, so the blocks needed next would come in the last round.
        parts = 1 if self.source.parallel_get_many else min(cpu_bound_parts(), len(batch))
        for k in range(parts):
            tasks.append(executor.submit(self._fetch, batch[k::parts], keep_leaves, pool))

    def _fetch(self, batch: list[_Span], keep_leaves: bool, pool: _BufferPool | None) -> None:
        """Fetch ``batch`` with one ``get_many`` call (or ``get_into`` calls into ``pool``'s
        buffers), resolving each span's future in turn."""
        i = 0
        if batch[0].future is not None and batch[0].future.cancelled():
            return  # the reader stopped before this batch started
        try:
            if pool is None:
                blocks = self.source.get_many([s.cid for s in batch])
            else:
                blocks = ((s.cid, self.source.get_into(s.cid, pool.take)) for s in batch)
            for cid, block in blocks:
                span = batch[i]
                if cid != span.cid:
                    raise UnixFSFormatError(f"source returned {cid} when asked for {span.cid}")
                if pool is None:
                    node = decode_file_node(cid, block)
                else:
                    node = self._decode_pooled(cid, block, span, pool)
                self._check_child(node, span)
                if node.links:
                    self._inner.put(cid.multihash, node, _node_cost(node))
                elif keep_leaves:
                    self._leaves.put(cid.multihash, node, _node_cost(node))
                if not span.future.set_running_or_notify_cancel():  # type: ignore[union-attr]
                    return
                span.future.set_result(node)  # type: ignore[union-attr]
                i += 1
            if i != len(batch):
                raise UnixFSFormatError(f"source returned {i} of {len(batch)} blocks asked for")
        except BaseException as e:  # hand the error to whoever waits for these spans
            for span in batch[i:]:
                fut = span.future
                if fut is not None and not fut.done() and fut.set_running_or_notify_cancel():
                    fut.set_exception(e)
            if not isinstance(e, Exception):
                raise

    @staticmethod
    def _decode_pooled(cid: CID, view: memoryview, span: _Span, pool: _BufferPool) -> FileNode:
        """Decode a block read into a pooled buffer. A leaf keeps pointing into the buffer
        (``span.buffer``, given back once consumed); an inner node is decoded from a copy
        (it is cached, and small) and its buffer goes back to the pool at once."""
        node = _decode_leaf(cid, view) if cid.codec == DAG_PB else None
        if node is None and cid.codec == RAW:
            node = decode_file_node(cid, view)  # type: ignore[arg-type]
        if node is not None:
            span.buffer = view.obj  # type: ignore[assignment]
            return node
        node = decode_file_node(cid, bytes(view))
        pool.give(view.obj)  # type: ignore[arg-type]
        return node

    def _cached(self, cid: CID) -> FileNode | None:
        if cid.is_identity:
            return decode_file_node(cid, cid.digest)
        key = cid.multihash
        return self._inner.get(key) or self._leaves.get(key) or self._shared.get(key)

    @staticmethod
    def _check_child(node: FileNode, span: _Span) -> None:
        check_child_size(node.cid, node.size, span.parent, span.size)


def _fill(view: memoryview, pieces: Iterator[bytes | memoryview]) -> int:
    """Copy ``pieces`` into ``view`` back to back; return the number of bytes copied."""
    n = 0
    for piece in pieces:
        k = len(piece)
        view[n:n + k] = piece
        n += k
    return n


class UnixFSRawIO(io.RawIOBase):
    """A seekable raw stream over a :class:`UnixFSFile` (wrap it in a BufferedReader).

    Sequential reads are streamed: when a read starts where the previous one ended, a
    prefetching walk (the one :meth:`UnixFSFile.iter_chunks` uses, blocks fetched and
    verified in parallel ahead of the reader) is kept open and later reads are served
    from it, copying each block's bytes once, into the caller's buffer. A seek elsewhere
    closes it (cancelling what it prefetched); reads after a seek go through
    :meth:`UnixFSFile.read_into` until they are sequential again.
    """

    def __init__(self, file: UnixFSFile) -> None:
        super().__init__()
        self.file = file
        self.name = str(file.cid)
        self._pos = 0
        self._last_end = -1  # where the previous read ended
        self._stream: Iterator[bytes | memoryview] | None = None
        self._stream_pos = -1  # file offset of self._pending[0]
        self._pending = memoryview(b"")  # the rest of the stream's current piece

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._checkClosed()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._checkClosed()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.file.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, buffer) -> int:
        self._checkClosed()
        view = memoryview(buffer).cast("B")
        pos = self._pos
        if not view or pos >= self.file.size:
            return 0
        if self._stream is not None and self._stream_pos != pos:
            self._close_stream()  # a seek: stop prefetching from the old place
        if self._stream is None and pos == self._last_end:
            self._open_stream(pos)
        if self._stream is not None:
            try:
                n = self._read_stream(view)
            except BaseException:
                self._close_stream()  # a failed walk is over: never resume it short
                raise
        else:
            n = self.file.read_into(pos, view)
        self._pos = self._last_end = pos + n
        return n

    def readall(self) -> bytes:
        self._checkClosed()
        pos = self._pos
        if pos >= self.file.size:
            return b""
        # The open stream's pieces live in recycled buffers, useless for keeping: start a
        # walk whose pieces can be joined (at most ``prefetch`` blocks are read twice).
        self._close_stream()
        data = b"".join(list(self.file._pieces(pos, self.file.size, background=True)))
        self._pos = self._last_end = pos + len(data)
        return data

    def close(self) -> None:
        self._close_stream()
        super().close()

    def _open_stream(self, pos: int) -> None:
        self._stream = self.file._pieces(pos, self.file.size, background=True, recycle=True)
        self._stream_pos = pos
        self._pending = memoryview(b"")

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        self._pending = memoryview(b"")
        self._stream_pos = -1
        if stream is not None:
            stream.close()  # type: ignore[attr-defined]  # runs the walk's cleanup

    def _read_stream(self, view: memoryview) -> int:
        """Fill ``view`` from the open stream (short only at the end of the file)."""
        n, want = 0, len(view)
        pending = self._pending
        while n < want:
            if not pending:
                try:
                    pending = memoryview(next(self._stream))  # type: ignore[arg-type]
                except StopIteration:
                    break
            k = min(len(pending), want - n)
            view[n:n + k] = pending[:k]
            pending = pending[k:]
            n += k
        self._pending = pending
        self._stream_pos += n
        return n


# -- directories -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DirEntry:
    """One directory entry: ``size`` is the link's Tsize (cumulative DAG size)."""

    name: str
    cid: CID
    size: int | None
    type: EntryType


@dataclass(frozen=True, slots=True)
class NodeStat:
    """What ``stat`` knows about a node: ``size`` is the file size (symlink target
    length, 0 for directories), ``cumulative_size`` the block plus all linked Tsizes
    (what ``ipfs files stat`` calls CumulativeSize), ``blocks`` the number of links."""

    cid: CID
    type: EntryType
    size: int
    cumulative_size: int
    blocks: int
    block_size: int
    hamt: bool = False


_ENTRY_TYPES: dict[DataType | None, EntryType] = {
    DataType.File: "file",
    DataType.Raw: "file",
    DataType.Directory: "dir",
    DataType.HAMTShard: "dir",
    DataType.Symlink: "symlink",
}


def _entry_type_of(cid: CID, block: bytes) -> EntryType:
    if cid.codec == DAG_PB and node_kind(cid, block) is None:
        raise UnixFSFormatError(f"{cid}: dag-pb node without UnixFS Data")
    return _ENTRY_TYPES.get(node_kind(cid, block), "unknown")


def ls(
    source, cid: CID | str, *, resolve_types: bool = True, max_entries: int | None = None
) -> list[DirEntry]:
    """List a directory (plain or HAMT-sharded; every shard node is walked once).

    With ``resolve_types`` (default, like ``ipfs ls``) each dag-pb child is fetched (in
    one ``get_many`` batch) to report file/dir/symlink; without it only raw children are
    known to be files and the rest are ``"unknown"``. A listing is bounded (see
    :mod:`torch_ipfs.unixfs.walk`): more than ``max_entries`` entries (default
    1,000,000 or ``$TORCH_IPFS_MAX_LISTING_ENTRIES``), a repeated shard node or a HAMT
    deeper than 8 levels is a :class:`UnixFSFormatError`.
    """
    cid = CID.decode(cid)
    raw_entries = list(directory_links(source, cid, max_entries=max_entries))
    types: dict[CID, EntryType] = {}
    if resolve_types:
        wanted = list(dict.fromkeys(c for _, c, _ in raw_entries if c.codec == DAG_PB))
        for child, block in source.get_many(wanted):
            types[child] = _entry_type_of(child, block)
    out = []
    for name, child, tsize in raw_entries:
        kind: EntryType = "file" if child.codec == RAW else types.get(child, "unknown")
        out.append(DirEntry(name, child, tsize, kind))
    return out


def resolve_path(source, root: CID | str, path: str | Iterable[str]) -> CID:
    """The CID at ``path`` below ``root`` (``"a/b/c"`` or a list of segments).

    HAMT directories are resolved by hashing the name and fetching only the shard nodes
    on its bucket path. Raises :class:`PathNotFoundError` for a missing segment and
    :class:`NotADirectoryError` when the path goes through a file or symlink.
    """
    cid = CID.decode(root)
    segments = [s for s in path.split("/") if s] if isinstance(path, str) else list(path)
    return resolve_segments(source, cid, segments)


def stat(source, cid: CID | str) -> NodeStat:
    """Type, size, link count and cumulative size of the node ``cid`` (one fetch)."""
    cid = CID.decode(cid)
    block = source.get(cid)
    if cid.codec == RAW:
        return NodeStat(cid, "file", len(block), len(block), 0, len(block))
    if cid.codec != DAG_PB:
        raise UnixFSFormatError(f"{cid} is {cid.codec_name}, not a UnixFS node")
    node, fsdata = _decode_unixfs(cid, block)
    cumulative = len(block) + sum(link.tsize or 0 for link in node.links)
    kind = _entry_type_of(cid, block)
    if kind == "file":
        size = decode_file_node(cid, block).size
    elif kind == "symlink":
        size = len(fsdata.data or b"")
    else:
        size = 0
    return NodeStat(
        cid, kind, size, cumulative, len(node.links), len(block), hamt=fsdata.type == DataType.HAMTShard
    )

"""A per-process cache of decoded, verified UnixFS nodes, bounded in bytes.

Map-style reads (``ds[i]`` in a shuffled order) land on the same 256 KiB leaves again and
again: a ~4 KB sample sits in a leaf shared with ~60 others. Without a cache each read
would fetch that leaf from the store and hash it anew. This cache keeps the decoded node
after its block came back from a source (which checked it against its CID), so a later
read of any sample in that leaf slices it from memory.

What is trusted, and for how long (docs/security.md): an entry is only ever made from a
block that a :class:`~torch_ipfs.sources.base.BlockSource` verified against its CID in
this process, and it is looked up by that CID's multihash, so it can only ever stand for
those bytes. It lives in this process's memory until evicted (least recently used first,
when the total passes the byte bound) or the process ends; it is never written to disk,
never shared with another process and dropped in a forked child (DataLoader workers
start empty and hash every block the first time they use it).

The bound: ``TORCH_IPFS_BLOCK_CACHE_MB`` (default 512 MiB; ``0`` turns the cache off)
is one budget for the loading job, not per process: a process that is not a DataLoader
worker has all of it; each of the ``W`` workers of a DataLoader has ``1/W`` of it (read
from ``torch.utils.data.get_worker_info()`` when the worker makes its cache), so adding
workers does not multiply the memory the cache may take. With the variable unset a
worker's share is also capped at 32 MiB (:data:`DEFAULT_WORKER_MAX_BYTES`): the workers'
repeated reads are served by the spot checks below from the page cache, which all of
them share. How to size it
(docs/datasets.md): shuffled map-style reads hash a leaf again each time they miss, and
they miss in proportion to the part of the dataset's bytes a process's share cannot hold.

Spot checks, behind the bytes (:meth:`VerifiedBlockCache.spot_read`): when a leaf that
came from a store on disk (the embedded store, the verified disk cache) is evicted, the
cache keeps, instead of its 256 KiB, the SHA-256 of each 4 KiB piece of its bytes (1/128
of the size), computed from the verified bytes in memory. A later read of a few KB of that
leaf reads just the pieces it needs back from the store's file and checks each against its
digest: a byte that differs from the bytes that matched the CID fails the check (changing
it unnoticed needs a SHA-256 second preimage), and the read then falls back to fetching and
hashing the whole block. The page cache, shared by every worker and not part of any
process's RSS, holds the bytes; each process holds only the proof. The digests are bounded
too (:data:`DIGEST_SHARE` of the budget, least recently used first).

In a DataLoader worker whose parent made a :mod:`~torch_ipfs.unixfs.shareddigests` table,
a leaf's digests are made as soon as it is verified and published there, and a leaf this
process has no digests for is looked up there before it is fetched: the siblings then
spot-check it instead of hashing it whole (each piece they use they still hash).
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from torch_ipfs.cid import RAW
from torch_ipfs.config import env_mebibytes
from torch_ipfs.unixfs.shareddigests import SharedDigestTable, shared_table
from torch_ipfs.varint import decode_varint

__all__ = ["DEFAULT_MAX_BYTES", "SPOT_PIECE", "VerifiedBlockCache", "default_cache", "stored_data_offset"]

#: The default budget of one job (split across DataLoader workers; see the module docstring).
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
#: Unless the budget is set, a DataLoader worker's share is at most this: every worker
#: would otherwise keep its own copy of leaves the page cache already holds once for all,
#: and behind the cache the spot-check digests make a miss a 4 KiB read, not a re-hash.
DEFAULT_WORKER_MAX_BYTES = 32 * 1024 * 1024
#: Bookkeeping per entry on top of the node's bytes (dict slot, key, node object).
ENTRY_OVERHEAD = 200
#: Spot checks: the piece of a leaf each digest covers, and the digests' part of the budget.
SPOT_PIECE = 4096
DIGEST_SHARE = 4
_DIGEST = 32

#: ``read_stored(cid, offset, length)``: bytes of a block as a store holds them, unverified,
#: or None when the source cannot read part of a block back.
ReadStored = Callable[[Any, int, int], "bytes | None"]


def _piece_digests(data: Any) -> bytes:
    """The SHA-256 of each :data:`SPOT_PIECE` of ``data``, concatenated."""
    view = memoryview(data)
    pieces = range(0, len(view), SPOT_PIECE)
    return b"".join(hashlib.sha256(view[i : i + SPOT_PIECE]).digest() for i in pieces)


def _node_bytes(node: Any) -> int:
    return len(node.data) + 48 * len(node.links) + ENTRY_OVERHEAD


class VerifiedBlockCache:
    """An LRU map ``multihash -> decoded node``, bounded by the nodes' total bytes, and
    behind it the spot-check digests of evicted leaves (see the module docstring)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self._items: OrderedDict[bytes, Any] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        #: where each spot-checkable leaf's bytes start in its stored block (put's data_offset)
        self._offsets: dict[bytes, int] = {}
        #: multihash -> (data offset in the block, leaf size, SHA-256 of each SPOT_PIECE)
        self._digests: OrderedDict[bytes, tuple[int, int, bytes]] = OrderedDict()
        self._digest_bytes = 0
        self.max_digest_bytes = self.max_bytes // DIGEST_SHARE
        #: digests shared with the job's other forked processes (shareddigests), if any
        self.shared: SharedDigestTable | None = None
        #: publish each spot-checkable leaf's digests as soon as it is verified (in a
        #: DataLoader worker: its siblings and later epochs' workers read the same leaves)
        self.publish = False
        self.hits = 0
        self.misses = 0
        self.spot_hits = 0
        #: leaves whose digests came from the shared table (not hashed whole here)
        self.shared_hits = 0

    @property
    def nbytes(self) -> int:
        """Bytes held (the nodes' data plus bookkeeping), never above ``max_bytes``."""
        return self._bytes

    @property
    def digest_bytes(self) -> int:
        """Bytes of spot-check digests held, never above ``max_digest_bytes``."""
        return self._digest_bytes

    def __len__(self) -> int:
        return len(self._items)

    def get(self, multihash: bytes) -> Any:
        """The node cached for ``multihash``, or None.

        No lock on this path (it runs once per map-style sample): ``dict.get`` and
        ``move_to_end`` are each atomic under the GIL, and an entry evicted between the two
        is still a verified node, returned this once. The counters are statistics: a
        concurrent update may be lost, never the entries or the byte total (``put`` and
        eviction hold the lock)."""
        items = self._items
        node = items.get(multihash)
        if node is None:
            self.misses += 1
            return None
        try:
            items.move_to_end(multihash)
        except KeyError:
            pass  # evicted by another thread just now
        self.hits += 1
        return node

    def put(self, multihash: bytes, node: Any, data_offset: int | None = None) -> None:
        """Keep ``node`` (decoded from a block verified against ``multihash``). A node
        whose data is a view into a reused buffer must not be put: it is copied here.

        ``data_offset``: where the leaf's bytes start in the block as its store holds it,
        when that store can read them back (:meth:`spot_read`); digests of the leaf are
        then made if it is evicted."""
        cost = _node_bytes(node)
        if cost > self.max_bytes:
            return
        evicted = []
        with self._lock:
            if multihash in self._items:
                self._items.move_to_end(multihash)
                return
            self._items[multihash] = node
            if data_offset is not None and not node.links:
                self._offsets[multihash] = data_offset
            self._bytes += cost
            while self._bytes > self.max_bytes:
                key, old = self._items.popitem(last=False)
                self._bytes -= _node_bytes(old)
                offset = self._offsets.pop(key, None)
                if offset is not None and key not in self._digests:
                    evicted.append((key, offset, old.data))
        if self.publish and data_offset is not None and not node.links and self.shared is not None:
            # the siblings will want this leaf too: its digests now, not at its eviction
            digests = _piece_digests(node.data)
            self.shared.publish(multihash, data_offset, len(node.data), digests)
            self._keep_digests(multihash, data_offset, len(node.data), digests)
        for key, offset, data in evicted:  # hashing outside the lock (it releases the GIL)
            self._keep_digests(key, offset, len(data), _piece_digests(data))

    def _keep_digests(self, key: bytes, offset: int, length: int, digests: bytes) -> None:
        cost = len(digests) + ENTRY_OVERHEAD
        if cost > self.max_digest_bytes:
            return
        with self._lock:
            if key in self._digests:
                return
            self._digests[key] = (offset, length, digests)
            self._digest_bytes += cost
            while self._digest_bytes > self.max_digest_bytes:
                _, (_, _, old) = self._digests.popitem(last=False)
                self._digest_bytes -= len(old) + ENTRY_OVERHEAD

    def spot_read(self, cid: Any, size: int, lo: int, hi: int, read_stored: ReadStored) -> bytes | None:
        """Bytes ``[lo, hi)`` of the evicted leaf ``cid`` (``size`` bytes long, as its parent
        promised), read back through ``read_stored`` and checked piece by piece against
        the digests made from its verified bytes; None when there are no digests for it,
        the size differs, the source cannot read it back, or a piece does not match (then
        the digests are dropped: the caller fetches and hashes the whole block, which
        raises if the stored block is damaged)."""
        key = cid.multihash
        entry = self._digests.get(key)
        if entry is None:
            entry = self._from_shared(key)
            if entry is None:
                return None
        offset, length, digests = entry
        if length != size or not 0 <= lo < hi <= length:
            return None
        first, last = lo // SPOT_PIECE, (hi - 1) // SPOT_PIECE
        begin, end = first * SPOT_PIECE, min((last + 1) * SPOT_PIECE, length)
        stored = read_stored(cid, offset + begin, end - begin)
        if stored is None:
            return None
        view = memoryview(stored)
        ok = len(view) == end - begin
        for k in range(first, last + 1) if ok else ():
            at = (k - first) * SPOT_PIECE
            expected = digests[k * _DIGEST : (k + 1) * _DIGEST]
            if hashlib.sha256(view[at : at + SPOT_PIECE]).digest() != expected:
                ok = False
                break
        if not ok:
            with self._lock:
                if self._digests.pop(key, None) is not None:
                    self._digest_bytes -= len(digests) + ENTRY_OVERHEAD
            return None
        try:
            self._digests.move_to_end(key)
        except KeyError:
            pass  # dropped by another thread just now
        self.spot_hits += 1
        return stored if (begin == lo and end == hi) else bytes(view[lo - begin : hi - begin])

    def _from_shared(self, key: bytes) -> tuple[int, int, bytes] | None:
        """A sibling's digests of ``key`` from the shared table, kept here from now on."""
        if self.shared is None:
            return None
        entry = self.shared.lookup(key)
        if entry is None:
            return None
        offset, length, digests = entry
        self._keep_digests(key, offset, length, digests)
        self.shared_hits += 1
        return entry

    def clear(self) -> None:
        """Forget every entry and digest (the next use of each block fetches and hashes it
        again)."""
        with self._lock:
            self._items.clear()
            self._offsets.clear()
            self._digests.clear()
            self._bytes = self._digest_bytes = 0


def stored_data_offset(cid: Any, block: bytes | memoryview, data: bytes | memoryview) -> int | None:
    """Where a leaf's ``data`` starts in its verified ``block``: 0 for a raw leaf; for a
    dag-pb leaf, after the header the encoders write (``0a len 08 type 12 len``); None
    when it is laid out otherwise."""
    if cid.codec == RAW:
        return 0
    try:
        _, pos = decode_varint(block, 1)
        if block[0] != 0x0A or block[pos] != 0x08 or block[pos + 2] != 0x12:
            return None
        size, offset = decode_varint(block, pos + 3)
    except (ValueError, IndexError):
        return None
    # Its first and last bytes confirm the place: the decoder took ``data`` from this block.
    # Were it elsewhere (a hostile block repeating the field), spot reads would fail their
    # digests and fall back to the whole block: a cost, never other bytes.
    if size != len(data) or offset + size > len(block):
        return None
    edge = min(size, 64)
    view = memoryview(block)
    if bytes(view[offset : offset + edge]) != bytes(data[:edge]):
        return None
    if bytes(view[offset + size - edge : offset + size]) != bytes(data[size - edge :]):
        return None
    return offset


def _configured_bytes() -> int:
    """This process's share of the job's budget: ``TORCH_IPFS_BLOCK_CACHE_MB`` split over
    the DataLoader's workers; unset, the default, and at most
    :data:`DEFAULT_WORKER_MAX_BYTES` in a worker."""
    total = env_mebibytes("TORCH_IPFS_BLOCK_CACHE_MB")
    if total is None:
        workers = sharing_workers()
        if workers == 1:
            return DEFAULT_MAX_BYTES
        return min(DEFAULT_MAX_BYTES // workers, DEFAULT_WORKER_MAX_BYTES)
    return total // sharing_workers()


def _worker_info() -> Any:
    """torch's ``get_worker_info()`` (None outside a DataLoader worker). Asks torch only if
    it is already imported (this layer does not depend on it)."""
    data = sys.modules.get("torch.utils.data")
    return getattr(data, "get_worker_info", lambda: None)() if data is not None else None


def sharing_workers() -> int:
    """How many processes share the job's budget with this one: ``num_workers`` in a
    DataLoader worker, else 1."""
    return max(1, int(getattr(_worker_info(), "num_workers", 1) or 1))


_cache: VerifiedBlockCache | None = None
_cache_lock = threading.Lock()


def default_cache() -> VerifiedBlockCache:
    """This process's cache (made on first use: its share of ``TORCH_IPFS_BLOCK_CACHE_MB``)."""
    global _cache
    if _cache is None:
        with _cache_lock:
            if _cache is None:
                cache = VerifiedBlockCache(_configured_bytes())
                cache.shared = shared_table()
                # a worker publishes: its siblings, and the next epoch's workers, read them
                cache.publish = cache.shared is not None and _worker_info() is not None
                _cache = cache
    return _cache


#: caches inherited over a fork, kept referenced (never read) so that freeing them does
#: not touch, and so copy, the parent's pages
_inherited: list[VerifiedBlockCache] = []


def _forget_after_fork() -> None:
    # A forked DataLoader worker starts empty: it verifies every block it uses itself.
    global _cache, _cache_lock
    if _cache is not None:
        _inherited.append(_cache)
    _cache, _cache_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)

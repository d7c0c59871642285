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
workers does not multiply the memory the cache may take. How to size it
(docs/datasets.md): shuffled map-style reads hash a leaf again each time they miss, and
they miss in proportion to the part of the dataset's bytes a process's share cannot hold.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import OrderedDict
from typing import Any

__all__ = ["DEFAULT_MAX_BYTES", "VerifiedBlockCache", "default_cache"]

#: The default budget of one job (split across DataLoader workers; see the module docstring).
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
#: Bookkeeping per entry on top of the node's bytes (dict slot, key, node object).
ENTRY_OVERHEAD = 200


def _node_bytes(node: Any) -> int:
    return len(node.data) + 48 * len(node.links) + ENTRY_OVERHEAD


class VerifiedBlockCache:
    """An LRU map ``multihash -> decoded node``, bounded by the nodes' total bytes."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self._items: OrderedDict[bytes, Any] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        """Bytes held (the nodes' data plus bookkeeping), never above ``max_bytes``."""
        return self._bytes

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

    def put(self, multihash: bytes, node: Any) -> None:
        """Keep ``node`` (decoded from a block verified against ``multihash``). A node
        whose data is a view into a reused buffer must not be put: it is copied here."""
        cost = _node_bytes(node)
        if cost > self.max_bytes:
            return
        with self._lock:
            if multihash in self._items:
                self._items.move_to_end(multihash)
                return
            self._items[multihash] = node
            self._bytes += cost
            while self._bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= _node_bytes(old)

    def clear(self) -> None:
        """Forget every entry (the next use of each block fetches and hashes it again)."""
        with self._lock:
            self._items.clear()
            self._bytes = 0


def _configured_bytes() -> int:
    """The job's budget (``TORCH_IPFS_BLOCK_CACHE_MB`` or the default), this process's share."""
    raw = os.environ.get("TORCH_IPFS_BLOCK_CACHE_MB")
    if raw is None or not raw.strip():
        total = DEFAULT_MAX_BYTES
    else:
        try:
            total = max(0, int(float(raw) * 1024 * 1024))
        except ValueError:
            raise ValueError(f"TORCH_IPFS_BLOCK_CACHE_MB must be a number of MiB, got {raw!r}") from None
    return total // sharing_workers()


def sharing_workers() -> int:
    """How many processes share the job's budget with this one: ``num_workers`` in a
    DataLoader worker, else 1. Asks torch only if it is already imported (this layer does
    not depend on it)."""
    data = sys.modules.get("torch.utils.data")
    info = getattr(data, "get_worker_info", lambda: None)() if data is not None else None
    return max(1, int(getattr(info, "num_workers", 1) or 1))


_cache: VerifiedBlockCache | None = None
_cache_lock = threading.Lock()


def default_cache() -> VerifiedBlockCache:
    """This process's cache (made on first use: its share of ``TORCH_IPFS_BLOCK_CACHE_MB``)."""
    global _cache
    if _cache is None:
        with _cache_lock:
            if _cache is None:
                _cache = VerifiedBlockCache(_configured_bytes())
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

"""Block writes on background threads, for a producer that hashes faster than files are made.

An export hashes a 256 KiB block in about 0.15 ms, but on some filesystems creating the
block's file costs ten times that in kernel time (about 1.7 ms on the ext4 of the benchmark
machine). :class:`WriteBehind` puts a :class:`~torch_ipfs.sources.base.BlockStore`'s writes
on a few threads, so the producer goes on building the next shard while they run:

    with WriteBehind(store) as deferred:
        root = import_file(fh, deferred).cid
    store.pin(root, check=False)   # every block is on disk once the ``with`` has ended

Each block is still written by the store itself (a temp file renamed into place), so a
crash leaves whole blocks or none. At most ``max_bytes`` of blocks wait in memory; a
producer that gets ahead waits. The first write error is raised again by the next ``put``
and by :meth:`WriteBehind.close`, and no further block is written after it.
"""

from __future__ import annotations

import threading
from collections import deque

from torch_ipfs.cid import CID
from torch_ipfs.sources.base import BlockStore

__all__ = ["WriteBehind"]

#: Blocks waiting to be written, at most (16 MiB: 64 default-size chunks).
DEFAULT_MAX_BYTES = 16 * 1024 * 1024


class WriteBehind(BlockStore):
    """A :class:`BlockStore` whose puts return before the block is in ``store``.

    Reads see queued blocks too. ``threads`` writers run until :meth:`close`, which waits
    for every queued block and raises the first error any write had.
    """

    def __init__(self, store: BlockStore, *, threads: int = 2, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.store = store
        self.name = store.name
        self.max_bytes = max_bytes
        self._queue: deque[tuple[CID, bytes]] = deque()
        self._pending: dict[bytes, bytes] = {}  # multihash -> block, queued or being written
        self._queued_bytes = 0
        self._error: BaseException | None = None
        self._closing = False
        self._cond = threading.Condition()
        self._threads = [
            threading.Thread(target=self._write_loop, name=f"torch-ipfs-write-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    # -- the producer's side ----------------------------------------------------------------

    def put(self, cid: CID, data: bytes) -> None:
        """Verify ``data`` against ``cid`` now, write it in the background."""
        if cid.is_identity:
            return
        self.check(cid, data)
        self.put_hashed(cid, data)

    def put_hashed(self, cid: CID, data: bytes) -> None:
        """Queue a block the caller has just hashed; waits while ``max_bytes`` are queued."""
        if cid.is_identity:
            return
        data = bytes(data)  # the caller may reuse its buffer
        with self._cond:
            while self._queued_bytes >= self.max_bytes and self._error is None and not self._closing:
                self._cond.wait()
            self._raise_if_failed()
            if self._closing:
                raise RuntimeError(f"WriteBehind({self.name!r}) is closed")
            if cid.multihash in self._pending:
                return  # the same block is already on its way
            self._pending[cid.multihash] = data
            self._queue.append((cid, data))
            self._queued_bytes += len(data)
            self._cond.notify_all()

    def _get_raw(self, cid: CID) -> bytes:
        with self._cond:
            data = self._pending.get(cid.multihash)
        if data is not None:
            return data
        return self.store._get_raw(cid)

    def get(self, cid: CID) -> bytes:
        with self._cond:
            data = self._pending.get(cid.multihash)
        if data is not None:
            return data  # hashed by our producer before it was queued
        return self.store.get(cid)

    def has(self, cid: CID) -> bool:
        with self._cond:
            if cid.multihash in self._pending:
                return True
        return self.store.has(cid)

    def __enter__(self) -> WriteBehind:
        return self

    def flush(self) -> None:
        """Wait until every queued block is in the store; raise the first write error."""
        with self._cond:
            while self._pending and self._error is None:
                self._cond.wait()
            self._raise_if_failed()

    def close(self) -> None:
        """Flush, stop the writers and raise the first write error. Idempotent."""
        try:
            self.flush()
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            for thread in self._threads:
                thread.join()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    # -- the writers' side ------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue or self._error is not None:
                    return
                cid, data = self._queue.popleft()
            try:
                self.store.put_hashed(cid, data)
            except BaseException as e:  # handed to the producer, not lost
                with self._cond:
                    if self._error is None:
                        self._error = e
                    self._queue.clear()
                    self._pending.clear()
                    self._queued_bytes = 0
                    self._cond.notify_all()
                return
            with self._cond:
                if self._pending.pop(cid.multihash, None) is not None:  # not cleared by a failure
                    self._queued_bytes -= len(data)
                self._cond.notify_all()

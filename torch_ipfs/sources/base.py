"""The block-source interface every backend implements.

A backend implements one method, :meth:`BlockSource._get_raw` (fetch the bytes it has
for a CID, or raise :class:`BlockNotFoundError`); the base class does the rest the same
way for all of them: identity CIDs are answered locally, blocks over the 2 MiB cap are
refused, and every block is hashed against its CID before anyone sees it. So a backend
can be as untrusted as a public gateway and nothing it returns is used unverified.

Backends that can do better than one block at a time override :meth:`get_many`
(parallel fetches, with :func:`fetch_in_order`) or :meth:`has`, and may offer whole-DAG
or byte-range requests of their own (``GatewaySource.fetch_car`` / ``read_range``).
Writable stores also implement :class:`BlockStore`.
"""

from __future__ import annotations

import abc
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

from torch_ipfs.cid import CID, verify_block
from torch_ipfs.errors import BlockNotFoundError, BlockTooLargeError

__all__ = ["MAX_BLOCK_SIZE", "BlockSource", "BlockStore", "MemoryStore", "NullStore", "fetch_in_order"]

#: Blocks larger than this are refused from any source (the IPFS-wide Bitswap limit).
MAX_BLOCK_SIZE = 2 * 1024 * 1024


class BlockSource(abc.ABC):
    """Something that can deliver verified blocks by CID."""

    #: Short human name used in error messages ("local store", a URL, ...).
    name: str = "source"

    #: How many blocks a streaming reader should keep requested ahead from this source.
    #: Local sources need few; remote ones hide round-trip latency with more in flight.
    prefetch_window: int = 16

    #: True when :meth:`get_many` fetches in parallel by itself (remote sources, with
    #: :func:`fetch_in_order`): a reader then hands it a whole batch in one call, which
    #: keeps the blocks in the order needed, instead of dealing it out to several calls.
    parallel_get_many: bool = False

    #: True when :meth:`read_stored` can read part of a block back (stores on disk).
    reads_stored: bool = False

    @abc.abstractmethod
    def _get_raw(self, cid: CID) -> bytes:
        """Return the (unverified) bytes of ``cid`` or raise :class:`BlockNotFoundError`."""

    def get(self, cid: CID) -> bytes:
        """Return the block for ``cid``, verified against it.

        Raises :class:`BlockNotFoundError`, :class:`IntegrityError`,
        :class:`BlockTooLargeError` or a :class:`SourceError`.
        """
        if cid.is_identity:
            return cid.digest
        data = self._get_raw(cid)
        return self.check(cid, data)

    def check(self, cid: CID, data: bytes) -> bytes:
        """Enforce the size cap and the hash on bytes obtained for ``cid``; return them."""
        if len(data) > MAX_BLOCK_SIZE:
            raise BlockTooLargeError(cid, len(data), MAX_BLOCK_SIZE, self.name)
        verify_block(cid, data, self.name)
        return data

    def get_many(self, cids: Iterable[CID]) -> Iterator[tuple[CID, bytes]]:
        """Yield ``(cid, block)`` for each CID, in the order given, each verified.

        The default fetches one by one; remote sources override it to fetch in parallel
        while still yielding in order.
        """
        for cid in cids:
            yield cid, self.get(cid)

    def read_stored(self, cid: CID, offset: int, length: int) -> bytes | None:
        """Up to ``length`` bytes from ``offset`` of the block ``cid`` as this source
        stores it, UNVERIFIED (a part of a block cannot be hashed against its CID), or None
        when the block is not held here or this source cannot read part of one back.

        Only for callers that check the bytes themselves against digests made from the
        verified block (:meth:`~torch_ipfs.unixfs.blockcache.VerifiedBlockCache.spot_read`).
        Stores on disk implement it; remote sources do not (a part of a block over the
        network would be as slow as the block)."""
        return None

    def has(self, cid: CID) -> bool:
        """True if this source can deliver ``cid`` (may fetch it to find out)."""
        try:
            self.get(cid)
        except BlockNotFoundError:
            return False
        return True

    def close(self) -> None:  # noqa: B027 - optional hook; most local sources hold nothing
        """Release connections and file handles. Idempotent."""

    def __enter__(self) -> BlockSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class BlockStore(BlockSource):
    """A source that can also store blocks."""

    @abc.abstractmethod
    def put(self, cid: CID, data: bytes) -> None:
        """Store ``data`` under ``cid`` after verifying it. Idempotent; atomic."""

    def put_many(self, blocks: Iterable[tuple[CID, bytes]]) -> None:
        """Store several blocks (a backend may batch them)."""
        for cid, data in blocks:
            self.put(cid, data)

    def put_hashed(self, cid: CID, data: bytes) -> None:
        """Store a block whose CID this process has just computed from ``data`` (the
        importer does), without hashing it a second time. A store that cannot skip the
        check simply verifies (this default)."""
        self.put(cid, data)


class NullStore(BlockStore):
    """A store that keeps nothing: what ``ipfs add --only-hash`` writes to."""

    name = "null store"

    def _get_raw(self, cid: CID) -> bytes:
        raise BlockNotFoundError(cid, [self.name])

    def put(self, cid: CID, data: bytes) -> None:
        pass


class MemoryStore(BlockStore):
    """A dict-backed store; useful for tests and for short-lived in-process DAGs."""

    name = "memory store"

    def __init__(self) -> None:
        self.blocks: dict[bytes, bytes] = {}  # keyed by multihash, like every store

    def _get_raw(self, cid: CID) -> bytes:
        try:
            return self.blocks[cid.multihash]
        except KeyError:
            raise BlockNotFoundError(cid, [self.name]) from None

    def has(self, cid: CID) -> bool:
        return cid.is_identity or cid.multihash in self.blocks

    def put(self, cid: CID, data: bytes) -> None:
        if not cid.is_identity:
            self.check(cid, data)
            self.put_hashed(cid, data)

    def put_hashed(self, cid: CID, data: bytes) -> None:
        if not cid.is_identity:
            self.blocks[cid.multihash] = bytes(data)


def fetch_in_order(
    cids: Iterable[CID], fetch: Callable[[CID], bytes], pool: ThreadPoolExecutor, *, window: int
) -> Iterator[tuple[CID, bytes]]:
    """Run ``fetch(cid)`` for each CID in ``pool`` and yield ``(cid, block)`` in the order
    given: the parallel ``get_many`` of remote sources.

    At most ``window`` fetches are submitted ahead of the one being yielded (bounded
    memory for an endless ``cids``; a window of twice the pool's threads keeps every
    thread busy). Identity CIDs are answered here, without a thread. The first failure
    is raised in order; when the caller stops early or a fetch fails, fetches not yet
    started are cancelled.
    """
    pending: deque[tuple[CID, Future[bytes]]] = deque()
    try:
        for cid in cids:
            if cid.is_identity:
                done: Future[bytes] = Future()
                done.set_result(cid.digest)
                pending.append((cid, done))
            else:
                pending.append((cid, pool.submit(fetch, cid)))
            if len(pending) >= window:
                head, fut = pending.popleft()
                yield head, fut.result()
        while pending:
            head, fut = pending.popleft()
            yield head, fut.result()
    finally:
        for _, fut in pending:
            fut.cancel()

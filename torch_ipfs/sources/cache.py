"""A verified read-through disk cache in front of any block source.

Caching is a wrapper, not a feature of each backend (fsspec's pattern):
``CachedSource(GatewaySource(urls))`` keeps what the gateways delivered on local disk,
shared by every process of the host that points at the same directory.

Layout of ``cache_dir``::

    <shard>/<KEY>   one file per block; KEY = base32 of the multihash (as the local store)
    tmp/            a block being written (renamed into place when complete)
    inflight/<KEY>  flock(2)ed by the one reader fetching KEY right now (single flight)
    lock            flock(2) for writers and eviction; its first bytes hold the running
                    total of cached bytes

Guarantees, with any number of processes sharing the directory:

- Nothing unverified is served or stored: bytes from the wrapped source are hashed
  before they are written, and every cache hit is hashed again before it is returned
  (a damaged entry is dropped and fetched again).
- Readers never lock and never see a partial file (temp file + rename). A file evicted
  between lookup and open is simply a miss, never a ``FileNotFoundError``.
- Cached bytes never exceed ``max_bytes``: an insert reserves its size in the shared
  total under the lock *before* writing, evicting least-recently-used entries first
  (``mtime``, touched on every hit). A block larger than ``max_bytes`` is not cached.
- ``kill -9`` at any point leaves at most a temp file (ignored, removed by the next
  eviction pass or the next process start) and an over-counted total (corrected by
  the next eviction pass, which recounts the directory).
- Single flight: a block missed at the same moment by several threads, DataLoader
  workers or processes is fetched once. The first reader takes an exclusive ``flock``
  on ``inflight/<KEY>`` while it fetches and caches; the others wait for that lock,
  then read the cache. The kernel drops the lock of a reader killed with ``-9`` at once,
  and a reader that waited ``inflight_timeout`` seconds for a hung one fetches the block
  itself: nobody waits longer than that.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from torch_ipfs import config
from torch_ipfs.cid import CID
from torch_ipfs.errors import BlockNotFoundError, BlockTooLargeError, IntegrityError, StoreError
from torch_ipfs.sources.base import BlockSource
from torch_ipfs.sources.local import (
    ReadHandles,
    clear_dir,
    clear_temp_dir_if_idle,
    key_multihash,
    multihash_key,
    read_block_file,
    shard_of,
    write_atomic,
)

__all__ = ["CacheStats", "CachedSource"]

log = logging.getLogger(__name__)

_TOTAL_WIDTH = 20  # the running total is stored as a fixed-width decimal at offset 0
_TOUCH_BY_FD = os.utime in os.supports_fd


@dataclass(frozen=True)
class CacheStats:
    """Counters of one :class:`CachedSource` in this process, plus the shared total.

    ``hits``/``misses`` count blocks asked for, ``evictions`` entries this process
    removed to make room, ``dropped`` damaged entries it found and removed,
    ``bytes_written`` what it added, ``write_errors`` inserts that failed (the block was
    still returned), ``cached_bytes`` the shared running total (an upper bound).
    """

    hits: int
    misses: int
    evictions: int
    dropped: int
    bytes_written: int
    write_errors: int
    cached_bytes: int


class CachedSource(BlockSource):
    """Read-through, verified, size-limited LRU disk cache around ``source``.

    Args:
        source: any :class:`BlockSource` (a gateway, a Kubo node, a chain of them).
        cache_dir: the cache directory, shared safely by every process of the host
            (default ``<TORCH_IPFS_HOME>/cache``).
        max_bytes: limit of cached bytes (default ``TORCH_IPFS_CACHE_BYTES``, 10 GiB).
        low_water: when the limit is hit, evict down to this fraction of it, so the
            directory scan an eviction needs is paid once per many inserts.
        inflight_timeout: the longest a reader waits for another one fetching the same
            block before fetching it itself (s). Longer than one retried fetch normally
            takes; a crashed fetcher releases its claim at once regardless.
    """

    def __init__(
        self,
        source: BlockSource,
        cache_dir: str | os.PathLike[str] | None = None,
        max_bytes: int | None = None,
        *,
        low_water: float = 0.9,
        inflight_timeout: float = 120.0,
    ) -> None:
        self.prefetch_window = source.prefetch_window  # misses go to the wrapped source
        self.parallel_get_many = source.parallel_get_many
        if max_bytes is None:
            max_bytes = config.Settings.from_env().cache_bytes
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        if not 0.0 < low_water <= 1.0:
            raise ValueError(f"low_water must be in (0, 1], got {low_water}")
        self.source = source
        if cache_dir is None:
            cache_dir = config.default_home() / "cache"
        self.cache_dir = Path(cache_dir).expanduser()
        self.max_bytes = int(max_bytes)
        self.low_water = low_water
        self.name = f"cache {self.cache_dir} over {source.name}"
        self._dir = os.fspath(self.cache_dir)
        self._tmp = os.path.join(self._dir, "tmp")
        self._inflight = os.path.join(self._dir, "inflight")
        self._read_handles = ReadHandles()  # cached block files kept open for spot checks
        self.inflight_timeout = inflight_timeout
        self._lock_path = os.path.join(self._dir, "lock")
        try:
            os.makedirs(self._tmp, exist_ok=True)
            os.makedirs(self._inflight, exist_ok=True)
            os.close(os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o666))
        except OSError as e:
            raise StoreError(f"cannot use {self._dir} as a block cache: {e.strerror or e}") from e
        self.hits = self.misses = self.evictions = self.dropped = 0
        #: blocks another reader was fetching, that this one then read from the cache
        self.coalesced = 0
        self.bytes_written = self.write_errors = 0
        #: bytes received by :meth:`fill` (multi-block requests), cached or already there
        self.bytes_filled = 0
        self._shards_made: set[str] = set()
        self._clean_stale_temp_files()

    # -- reading ----------------------------------------------------------------------------

    def _entry_path(self, mh: bytes) -> str:
        key = multihash_key(mh)
        return os.path.join(self._dir, shard_of(key), key)

    def _lookup(self, cid: CID) -> bytes | None:
        """The cached block, verified, or None. No lock: one open, one read, one hash."""
        path = self._entry_path(cid.multihash)
        try:
            with open(path, "rb", buffering=0) as fh:
                data = read_block_file(fh)
                with suppress(OSError):  # LRU touch; losing a race with eviction is fine
                    os.utime(fh.fileno() if _TOUCH_BY_FD else path)
        except FileNotFoundError:
            return None  # never cached, or evicted by another process just now
        try:
            self.check(cid, data)
        except (IntegrityError, BlockTooLargeError) as e:
            log.warning("dropping damaged cache entry %s (%s); fetching it again", path, e)
            self.dropped += 1
            with suppress(FileNotFoundError):
                os.unlink(path)
            return None
        return data

    def _get_raw(self, cid: CID) -> bytes:
        return self.get(cid)

    reads_stored = True

    def read_stored(self, cid: CID, offset: int, length: int) -> bytes | None:
        """Part of a cached block file, unverified (see :meth:`BlockSource.read_stored`);
        None when it is not cached here (the wrapped remote source is not asked)."""
        return self._read_handles.pread(cid.multihash, self._entry_path, offset, length)

    def get(self, cid: CID) -> bytes:
        """The verified block: from the cache, else from the wrapped source (then cached)."""
        if cid.is_identity:
            return cid.digest
        data = self._lookup(cid)
        if data is not None:
            self.hits += 1
            return data
        return self._fetch_once(cid, self._claim(cid.multihash, wait=True))

    def _fetch_once(self, cid: CID, claim: int | None) -> bytes:
        """Fetch and cache a missed block holding ``claim`` (our single-flight lock, or
        None after waiting out a hung fetcher); released here whatever happens."""
        try:
            if claim is not None:
                data = self._lookup(cid)  # whoever held the claim before us may have cached it
                if data is not None:
                    self.coalesced += 1
                    self.hits += 1
                    return data
            self.misses += 1
            data = self.check(cid, self.source.get(cid))  # never cache what we did not hash
            self._insert(cid.multihash, data)
            return data
        finally:
            if claim is not None:
                self._release(cid.multihash, claim)

    # -- single flight -------------------------------------------------------------------------

    def _claim(self, mh: bytes, *, wait: bool, meanwhile: Callable[[], bool] | None = None) -> int | None:
        """Take the single-flight lock of a block: its fd. Without ``wait``, None when
        another reader holds it. With ``wait``, block until it is free, or None after
        ``inflight_timeout`` (that reader hangs: fetch without it); ``meanwhile`` is
        called instead of sleeping while it returns True (work to do while waiting)."""
        path = os.path.join(self._inflight, multihash_key(mh))
        deadline = time.monotonic() + self.inflight_timeout
        pause = 0.002
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:
                log.warning("cannot create %s (%s): fetching without single flight", path, e)
                return None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if not wait:
                    return None
                if time.monotonic() >= deadline:
                    log.warning("%s: another reader has been fetching it for %g s; fetching it too",
                                path, self.inflight_timeout)
                    return None
                if meanwhile is None or not meanwhile():
                    time.sleep(pause)
                    pause = min(pause * 2, 0.05)
                continue
            # The holder before us unlinks the file before it unlocks: if it is gone (or
            # replaced) we locked a stale inode that nobody else sees; start over.
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)

    def _release(self, mh: bytes, fd: int) -> None:
        with suppress(FileNotFoundError):
            os.unlink(os.path.join(self._inflight, multihash_key(mh)))
        os.close(fd)  # unlink first: a waiter that locks the old inode then sees it is stale

    def get_many(self, cids: Iterable[CID]) -> Iterator[tuple[CID, bytes]]:
        """Yield ``(cid, block)`` in the order given. Cache misses go to the wrapped
        source in one ``get_many`` call (so it can fetch them in parallel); hits are read
        as their turn comes, so memory stays bounded by what the source keeps in flight."""
        wanted = list(cids)
        cached: set[bytes] = set()
        misses: list[CID] = []
        for cid in wanted:
            if cid.is_identity or cid.multihash in cached:
                continue
            if os.path.exists(self._entry_path(cid.multihash)):
                cached.add(cid.multihash)
            else:
                misses.append(cid)
        misses = list(dict.fromkeys(misses))
        # Claim what nobody else is fetching; the rest is waited for when its turn comes.
        claims: dict[bytes, int] = {}
        try:
            for cid in misses:
                fd = self._claim(cid.multihash, wait=False)
                if fd is None:
                    continue
                if os.path.exists(self._entry_path(cid.multihash)):  # cached since we looked
                    self._release(cid.multihash, fd)
                    cached.add(cid.multihash)
                else:
                    claims[cid.multihash] = fd
            mine = [c for c in misses if c.multihash in claims]
            miss_set = set(mine)
            uses = Counter(c for c in wanted if c in miss_set)  # keep a repeated miss until its last use
            fetched = iter(self.source.get_many(mine)) if mine else iter(())
            try:
                yield from self._merge(wanted, cached, fetched, uses, claims)
            finally:
                close = getattr(fetched, "close", None)
                if close is not None:
                    close()  # a consumer that stops early cancels the source's fetches
        finally:
            for mh, fd in claims.items():
                self._release(mh, fd)

    def _merge(
        self,
        wanted: list[CID],
        cached: set[bytes],
        fetched: Iterator[tuple[CID, bytes]],
        uses: Counter,
        claims: dict[bytes, int],
    ) -> Iterator[tuple[CID, bytes]]:
        """Yield ``wanted`` in order: hits read from disk, our misses taken from
        ``fetched`` (their claims released once cached), others' misses waited for."""
        pending: dict[CID, bytes] = {}
        done = False

        def pull() -> bool:
            """Take the next of our fetched blocks: cache it and release its claim."""
            nonlocal done
            item = None if done else next(fetched, None)
            if item is None:
                done = True
                return False
            got_cid, got = item
            self.misses += 1
            pending[got_cid] = self.check(got_cid, got)
            self._insert(got_cid.multihash, got)
            fd = claims.pop(got_cid.multihash, None)
            if fd is not None:  # cached: the readers waiting for it can read it now
                self._release(got_cid.multihash, fd)
            return True

        for cid in wanted:
            if cid.is_identity:
                yield cid, cid.digest
                continue
            if cid.multihash in cached or cid not in uses:
                # a hit when we looked, or a block another reader is fetching: (wait, then)
                # read it from the cache, else fetch it alone. While waiting, keep taking
                # our own fetched blocks: a reader waiting for one of *our* claims is
                # then never blocked by us (no wait cycle between readers).
                data = self._lookup(cid)
                if data is None:
                    data = self._fetch_once(cid, self._claim(cid.multihash, wait=True, meanwhile=pull))
                else:
                    self.hits += 1
                yield cid, data
                continue
            while cid not in pending:
                if not pull():
                    raise BlockNotFoundError(cid, [self.source.name], hint="the source ended its batch early")
            data = pending[cid]
            uses[cid] -= 1
            if uses[cid] == 0:
                del pending[cid]
            yield cid, data

    def fill(
        self,
        key: str,
        verified_blocks: Callable[[], Iterable[tuple[CID, bytes]]],
        *,
        max_bytes: int | None = None,
        done: Callable[[], bool] | None = None,
    ) -> bool:
        """Cache the blocks of one multi-block request (a gateway's CAR response), as one
        single flight keyed by ``key`` (the request: root, path and range).

        ``verified_blocks()`` must yield only blocks already hashed against their CIDs
        (:meth:`GatewaySource.fetch_car <torch_ipfs.sources.gateway.GatewaySource.fetch_car>`
        does: each block is checked by its CAR verifier before it is yielded), so they are
        not hashed a second time here; blocks already cached are not written twice. When
        another reader is running the same request right now, this waits for it instead
        of asking again (its blocks are then in the cache). With ``max_bytes``, the
        response is abandoned once it delivered more than that many bytes (what it
        delivered so far stays cached) and False is returned; otherwise True. A failed
        response raises (what it delivered before stays cached, every block verified).
        ``done()``, asked once the request is ours, says whether the cache already holds
        everything it would bring (another reader made it a moment ago): then it is not made.
        """
        mh = b"request:" + hashlib.sha256(key.encode()).digest()
        claim = self._claim(mh, wait=False)
        if claim is None:  # the same request is in flight elsewhere: wait for it, then use the cache
            waited = self._claim(mh, wait=True)
            if waited is not None:
                self._release(mh, waited)
            return True
        received = 0
        complete = True
        try:
            if done is not None and done():
                return True
            blocks = verified_blocks()
            try:
                for cid, block in blocks:
                    received += len(block)
                    if not cid.is_identity:
                        self._insert(cid.multihash, block)
                    if max_bytes is not None and received > max_bytes:
                        complete = False
                        break
            finally:
                close = getattr(blocks, "close", None)
                if close is not None:
                    close()  # stops reading the response (a capped or failed request)
        finally:
            self._release(mh, claim)
            self.bytes_filled += received
        return complete

    def holds(self, cid: CID) -> bool:
        """True when the block is in the cache (the wrapped source is not asked)."""
        return cid.is_identity or os.path.exists(self._entry_path(cid.multihash))

    def put_verified(self, cid: CID, block: bytes) -> None:
        """Cache a block the caller has already hashed against ``cid`` (a CAR response's,
        checked by its verifier), unless it is cached already."""
        if not cid.is_identity:
            self._insert(cid.multihash, block)

    def peek(self, cid: CID) -> bytes | None:
        """The cached block, verified, or None: never asks the wrapped source."""
        if cid.is_identity:
            return cid.digest
        return self._lookup(cid)

    def has(self, cid: CID) -> bool:
        """True if cached or the wrapped source has it."""
        if cid.is_identity or os.path.exists(self._entry_path(cid.multihash)):
            return True
        return self.source.has(cid)

    # -- writing and eviction ---------------------------------------------------------------

    def _insert(self, mh: bytes, data: bytes) -> None:
        """Cache a verified block, evicting LRU entries first so the limit holds."""
        size = len(data)
        if size > self.max_bytes:
            return  # could never fit; serve it uncached
        path = self._entry_path(mh)
        if os.path.exists(path):
            return
        try:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if os.path.exists(path):  # another process cached it while we waited
                    return
                total = self._read_total(fd)
                if total is None or total + size > self.max_bytes:
                    total = self._evict(size)
                # Reserve before writing: a crash from here on over-counts, never under-counts.
                self._write_total(fd, total + size)
                shard = os.path.dirname(path)
                if shard not in self._shards_made:
                    os.makedirs(shard, exist_ok=True)
                    self._shards_made.add(shard)
                write_atomic(path, data, self._tmp)
                self.bytes_written += size
            finally:
                os.close(fd)  # releases the lock
        except OSError as e:
            # The block is verified and will be returned; a cache that cannot be written
            # (disk full, permissions) must not fail the read, but it must be visible.
            self.write_errors += 1
            log.warning("could not write %s to the cache %s: %s", multihash_key(mh), self._dir, e)

    @staticmethod
    def _read_total(fd: int) -> int | None:
        raw = os.pread(fd, _TOTAL_WIDTH, 0)
        try:
            return int(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return None  # new or torn: recount

    @staticmethod
    def _write_total(fd: int, total: int) -> None:
        os.pwrite(fd, f"{total:0{_TOTAL_WIDTH}d}".encode("ascii"), 0)

    def _scan(self) -> list[tuple[float, int, str]]:
        """``(mtime, size, path)`` of every cache entry."""
        entries: list[tuple[float, int, str]] = []
        with os.scandir(self._dir) as top:
            shards = [e.path for e in top if e.is_dir(follow_symlinks=False) and e.name != "tmp"]
        for shard in shards:
            with suppress(FileNotFoundError), os.scandir(shard) as files:
                for entry in files:
                    try:
                        key_multihash(entry.name)
                        st = entry.stat(follow_symlinks=False)
                    except (ValueError, FileNotFoundError):
                        continue
                    entries.append((st.st_mtime, st.st_size, entry.path))
        return entries

    def _evict(self, incoming: int) -> int:
        """Recount the cache (under the lock) and remove least-recently-used entries until
        ``incoming`` more bytes fit below the low-water mark; return the new total."""
        clear_dir(self._tmp)  # every writer holds the lock while its temp file exists
        entries = self._scan()
        total = sum(size for _, size, _ in entries)
        if total + incoming <= self.max_bytes:
            return total  # the running total was stale (dropped entries, a crash): nothing to do
        goal = int(self.max_bytes * self.low_water)
        if incoming > goal:
            goal = self.max_bytes
        entries.sort()
        for _, size, path in entries:
            if total + incoming <= goal:
                break
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass  # already dropped by a reader that found it damaged
            else:
                self.evictions += 1
            total -= size
        return total

    def _clean_stale_temp_files(self) -> None:
        """Remove temp files of crashed writers, if no writer holds the lock right now."""
        clear_temp_dir_if_idle(self._lock_path, self._tmp)

    # -- bookkeeping ------------------------------------------------------------------------

    def cached_bytes(self) -> int:
        """The shared running total of cached bytes (an upper bound; exact after eviction)."""
        fd = os.open(self._lock_path, os.O_RDONLY)
        try:
            total = self._read_total(fd)
        finally:
            os.close(fd)
        return total if total is not None else sum(size for _, size, _ in self._scan())

    def stats(self) -> CacheStats:
        """This process's counters and the shared total (see :class:`CacheStats`)."""
        return CacheStats(
            hits=self.hits,
            misses=self.misses,
            evictions=self.evictions,
            dropped=self.dropped,
            bytes_written=self.bytes_written,
            write_errors=self.write_errors,
            cached_bytes=self.cached_bytes(),
        )

    def close(self) -> None:
        """Close the wrapped source and the cached block files kept open for reads."""
        self._read_handles.close()
        self.source.close()

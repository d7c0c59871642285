"""The embedded on-disk block store: the default source, no daemon needed.

Layout under ``root`` (``$TORCH_IPFS_HOME`` by default), shaped like Kubo's flatfs so a
Kubo user recognises it::

    blocks/SHARDING                  /repo/flatfs/shard/v1/next-to-last/2
    blocks/<shard>/<KEY>.data        one file per block; KEY = base32 (RFC 4648, upper,
                                     no padding) of the multihash, shard = KEY[-3:-1]
    pins/<CIDKEY>.recursive|.direct  one file per pin; CIDKEY = base32 of the CID bytes
    tmp/                             files being written (renamed into place when complete)
    repo.lock                        flock(2): writers shared, gc exclusive

Blocks are keyed by multihash, so the v0 and v1 CIDs of the same bytes share one file.
Every write is verified first, written to ``tmp/`` and ``os.replace``-d into place (same
filesystem, so atomic): a reader sees a whole block or none. Concurrency and gc are
described in ``docs/store.md`` and on :meth:`LocalStore.writer` / :meth:`LocalStore.gc`.
"""

from __future__ import annotations

import base64
import fcntl
import functools
import logging
import os
import resource
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import astuple, dataclass
from pathlib import Path

from torch_ipfs import config
from torch_ipfs.cid import CID, RAW, verify_block
from torch_ipfs.dag import child_cids, walk_dfs
from torch_ipfs.errors import (
    BlockNotFoundError,
    BlockTooLargeError,
    FormatError,
    IntegrityError,
    StoreError,
)
from torch_ipfs.sources.base import MAX_BLOCK_SIZE, BlockStore

__all__ = ["GCResult", "LocalStore", "StoreStats"]

log = logging.getLogger(__name__)

#: What Kubo's flatfs writes into ``blocks/SHARDING`` for its default sharding.
SHARDING = "/repo/flatfs/shard/v1/next-to-last/2\n"
BLOCK_SUFFIX = ".data"
PIN_KINDS = ("recursive", "direct")


# -- small filesystem helpers (shared with sources/cache.py) ---------------------------


@functools.lru_cache(maxsize=4096)  # map-style reads ask for the same few leaves' paths again and again
def multihash_key(mh: bytes) -> str:
    """Kubo's datastore key for a multihash: base32, upper case, no padding (``CIQ...``)."""
    return base64.b32encode(mh).decode("ascii").rstrip("=")


def key_multihash(key: str) -> bytes:
    """Inverse of :func:`multihash_key`; raises :class:`ValueError` for a foreign name."""
    try:
        return base64.b32decode(key + "=" * (-len(key) % 8))
    except ValueError as e:  # binascii.Error is a ValueError
        raise ValueError(f"not a block key: {key!r}") from e


def shard_of(key: str) -> str:
    """flatfs ``next-to-last/2``: the two characters before the last one."""
    return ("___" + key)[-3:-1]


def write_atomic(path: str, data: bytes | memoryview, tmp_dir: str, *, fsync: bool = False) -> None:
    """Write ``data`` to a fresh file in ``tmp_dir`` and rename it to ``path``.

    ``tmp_dir`` must be on the same filesystem as ``path`` (rename is atomic there), so
    ``path`` either does not exist or holds all of ``data``. Temp names end in ``.tmp``.
    """
    tmp = os.path.join(tmp_dir, f"{os.getpid()}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with open(fd, "wb", closefd=True) as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_block_file(fh) -> bytes:
    """All bytes of an unbuffered block file, or its first ``MAX_BLOCK_SIZE + 1`` (enough
    to refuse it). Sized by ``fstat``: several times faster than ``read(MAX + 1)``,
    which allocates 2 MiB for every block."""
    if os.fstat(fh.fileno()).st_size > MAX_BLOCK_SIZE:
        return fh.read(MAX_BLOCK_SIZE + 1)
    return fh.readall()


class ReadHandles:
    """Block files kept open for :meth:`LocalStore.read_stored` (the spot checks read the
    same few hundred leaves again and again: one ``pread`` instead of open, read, close).

    At most ``max_open`` descriptors (default: an eighth of the process's open-file limit,
    64 to 1024), least recently used closed first. A file replaced or
    deleted since it was opened still reads its old bytes, which is fine: what is read is
    checked against digests of the verified block by the caller (its disk space is freed
    when the descriptor is closed). Belongs to one process: a forked child starts with none
    (the inherited descriptors stay unused), and a pickled copy is empty."""

    def __init__(self, max_open: int | None = None) -> None:
        self.pid = os.getpid()
        if max_open is None:  # an eighth of the descriptors this process may open, 64..1024
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            max_open = 1024 if soft == resource.RLIM_INFINITY else min(1024, max(64, soft // 8))
        self.max_open = max_open
        self._fds: OrderedDict[bytes, int] = OrderedDict()
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[type[ReadHandles], tuple[int]]:
        return ReadHandles, (self.max_open,)

    def pread(self, key: bytes, path_of: Callable[[bytes], str], offset: int, length: int) -> bytes | None:
        """``length`` bytes from ``offset`` of the file ``path_of(key)`` (opened once), or
        None when it cannot be opened or read."""
        if self.pid != os.getpid():  # forked: the descriptors and the lock are the parent's
            self.pid, self._fds, self._lock = os.getpid(), OrderedDict(), threading.Lock()
        with self._lock:  # held across the read: a descriptor is never closed under it
            fd = self._fds.get(key)
            if fd is None:
                try:
                    fd = os.open(path_of(key), os.O_RDONLY)
                except OSError:
                    return None
                self._fds[key] = fd
                if len(self._fds) > self.max_open:
                    os.close(self._fds.popitem(last=False)[1])
            else:
                self._fds.move_to_end(key)
            try:
                return os.pread(fd, length, offset)
            except OSError:
                os.close(self._fds.pop(key))
                return None

    def close(self) -> None:
        with self._lock:
            if self.pid == os.getpid():
                for fd in self._fds.values():
                    os.close(fd)
            self._fds.clear()


def fsync_dir(path: str) -> None:
    """Make a rename in ``path`` durable (a directory fsync)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def clear_dir(path: str) -> int:
    """Remove every file directly in ``path`` (left-over temp files); return how many."""
    removed = 0
    with suppress(FileNotFoundError), os.scandir(path) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                with suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def clear_temp_dir_if_idle(lock_path: str, tmp_dir: str) -> int:
    """Remove the temp files crashed writers left in ``tmp_dir``, but only if no writer
    is active (an exclusive lock on ``lock_path`` can be had right now: every writer holds
    a lock on it while its temp file exists). Returns how many were removed."""
    fd = os.open(lock_path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0
        return clear_dir(tmp_dir)
    finally:
        os.close(fd)  # releases the lock


def lock_exclusive(fd: int, timeout: float | None, what: str) -> None:
    """``flock(LOCK_EX)`` on ``fd``, waiting at most ``timeout`` seconds (None: forever)."""
    if timeout is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise StoreError(f"{what}: still locked by another process after {timeout} s") from None
            time.sleep(0.02)


# -- the store ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GCResult:
    """What :meth:`LocalStore.gc` removed."""

    removed_blocks: int
    freed_bytes: int


@dataclass(frozen=True)
class StoreStats:
    """Size of a :class:`LocalStore`: number of blocks and their total bytes."""

    blocks: int
    bytes: int


class LocalStore(BlockStore):
    """Blocks in files under ``root``, keyed by multihash; pins; a garbage collector.

    Args:
        root: the repository directory (created if missing); default
            :func:`torch_ipfs.config.default_home` (``$TORCH_IPFS_HOME``).
        fsync: fsync each block file and its directory before a write returns. Off by
            default: a process crash can never expose a partial block either way (writes
            are renamed into place when complete), but after a power loss without fsync a
            just-written block may come back empty or short. Such a block fails
            verification on read (never served) and the next ``put`` of it repairs it.

    Any number of processes may read and write the same root at once (DataLoader
    workers, DDP ranks). An existing root that cannot be written is opened read-only.
    Raises :class:`StoreError` when ``root`` cannot be used as a store.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, fsync: bool = False) -> None:
        self.root = Path(root).expanduser() if root is not None else config.default_home()
        self.fsync = fsync
        self.name = f"local store {self.root}"
        self.readonly = False
        self._blocks = os.path.join(self.root, "blocks")
        self._pins = os.path.join(self.root, "pins")
        self._tmp = os.path.join(self.root, "tmp")
        self._lock_path = os.path.join(self.root, "repo.lock")
        self._open_repo()
        self._init_process_state()
        if not self.readonly:
            self._clean_stale_temp_files()

    # -- setup ------------------------------------------------------------------------------

    def _open_repo(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"{self.root} is not a directory; the local store needs one (TORCH_IPFS_HOME)")
        try:
            for d in (self._blocks, self._pins, self._tmp):
                os.makedirs(d, exist_ok=True)
            open(self._lock_path, "a").close()
        except OSError as e:
            if os.path.isdir(self._blocks) and os.path.isdir(self._pins):
                log.info("local store %s is not writable (%s); opened read-only", self.root, e.strerror)
                self.readonly = True
            else:
                raise StoreError(f"cannot create the local store at {self.root}: {e.strerror or e}") from e
        sharding_file = os.path.join(self._blocks, "SHARDING")
        try:
            with open(sharding_file) as fh:
                sharding = fh.read()
        except FileNotFoundError:
            sharding = None
        except OSError as e:
            raise StoreError(f"cannot read {sharding_file}: {e.strerror}") from e
        if sharding is None and not self.readonly:
            fd = os.open(self._lock_path, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)  # a gc clears tmp/ under the exclusive lock
                write_atomic(sharding_file, SHARDING.encode(), self._tmp)
            finally:
                os.close(fd)
        elif sharding is not None and sharding.strip() != SHARDING.strip():
            raise StoreError(
                f"{self._blocks} uses sharding {sharding.strip()!r}; the local store needs "
                f"{SHARDING.strip()!r} (point TORCH_IPFS_HOME at another directory)"
            )

    def _init_process_state(self) -> None:
        """Lock state belongs to one process: rebuilt after a fork or unpickling."""
        self._pid = os.getpid()
        self._mutex = threading.Lock()
        self._lock_fd: int | None = None
        self._depth = 0  # writer sessions (and puts) in progress in this process
        self._shards_made: set[str] = set()
        self._read_handles = ReadHandles()

    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            # The inherited lock fd shares the parent's lock: never unlock it here (that
            # would release the parent's lock too); just stop using it.
            self._init_process_state()

    def _clean_stale_temp_files(self) -> None:
        """Remove temp files left by a crashed writer, but only when no writer is active
        (the exclusive lock is free right now); otherwise the next gc does it."""
        removed = clear_temp_dir_if_idle(self._lock_path, self._tmp)
        if removed:
            log.info("local store %s: removed %d left-over temp files", self.root, removed)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for key in ("_mutex", "_lock_fd", "_depth", "_pid", "_shards_made"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._init_process_state()

    # -- paths ------------------------------------------------------------------------------

    def _block_path(self, mh: bytes) -> str:
        key = multihash_key(mh)
        return os.path.join(self._blocks, shard_of(key), key + BLOCK_SUFFIX)

    def _pin_path(self, cid: CID, kind: str) -> str:
        return os.path.join(self._pins, f"{multihash_key(cid.to_bytes())}.{kind}")

    # -- the writer lock --------------------------------------------------------------------

    @contextmanager
    def writer(self) -> Iterator[LocalStore]:
        """Hold off :meth:`gc` while adding blocks and pinning them.

        Every ``put`` takes the store's shared lock by itself, but blocks put *before*
        their root is pinned are garbage to a gc that runs in between. An import therefore
        wraps its puts and the final :meth:`pin` in one session::

            with store.writer():
                root = import_bytes(data, store).cid
                store.pin(root, check=False)

        Sessions of any number of processes (and threads) run together; :meth:`gc` waits
        until none is open, and a session started during a gc waits for it to finish.
        Re-entrant. Raises :class:`StoreError` on a read-only store.
        """
        self._acquire_shared()
        try:
            yield self
        finally:
            self._release_shared()

    def _acquire_shared(self) -> None:
        if self.readonly:
            raise StoreError(f"{self.name} is read-only; cannot write to it")
        self._check_fork()
        with self._mutex:
            if self._depth == 0:
                if self._lock_fd is None:
                    try:
                        self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o666)
                    except OSError as e:
                        raise StoreError(f"cannot open {self._lock_path}: {e.strerror}") from e
                fcntl.flock(self._lock_fd, fcntl.LOCK_SH)  # waits while a gc runs
            self._depth += 1

    def _release_shared(self) -> None:
        with self._mutex:
            if self._pid != os.getpid():  # forked inside a session: the lock is the parent's
                return
            self._depth -= 1
            if self._depth == 0 and self._lock_fd is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    # -- blocks -----------------------------------------------------------------------------

    def _get_raw(self, cid: CID) -> bytes:
        path = self._block_path(cid.multihash)
        try:
            with open(path, "rb", buffering=0) as fh:
                return read_block_file(fh)
        except FileNotFoundError:
            raise BlockNotFoundError(cid, [self.name]) from None
        except OSError as e:
            raise StoreError(f"cannot read block {cid} from {path}: {e.strerror}") from e

    reads_stored = True

    def read_stored(self, cid: CID, offset: int, length: int) -> bytes | None:
        """Bytes ``[offset, offset + length)`` of the block file, unverified (see
        :meth:`BlockSource.read_stored`); None when the block is not here."""
        return self._read_handles.pread(cid.multihash, self._block_path, offset, length)

    def get_into(self, cid: CID, buffer_for: Callable[[int], bytearray]) -> memoryview:
        """Like :meth:`get`, but read the block into a buffer the caller recycles.

        ``buffer_for(size)`` returns a writable buffer of at least ``size`` bytes; the
        block is read into it and verified against ``cid`` exactly like :meth:`get` (size
        cap, hash), and a view of the block's bytes in it is returned. Streaming readers
        use this to reuse a few buffers instead of allocating (and page-faulting in) a
        fresh one for every block, which costs about as much as the read itself.
        """
        if cid.is_identity:
            return memoryview(cid.digest)
        path = self._block_path(cid.multihash)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise BlockNotFoundError(cid, [self.name]) from None
        except OSError as e:
            raise StoreError(f"cannot read block {cid} from {path}: {e.strerror}") from e
        try:
            size = os.fstat(fd).st_size
            if size > MAX_BLOCK_SIZE:
                raise BlockTooLargeError(cid, size, MAX_BLOCK_SIZE, self.name)
            view = memoryview(buffer_for(size))[:size]
            n = 0
            while n < size and (got := os.readv(fd, [view[n:]])):
                n += got
        except OSError as e:
            raise StoreError(f"cannot read block {cid} from {path}: {e.strerror}") from e
        finally:
            os.close(fd)
        view = view[:n]  # a file cut short fails the hash below
        verify_block(cid, view, self.name)
        return view

    def has(self, cid: CID) -> bool:
        """True if the block is on disk (no hashing; :meth:`get` verifies)."""
        return cid.is_identity or os.path.exists(self._block_path(cid.multihash))

    def put(self, cid: CID, data: bytes) -> None:
        """Verify ``data`` against ``cid``, then store it atomically.

        Raises :class:`IntegrityError` / :class:`BlockTooLargeError` (nothing is written)
        or :class:`StoreError`. Identity CIDs are not stored (their bytes are the CID).
        """
        if cid.is_identity:
            return
        self.check(cid, data)  # before anything touches the disk
        self.put_hashed(cid, data)

    def put_hashed(self, cid: CID, data: bytes) -> None:
        """Store a block the importer has just hashed (see :meth:`BlockStore.put_hashed`)."""
        if cid.is_identity:
            return
        with self.writer():
            self._write_block(cid.multihash, data)
            if self.fsync:
                fsync_dir(os.path.dirname(self._block_path(cid.multihash)))

    def put_many(self, blocks: Iterable[tuple[CID, bytes]]) -> None:
        """Verify and store many blocks under one lock, one directory sync at the end."""
        touched: set[str] = set()
        with self.writer():
            for cid, data in blocks:
                if cid.is_identity:
                    continue
                self.check(cid, data)
                if self._write_block(cid.multihash, data) and self.fsync:
                    touched.add(os.path.dirname(self._block_path(cid.multihash)))
            for d in touched:
                fsync_dir(d)

    def _write_block(self, mh: bytes, data: bytes) -> bool:
        """Write a verified block unless a whole copy is there; True if written."""
        path = self._block_path(mh)
        try:
            if os.stat(path).st_size == len(data):
                return False  # same multihash, same length: already stored
            log.warning("local store: replacing damaged block file %s", path)
        except FileNotFoundError:
            pass
        shard = os.path.dirname(path)
        try:
            if shard not in self._shards_made:
                os.makedirs(shard, exist_ok=True)
                self._shards_made.add(shard)
            write_atomic(path, data, self._tmp, fsync=self.fsync)
        except OSError as e:
            raise StoreError(f"cannot write block to {path}: {e.strerror or e}") from e
        return True

    def delete(self, cid: CID) -> bool:
        """Remove a block's file (pins are not consulted). True if it was there."""
        if cid.is_identity:
            return False
        with self.writer():
            try:
                os.unlink(self._block_path(cid.multihash))
            except FileNotFoundError:
                return False
        return True

    def _scan_blocks(self) -> Iterator[os.DirEntry]:
        with os.scandir(self._blocks) as shards:
            shard_dirs = [s.path for s in shards if s.is_dir(follow_symlinks=False)]
        for shard in shard_dirs:
            try:
                with os.scandir(shard) as entries:
                    for entry in entries:
                        if entry.name.endswith(BLOCK_SUFFIX):
                            yield entry
            except FileNotFoundError:
                continue

    def iter_multihashes(self) -> Iterator[bytes]:
        """The multihash of every block on disk (in no particular order)."""
        for entry in self._scan_blocks():
            try:
                yield key_multihash(entry.name[: -len(BLOCK_SUFFIX)])
            except ValueError:
                log.debug("local store: ignoring foreign file %s", entry.path)

    def stats(self) -> StoreStats:
        """Number of blocks and their total size in bytes."""
        count = total = 0
        for entry in self._scan_blocks():
            try:
                total += entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
            count += 1
        return StoreStats(count, total)

    def verify(self, *, remove: bool = False) -> list[bytes]:
        """Hash every block on disk (like ``ipfs repo verify``); return the multihashes of
        the damaged ones, removing their files when ``remove`` (a later ``put`` or import
        then restores them)."""
        damaged: list[bytes] = []
        for mh in self.iter_multihashes():
            try:
                self.get(CID(1, RAW, mh))  # the codec does not matter for the hash
            except BlockNotFoundError:
                continue  # removed meanwhile
            except (IntegrityError, BlockTooLargeError, ValueError):  # ValueError: not a multihash
                damaged.append(mh)
                if remove:
                    with self.writer(), suppress(FileNotFoundError):
                        os.unlink(self._block_path(mh))
        return damaged

    # -- pins -------------------------------------------------------------------------------

    def pin(self, cid: CID | str, recursive: bool = True, *, check: bool = True) -> None:
        """Protect ``cid`` (and with ``recursive`` its whole DAG) from :meth:`gc`.

        With ``check`` (default) the DAG is walked first and every block verified, so a
        pin means "all of it is here"; a missing block raises :class:`BlockNotFoundError`
        naming it. ``check=False`` pins whatever is present (an importer that just wrote
        the blocks, or a partial CAR). A recursive pin replaces a direct one.
        """
        cid = CID.decode(cid)
        with self.writer():
            if check:
                try:
                    if recursive:
                        for _ in walk_dfs(self, cid):
                            pass
                    else:
                        self.get(cid)
                except BlockNotFoundError as e:
                    raise BlockNotFoundError(
                        e.cid,
                        e.tried,
                        hint=f"cannot pin {cid}: its DAG is incomplete in the local store "
                        "(import the missing blocks, or pin with check=False)",
                    ) from e
            if not recursive and os.path.exists(self._pin_path(cid, "recursive")):
                return
            kind = "recursive" if recursive else "direct"
            write_atomic(self._pin_path(cid, kind), f"{cid}\n".encode(), self._tmp, fsync=self.fsync)
            if recursive:
                with suppress(FileNotFoundError):
                    os.unlink(self._pin_path(cid, "direct"))

    def unpin(self, cid: CID | str) -> None:
        """Remove the pin on ``cid``; raises :class:`StoreError` if it is not pinned."""
        cid = CID.decode(cid)
        removed = False
        with self.writer():
            for kind in PIN_KINDS:
                try:
                    os.unlink(self._pin_path(cid, kind))
                    removed = True
                except FileNotFoundError:
                    pass
        if not removed:
            raise StoreError(f"{cid} is not pinned")

    def _pin_entries(self) -> list[tuple[CID, bool]]:
        """``(cid, recursive)`` for every pin file."""
        out: list[tuple[CID, bool]] = []
        with os.scandir(self._pins) as entries:
            for entry in entries:
                key, _, kind = entry.name.rpartition(".")
                if kind not in PIN_KINDS:
                    continue
                try:
                    cid = CID.decode(key_multihash(key))
                except ValueError:
                    log.warning("local store: ignoring unreadable pin file %s", entry.path)
                    continue
                out.append((cid, kind == "recursive"))
        return out

    def pins(self) -> list[CID]:
        """Every pinned CID (recursive and direct), sorted by their text form."""
        return sorted({cid for cid, _ in self._pin_entries()}, key=str)

    def is_pinned(self, cid: CID | str) -> bool:
        """True if exactly this CID is pinned (directly or recursively)."""
        cid = CID.decode(cid)
        return any(os.path.exists(self._pin_path(cid, kind)) for kind in PIN_KINDS)

    # -- garbage collection -----------------------------------------------------------------

    def gc(self, *, timeout: float | None = None) -> GCResult:
        """Remove every block not reachable from a pin; return what was removed.

        Takes the exclusive lock, so it waits (up to ``timeout`` seconds, default forever)
        for open :meth:`writer` sessions and puts of every process to finish, and holds
        off new ones while it runs: an import that pins its root inside its session never
        loses blocks to it. Marking follows every recursive pin through the blocks that are
        present (a pinned DAG with missing blocks keeps what it has). A pinned block that
        is corrupt on disk aborts the gc before anything is removed (:class:`StoreError`).
        Left-over temp files are removed too. Readers are never blocked.
        """
        if self.readonly:
            raise StoreError(f"{self.name} is read-only; cannot garbage-collect it")
        self._check_fork()
        if self._depth:
            raise StoreError("gc() called inside a writer() session of the same store would wait for itself")
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            lock_exclusive(fd, timeout, f"gc of {self.root}")
            marked = self._mark()
            result = self._sweep(marked)
            clear_dir(self._tmp)  # no writer can be active: any temp file is a crash's leftover
        finally:
            os.close(fd)  # releases the lock
        log.info("gc of %s: removed %d blocks (%d bytes)", self.root, *astuple(result))
        return result

    def _mark(self) -> set[bytes]:
        """Multihashes of every block reachable from a pin. Raw blocks have no links, so
        they are marked without being read; dag-pb blocks are read and verified, since
        their links decide what else is kept."""
        marked: set[bytes] = set()
        visited: set[tuple[int, bytes]] = set()
        for root, recursive in self._pin_entries():
            stack = [root]
            missing = 0
            while stack:
                cid = stack.pop()
                if (cid.codec, cid.multihash) in visited:
                    continue
                visited.add((cid.codec, cid.multihash))
                if cid.codec == RAW or not recursive:
                    if not cid.is_identity:
                        marked.add(cid.multihash)
                    continue
                try:
                    block = self.get(cid)
                except BlockNotFoundError:
                    missing += 1
                    continue
                except (IntegrityError, BlockTooLargeError) as e:
                    raise StoreError(
                        f"gc aborted, nothing removed: block {cid} of pinned DAG {root} is damaged on disk "
                        f"({e}); run verify(remove=True), import it again, then gc"
                    ) from e
                if not cid.is_identity:
                    marked.add(cid.multihash)
                try:
                    stack.extend(child_cids(cid, block))
                except FormatError as e:
                    raise StoreError(
                        f"gc aborted, nothing removed: cannot follow the links of {cid} "
                        f"in pinned DAG {root}: {e}"
                    ) from e
            if missing:
                log.warning("gc: pinned DAG %s is missing %d blocks; keeping the rest", root, missing)
        return marked

    def _sweep(self, marked: set[bytes]) -> GCResult:
        removed = freed = 0
        for entry in self._scan_blocks():
            try:
                mh = key_multihash(entry.name[: -len(BLOCK_SUFFIX)])
            except ValueError:
                continue  # not ours: leave it alone
            if mh in marked:
                continue
            try:
                size = entry.stat(follow_symlinks=False).st_size
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            removed += 1
            freed += size
        return GCResult(removed, freed)

    def close(self) -> None:
        """Drop the lock file handle (if no session is open) and the block files kept open
        for reads. Idempotent."""
        self._read_handles.close()
        with self._mutex:
            if self._depth == 0 and self._lock_fd is not None and self._pid == os.getpid():
                os.close(self._lock_fd)
                self._lock_fd = None

"""Spot-check digests shared by the forked processes of one job (a DataLoader's workers).

A DataLoader worker starts with an empty verified-block cache (see
:mod:`torch_ipfs.unixfs.blockcache`), so with ``W`` workers reading a shuffled map-style
dataset every leaf is read and SHA-256'd once per worker per epoch: ``W`` times the
dataset's bytes, and again each epoch when workers are not persistent. With this table,
the first process of the job to verify a leaf publishes the SHA-256 of each 4 KiB piece
of its verified bytes, and every other process spot-checks its reads of that leaf
against them (reading a few KB back from the store and hashing those) instead of
fetching and hashing the whole block again.

Where it lives: one anonymous shared mapping (``mmap(-1, n)``), made by the parent
process when a map-style dataset is opened in it (:func:`share_with_forked_children`)
and inherited by the processes it forks afterwards. No path names it, so no process
outside that tree can open it. Children started by ``spawn`` or ``forkserver`` do not
inherit it and keep digests of their own, as before.

What is trusted (docs/security.md): an entry is only written from bytes its writer
verified against the leaf's CID, by a process of the same job running the same code.
An entry is advisory: a reader uses a piece only after its SHA-256 matched the entry's
digest, so a wrong, stale or torn entry can only make a read fall back to fetching and
hashing the whole block, never hand out other bytes. Entries are sealed (a SHA-256 over
the entry) so that a slot two processes wrote at once, read half-old and half-new, is
taken as absent.

Bounded: ``TORCH_IPFS_SHARED_DIGESTS_MB`` (default 64 MiB, about 30,000 leaves of 256
KiB, 7.5 GiB of data; ``0`` turns sharing off). Slots are found by open addressing from
the key's last bytes (a multihash digest, uniform), at most :data:`PROBES` tries; a
leaf that finds no free slot is not shared (its process keeps its digests itself).
Nothing is ever evicted: the table lives as long as the processes that map it. Pages
are taken by the kernel only as slots are written or probed.
"""

from __future__ import annotations

import hashlib
import mmap
import struct

from torch_ipfs.config import env_mebibytes

__all__ = ["MAX_DIGESTS", "SharedDigestTable", "share_with_forked_children", "shared_table"]

#: Leaves of up to this many 4 KiB pieces are shared (256 KiB, the default chunk).
MAX_DIGESTS = 64
#: Keys (multihashes) of up to this many bytes are shared (sha2-256's are 34).
MAX_KEY = 63
PROBES = 8
DEFAULT_MB = 64
_DIGEST = 32
#: key length, key, leaf data offset in its stored block, leaf size, number of digests
_HEAD = struct.Struct(f"<B{MAX_KEY}sIIH")
_BODY = _HEAD.size + MAX_DIGESTS * _DIGEST
#: a slot: the body, then its seal (SHA-256 of the body); rounded up to 64 bytes
SLOT = (_BODY + _DIGEST + 63) // 64 * 64


class SharedDigestTable:
    """A fixed-size table ``multihash -> (data offset, size, piece digests)`` in memory
    shared with forked children. Thread- and process-safe in the sense above: a reader
    gets a whole entry some process wrote, or None."""

    def __init__(self, nbytes: int) -> None:
        self.slots = max(1, nbytes // SLOT)
        self.nbytes = self.slots * SLOT
        self._map = mmap.mmap(-1, self.nbytes)  # MAP_SHARED | MAP_ANONYMOUS: kept across fork

    def _slot_of(self, key: bytes) -> int:
        return int.from_bytes(key[-8:], "little") % self.slots

    def publish(self, key: bytes, offset: int, length: int, digests: bytes) -> bool:
        """Share the digests of a verified leaf; False when the entry does not fit (a
        long key, a large leaf) or no slot is free within :data:`PROBES` tries."""
        count = len(digests) // _DIGEST
        if len(key) > MAX_KEY or count > MAX_DIGESTS or len(digests) != count * _DIGEST:
            return False
        if not (0 <= offset < 1 << 32 and 0 <= length < 1 << 32):
            return False
        body = _HEAD.pack(len(key), key, offset, length, count) + digests.ljust(MAX_DIGESTS * _DIGEST, b"\0")
        entry = body + hashlib.sha256(body).digest()
        m = self._map
        first = self._slot_of(key)
        for probe in range(PROBES):
            at = (first + probe) % self.slots * SLOT
            n = m[at]
            if n == 0 or (n == len(key) and m[at + 1 : at + 1 + n] == key):
                m[at : at + len(entry)] = entry
                return True
        return False

    def lookup(self, key: bytes) -> tuple[int, int, bytes] | None:
        """``(data offset, size, digests)`` published for ``key``, or None (never
        published, not findable, or an entry that does not check out)."""
        if len(key) > MAX_KEY:
            return None
        m = self._map
        first = self._slot_of(key)
        for probe in range(PROBES):
            at = (first + probe) % self.slots * SLOT
            n = m[at]
            if n == 0:
                return None
            if n == len(key) and m[at + 1 : at + 1 + n] == key:
                entry = m[at : at + _BODY + _DIGEST]  # one copy, then only the copy is read
                body = entry[:_BODY]
                if hashlib.sha256(body).digest() != entry[_BODY:]:
                    return None  # torn by a concurrent write: as good as absent
                n2, stored_key, offset, length, count = _HEAD.unpack_from(body)
                if n2 != len(key) or stored_key[:n2] != key or count > MAX_DIGESTS:
                    return None
                return offset, length, body[_HEAD.size : _HEAD.size + count * _DIGEST]
        return None


_table: SharedDigestTable | None = None


def _configured_bytes() -> int:
    configured = env_mebibytes("TORCH_IPFS_SHARED_DIGESTS_MB")
    return DEFAULT_MB * 1024 * 1024 if configured is None else configured


def share_with_forked_children() -> SharedDigestTable | None:
    """Make this process's table, if there is none yet, for the children it forks from now
    on (call before a DataLoader starts its workers); None when sharing is turned off."""
    global _table
    if _table is None:
        nbytes = _configured_bytes()
        if nbytes >= SLOT:
            _table = SharedDigestTable(nbytes)
    return _table


def shared_table() -> SharedDigestTable | None:
    """The table this process made or inherited, or None."""
    return _table

"""HAMT-sharded directories (UnixFS type 5), the layout Kubo uses for big directories.

Shared facts (see docs/internals and ../shared/ipfs-facts.md):
- hash: murmur3-x64-128 seed 0 of the entry name, keep the FIRST 64-bit half, big-endian;
- fanout 256: 8 bits of that hash per level, most significant first;
- link names: ``%02X`` of the bucket, followed by the entry name for an entry link
  (a link named by the two hex digits alone points to a child shard);
- bitfield: big-endian integer, bucket i is bit ``1 << (i % 8)`` of byte ``len-1-i//8``.
"""

from __future__ import annotations

import mmh3

__all__ = ["DEFAULT_FANOUT", "HASH_MURMUR3", "bucket_at", "hash_name"]

HASH_MURMUR3 = 0x22
DEFAULT_FANOUT = 256


def hash_name(name: str) -> bytes:
    """The 8-byte HAMT hash of a directory entry name."""
    h1 = mmh3.hash64(name.encode("utf-8", "surrogateescape"), signed=False)[0]
    return h1.to_bytes(8, "big")


def bucket_at(name_hash: bytes, depth: int, fanout: int = DEFAULT_FANOUT) -> int:
    """The bucket index of a hashed name at ``depth`` (0 = root shard)."""
    bits = fanout.bit_length() - 1
    if 1 << bits != fanout or bits != 8:
        # Kubo only writes fanout 256; other powers of two would need bit-level slicing.
        raise ValueError(f"unsupported HAMT fanout {fanout}")
    if depth >= len(name_hash):
        raise ValueError("HAMT deeper than the hash is long")
    return name_hash[depth]

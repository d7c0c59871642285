"""HAMT-sharded directories (UnixFS type 5), the layout Kubo uses for big directories.

Shared facts (see docs/internals and ../shared/ipfs-facts.md):
- hash: murmur3-x64-128 seed 0 of the entry name, keep the FIRST 64-bit half, big-endian;
- fanout 256: 8 bits of that hash per level, most significant first;
- link names: ``%02X`` of the bucket, followed by the entry name for an entry link
  (a link named by the two hex digits alone points to a child shard);
- bitfield: big-endian integer, bucket i is bit ``1 << (i % 8)`` of byte ``len-1-i//8``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import mmh3

from torch_ipfs.cid import CID
from torch_ipfs.dagpb import DataType, PBLink, UnixFSData

__all__ = [
    "DEFAULT_FANOUT",
    "HASH_MURMUR3",
    "bitfield_bytes",
    "bucket_at",
    "build_shard",
    "hash_name",
    "shard_data",
]

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


# -- building (the importer) --------------------------------------------------------------

#: ``store_node(links, data) -> (cid, cumulative size)``: how :func:`build_shard` writes a node.
StoreNode = Callable[[list[PBLink], bytes], tuple[CID, int]]


def bitfield_bytes(buckets: Sequence[int] | set[int], fanout: int = DEFAULT_FANOUT) -> bytes:
    """The shard bitfield for the occupied ``buckets``, as Go writes it.

    A big-endian integer with bit ``i`` set per occupied bucket, leading zero bytes
    stripped (go-bitfield ``Bytes()`` mirrors ``big.Int.Bytes()``; the Kubo oracle test
    pins this down).
    """
    value = 0
    for b in buckets:
        if not 0 <= b < fanout:
            raise ValueError(f"bucket {b} outside fanout {fanout}")
        value |= 1 << b
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def shard_data(buckets: Sequence[int] | set[int], fanout: int = DEFAULT_FANOUT) -> bytes:
    """UnixFS ``Data`` of a shard node: ``{Type 5, Data: bitfield, hashType 0x22, fanout}``."""
    return UnixFSData(
        DataType.HAMTShard, data=bitfield_bytes(buckets, fanout), hash_type=HASH_MURMUR3, fanout=fanout
    ).encode()


def build_shard(
    entries: Sequence[tuple[str, CID, int]],
    store_node: StoreNode,
    *,
    fanout: int = DEFAULT_FANOUT,
) -> tuple[CID, int]:
    """Write a HAMT-sharded directory holding ``entries`` (name, CID, Tsize); return its root.

    The layout is canonical (what Go's ``hamt.Shard`` produces for any insertion order):
    a bucket holding one entry links to it directly (``%02X`` + name); a bucket holding
    several gets a child shard one level down (``%02X``), recursively.
    """
    names = [name for name, _, _ in entries]
    if len(set(names)) != len(names):
        raise ValueError("duplicate names in a HAMT directory")
    hashed = [(hash_name(name), name, cid, tsize) for name, cid, tsize in entries]
    return _build_level(hashed, 0, store_node, fanout)


def _build_level(
    entries: list[tuple[bytes, str, CID, int]], depth: int, store_node: StoreNode, fanout: int
) -> tuple[CID, int]:
    buckets: dict[int, list[tuple[bytes, str, CID, int]]] = {}
    for entry in entries:
        buckets.setdefault(bucket_at(entry[0], depth, fanout), []).append(entry)
    links = []
    for index in sorted(buckets):
        members = buckets[index]
        if len(members) == 1:
            _, name, cid, tsize = members[0]
            links.append(PBLink(cid, f"{index:02X}{name}", tsize))
        else:
            child_cid, child_size = _build_level(members, depth + 1, store_node, fanout)
            links.append(PBLink(child_cid, f"{index:02X}", child_size))
    return store_node(links, shard_data(list(buckets), fanout))

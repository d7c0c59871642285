"""The one UnixFS traversal: node types, file ranges, directory listings, paths and
the block order of a trustless CAR, all iterative and bounded.

A DAG can hash perfectly and still be hostile: nested a million levels deep, sharing
one child shard under every bucket (2^32 entries from 5 blocks), or lying in its
blocksizes. Everything that walks UnixFS (the reader, ``serve``, the CAR verifier, the
fsspec filesystem, ``get``) goes through this module, so each of them meets the same
limits, and the server and the verifier agree on a CAR's blocks by construction (both
run :class:`CarWalk`). The limits, and why they hold no real DAG back:

``MAX_HAMT_DEPTH`` (8)
    A HAMT with fanout 256 consumes one byte of the 64-bit murmur3 hash per level, so a
    real one is at most 8 levels deep; a deeper one is malformed.
``MAX_DAG_DEPTH`` (2048)
    Levels of links from a walk's start. Kubo's file layouts are a few levels deep
    (balanced: 4 levels reach 4 PB at 174 links; trickle: about 2 per doubling), and
    a path can hold at most 2048 nested directories within Linux's 4096-byte PATH_MAX.
``DEFAULT_MAX_ENTRIES`` (1,000,000)
    Entries one listing returns; configurable per call and with
    ``TORCH_IPFS_MAX_LISTING_ENTRIES``.
A shard node is visited once per listing
    The same child shard under two buckets (the 2^32 trick) is malformed: names hash
    to exactly one bucket, so two buckets can never hold the same entries.
Blocksizes must equal what each child holds, zero included
    A child promised 0 bytes could hide data no reader ever fetches, so no file link
    may declare 0 bytes (no importer writes one), and every other child is checked
    against its promise when it is read.

No function here recurses: every walk keeps an explicit stack or frontier.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from torch_ipfs.cid import CID, DAG_PB, RAW
from torch_ipfs.dag import child_cids
from torch_ipfs.dagpb import DataType, PBNode, UnixFSData, decode_node
from torch_ipfs.errors import (
    BlockNotFoundError,
    NotADirectoryError,  # noqa: A004 - ours subclasses the builtin
    NotAFileError,
    PathNotFoundError,
    UnixFSFormatError,
)
from torch_ipfs.unixfs.hamt import DEFAULT_FANOUT, HASH_MURMUR3, bucket_at, hash_name
from torch_ipfs.varint import decode_varint

__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "ENV_MAX_LISTING_ENTRIES",
    "MAX_DAG_DEPTH",
    "MAX_HAMT_DEPTH",
    "CarWalk",
    "FileNode",
    "decode_file_node",
    "directory_links",
    "lookup",
    "node_kind",
    "overlapping_children",
    "parse_entity_bytes",
    "resolve_entity_bytes",
    "resolve_prefixes",
    "resolve_segments",
]

#: A HAMT at fanout 256 eats one byte of the 8-byte hash per level.
MAX_HAMT_DEPTH = 8
#: Levels of links any walk follows from its start.
MAX_DAG_DEPTH = 2048
#: Entries one directory listing may return unless told otherwise.
DEFAULT_MAX_ENTRIES = 1_000_000
ENV_MAX_LISTING_ENTRIES = "TORCH_IPFS_MAX_LISTING_ENTRIES"


def max_listing_entries() -> int:
    """The listing limit: ``$TORCH_IPFS_MAX_LISTING_ENTRIES`` or :data:`DEFAULT_MAX_ENTRIES`."""
    raw = os.environ.get(ENV_MAX_LISTING_ENTRIES, "").strip()
    if not raw:
        return DEFAULT_MAX_ENTRIES
    try:
        value = int(raw)
        if value < 1:
            raise ValueError
    except ValueError:
        raise ValueError(f"{ENV_MAX_LISTING_ENTRIES}: expected a positive integer, got {raw!r}") from None
    return value


def check_depth(cid: CID, depth: int) -> None:
    """Raise :class:`UnixFSFormatError` if ``depth`` levels of links is past the limit."""
    if depth > MAX_DAG_DEPTH:
        raise UnixFSFormatError(f"{cid}: more than {MAX_DAG_DEPTH} levels of links below the root")


# -- node types --------------------------------------------------------------------------


def _decode_unixfs(cid: CID, block: bytes) -> tuple[PBNode, UnixFSData]:
    try:
        node = decode_node(block)
        if node.data is None:
            raise UnixFSFormatError("dag-pb node without UnixFS Data")
        return node, UnixFSData.decode(node.data)
    except UnixFSFormatError as e:
        raise UnixFSFormatError(f"{cid}: {e}") from None


def node_kind(cid: CID, block: bytes) -> DataType | None:
    """The UnixFS type of a verified block: raw blocks are ``Raw``; ``None`` for other
    codecs and for dag-pb nodes without UnixFS Data (plain IPLD, not UnixFS). A dag-pb
    node whose Data does not decode is a :class:`UnixFSFormatError`."""
    if cid.codec == RAW:
        return DataType.Raw
    if cid.codec != DAG_PB:
        return None
    try:
        node = decode_node(block)
        if node.data is None:
            return None
        return UnixFSData.decode(node.data).type
    except UnixFSFormatError as e:
        raise UnixFSFormatError(f"{cid}: {e}") from None


def is_file_kind(kind: DataType | None) -> bool:
    return kind in (DataType.File, DataType.Raw)


def is_directory_kind(kind: DataType | None) -> bool:
    return kind in (DataType.Directory, DataType.HAMTShard)


# -- file nodes ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileNode:
    """A decoded, checked node of a UnixFS file.

    ``data`` is the node's own bytes (the whole block for a raw leaf), ``links`` and
    ``sizes`` (``blocksizes``, each > 0) its children, ``offsets[i]`` where child ``i``
    starts, relative to the node's first byte (so ``offsets[0] == len(data)``).
    """

    cid: CID
    data: bytes | memoryview
    links: tuple[CID, ...]
    sizes: tuple[int, ...]
    offsets: tuple[int, ...]
    size: int


def decode_file_node(cid: CID, block: bytes, *, root: bool = False) -> FileNode:
    """Decode a (verified) block as a node of a UnixFS file.

    Raises :class:`NotAFileError` if ``root`` and the node is a directory, symlink or
    other non-file; :class:`UnixFSFormatError` naming ``cid`` for anything inconsistent
    (a non-file node inside a file, missing Data, blocksizes that do not match the links
    or the filesize, a link promising 0 bytes).
    """
    if cid.codec == RAW:
        return FileNode(cid, block, (), (), (), len(block))
    if cid.codec != DAG_PB:
        if root:
            raise NotAFileError(f"{cid} is {cid.codec_name}, not a UnixFS file")
        raise UnixFSFormatError(f"{cid}: a {cid.codec_name} block inside a UnixFS file")
    leaf = _decode_leaf(cid, block)
    if leaf is not None:
        return leaf
    node, fsdata = _decode_unixfs(cid, block)
    if fsdata.type not in (DataType.File, DataType.Raw):
        kind = fsdata.type.name
        if root:
            raise NotAFileError(f"{cid} is a UnixFS {kind}, not a file")
        raise UnixFSFormatError(f"{cid}: a UnixFS {kind} node inside a file")
    if len(fsdata.blocksizes) != len(node.links):
        raise UnixFSFormatError(
            f"{cid}: {len(fsdata.blocksizes)} blocksizes for {len(node.links)} links"
        )
    data = fsdata.data or b""
    offsets = []
    pos = len(data)
    for i, size in enumerate(fsdata.blocksizes):
        if size == 0:  # it could hide bytes no reader would ever fetch or check
            raise UnixFSFormatError(f"{cid}: link {i} ({node.links[i].cid}) has blocksize 0")
        offsets.append(pos)
        pos += size
    if fsdata.filesize is not None and fsdata.filesize != pos:
        raise UnixFSFormatError(
            f"{cid}: filesize {fsdata.filesize} but data ({len(data)}) + blocksizes add up to {pos}"
        )
    return FileNode(
        cid, data, tuple(link.cid for link in node.links), tuple(fsdata.blocksizes), tuple(offsets), pos
    )


def _decode_leaf(cid: CID, block: bytes | memoryview) -> FileNode | None:
    """Fast path for the commonest block, a dag-pb file leaf: a PBNode whose only field is
    Data (``0a len unixfs``). The strict UnixFS decoder runs over a memoryview, so the
    chunk bytes are not copied twice; anything else returns None (the general path)."""
    if not block or block[0] != 0x0A:
        return None
    try:
        length, pos = decode_varint(block, 1)  # type: ignore[arg-type]
    except ValueError:
        return None
    if pos + length != len(block):
        return None
    try:
        fsdata = UnixFSData.decode(memoryview(block)[pos:])  # type: ignore[arg-type]
    except UnixFSFormatError as e:
        raise UnixFSFormatError(f"{cid}: {e}") from None
    if fsdata.type not in (DataType.File, DataType.Raw) or fsdata.blocksizes:
        return None  # not a leaf of a file: let the general path report it
    data = fsdata.data if fsdata.data is not None else b""
    if fsdata.filesize is not None and fsdata.filesize != len(data):
        raise UnixFSFormatError(f"{cid}: filesize {fsdata.filesize} but the leaf holds {len(data)} bytes")
    return FileNode(cid, data, (), (), (), len(data))


def overlapping_children(node: FileNode, start: int, lo: int, hi: int) -> list[tuple[CID, int, int]]:
    """``(cid, file offset, size)`` of ``node``'s children overlapping ``[lo, hi)``, in
    order; ``start`` is the file offset of the node's first byte."""
    if not node.links:
        return []
    first = max(bisect.bisect_right(node.offsets, lo - start) - 1, 0)
    out = []
    for i in range(first, len(node.links)):
        child_start = start + node.offsets[i]
        if child_start >= hi:
            break
        size = node.sizes[i]
        if child_start + size > lo:
            out.append((node.links[i], child_start, size))
    return out


def check_child_size(cid: CID, holds: int, parent: CID | None, promised: int | None) -> None:
    """Raise unless a child holds exactly the bytes its parent's blocksize promised."""
    if promised is not None and holds != promised:
        kind = "raw leaf" if cid.codec == RAW else "node"
        raise UnixFSFormatError(f"{cid}: {kind} holds {holds} bytes but its parent {parent} says {promised}")


def parse_entity_bytes(value: str) -> tuple[int, int | None]:
    """Parse an ``entity-bytes=from:to`` value: ``"0:*"`` -> ``(0, None)``, negative
    numbers count from the end (resolved once the file size is known). Numbers are at
    most 20 digits (a 64-bit offset); anything else is a :class:`ValueError`."""
    start, sep, end = value.partition(":")
    try:
        if not sep or len(start) > 21 or len(end) > 21:
            raise ValueError
        return int(start), (None if end == "*" else int(end))
    except ValueError:
        raise ValueError(f"invalid entity-bytes {value!r}; expected from:to, e.g. 0:* or 100:199") from None


def resolve_entity_bytes(entity_bytes: tuple[int, int | None], size: int) -> tuple[int, int]:
    """Inclusive ``from:to`` (negatives from the end, None = end) -> half-open ``[lo, hi)``
    clamped to the file; ``lo >= hi`` means nothing beyond the root block."""
    start, end = entity_bytes
    lo = max(size + start if start < 0 else start, 0)
    last = size - 1 if end is None else (size + end if end < 0 else end)
    return lo, min(last + 1, size)


# -- directories ---------------------------------------------------------------------------


def check_shard(cid: CID, fsdata: UnixFSData) -> None:
    if fsdata.hash_type != HASH_MURMUR3:
        raise UnixFSFormatError(f"{cid}: HAMT hash type {fsdata.hash_type} is not murmur3-x64-64")
    if fsdata.fanout != DEFAULT_FANOUT:
        raise UnixFSFormatError(f"{cid}: HAMT fanout {fsdata.fanout} is not supported (only 256)")


def shard_link(cid: CID, name: str | None) -> tuple[int, str | None]:
    """Split a HAMT link name into (bucket, entry name or None for a child shard)."""
    if name is None or len(name) < 2:
        raise UnixFSFormatError(f"{cid}: HAMT link name {name!r} has no bucket prefix")
    prefix = name[:2]
    if prefix.upper() != prefix or any(c not in "0123456789ABCDEF" for c in prefix):
        raise UnixFSFormatError(f"{cid}: HAMT link name {name!r} has a bad bucket prefix")
    return int(prefix, 16), (name[2:] if len(name) > 2 else None)


def directory_node(source, cid: CID, block: bytes | None = None) -> tuple[PBNode, UnixFSData]:
    """Fetch (unless given) and decode ``cid`` as a directory, or raise NotADirectoryError."""
    if block is None:
        block = cid.digest if cid.is_identity else source.get(cid)
    if cid.codec != DAG_PB:
        raise NotADirectoryError(f"{cid} is a {cid.codec_name} block, not a directory")
    node, fsdata = _decode_unixfs(cid, block)
    if fsdata.type not in (DataType.Directory, DataType.HAMTShard):
        raise NotADirectoryError(f"{cid} is a UnixFS {fsdata.type.name}, not a directory")
    if fsdata.type == DataType.HAMTShard:
        check_shard(cid, fsdata)
    return node, fsdata


def _child_shard(parent: CID, cid: CID, block: bytes) -> PBNode:
    if cid.codec != DAG_PB:
        raise UnixFSFormatError(f"{parent}: HAMT child shard {cid} is {cid.codec_name}")
    node, fsdata = _decode_unixfs(cid, block)
    if fsdata.type != DataType.HAMTShard:
        raise UnixFSFormatError(f"{parent}: child shard {cid} is a UnixFS {fsdata.type.name}")
    check_shard(cid, fsdata)
    return node


def directory_links(
    source, cid: CID, *, max_entries: int | None = None
) -> Iterator[tuple[str, CID, int | None]]:
    """Yield ``(name, cid, tsize)`` of every entry of a directory, plain or HAMT (in
    bucket order, each shard node's children fetched in one ``get_many``).

    Bounded: a HAMT deeper than :data:`MAX_HAMT_DEPTH`, a shard node met twice, or more
    than ``max_entries`` entries (default :func:`max_listing_entries`) is a
    :class:`UnixFSFormatError`. Raises :class:`NotADirectoryError` for a non-directory.
    """
    limit = max_listing_entries() if max_entries is None else max_entries
    node, fsdata = directory_node(source, cid)
    count = 0

    def counted(cid_: CID) -> None:
        nonlocal count
        count += 1
        if count > limit:
            raise UnixFSFormatError(
                f"{cid}: directory has more than {limit} entries "
                f"(raise the limit with max_entries= or {ENV_MAX_LISTING_ENTRIES})"
            )

    if fsdata.type == DataType.Directory:
        for link in node.links:
            counted(link.cid)
            yield link.name or "", link.cid, link.tsize
        return
    visited = {cid.multihash}
    # Frames: (shard cid, its links, next link index, its child shards' nodes, depth).
    stack: list[tuple[CID, list, int, dict[bytes, PBNode], int]] = []

    def frame(shard_cid: CID, shard: PBNode, depth: int) -> tuple[CID, list, int, dict[bytes, PBNode], int]:
        parsed = [(shard_link(shard_cid, link.name)[1], link) for link in shard.links]
        wanted = []
        for entry, link in parsed:
            if entry is None:
                if link.cid.multihash in visited:
                    raise UnixFSFormatError(f"{cid}: HAMT shard {link.cid} appears twice in one directory")
                if depth + 1 >= MAX_HAMT_DEPTH:
                    raise UnixFSFormatError(f"{cid}: HAMT deeper than {MAX_HAMT_DEPTH} levels")
                visited.add(link.cid.multihash)
                if len(visited) > limit:  # a shard holds >= 2 entries: never more shards than entries
                    raise UnixFSFormatError(f"{cid}: HAMT of more than {limit} shard nodes")
                wanted.append(link.cid)
        children = {c.multihash: _child_shard(shard_cid, c, b) for c, b in source.get_many(wanted)}
        return shard_cid, parsed, 0, children, depth

    stack.append(frame(cid, node, 0))
    while stack:
        shard_cid, parsed, i, children, depth = stack[-1]
        if i == len(parsed):
            stack.pop()
            continue
        stack[-1] = (shard_cid, parsed, i + 1, children, depth)
        entry, link = parsed[i]
        if entry is None:
            child = children.pop(link.cid.multihash, None)
            if child is None:
                raise BlockNotFoundError(link.cid, hint=f"the source skipped a shard of {cid}")
            stack.append(frame(link.cid, child, depth + 1))
        else:
            counted(link.cid)
            yield entry, link.cid, link.tsize


def lookup(source, cid: CID, node: PBNode, fsdata: UnixFSData, name: str, where: str) -> CID:
    """The CID of entry ``name`` in the directory ``cid`` (decoded: ``node``/``fsdata``).

    A HAMT is searched only along the name's hash path (at most :data:`MAX_HAMT_DEPTH`
    shard nodes).
    """
    if fsdata.type == DataType.Directory:
        for link in node.links:
            if link.name == name:
                return link.cid
        raise PathNotFoundError(where, name)
    name_hash = hash_name(name)
    shard_cid, shard = cid, node
    for depth in range(MAX_HAMT_DEPTH):
        bucket = bucket_at(name_hash, depth)
        next_shard: CID | None = None
        for link in shard.links:
            link_bucket, entry = shard_link(shard_cid, link.name)
            if link_bucket != bucket:
                continue
            if entry is None:
                next_shard = link.cid
            elif entry == name:
                return link.cid
        if next_shard is None:
            raise PathNotFoundError(where, name)
        block = source.get(next_shard)
        shard = _child_shard(shard_cid, next_shard, block)
        shard_cid = next_shard
    raise UnixFSFormatError(f"{cid}: HAMT deeper than {MAX_HAMT_DEPTH} levels looking up {name!r}")


def resolve_segments(source, root: CID, segments: Iterable[str]) -> CID:
    """The CID at ``root/segments``."""
    return resolve_prefixes(source, root, segments)[-1]


def resolve_prefixes(source, root: CID, segments: Iterable[str]) -> list[CID]:
    """The CID each prefix of ``root/segments`` resolves to: ``root``, then one per
    segment (a gateway's ``X-Ipfs-Roots``); the last is the path's terminal."""
    cid = root
    roots = [root]
    done: list[str] = []
    for segment in segments:
        where = "/ipfs/" + "/".join([str(root), *done])
        block = cid.digest if cid.is_identity else source.get(cid)
        try:
            node, fsdata = directory_node(source, cid, block)
        except NotADirectoryError:
            raise NotADirectoryError(
                f"{where} ({cid}) is not a directory, cannot look up {segment!r}"
            ) from None
        cid = lookup(source, cid, node, fsdata, segment, where)
        roots.append(cid)
        done.append(segment)
    return roots


# -- the blocks of a trustless CAR ----------------------------------------------------------


@dataclass(slots=True)
class _Expect:
    """One block the walk still expects, and what to do with it when it arrives.

    ``kind``: "path" (``segments`` left to resolve; HAMT lookups carry ``name_hash`` and
    ``hamt_depth``), "terminal" (the end of the path: apply the scope), "all" (whole
    subtree), "entity" (more of a file or HAMT directory), "range" (file node whose
    bytes start at ``start``; only children overlapping the range are expected).
    ``depth`` counts links from the root.
    """

    cid: CID
    kind: str
    depth: int = 0
    segments: tuple[str, ...] = ()
    name_hash: bytes | None = None
    hamt_depth: int = 0
    start: int = 0
    size: int | None = None
    parent: CID | None = None


class CarWalk:
    """Which blocks ``GET /ipfs/{root}/{path}?format=car&dag-scope=..&entity-bytes=..&dups=..``
    holds, one at a time, in DFS order.

    The server asks :meth:`next_cid`, fetches that block and hands it to :meth:`accept`;
    the verifier does the same with the blocks that arrive. Either way the walk is
    decided here, once. Identity CIDs are walked locally and never expected; with
    ``dups=False`` a block already accepted is not expected again (its subtree is walked
    from the copy kept here when a path or a range needs it: inner nodes are kept, leaves
    only by size, so memory follows the DAG's inner nodes, not its bytes).

    Scopes: ``"block"`` the terminal block; ``"entity"`` a file's DAG (only the nodes
    covering ``entity_bytes`` when given; an empty range degrades to the block), a HAMT
    directory's shard nodes, otherwise the block (non-UnixFS dag-pb included); ``"all"``
    the whole DAG. Depth is limited to :data:`MAX_DAG_DEPTH` levels.
    """

    def __init__(
        self,
        root: CID,
        segments: tuple[str, ...] = (),
        *,
        scope: str = "all",
        entity_bytes: tuple[int, int | None] | None = None,
        dups: bool = False,
    ) -> None:
        if scope not in ("all", "entity", "block"):
            raise ValueError(f"invalid dag-scope {scope!r}; valid: all, entity, block")
        if entity_bytes is not None:
            scope = "entity"
        self.root = root
        self.scope = scope
        self.entity_bytes = entity_bytes
        self.dups = dups
        self.count = 0
        self._seen: set[bytes] = set()
        self._inner: dict[bytes, bytes] = {}
        self._leaf_sizes: dict[bytes, int] = {}
        self._range = (0, 0)
        self._stack: list[_Expect] = [_Expect(root, "path" if segments else "terminal", 0, segments)]

    @property
    def pending(self) -> int:
        """How many blocks are known to be still expected (at least)."""
        return len(self._stack)

    def next_cid(self) -> CID | None:
        """The CID whose block comes next (None when the walk is complete)."""
        self._skip_local()
        return self._stack[-1].cid if self._stack else None

    def accept(self, cid: CID, block: bytes) -> None:
        """Take the (verified) block for :meth:`next_cid` and expand the walk."""
        self._skip_local()
        exp = self._stack.pop()
        if cid != exp.cid:  # the caller checks order; this guards the walk itself
            self._stack.append(exp)
            raise ValueError(f"accept({cid}) while {exp.cid} is next")
        self._seen.add(cid.multihash)
        self.count += 1
        self._expand(exp, block, fresh=True)

    # -- the walk -----------------------------------------------------------------------

    def _skip_local(self) -> None:
        while self._stack:
            exp = self._stack[-1]
            if exp.cid.is_identity:
                self._stack.pop()
                self._expand(exp, exp.cid.digest, fresh=True)
            elif not self.dups and exp.cid.multihash in self._seen:
                self._stack.pop()
                kept = self._inner.get(exp.cid.multihash)
                if kept is not None and exp.kind in ("path", "range"):
                    self._expand(exp, kept, fresh=False)
                elif exp.kind == "range" and exp.cid.multihash in self._leaf_sizes:
                    check_child_size(exp.cid, self._leaf_sizes[exp.cid.multihash], exp.parent, exp.size)
            else:
                return

    def _push(self, parent: _Expect, items: list[_Expect]) -> None:
        if items:
            check_depth(parent.cid, parent.depth + 1)
        self._stack.extend(reversed(items))

    def _expand(self, exp: _Expect, block: bytes, *, fresh: bool) -> None:
        kind = exp.kind
        if kind == "path":
            if not self.dups and exp.cid.codec == DAG_PB:
                self._inner[exp.cid.multihash] = block
            self._expand_path(exp, block)
        elif kind == "terminal":
            self._expand_terminal(exp, block)
        elif kind == "all":
            if fresh or self.dups:
                d = exp.depth + 1
                self._push(exp, [_Expect(c, "all", d) for c in child_cids(exp.cid, block)])
        elif kind == "entity":
            if fresh or self.dups:
                self._expand_entity(exp, block)
        elif kind == "range":
            self._expand_range(exp, block)

    def _expand_path(self, exp: _Expect, block: bytes) -> None:
        cid, name, rest = exp.cid, exp.segments[0], exp.segments[1:]
        where = "/ipfs/" + str(self.root)
        if cid.codec != DAG_PB:
            raise PathNotFoundError(where, name)
        node, fsdata = _decode_unixfs(cid, block)
        d = exp.depth + 1
        next_kind = "path" if rest else "terminal"
        if exp.name_hash is None and fsdata.type == DataType.Directory:
            for link in node.links:
                if link.name == name:
                    self._push(exp, [_Expect(link.cid, next_kind, d, rest)])
                    return
            raise PathNotFoundError(where, name)
        if fsdata.type != DataType.HAMTShard:
            raise PathNotFoundError(where, name)
        if exp.hamt_depth >= MAX_HAMT_DEPTH:
            raise UnixFSFormatError(f"{cid}: HAMT deeper than {MAX_HAMT_DEPTH} levels looking up {name!r}")
        name_hash = exp.name_hash or hash_name(name)
        prefix = f"{bucket_at(name_hash, exp.hamt_depth):02X}"
        for link in node.links:
            link_name = link.name or ""
            if link_name == prefix:
                self._push(exp, [_Expect(link.cid, "path", d, exp.segments, name_hash, exp.hamt_depth + 1)])
                return
            if link_name == prefix + name:
                self._push(exp, [_Expect(link.cid, next_kind, d, rest)])
                return
        raise PathNotFoundError(where, name)

    def _expand_terminal(self, exp: _Expect, block: bytes) -> None:
        if self.scope == "block":
            return
        if self.scope == "all":
            self._push(exp, [_Expect(c, "all", exp.depth + 1) for c in child_cids(exp.cid, block)])
            return
        if self.entity_bytes is not None and is_file_kind(node_kind(exp.cid, block)):
            node = decode_file_node(exp.cid, block)
            lo, hi = resolve_entity_bytes(self.entity_bytes, node.size)
            self._range = (lo, hi)
            if lo < hi:  # else: empty or outside the file -> the root block only
                self._expand_range(_Expect(exp.cid, "range", exp.depth, start=0, size=node.size), block)
            return
        self._expand_entity(exp, block)

    def _expand_entity(self, exp: _Expect, block: bytes) -> None:
        """A file's whole DAG; a HAMT directory's shard nodes; nothing for the rest."""
        kind = node_kind(exp.cid, block)
        if exp.cid.codec != DAG_PB or kind is None:
            return
        node = decode_node(block)
        d = exp.depth + 1
        if is_file_kind(kind):
            self._push(exp, [_Expect(link.cid, "entity", d) for link in node.links])
        elif kind == DataType.HAMTShard:
            shards = [link for link in node.links if len(link.name or "") == 2]
            self._push(exp, [_Expect(link.cid, "entity", d) for link in shards])

    def _expand_range(self, exp: _Expect, block: bytes) -> None:
        node = decode_file_node(exp.cid, block)
        check_child_size(exp.cid, node.size, exp.parent, exp.size)
        if not self.dups and exp.cid.codec == DAG_PB:
            if node.links:
                self._inner[exp.cid.multihash] = block
            else:
                self._leaf_sizes[exp.cid.multihash] = node.size
        lo, hi = self._range
        d = exp.depth + 1
        self._push(exp, [
            _Expect(child, "range", d, start=child_start, size=size, parent=exp.cid)
            for child, child_start, size in overlapping_children(node, exp.start, lo, hi)
        ])

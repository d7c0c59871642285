"""The DAG mechanics of the importer: blocks for leaves, file nodes and directories,
and the balanced layout policy, byte for byte as boxo (Kubo) builds them.

- :class:`DagWriter` turns chunks and child lists into blocks, hashes them, hands them
  to the store and returns :class:`Built` handles (CID, cumulative size, file size) --
  boxo's ``helpers/dagbuilder.go``.
- :func:`balanced_layout` is boxo's ``importer/balanced/builder.go``: the first chunk
  is the root; each time the tree is full, a new root takes the old one as its first
  child and is filled, depth first, to ``max_links`` children. Only the current path
  of unfinished nodes is in memory (at most ``depth * max_links`` small handles).

The byte-level choices that decide CIDs (see ``docs/importer.md``):
- file-chunk links carry ``Name`` present but empty (``12 00``) and ``Tsize``;
- leaf Tsize = block length; inner Tsize = block length + children's Tsizes;
- dag-pb leaves are ``{Type: File, Data: chunk, filesize}``; inner nodes
  ``{Type: File, filesize, blocksizes...}`` with no ``Data``; an empty file is
  ``{Type: File, filesize: 0}``;
- raw leaves are CIDv1 ``raw`` even when the rest of the DAG is CIDv0 (as in Go).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from torch_ipfs import multihash
from torch_ipfs.cid import CID, DAG_PB, RAW
from torch_ipfs.dagpb import DataType, PBLink, PBNode, UnixFSData, encode_node
from torch_ipfs.errors import BlockTooLargeError
from torch_ipfs.sources.base import MAX_BLOCK_SIZE, BlockStore
from torch_ipfs.varint import encode_varint

__all__ = ["DIRECTORY_DATA", "Built", "DagWriter", "balanced_layout"]

#: UnixFS ``Data`` of a plain directory: ``{Type: Directory}``.
DIRECTORY_DATA = b"\x08\x01"

_SHA256_PREFIX = b"\x12\x20"


@dataclass(frozen=True, slots=True)
class Built:
    """A node that has been written: what a parent needs to link to it."""

    cid: CID
    #: Cumulative DAG size: this block plus every block below it (a link's ``Tsize``).
    tsize: int
    #: File bytes under this node (``None`` for directories and symlinks).
    filesize: int | None = None


class DagWriter:
    """Encodes, hashes and stores UnixFS nodes with one set of CID choices.

    ``cid_version`` applies to dag-pb nodes; ``raw_leaves`` stores file chunks as raw
    blocks (always CIDv1, codec raw); ``hash_code`` is the multihash function.
    """

    def __init__(
        self,
        store: BlockStore,
        *,
        cid_version: int = 0,
        raw_leaves: bool = False,
        hash_code: int = multihash.SHA2_256,
    ) -> None:
        if cid_version == 0 and hash_code != multihash.SHA2_256:
            raise ValueError("CIDv0 only exists for sha2-256; use cid_version=1 with another hash")
        self.store = store
        self.cid_version = cid_version
        self.raw_leaves = raw_leaves
        self.hash_code = hash_code
        # we hash every block to name it: the store need not hash it again
        self._put = getattr(store, "put_hashed", store.put)

    # -- hashing and storing ----------------------------------------------------------

    def _multihash(self, block: bytes) -> bytes:
        if self.hash_code == multihash.SHA2_256:  # the hot path: one C call per block
            return _SHA256_PREFIX + hashlib.sha256(block).digest()
        return multihash.digest(block, self.hash_code)

    def put_block(self, block: bytes, codec: int) -> CID:
        """Hash ``block``, store it, return its CID (dag-pb in the configured version)."""
        if len(block) > MAX_BLOCK_SIZE:
            raise BlockTooLargeError("<new block>", len(block), MAX_BLOCK_SIZE, "importer")
        version = self.cid_version if codec == DAG_PB else 1
        cid = CID(version, codec, self._multihash(block))
        self._put(cid, block)
        return cid

    def put_node(self, links: list[PBLink], data: bytes) -> Built:
        """Store a dag-pb node; its Tsize is the block length plus its links' Tsizes.

        Links are stably sorted by name bytes first, as Go's dag-pb encoder does.
        """
        links = sorted(links, key=_name_key)
        block = encode_node(PBNode(links, data))
        cid = self.put_block(block, DAG_PB)
        return Built(cid, len(block) + sum(link.tsize or 0 for link in links))

    # -- files --------------------------------------------------------------------------

    def leaf(self, chunk: bytes) -> Built:
        """A file leaf holding ``chunk``: a raw block, or a dag-pb ``{File, Data, filesize}``."""
        size = len(chunk)
        if self.raw_leaves:
            return Built(self.put_block(chunk, RAW), size, size)
        if not size:
            return self.empty_file()
        # Encoded by hand so the chunk is copied once: PBNode{Data: UnixFS{Type 2, Data, filesize}}.
        size_varint = encode_varint(size)
        inner_len = 2 + 1 + len(size_varint) + size + 1 + len(size_varint)
        head = b"\x0a" + encode_varint(inner_len) + b"\x08\x02\x12" + size_varint
        block = b"".join((head, chunk, b"\x18", size_varint))
        return Built(self.put_block(block, DAG_PB), len(block), size)

    def empty_file(self) -> Built:
        """The node of an empty file (boxo ``NewLeafNode(nil)``)."""
        if self.raw_leaves:
            return Built(self.put_block(b"", RAW), 0, 0)
        block = encode_node(PBNode([], UnixFSData(DataType.File, filesize=0).encode()))
        return Built(self.put_block(block, DAG_PB), len(block), 0)

    def file_node(self, children: list[Built]) -> Built:
        """An inner file node over ``children`` (links named "", blocksizes = their file sizes)."""
        sizes = [c.filesize or 0 for c in children]
        data = UnixFSData(DataType.File, filesize=sum(sizes), blocksizes=sizes).encode()
        built = self.put_node([PBLink(c.cid, "", c.tsize) for c in children], data)
        return Built(built.cid, built.tsize, sum(sizes))

    # -- directories and symlinks -------------------------------------------------------

    def directory(self, entries: Iterable[tuple[str, Built]]) -> Built:
        """A plain directory: links sorted bytewise by name, each with its Tsize."""
        links = [PBLink(child.cid, name, child.tsize) for name, child in entries]
        return self.put_node(links, DIRECTORY_DATA)

    def symlink(self, target: str) -> Built:
        """A UnixFS symlink node ``{Type: Symlink, Data: target}``."""
        return self.put_node([], UnixFSData(DataType.Symlink, data=_fs_bytes(target)).encode())


def _fs_bytes(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def _name_key(link: PBLink) -> bytes:
    return _fs_bytes(link.name or "")


class _Lookahead:
    """An iterator that can tell whether it is exhausted without losing an item
    (boxo's ``DagBuilderHelper.Done``). Holds at most one chunk ahead."""

    __slots__ = ("_it", "_next")

    def __init__(self, items: Iterable[bytes]) -> None:
        self._it: Iterator[bytes] = iter(items)
        self._next: bytes | None = next(self._it, None)

    def done(self) -> bool:
        return self._next is None

    def pop(self) -> bytes:
        item = self._next
        assert item is not None
        self._next = next(self._it, None)
        return item


def balanced_layout(chunks: Iterable[bytes], writer: DagWriter, max_links: int = 174) -> Built:
    """Build a file from ``chunks`` in boxo's balanced layout; return the root."""
    if max_links < 2:
        raise ValueError(f"max_links must be at least 2, got {max_links}")
    source = _Lookahead(chunks)
    if source.done():
        return writer.empty_file()
    root = writer.leaf(source.pop())
    depth = 1
    while not source.done():
        root = _fill(writer, source, [root], depth, max_links)
        depth += 1
    return root


def _fill(writer: DagWriter, source: _Lookahead, children: list[Built], depth: int, max_links: int) -> Built:
    """boxo ``fillNodeRec``: add children (leaves at depth 1) until full or out of data."""
    while len(children) < max_links and not source.done():
        if depth == 1:
            children.append(writer.leaf(source.pop()))
        else:
            children.append(_fill(writer, source, [], depth - 1, max_links))
    return writer.file_node(children)

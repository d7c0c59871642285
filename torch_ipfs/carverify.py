"""Verifying a DFS-ordered CAR stream from an untrusted trustless gateway, block by block.

A trustless gateway answers ``GET /ipfs/{root}[/{path}]?format=car&dag-scope=...&
entity-bytes=...`` with a CAR whose HTTP status is already 200 before the first block is
sent, so a missing, extra, reordered or truncated block can only be noticed while reading.
:class:`CarBlockVerifier` walks the requested DAG itself as the blocks arrive and accepts
each one only if it is the very block its own walk expects next (and its hash matches).

This module checks ``(cid, block)`` pairs from any iterable; reading them out of the CAR
bytes is :class:`torch_ipfs.car.CarReader`'s job. The server side
(:mod:`torch_ipfs.serve`) shares :func:`parse_entity_bytes` with it so both read the
parameter the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from torch_ipfs.cid import CID, DAG_PB, RAW, verify_block
from torch_ipfs.dag import child_cids
from torch_ipfs.dagpb import DataType, UnixFSData, decode_node
from torch_ipfs.errors import (
    BlockTooLargeError,
    CARFormatError,
    PathNotFoundError,
    UnixFSFormatError,
)
from torch_ipfs.sources.base import MAX_BLOCK_SIZE
from torch_ipfs.unixfs.hamt import bucket_at, hash_name
from torch_ipfs.unixfs.reader import decode_file_node

__all__ = [
    "CarBlockVerifier",
    "DagStreamVerifier",
    "Scope",
    "parse_entity_bytes",
    "verify_car_stream",
]

#: The ``dag-scope`` values of the trustless-gateway spec.
Scope = Literal["all", "entity", "block"]


def parse_entity_bytes(value: str) -> tuple[int, int | None]:
    """Parse an ``entity-bytes=from:to`` value: ``"0:*"`` -> ``(0, None)``, negative
    numbers count from the end (resolved once the file size is known)."""
    start, sep, end = value.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(start), (None if end == "*" else int(end))
    except ValueError:
        raise ValueError(f"invalid entity-bytes {value!r}; expected from:to, e.g. 0:* or 100:199") from None


@dataclass(slots=True)
class _Expect:
    """One block the walk still expects, and what to do with it when it arrives.

    ``kind``: "path" (``segments`` left to resolve; HAMT lookups carry ``name_hash`` and
    ``depth``), "terminal" (the end of the path: apply the scope), "all" (whole subtree),
    "entity" (more of a file or HAMT directory), "range" (file node whose bytes start at
    ``start``; only children overlapping ``[lo, hi)`` are expected).
    """

    cid: CID
    kind: str
    segments: tuple[str, ...] = ()
    name_hash: bytes | None = None
    depth: int = 0
    start: int = 0
    size: int | None = None
    parent: CID | None = None


class CarBlockVerifier:
    """Incremental verifier for a DFS-ordered CAR from an untrusted (trustless) gateway.

    Mirrors ``GET /ipfs/{root}[/{path}]?format=car&dag-scope=...&entity-bytes=...`` with
    ``Accept: application/vnd.ipld.car; version=1; order=dfs; dups=y|n``::

        verifier = CarBlockVerifier(root, path="a/b", scope="entity", entity_bytes=(0, 1023))
        for cid, block in CarReader(response.iter_bytes()):
            verifier.push(cid, block)      # raises on the first wrong block
        verifier.finish()                  # raises if blocks are still expected
        verifier.blocks                    # the verified (cid, block) pairs, in order

    or simply ``for cid, block in verify_car_stream(CarReader(body), root, ...)``.

    The verifier walks the DAG itself as blocks arrive: the path blocks first (each
    directory block, and for HAMT directories the shard nodes on the name's hash path),
    then the terminal element per ``scope``:

    - ``"block"``: only the terminal block;
    - ``"entity"``: a file's whole DAG (or, with ``entity_bytes=(from, to)``, inclusive,
      ``to=None`` for the end, negatives from the end, only the nodes and leaves covering
      that range, in DFS order; a range that is empty or entirely outside the file
      degrades to ``"block"``, as the spec says); a plain directory's block; a HAMT
      directory's shard nodes (not the entries); otherwise the block;
    - ``"all"``: the whole DAG under the terminal.

    ``dups=False`` (``dups=n``): a block already received is not expected again (its
    subtree is still walked for ranges, from the copy kept here); ``dups=True``: every
    occurrence is expected. Identity CIDs are never expected (computed locally).

    Errors: a block with a wrong hash -> :class:`IntegrityError`; over 2 MiB ->
    :class:`BlockTooLargeError`; a block that is not the next expected one, or arrives
    after the walk is complete -> :class:`CARFormatError` (out of order / unexpected);
    :meth:`finish` with blocks still expected -> :class:`CARFormatError` (truncation);
    a path segment that the verified directory lacks -> :class:`PathNotFoundError`; a
    malformed node -> :class:`UnixFSFormatError`.

    ``on_block(cid, block)`` is called for each verified block; without it blocks are
    collected in :attr:`blocks`. Duplicate blocks (``dups=True``) are passed each time.
    """

    def __init__(
        self,
        root: CID | str,
        *,
        path: str = "",
        scope: Scope = "all",
        entity_bytes: tuple[int, int | None] | str | None = None,
        dups: bool = False,
        on_block: Callable[[CID, bytes], None] | None = None,
    ) -> None:
        if scope not in ("all", "entity", "block"):
            raise ValueError(f"invalid dag-scope {scope!r}; valid: all, entity, block")
        if isinstance(entity_bytes, str):
            entity_bytes = parse_entity_bytes(entity_bytes)
        if entity_bytes is not None:
            scope = "entity"  # entity-bytes implies dag-scope=entity
        self.root = CID.decode(root)
        self.scope: Scope = scope
        self.entity_bytes = entity_bytes
        self.dups = dups
        self.on_block = on_block
        self.blocks: list[tuple[CID, bytes]] = []
        self.count = 0
        self._seen: set[bytes] = set()
        # dups=n: what a duplicate needs to be walked again without being re-sent. Nodes with
        # links keep their block; leaves only their size (memory stays bounded by the DAG's
        # inner nodes, not by the bytes of the range).
        self._inner: dict[bytes, bytes] = {}
        self._leaf_sizes: dict[bytes, int] = {}
        self._range = (0, 0)  # the resolved entity-bytes range, half-open, once known
        segments = tuple(s for s in path.split("/") if s)
        first = _Expect(self.root, "path" if segments else "terminal", segments)
        self._stack: list[_Expect] = [first]

    # -- public -------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """True when no more blocks are expected."""
        self._skip_local()
        return not self._stack

    @property
    def expected(self) -> CID | None:
        """The CID the next block must have (None when complete)."""
        self._skip_local()
        return self._stack[-1].cid if self._stack else None

    def push(self, cid: CID, block: bytes) -> None:
        """Check that ``(cid, block)`` is the next block of the walk and verify its hash."""
        self._skip_local()
        if not self._stack:
            raise CARFormatError(f"unexpected block {cid}: the requested DAG is already complete")
        exp = self._stack[-1]
        if cid != exp.cid:
            raise CARFormatError(f"block {cid} out of order: expected {exp.cid} next")
        if len(block) > MAX_BLOCK_SIZE:
            raise BlockTooLargeError(cid, len(block), MAX_BLOCK_SIZE, "CAR stream")
        verify_block(cid, block, "CAR stream")
        self._stack.pop()
        self._seen.add(cid.multihash)
        self.count += 1
        self._expand(exp, block, fresh=True)
        if self.on_block is not None:
            self.on_block(cid, block)
        else:
            self.blocks.append((cid, block))

    def finish(self) -> None:
        """Call at the end of the stream: raise :class:`CARFormatError` if the CAR stopped
        while blocks were still expected (a truncated response)."""
        self._skip_local()
        if self._stack:
            raise CARFormatError(
                f"CAR stream ended after {self.count} blocks while {len(self._stack)}+ were still "
                f"expected (next {self._stack[-1].cid}): truncated response"
            )

    # -- the walk ---------------------------------------------------------------------------

    def _skip_local(self) -> None:
        """Pop expectations that will not be sent: identity CIDs (walked locally) and,
        with dups=n, blocks already received (re-walked from the kept copy if needed)."""
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
                    _check_node_size(exp, self._leaf_sizes[exp.cid.multihash])
            else:
                return

    def _push_children(self, items: list[_Expect]) -> None:
        self._stack.extend(reversed(items))

    def _expand(self, exp: _Expect, block: bytes, *, fresh: bool) -> None:
        cid = exp.cid
        kind = exp.kind
        if kind == "path":
            self._keep(cid, block)
            self._expand_path(exp, block)
        elif kind == "terminal":
            self._expand_terminal(exp, block)
        elif kind == "all":
            if fresh or self.dups:
                self._push_children([_Expect(c, "all") for c in child_cids(cid, block)])
        elif kind == "entity":
            if fresh or self.dups:
                self._expand_entity(cid, block)
        elif kind == "range":
            self._expand_range(exp, block)

    def _keep(self, cid: CID, block: bytes) -> None:
        if not self.dups and cid.codec == DAG_PB:
            self._inner[cid.multihash] = block

    def _expand_path(self, exp: _Expect, block: bytes) -> None:
        cid, name = exp.cid, exp.segments[0]
        rest = exp.segments[1:]
        if cid.codec != DAG_PB:
            raise PathNotFoundError(f"/ipfs/{self.root}", name)
        node = decode_node(block)
        fsdata = _unixfs(cid, node.data)
        if exp.name_hash is None and fsdata.type == DataType.Directory:
            for link in node.links:
                if link.name == name:
                    self._push_children([_Expect(link.cid, "path" if rest else "terminal", rest)])
                    return
            raise PathNotFoundError(f"/ipfs/{self.root}", name)
        if fsdata.type != DataType.HAMTShard:
            raise PathNotFoundError(f"/ipfs/{self.root}", name)
        name_hash = exp.name_hash or hash_name(name)
        bucket = bucket_at(name_hash, exp.depth)
        prefix = f"{bucket:02X}"
        for link in node.links:
            link_name = link.name or ""
            if link_name == prefix:
                self._push_children([_Expect(link.cid, "path", exp.segments, name_hash, exp.depth + 1)])
                return
            if link_name == prefix + name:
                self._push_children([_Expect(link.cid, "path" if rest else "terminal", rest)])
                return
        raise PathNotFoundError(f"/ipfs/{self.root}", name)

    def _expand_terminal(self, exp: _Expect, block: bytes) -> None:
        cid = exp.cid
        if self.scope == "block":
            return
        if self.scope == "all":
            self._push_children([_Expect(c, "all") for c in child_cids(cid, block)])
            return
        if self.entity_bytes is not None and _is_file(cid, block):
            node = decode_file_node(cid, block)
            lo, hi = _resolve_range(self.entity_bytes, node.size)
            self._range = (lo, hi)
            if lo < hi:  # else: empty or outside the file -> the root block only
                self._expand_range(_Expect(cid, "range", start=0, size=node.size), block)
            return
        self._expand_entity(cid, block)

    def _expand_entity(self, cid: CID, block: bytes) -> None:
        """A file's whole DAG; a HAMT directory's shard nodes; nothing for the rest."""
        if cid.codec != DAG_PB:
            return
        node = decode_node(block)
        fsdata = _unixfs(cid, node.data)
        if fsdata.type in (DataType.File, DataType.Raw):
            self._push_children([_Expect(link.cid, "entity") for link in node.links])
        elif fsdata.type == DataType.HAMTShard:
            self._push_children(
                [_Expect(link.cid, "entity") for link in node.links if len(link.name or "") == 2]
            )

    def _expand_range(self, exp: _Expect, block: bytes) -> None:
        node = decode_file_node(exp.cid, block)
        _check_node_size(exp, node.size)
        if not self.dups and exp.cid.codec == DAG_PB:
            if node.links:
                self._inner[exp.cid.multihash] = block
            else:
                self._leaf_sizes[exp.cid.multihash] = node.size
        lo, hi = self._range
        children = []
        for i, child in enumerate(node.links):
            child_start = exp.start + node.offsets[i]
            size = node.sizes[i]
            if size == 0 or child_start + size <= lo:
                continue
            if child_start >= hi:
                break
            children.append(_Expect(child, "range", start=child_start, size=size, parent=exp.cid))
        self._push_children(children)


def _unixfs(cid: CID, data: bytes | None) -> UnixFSData:
    if data is None:
        raise UnixFSFormatError(f"{cid}: dag-pb node without UnixFS Data")
    try:
        return UnixFSData.decode(data)
    except UnixFSFormatError as e:
        raise UnixFSFormatError(f"{cid}: {e}") from None


def _is_file(cid: CID, block: bytes) -> bool:
    if cid.codec == RAW:
        return True
    if cid.codec != DAG_PB:
        return False
    return _unixfs(cid, decode_node(block).data).type in (DataType.File, DataType.Raw)


def _check_node_size(exp: _Expect, size: int) -> None:
    if exp.size is not None and size != exp.size:
        raise UnixFSFormatError(
            f"{exp.cid}: node holds {size} bytes but its parent {exp.parent} says {exp.size}"
        )


def _resolve_range(entity_bytes: tuple[int, int | None], size: int) -> tuple[int, int]:
    """``[from, to]`` inclusive with negatives / None -> half-open ``[lo, hi)`` clamped to
    the file; ``lo >= hi`` means nothing beyond the root block."""
    start, end = entity_bytes
    lo = size + start if start < 0 else start
    last = size - 1 if end is None else (size + end if end < 0 else end)
    lo = max(lo, 0)
    hi = min(last + 1, size)
    return lo, hi


#: The name the brief uses for the same class.
DagStreamVerifier = CarBlockVerifier


def verify_car_stream(
    pairs: Iterable[tuple[CID, bytes]],
    root: CID | str,
    *,
    path: str = "",
    scope: Scope = "all",
    entity_bytes: tuple[int, int | None] | str | None = None,
    dups: bool = False,
) -> Iterator[tuple[CID, bytes]]:
    """Yield each ``(cid, block)`` of ``pairs`` (e.g. a :class:`CarReader`) once the
    :class:`CarBlockVerifier` for ``root``/``path``/``scope`` accepted it; raise at the
    first violation, or at the end if the stream was truncated."""
    verifier = CarBlockVerifier(
        root, path=path, scope=scope, entity_bytes=entity_bytes, dups=dups, on_block=lambda c, b: None
    )
    for cid, block in pairs:
        verifier.push(cid, block)
        yield cid, block
    verifier.finish()

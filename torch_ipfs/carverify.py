"""Verifying a DFS-ordered CAR stream from an untrusted trustless gateway, block by block.

A trustless gateway answers ``GET /ipfs/{root}[/{path}]?format=car&dag-scope=...&
entity-bytes=...`` with a CAR whose HTTP status is already 200 before the first block is
sent, so a missing, extra, reordered or truncated block can only be noticed while reading.
:class:`CarBlockVerifier` walks the requested DAG itself as the blocks arrive and accepts
each one only if it is the very block its own walk expects next (and its hash matches).

This module checks ``(cid, block)`` pairs from any iterable; reading them out of the CAR
bytes is :class:`torch_ipfs.car.CarReader`'s job. Which blocks a response holds is
decided by :class:`torch_ipfs.unixfs.walk.CarWalk`, which the server
(:mod:`torch_ipfs.serve`) runs too, so the two agree by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Literal

from torch_ipfs.cid import CID, verify_block
from torch_ipfs.errors import BlockTooLargeError, CARFormatError
from torch_ipfs.sources.base import MAX_BLOCK_SIZE
from torch_ipfs.unixfs.walk import CarWalk, parse_entity_bytes

__all__ = [
    "CarBlockVerifier",
    "DagStreamVerifier",
    "Scope",
    "parse_entity_bytes",
    "verify_car_stream",
]

#: The ``dag-scope`` values of the trustless-gateway spec.
Scope = Literal["all", "entity", "block"]


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

    The walk is :class:`~torch_ipfs.unixfs.walk.CarWalk`, the one ``serve`` runs:
    iterative, at most 2,048 levels deep and 8 HAMT levels (:class:`UnixFSFormatError`
    beyond); a dag-pb node without UnixFS Data is an entity of one block.
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
        segments = tuple(s for s in path.split("/") if s)
        # The walk the server runs too (torch_ipfs.unixfs.walk): both agree by construction.
        self._walk = CarWalk(self.root, segments, scope=scope, entity_bytes=entity_bytes, dups=dups)

    # -- public -------------------------------------------------------------------------

    @property
    def count(self) -> int:
        """How many blocks were accepted."""
        return self._walk.count

    @property
    def done(self) -> bool:
        """True when no more blocks are expected."""
        return self._walk.next_cid() is None

    @property
    def expected(self) -> CID | None:
        """The CID the next block must have (None when complete)."""
        return self._walk.next_cid()

    def push(self, cid: CID, block: bytes) -> None:
        """Check that ``(cid, block)`` is the next block of the walk and verify its hash."""
        expected = self._walk.next_cid()
        if expected is None:
            raise CARFormatError(f"unexpected block {cid}: the requested DAG is already complete")
        if cid != expected:
            raise CARFormatError(f"block {cid} out of order: expected {expected} next")
        if len(block) > MAX_BLOCK_SIZE:
            raise BlockTooLargeError(cid, len(block), MAX_BLOCK_SIZE, "CAR stream")
        verify_block(cid, block, "CAR stream")
        self._walk.accept(cid, block)
        if self.on_block is not None:
            self.on_block(cid, block)
        else:
            self.blocks.append((cid, block))

    def finish(self) -> None:
        """Call at the end of the stream: raise :class:`CARFormatError` if the CAR stopped
        while blocks were still expected (a truncated response)."""
        expected = self._walk.next_cid()
        if expected is not None:
            raise CARFormatError(
                f"CAR stream ended after {self.count} blocks while {self._walk.pending}+ were still "
                f"expected (next {expected}): truncated response"
            )


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

"""The resolution order: ask several sources in turn for each block.

``SourceChain([cache, local, kubo, gateways])`` is what datasets read through. A block
is returned from the first source that delivers it *verified*; a source that is down,
slow or serves bad bytes is skipped for that block, and when every source fails the
error says which sources were tried and how to add one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence

from torch_ipfs.cid import CID
from torch_ipfs.errors import BlockNotFoundError, IntegrityError, SourceError
from torch_ipfs.sources.base import BlockSource

__all__ = ["HOW_TO_ADD_A_SOURCE", "SourceChain"]

log = logging.getLogger(__name__)

HOW_TO_ADD_A_SOURCE = (
    "add it to the local store (torch-ipfs dag import / add), or configure a source: "
    "TORCH_IPFS_API=/ip4/127.0.0.1/tcp/5001 for a Kubo node, "
    "TORCH_IPFS_GATEWAYS=http://host:8080 for trustless gateways"
)


class SourceChain(BlockSource):
    """Try ``sources`` in order for each block; the first verified answer wins."""

    def __init__(self, sources: Sequence[BlockSource]) -> None:
        if not sources:
            raise ValueError("SourceChain needs at least one source")
        self.sources = list(sources)
        self.name = " -> ".join(s.name for s in self.sources)
        self.prefetch_window = max(s.prefetch_window for s in self.sources)

    def _get_raw(self, cid: CID) -> bytes:  # pragma: no cover - get() is overridden
        return self.get(cid)

    def get(self, cid: CID) -> bytes:
        if cid.is_identity:
            return cid.digest
        errors: list[Exception] = []
        for source in self.sources:
            try:
                return source.get(cid)  # each source verifies what it returns
            except BlockNotFoundError as e:
                errors.append(e)
            except (IntegrityError, SourceError) as e:
                if source is not self.sources[-1]:  # the last failure is in the raised error
                    log.warning("%s failed for %s: %s; trying the next source", source.name, cid, e)
                errors.append(e)
        raise self._failure(cid, errors)

    def get_many(self, cids: Iterable[CID]) -> Iterator[tuple[CID, bytes]]:
        """Fetch a batch: each source is asked, in order, for what is still missing, in
        ``get_many`` calls so remote sources can fetch in parallel."""
        wanted = list(cids)
        found: dict[CID, bytes] = {}
        missing = [c for c in dict.fromkeys(wanted) if not c.is_identity]
        for source in self.sources:
            pending = missing
            while pending:
                try:
                    for cid, block in source.get_many(pending):
                        found[cid] = block
                    break
                except (BlockNotFoundError, IntegrityError) as e:
                    # This source lacks (or garbles) one block: skip it, keep asking for the rest.
                    rest = [c for c in pending if c not in found]
                    pending = rest[1:] if rest and rest[0] == e.cid else []
                except SourceError as e:
                    log.debug("%s could not deliver a batch: %s", source.name, e)
                    break
            missing = [c for c in missing if c not in found]
            if not missing:
                break
        for cid in missing:  # the precise per-block path builds the full error
            found[cid] = self.get(cid)
        for cid in wanted:
            yield cid, cid.digest if cid.is_identity else found[cid]

    def has(self, cid: CID) -> bool:
        return any(s.has(cid) for s in self.sources)

    def close(self) -> None:
        for s in self.sources:
            s.close()

    def _failure(self, cid: CID, errors: list[Exception]) -> Exception:
        tried = [s.name for s in self.sources]
        if errors and all(isinstance(e, BlockNotFoundError) for e in errors):
            return BlockNotFoundError(cid, tried, HOW_TO_ADD_A_SOURCE)
        # Surface the most telling failure (bad bytes beat "unreachable"), chained to the rest.
        worst = next((e for e in errors if isinstance(e, IntegrityError)), errors[-1])
        err = BlockNotFoundError(
            cid, tried, f"no source delivered verified bytes (last error: {worst}); {HOW_TO_ADD_A_SOURCE}"
        )
        err.__cause__ = worst
        return err

"""The resolution order: ask several sources in turn for each block.

``SourceChain([cache, local, kubo, gateways])`` is what datasets read through. A block
is returned from the first source that delivers it *verified*; a source that is down,
slow or serves bad bytes is skipped for that block. When every source fails, the error
says what really happened:

- :class:`BlockNotFoundError` only when *every* source answered "not found" (with a
  hint on how to add a source that has it);
- :class:`IntegrityError` when a source sent bytes that do not hash to the CID;
- :class:`SourceTimeoutError` / :class:`SourceUnavailableError` when the cause was the
  network (the block may well exist on the source that could not be reached).

The message names the failing source and its cause once.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

from torch_ipfs.cid import CID
from torch_ipfs.errors import (
    BlockNotFoundError,
    IntegrityError,
    SourceError,
    SourceTimeoutError,
    SourceUnavailableError,
)
from torch_ipfs.sources.base import BlockSource

__all__ = ["HOW_TO_ADD_A_SOURCE", "SourceChain"]

log = logging.getLogger(__name__)

HOW_TO_ADD_A_SOURCE = (
    "add it to the local store (torch-ipfs dag import / add), or configure a source: "
    "TORCH_IPFS_API=/ip4/127.0.0.1/tcp/5001 for a Kubo node, "
    "TORCH_IPFS_GATEWAYS=http://host:8080 for trustless gateways"
)


class SourceChain(BlockSource):
    """Try ``sources`` in order for each block; the first verified answer wins.

    ``hint`` is appended to a not-found error (default: how to add a source); the client
    passes one that only suggests what is not configured yet.
    """

    def __init__(self, sources: Sequence[BlockSource], *, hint: str = HOW_TO_ADD_A_SOURCE) -> None:
        if not sources:
            raise ValueError("SourceChain needs at least one source")
        self.sources = list(sources)
        self.hint = hint
        self._warned: set[int] = set()  # sources whose failure was logged (once each)
        self.name = " -> ".join(s.name for s in self.sources)
        self.prefetch_window = max(s.prefetch_window for s in self.sources)
        self.parallel_get_many = any(s.parallel_get_many for s in self.sources)
        self.reads_stored = any(s.reads_stored for s in self.sources)

    def _get_raw(self, cid: CID) -> bytes:  # pragma: no cover - get() is overridden
        return self.get(cid)

    def get(self, cid: CID) -> bytes:
        return self._get(cid, {})

    def _get(self, cid: CID, failed: dict[int, Exception]) -> bytes:
        """``get``, taking the error of a source in ``failed`` (by ``id``) as its answer
        instead of asking it again (it just spent its retry budget on this batch)."""
        if cid.is_identity:
            return cid.digest
        errors: list[Exception] = []
        for source in self.sources:
            if id(source) in failed:
                errors.append(failed[id(source)])
                continue
            try:
                return source.get(cid)  # each source verifies what it returns
            except BlockNotFoundError as e:
                errors.append(e)
            except (IntegrityError, SourceError) as e:
                if source is not self.sources[-1] and id(source) not in self._warned:
                    # once per source, not per block: the raised error carries the rest
                    self._warned.add(id(source))
                    log.warning("%s failed for %s: %s; trying the next source", source.name, cid, e)
                errors.append(e)
        raise self._failure(cid, errors)

    def get_many(self, cids: Iterable[CID]) -> Iterator[tuple[CID, bytes]]:
        """Fetch a batch: each source is asked, in order, for what is still missing, in
        ``get_many`` calls so remote sources can fetch in parallel. Blocks are yielded in
        the order given as soon as every block before them is in: a reader waits for the
        first block of a batch, not for the whole batch."""
        wanted = list(cids)
        found: dict[CID, bytes] = {}
        uses = Counter(wanted)
        missing = [c for c in uses if not c.is_identity]
        failed: dict[int, Exception] = {}
        position = 0

        def ready() -> Iterator[tuple[CID, bytes]]:
            nonlocal position
            while position < len(wanted):
                cid = wanted[position]
                if cid.is_identity:
                    block = cid.digest
                elif cid in found:
                    uses[cid] -= 1
                    # a block asked for twice stays until its last turn
                    block = found[cid] if uses[cid] else found.pop(cid)
                else:
                    return
                position += 1
                yield cid, block

        for source in self.sources:
            pending = missing
            while pending:
                try:
                    for cid, block in source.get_many(pending):
                        found[cid] = block
                        yield from ready()
                    break
                except (BlockNotFoundError, IntegrityError) as e:
                    # This source lacks (or garbles) one block: skip it, keep asking for the rest.
                    rest = [c for c in pending if c not in found and uses[c]]
                    pending = rest[1:] if rest and rest[0] == e.cid else []
                except SourceError as e:
                    log.debug("%s could not deliver a batch: %s", source.name, e)
                    failed[id(source)] = e
                    break
            missing = [c for c in missing if c not in found and uses[c]]
            if not missing:
                break
        for cid in missing:  # the precise per-block path builds the full error
            found[cid] = self._get(cid, failed)
            yield from ready()
        yield from ready()

    def read_stored(self, cid: CID, offset: int, length: int) -> bytes | None:
        """The first source's stored bytes for this part of ``cid`` (unverified; see
        :meth:`BlockSource.read_stored`), or None when no source can read it back."""
        for source in self.sources:
            stored = source.read_stored(cid, offset, length)
            if stored is not None:
                return stored
        return None

    def has(self, cid: CID) -> bool:
        return any(s.has(cid) for s in self.sources)

    def close(self) -> None:
        for s in self.sources:
            s.close()

    def _failure(self, cid: CID, errors: list[Exception]) -> Exception:
        tried = [s.name for s in self.sources]
        if errors and all(isinstance(e, BlockNotFoundError) for e in errors):
            return BlockNotFoundError(cid, tried, self.hint)
        # The sources that said "not found" add nothing: the others are the cause.
        causes = [e for e in errors if not isinstance(e, BlockNotFoundError)]
        bad = [e for e in causes if isinstance(e, IntegrityError)]
        if bad:  # bad bytes beat "unreachable": someone is serving wrong data
            return bad[0] if len(bad) == 1 else _chained(
                IntegrityError(cid, ", ".join(_source(e) for e in bad), "; ".join(map(str, bad))), bad[-1]
            )
        if len(causes) == 1:
            return causes[0]  # already names its source and cause
        text = f"block {cid}: " + "; ".join(f"{_source(e)}: {e}" for e in causes)
        timeouts = all(isinstance(e, SourceTimeoutError) for e in causes)
        kind = SourceTimeoutError if timeouts else SourceUnavailableError
        return _chained(kind(text, source=", ".join(_source(e) for e in causes), cid=cid), causes[-1])


def _source(error: Exception) -> str:
    return getattr(error, "source", "") or type(error).__name__


def _chained(error: Exception, cause: Exception) -> Exception:
    error.__cause__ = cause
    return error

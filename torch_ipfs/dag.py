"""Walking DAGs: the links of a block, and a depth-first traversal in CAR order.

Kept apart from any source or format so that CAR export, gateway verification,
the garbage collector and the reader all agree on what a block links to.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch_ipfs.cid import CID, DAG_PB, RAW
from torch_ipfs.dagpb import decode_node
from torch_ipfs.errors import CIDFormatError

__all__ = ["child_cids", "walk_dfs"]


def child_cids(cid: CID, block: bytes) -> list[CID]:
    """The CIDs a (verified) block links to, in link order.

    dag-pb and raw are understood; other codecs are refused rather than treated as
    leaves, so a traversal never silently stops short.
    """
    if cid.codec == RAW:
        return []
    if cid.codec == DAG_PB:
        return [link.cid for link in decode_node(block).links]
    raise CIDFormatError(f"cannot follow links of {cid} (codec {cid.codec_name})")


def walk_dfs(source, root: CID, *, dedupe: bool = True) -> Iterator[tuple[CID, bytes]]:
    """Yield ``(cid, block)`` depth-first, first-seen order, as ``ipfs dag export`` writes
    a CAR. ``source`` is any :class:`~torch_ipfs.sources.base.BlockSource`; blocks come
    back verified. Identity CIDs are skipped (they are never transferred).
    """
    seen: set[bytes] = set()
    stack: list[CID] = [root]
    while stack:
        cid = stack.pop()
        if cid.is_identity:
            continue
        if dedupe:
            if cid.multihash in seen:
                continue
            seen.add(cid.multihash)
        block = source.get(cid)
        yield cid, block
        stack.extend(reversed(child_cids(cid, block)))

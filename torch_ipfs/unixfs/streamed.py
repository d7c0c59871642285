"""The bytes of a file range from the blocks of one ``entity-bytes`` CAR response.

A trustless gateway answers ``GET /ipfs/{root}?format=car&dag-scope=entity&entity-bytes=lo:hi``
with the file nodes covering the range in DFS order: the root, then each subtree
overlapping the range before the next one. The CAR verifier
(:class:`~torch_ipfs.carverify.CarBlockVerifier`) has already checked every block against
its CID and that order; :func:`range_from_blocks` walks the same tree alongside it and
hands out each node's bytes within the range as the node arrives. One response thus
streams a whole span at the gateway's pace instead of one request per block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from torch_ipfs.cid import CID
from torch_ipfs.errors import CARFormatError
from torch_ipfs.unixfs.walk import check_child_size, check_depth, decode_file_node, overlapping_children

__all__ = ["range_from_blocks"]


def range_from_blocks(
    blocks: Iterator[tuple[CID, bytes]],
    root: CID,
    lo: int,
    hi: int,
    fetch: Callable[[CID], bytes],
) -> Iterator[bytes | memoryview]:
    """Yield the bytes ``[lo, hi)`` of the file ``root`` (``0 <= lo < hi <= its size``)
    from ``blocks``: its verified ``entity-bytes=lo:hi-1`` CAR blocks, in order.

    A block the walk expects that is not next in ``blocks`` comes from ``fetch(cid)``
    (verified): the blocks ended early (a stopped response), or a ``dups=n`` response
    left out a block it sent before. Raises :class:`CARFormatError` if blocks are left
    over when the range is complete, and what decoding a node raises for a malformed
    one. The walk keeps an explicit stack (no recursion), depth-limited like every walk.
    """
    stack: list[tuple[CID, int, int | None, CID | None, int]] = [(root, 0, None, None, 0)]
    pending: tuple[CID, bytes] | None = None
    while stack:
        cid, start, size, parent, depth = stack.pop()
        if cid.is_identity:
            block = cid.digest
        else:
            if pending is None:
                pending = next(blocks, None)
            if pending is not None and pending[0] == cid:
                block, pending = pending[1], None
            else:
                block = fetch(cid)
        node = decode_file_node(cid, block, root=parent is None)
        if parent is not None:
            check_child_size(cid, node.size, parent, size)
        data = node.data
        if data and start < hi and start + len(data) > lo:
            a, b = max(lo - start, 0), min(hi - start, len(data))
            yield data if (a == 0 and b == len(data)) else memoryview(data)[a:b]
        if node.links:
            check_depth(cid, depth + 1)
            children = overlapping_children(node, start, lo, hi)
            stack.extend((c, s, n, cid, depth + 1) for c, s, n in reversed(children))
    if pending is not None or next(blocks, None) is not None:
        raise CARFormatError(f"range {lo}:{hi} of {root}: blocks after the end of the range")

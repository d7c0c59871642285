"""The resolution order: first verified answer wins; failures name every source tried."""

import pytest

from torch_ipfs.cid import CID
from torch_ipfs.errors import BlockNotFoundError, SourceUnavailableError
from torch_ipfs.sources.base import BlockSource, MemoryStore
from torch_ipfs.sources.chain import SourceChain


class TamperingSource(BlockSource):
    """A source that serves every block it has with one byte flipped (a lying gateway)."""

    name = "tampering source"

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    def _get_raw(self, cid):
        data = bytearray(self.store.blocks[cid.multihash])
        data[0] ^= 1
        return bytes(data)


class DownSource(BlockSource):
    name = "down source"

    def _get_raw(self, cid):
        raise SourceUnavailableError("connection refused", source=self.name, cid=cid)


def _store_with(*blocks: bytes) -> tuple[MemoryStore, list[CID]]:
    store = MemoryStore()
    cids = []
    for b in blocks:
        cid = CID.compute(b)
        store.put(cid, b)
        cids.append(cid)
    return store, cids


def test_first_source_with_the_block_answers():
    a, (ca,) = _store_with(b"in a")
    b, (cb,) = _store_with(b"in b")
    chain = SourceChain([a, b])
    assert chain.get(ca) == b"in a" and chain.get(cb) == b"in b"


def test_bad_bytes_and_down_sources_are_skipped():
    good, (cid,) = _store_with(b"payload")
    chain = SourceChain([DownSource(), TamperingSource(good), good])
    assert chain.get(cid) == b"payload"


def test_get_many_keeps_order_and_mixes_sources():
    a, cids_a = _store_with(b"1", b"3")
    b, cids_b = _store_with(b"2", b"4")
    order = [cids_a[0], cids_b[0], cids_a[1], cids_b[1], cids_a[0]]
    assert [blk for _, blk in SourceChain([a, b]).get_many(order)] == [b"1", b"2", b"3", b"4", b"1"]


def test_missing_everywhere_names_every_source_and_how_to_add_one():
    a, _ = _store_with(b"x")
    chain = SourceChain([a, DownSource()])
    cid = CID.compute(b"nowhere")
    with pytest.raises(BlockNotFoundError) as exc:
        chain.get(cid)
    message = str(exc.value)
    assert str(cid) in message and "memory store" in message and "down source" in message
    assert "TORCH_IPFS_GATEWAYS" in message
    with pytest.raises(BlockNotFoundError):
        list(chain.get_many([cid]))


def test_only_bad_bytes_available_is_never_returned():
    good, (cid,) = _store_with(b"payload")
    with pytest.raises(BlockNotFoundError, match="no source delivered verified bytes") as exc:
        SourceChain([TamperingSource(good)]).get(cid)
    assert "failed verification" in str(exc.value.__cause__)

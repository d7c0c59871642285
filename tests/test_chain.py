"""The resolution order: first verified answer wins; failures name every source tried."""

import threading

import pytest
from gatewayserver import free_port, running_gateway

from torch_ipfs.cid import CID
from torch_ipfs.client import Client
from torch_ipfs.errors import (
    BlockNotFoundError,
    IntegrityError,
    SourceTimeoutError,
    SourceUnavailableError,
)
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


class StallingSource(BlockSource):
    name = "stalling source"

    def _get_raw(self, cid):
        raise SourceTimeoutError("no data in time", source=self.name, cid=cid)


def test_missing_everywhere_names_every_source_and_how_to_add_one():
    a, _ = _store_with(b"x")
    b, _ = _store_with(b"y")
    chain = SourceChain([a, b])
    cid = CID.compute(b"nowhere")
    with pytest.raises(BlockNotFoundError) as exc:
        chain.get(cid)
    message = str(exc.value)
    assert message.startswith(f"block {cid} not found (tried: memory store, memory store)")
    assert "TORCH_IPFS_GATEWAYS" in message
    with pytest.raises(BlockNotFoundError):
        list(chain.get_many([cid]))


def test_a_down_source_is_unavailable_not_not_found():
    a, _ = _store_with(b"x")
    chain = SourceChain([a, DownSource()])
    cid = CID.compute(b"nowhere")
    for read in (chain.get, lambda c: list(chain.get_many([c]))):
        with pytest.raises(SourceUnavailableError) as exc:
            read(cid)
        assert not isinstance(exc.value, BlockNotFoundError)
        assert str(exc.value) == "connection refused"  # the cause, once, as its source said it
        assert exc.value.source == "down source"


def test_timeouts_everywhere_are_a_timeout_and_mixed_causes_are_unavailable():
    cid = CID.compute(b"nowhere")
    with pytest.raises(SourceTimeoutError) as exc:
        SourceChain([StallingSource(), StallingSource()]).get(cid)
    stalled = "stalling source: no data in time"
    assert str(exc.value) == f"block {cid}: {stalled}; {stalled}"
    with pytest.raises(SourceUnavailableError) as exc2:
        SourceChain([StallingSource(), DownSource()]).get(cid)
    assert not isinstance(exc2.value, SourceTimeoutError)
    assert str(exc2.value) == f"block {cid}: {stalled}; down source: connection refused"


def test_only_bad_bytes_available_is_an_integrity_error():
    good, (cid,) = _store_with(b"payload")
    empty = MemoryStore()
    chains = SourceChain([TamperingSource(good)]), SourceChain([empty, DownSource(), TamperingSource(good)])
    for chain in chains:
        with pytest.raises(IntegrityError) as exc:
            chain.get(cid)
        assert str(exc.value) == (
            f"block {cid} failed verification (from tampering source): content hash does not match"
        )
        with pytest.raises(IntegrityError):
            list(chain.get_many([cid]))


def test_unreachable_gateway_through_the_client_says_so_once(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    cid = CID.compute(b"not here")
    with Client(home=tmp_path, api="", gateways=[url], retry_budget=0) as client, pytest.raises(
        SourceUnavailableError
    ) as exc:
        client.cat(cid)
    message = str(exc.value)
    assert not isinstance(exc.value, BlockNotFoundError)
    assert message.startswith(f"block {cid} unavailable: {url}: ConnectError: ")
    assert message.count(url) == 1 and message.count("ConnectError") == 1 and message.count(str(cid)) == 1
    assert "TORCH_IPFS" not in message  # no advice to set what is set


def test_not_found_advice_names_only_what_is_not_configured(tmp_path):
    with running_gateway(MemoryStore()) as srv, Client(home=tmp_path, api="", gateways=[srv.url]) as client:
        cid = CID.compute(b"nowhere at all")
        with pytest.raises(BlockNotFoundError) as exc:
            client.cat(cid)
    message = str(exc.value)
    assert "TORCH_IPFS_API=" in message and "TORCH_IPFS_GATEWAYS=" not in message


class GatedSource(BlockSource):
    """A store whose batch answer stops after its first block until the test says go
    (a remote source whose first response is in and whose others are still on the way)."""

    name = "gated source"

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.go = threading.Event()
        self.held_up = False  # the first block was not handed on while the rest waited

    def _get_raw(self, cid):
        return self.store.blocks[cid.multihash]

    def get_many(self, cids):
        cids = list(cids)
        yield cids[0], self.get(cids[0])
        if not self.go.wait(timeout=2):
            self.held_up = True
        for cid in cids[1:]:
            yield cid, self.get(cid)


def test_get_many_hands_on_each_block_once_the_blocks_before_it_are_in():
    remote, cids = _store_with(b"first", b"second", b"third")
    gated = GatedSource(remote)
    blocks = SourceChain([MemoryStore(), gated]).get_many(cids)
    assert next(blocks) == (cids[0], b"first")  # before the rest of the batch has come
    assert not gated.held_up
    gated.go.set()
    assert list(blocks) == [(cids[1], b"second"), (cids[2], b"third")]


def test_get_many_gives_a_block_asked_for_twice_both_times():
    local, (a,) = _store_with(b"local")
    remote, (b,) = _store_with(b"remote")
    got = list(SourceChain([local, remote]).get_many([b, a, b, b]))
    assert got == [(b, b"remote"), (a, b"local"), (b, b"remote"), (b, b"remote")]

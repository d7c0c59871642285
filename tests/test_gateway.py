"""GatewaySource against a real `serve` gateway on loopback, with and without a
fault-injecting proxy in between: every fault must end in verified bytes (when a healthy
gateway exists) or a typed error, never in wrong bytes."""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import logging
import random
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from faultproxy import FaultProxy
from gatewayserver import running_gateway

from torch_ipfs.carverify import CarBlockVerifier
from torch_ipfs.cid import CID, RAW
from torch_ipfs.dag import walk_dfs
from torch_ipfs.errors import (
    BlockNotFoundError,
    BlockTooLargeError,
    CARFormatError,
    IntegrityError,
    PathNotFoundError,
    SourceTimeoutError,
    SourceUnavailableError,
)
from torch_ipfs.serve import make_server
from torch_ipfs.sources.base import MemoryStore
from torch_ipfs.sources.gateway import GatewaySource, parse_retry_after
from torch_ipfs.unixfs.importer import ImportOptions, import_bytes, import_tree

SMALL = ImportOptions(cid_version=1, chunker="size-2048", max_links=4)
MISSING = CID.compute(b"no gateway has this block")


class Data:
    store: MemoryStore
    content: bytes
    file: CID  # multi-level file, raw leaves
    v0file: CID  # CIDv0, dag-pb leaves
    tree: CID  # HAMT-sharded directory
    names: dict[str, bytes]


@pytest.fixture(scope="module")
def data() -> Data:
    d = Data()
    d.store = MemoryStore()
    d.content = random.Random(7).randbytes(60_000)  # 30 leaves of 2 KiB, 3 levels at 4 links
    d.file = import_bytes(d.content, d.store, SMALL).cid
    d.v0file = import_bytes(d.content[:20_000], d.store, ImportOptions(chunker="size-3000", max_links=3)).cid
    d.names = {f"dir/f{i:02d}.bin": bytes([i]) * (500 + 37 * i) for i in range(40)}
    d.names["dir/big.bin"] = d.content
    tree_opts = ImportOptions(cid_version=1, chunker="size-2048", max_links=4, hamt_threshold=200)
    d.tree = import_tree(d.names, d.store, tree_opts)
    return d


@pytest.fixture(scope="module")
def server(data):
    with running_gateway(data.store) as srv:
        yield srv


@pytest.fixture
def proxy(server):
    with FaultProxy(server.url) as p:
        yield p


@pytest.fixture
def proxy2(server):
    with FaultProxy(server.url) as p:
        yield p


def client(*urls: str, **kw) -> GatewaySource:
    """A client with short waits. The stall timeout is generous (a loaded CI machine must not
    make a healthy gateway look stalled) except where a test injects a stall."""
    opts = dict(timeout=10.0, stall_timeout=5.0, retries=0, backoff=0.01, max_retry_wait=0.5)
    opts.update(kw)
    return GatewaySource(list(urls), **opts)


def dag_blocks(store, root: CID) -> list[tuple[CID, bytes]]:
    return list(walk_dfs(store, root, dedupe=False))


def assert_verified(pairs) -> None:
    for cid, block in pairs:
        assert hashlib.sha256(block).digest() == cid.digest


# -- plain operation ---------------------------------------------------------------------


def test_get_and_get_many_round_trip(data, server, proxy):
    blocks = dag_blocks(data.store, data.file)
    with client(proxy.url) as gw:
        root_block = gw.get(data.file)
        assert root_block == data.store.get(data.file)
        cids = [c for c, _ in blocks]
        got = list(gw.get_many(cids))
    assert got == blocks
    assert len(proxy.requests) == len(blocks) + 1
    assert all(r.endswith("?format=raw") for r in proxy.requests)


def test_identity_cids_are_never_fetched(proxy):
    ident = CID.identity(b"inline")
    with client(proxy.url) as gw:
        assert gw.get(ident) == b"inline"
        assert list(gw.get_many([ident, ident])) == [(ident, b"inline")] * 2
    assert proxy.requests == []


def test_fetch_car_scopes_match_the_dag(data, server):
    with client(server.url) as gw:
        assert list(gw.fetch_car(data.file)) == dag_blocks(data.store, data.file)
        assert list(gw.fetch_car(data.file, dag_scope="block")) == [(data.file, data.store.get(data.file))]
        assert list(gw.fetch_car(data.v0file, dag_scope="entity")) == dag_blocks(data.store, data.v0file)


def test_fetch_car_through_a_hamt_path(data, server):
    with client(server.url) as gw:
        got = list(gw.fetch_car(data.tree, "dir/f07.bin", dag_scope="entity"))
    # path blocks (the root, dir's shard nodes on the name's bucket path), then the file
    assert got[-1][1] == data.names["dir/f07.bin"]
    assert got[0][0] == data.tree
    assert len(got) >= 3
    assert_verified(got)


def test_read_range_multi_block_file(data, server, proxy, rng):
    with client(proxy.url) as gw:
        for _ in range(10):
            offset = rng.randrange(0, len(data.content))
            length = rng.randrange(0, 9000)
            assert gw.read_range(data.file, offset, length) == data.content[offset:offset + length]
        assert gw.read_range(data.file, len(data.content) - 5, 100) == data.content[-5:]
        assert gw.read_range(data.file, len(data.content) + 5, 100) == b""
        assert gw.read_range(data.v0file, 2999, 3002) == data.content[2999:6001]
    # one CAR request per range, no per-block requests
    assert all("format=car" in r and "entity-bytes" in r for r in proxy.requests)


def test_read_range_fetches_only_covering_blocks(data, proxy):
    with client(proxy.url) as gw:
        got = list(gw.fetch_car(data.file, dag_scope="entity", entity_bytes=(4096, 6143)))
    leaves = [c for c, _ in got if c.codec == RAW]
    all_leaves = [c for c, _ in dag_blocks(data.store, data.file) if c.codec == RAW]
    assert leaves == all_leaves[2:3]  # bytes 4096..6143 are exactly leaf 2
    assert len(got) == 4  # root, two inner nodes, one leaf


def test_read_range_and_iter_range_through_hamt_path(data, server):
    big = data.names["dir/big.bin"]
    with client(server.url) as gw:
        assert gw.read_range(data.tree, 1000, 20_000, path="dir/big.bin") == big[1000:21000]
        chunks = list(gw.iter_range(data.tree, path="dir/big.bin", chunk_size=7000, parallel=3))
        assert b"".join(chunks) == big
        assert [len(c) for c in chunks[:-1]] == [7000] * (len(chunks) - 1)
        assert b"".join(gw.iter_range(data.tree, 10, 25_000, path="dir/big.bin", chunk_size=4096)) == (
            big[10:25_010]
        )
        with pytest.raises(PathNotFoundError):
            gw.read_range(data.tree, 0, 10, path="dir/nope.bin")


def test_unixfs_reader_over_the_gateway(data, server):
    from torch_ipfs.unixfs.reader import UnixFSFile, ls, resolve_path

    with client(server.url) as gw:
        names = {e.name for e in ls(gw, data.tree)}
        assert names == {"dir"}
        entries = ls(gw, resolve_path(gw, data.tree, "dir"))
        assert {e.name for e in entries} == {k.split("/", 1)[1] for k in data.names}
        f = UnixFSFile(gw, data.file)
        assert b"".join(f.iter_chunks()) == data.content


def test_for_address_uses_the_pasted_gateway(data, server):
    gw, path = GatewaySource.for_address(f"{server.url}/ipfs/{data.tree}/dir/f03.bin", stall_timeout=1.0)
    with gw:
        assert gw.urls == [server.url]
        assert path.cid == data.tree and path.path == "dir/f03.bin"
        assert gw.read_range(path.cid, 0, 10_000, path=path.path) == data.names["dir/f03.bin"]
    with pytest.raises(ValueError, match="not a gateway URL"):
        GatewaySource.for_address(f"/ipfs/{data.tree}")


def test_no_default_gateway():
    with pytest.raises(ValueError, match="at least one gateway"):
        GatewaySource([])
    with pytest.raises(ValueError, match="http"):
        GatewaySource(["ftp://127.0.0.1"])


def test_probe(server, proxy):
    with client(server.url, proxy.url) as gw:
        proxy.set("status", status=502)
        result = gw.probe()
    assert result[server.url] is None
    assert isinstance(result[proxy.url], SourceUnavailableError)
    assert gw.health[proxy.url].consecutive_failures == 1
    assert proxy.requests == ["/ipfs/bafkqaaa?format=raw"]


# -- errors with one gateway ---------------------------------------------------------------


def test_missing_block_everywhere_is_block_not_found(server, proxy):
    with client(proxy.url, server.url) as gw, pytest.raises(BlockNotFoundError) as info:
        gw.get(MISSING)
    assert info.value.tried == [proxy.url, server.url]
    assert proxy.url in str(info.value) and server.url in str(info.value)


RAW_FAULTS = {
    "flip": ({"mode": "flip"}, IntegrityError),
    "truncate": ({"mode": "truncate"}, IntegrityError),
    "truncate-abrupt": ({"mode": "truncate", "abrupt": True}, SourceUnavailableError),
    "500": ({"mode": "status", "status": 500}, SourceUnavailableError),
    "429": ({"mode": "retry_after", "status": 429, "retry_after": "0.05"}, SourceUnavailableError),
    "stall": ({"mode": "stall", "seconds": 2.0, "after": 10}, SourceTimeoutError),
    "reset": ({"mode": "reset"}, SourceUnavailableError),
    "oversize": ({"mode": "oversize"}, BlockTooLargeError),
}


@pytest.mark.parametrize("fault", list(RAW_FAULTS))
def test_raw_fault_alone_raises_typed_error(data, proxy, fault):
    spec, error = RAW_FAULTS[fault]
    proxy.set(**spec)
    leaf = next(c for c, _ in dag_blocks(data.store, data.file) if c.codec == RAW)
    with client(proxy.url, **stall_opts(fault)) as gw, pytest.raises(error) as info:
        gw.get(leaf)
    assert proxy.faults >= 1
    assert proxy.url in str(info.value)
    assert gw.health[proxy.url].consecutive_failures >= 1


@pytest.mark.parametrize("fault", list(RAW_FAULTS))
def test_raw_fault_fails_over_to_healthy_gateway(data, server, proxy, fault):
    spec, _ = RAW_FAULTS[fault]
    proxy.set(**spec)
    blocks = dag_blocks(data.store, data.file)[:6]
    with client(proxy.url, server.url, **stall_opts(fault)) as gw:
        got = list(gw.get_many([c for c, _ in blocks]))
        assert got == blocks
        assert gw.health[proxy.url].consecutive_failures >= 1
        assert gw.ranked()[0].url == server.url  # the faulty one is now asked last
    assert proxy.faults >= 1


CAR_FAULTS = {
    "flip": ({"mode": "flip"}, IntegrityError),
    "truncate": ({"mode": "truncate"}, CARFormatError),
    "truncate-early": ({"mode": "truncate", "after": 30}, CARFormatError),
    "truncate-abrupt": ({"mode": "truncate", "abrupt": True}, SourceUnavailableError),
    "drop-block": ({"mode": "drop_block", "index": 3}, CARFormatError),
    "drop-last": ({"mode": "drop_block", "index": 40}, CARFormatError),
    "reorder": ({"mode": "reorder", "index": 2}, CARFormatError),
    "500": ({"mode": "status", "status": 503}, SourceUnavailableError),
    "429": ({"mode": "retry_after", "retry_after": "0.05"}, SourceUnavailableError),
    "stall": ({"mode": "stall", "seconds": 2.0, "after": 3000}, SourceTimeoutError),
    "reset": ({"mode": "reset"}, SourceUnavailableError),
}


def stall_opts(fault: str) -> dict:
    return {"stall_timeout": 0.5} if "stall" in fault else {}


def _collect(it, sink: list) -> None:
    for pair in it:
        sink.append(pair)


@pytest.mark.parametrize("fault", list(CAR_FAULTS))
def test_car_fault_without_fallback_raises_and_yields_only_verified_prefix(data, proxy, fault):
    spec, error = CAR_FAULTS[fault]
    proxy.set(**spec)
    expected = dag_blocks(data.store, data.file)
    got: list = []
    with client(proxy.url, **stall_opts(fault)) as gw, pytest.raises(error):
        _collect(gw.fetch_car(data.file, fallback=False), got)
    assert got == expected[:len(got)]  # never a wrong block, never out of order
    assert proxy.faults == 1


@pytest.mark.parametrize("fault", list(CAR_FAULTS))
def test_car_fault_falls_back_to_raw_blocks_from_the_same_gateway(data, proxy, fault):
    spec, _ = CAR_FAULTS[fault]
    proxy.set(only="car", **spec)  # the gateway garbles CARs but serves raw blocks fine
    with client(proxy.url, **stall_opts(fault)) as gw:
        got = list(gw.fetch_car(data.file))
        assert got == dag_blocks(data.store, data.file)
        assert gw.read_range(data.file, 5000, 30_000) == data.content[5000:35_000]
    assert any("format=raw" in r for r in proxy.requests)


@pytest.mark.parametrize("fault", list(CAR_FAULTS))
def test_car_fault_recovers_from_healthy_gateway(data, server, proxy, fault):
    spec, _ = CAR_FAULTS[fault]
    proxy.set(**spec)
    with client(proxy.url, server.url, **stall_opts(fault)) as gw:
        assert gw.read_range(data.file, 1234, 40_000) == data.content[1234:41_234]
        got = list(gw.fetch_car(data.tree, "dir/big.bin", dag_scope="entity"))
    assert got[-1][0] != data.tree and b"".join(b for c, b in got if c.codec == RAW) == data.content
    assert proxy.faults >= 1


@pytest.mark.parametrize("fault", ["flip", "truncate", "stall", "reset", "500"])
def test_car_fault_everywhere_raises_typed_error(data, proxy, fault):
    spec, _ = CAR_FAULTS[fault]
    raw_error = RAW_FAULTS[fault][1]
    proxy.set(**spec)
    with client(proxy.url, **stall_opts(fault)) as gw, pytest.raises((raw_error, CARFormatError)) as info:
        gw.read_range(data.file, 0, 10_000)
    assert isinstance(info.value, raw_error)  # the block-by-block fallback's error
    assert proxy.url in str(info.value)


def test_missing_root_car_is_block_not_found(server, proxy):
    with client(proxy.url, server.url) as gw, pytest.raises(BlockNotFoundError) as info:
        list(gw.fetch_car(MISSING))
    assert set(info.value.tried) == {proxy.url, server.url}


def test_missing_child_mid_stream_is_noticed_and_recovered(data, server):
    """A gateway whose store lacks a block truncates the CAR after a 200; a second
    gateway that has everything supplies the rest."""
    partial = MemoryStore()
    partial.blocks = dict(data.store.blocks)
    leaves = [c for c, _ in dag_blocks(data.store, data.file) if c.codec == RAW]
    del partial.blocks[leaves[5].multihash]
    with running_gateway(partial) as srv:
        with client(srv.url) as gw:
            with pytest.raises(SourceUnavailableError):
                list(gw.fetch_car(data.file, fallback=False))
            with pytest.raises(BlockNotFoundError):
                list(gw.fetch_car(data.file))
        with client(srv.url, server.url) as gw:
            assert list(gw.fetch_car(data.file)) == dag_blocks(data.store, data.file)


# -- retries, back-off, hedging ---------------------------------------------------------------


def test_429_then_success_is_retried_after_retry_after(data, proxy):
    proxy.set("retry_after", times=1, retry_after="0.2")
    with client(proxy.url, retries=2, backoff=0.01) as gw:
        start = time.monotonic()
        assert gw.get(data.file) == data.store.get(data.file)
        waited = time.monotonic() - start
    assert len(proxy.requests) == 2
    assert waited >= 0.2  # honoured the gateway's Retry-After, not the 0.01 s back-off


def test_retry_after_is_capped(data, proxy):
    proxy.set("retry_after", times=1, retry_after="3600")
    with client(proxy.url, retries=1, max_retry_wait=0.05) as gw:
        assert gw.get(data.file) == data.store.get(data.file)
    assert len(proxy.requests) == 2


def test_parse_retry_after():
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= parse_retry_after(date, now=now) <= 31  # type: ignore[operator]
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True)) == 0.0


def test_unhealthy_gateway_is_asked_last(data, server, proxy):
    proxy.set("status", status=500)
    with client(proxy.url, server.url) as gw:
        gw.get(data.file)
        gw.get(data.v0file)
    assert len(proxy.requests) == 1


def test_hedging_takes_the_first_verified_answer(data, proxy, proxy2):
    proxy.set("delay", seconds=3.0)
    with client(proxy.url, proxy2.url, hedge_after=0.05) as gw:
        assert gw.get(data.file) == data.store.get(data.file)
        # answered by the second gateway while the first was still sleeping
        assert proxy2.wait_completed(1) == 1 and proxy.completed == 0
        assert len(proxy.requests) == 1


def test_hedging_never_accepts_bad_bytes(data, proxy, proxy2):
    proxy.set("flip")
    proxy2.set("delay", seconds=0.2)
    with client(proxy.url, proxy2.url, hedge_after=0.05) as gw:
        assert gw.get(data.file) == data.store.get(data.file)
    assert proxy2.wait_completed(1) == 1 and proxy.faults == 1


def test_verifier_used_for_cars_is_strict():
    """The client's CAR verification is B's verifier: an unexpected first block fails."""
    v = CarBlockVerifier(MISSING, scope="block", on_block=lambda c, b: None)
    with pytest.raises(CARFormatError):
        v.push(CID.compute(b"x"), b"x")


# -- retry budgets by time, definitive answers, trustless probe ---------------------------------


class _PathGateway(BaseHTTPRequestHandler):
    """An old path gateway: it ignores ``?format=raw`` and answers every path with 200,
    ``application/octet-stream`` and an empty body (what the issue met in the field)."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args) -> None:  # noqa: A002
        pass


@contextlib.contextmanager
def _http_server(handler) -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_probe_names_a_gateway_that_is_not_trustless(data):
    with _http_server(_PathGateway) as url, client(url) as gw:
        result = gw.probe()
        assert isinstance(result[url], SourceUnavailableError)
        assert str(result[url]) == (
            f"{url} is not a trustless gateway: it answered /ipfs/bafkqaaa?format=raw with Content-Type "
            "'application/octet-stream' and 0 bytes (a trustless gateway sends application/vnd.ipld.raw "
            "and no bytes)"
        )
        with pytest.raises(SourceUnavailableError, match="not a trustless gateway") as info:
            gw.get(data.file)
        assert not isinstance(info.value, BlockNotFoundError)
        assert "hash does not match" not in str(info.value)


@pytest.mark.parametrize("status", [301, 302, 400, 401, 403, 405])
def test_definitive_answers_are_not_retried(data, proxy, status):
    proxy.set("status", status=status)
    with client(proxy.url, retry_budget=5.0, retries=None) as gw:
        start = time.monotonic()
        with pytest.raises(SourceUnavailableError, match=f"answered (HTTP )?{status}") as info:
            gw.get(data.file)
        assert time.monotonic() - start < 1.0
    assert not isinstance(info.value, BlockNotFoundError)
    assert len(proxy.requests) == 1


def test_a_root_404_is_not_retried(proxy):
    with client(proxy.url, retry_budget=5.0, retries=None) as gw, pytest.raises(BlockNotFoundError):
        list(gw.fetch_car(MISSING))
    assert len(proxy.requests) == 1


def test_5xx_is_retried_until_the_budget_is_spent(data, proxy):
    proxy.set("status", status=503)
    with client(proxy.url, retry_budget=0.6, retries=None, backoff=0.05, max_retry_wait=0.2) as gw:
        start = time.monotonic()
        with pytest.raises(SourceUnavailableError) as info:
            gw.get(data.file)
        elapsed = time.monotonic() - start
    assert 0.6 <= elapsed < 2.0
    assert len(proxy.requests) >= 3  # rounds by time, not a fixed count
    message = str(info.value)
    assert message.startswith(f"block {data.file} unavailable: {proxy.url}: answered 503")
    assert message.count(proxy.url) == 1 and "retried for" in message


def test_retry_after_longer_than_the_backoff_is_honoured_within_the_budget(data, proxy):
    proxy.set("retry_after", times=2, retry_after="0.3")
    with client(proxy.url, retry_budget=5.0, retries=None, backoff=0.01, max_retry_wait=1.0) as gw:
        start = time.monotonic()
        assert gw.get(data.file) == data.store.get(data.file)
        waited = time.monotonic() - start
    assert len(proxy.requests) == 3 and waited >= 0.6


def test_a_gateway_restart_is_ridden_out_and_logged_once(data, caplog):
    """The gateway is down (connection refused) for 1.5 s while 8 blocks are wanted in
    parallel: every block arrives, verified, and the log says "waiting" once and "back"
    once, not once per block."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    servers = []

    def restart_later() -> None:
        time.sleep(1.5)
        srv = make_server(data.store, port=port)
        srv.start()
        servers.append(srv)

    leaves = [c for c, _ in dag_blocks(data.store, data.file)][:8]
    caplog.set_level(logging.WARNING, logger="torch_ipfs.sources.gateway")
    thread = threading.Thread(target=restart_later)
    thread.start()
    try:
        with client(f"http://127.0.0.1:{port}", retry_budget=20.0, retries=None, backoff=0.05,
                    max_retry_wait=0.3) as gw:
            start = time.monotonic()
            got = list(gw.get_many(leaves))
            elapsed = time.monotonic() - start
    finally:
        thread.join()
        for srv in servers:
            srv.shutdown()
            srv.server_close()
    assert [c for c, _ in got] == leaves
    assert_verified(got)
    assert elapsed >= 1.4
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot fetch blocks" in m for m in messages) == 1, messages
    assert sum("answers again" in m for m in messages) == 1, messages


def test_the_default_budget_rides_out_a_30_s_outage():
    from torch_ipfs.config import DEFAULT_RETRY_BUDGET, Settings

    assert DEFAULT_RETRY_BUDGET >= 30 + 5  # the outage plus the last back-off wait
    assert Settings.from_env({}).retry_budget == DEFAULT_RETRY_BUDGET
    with GatewaySource(["http://127.0.0.1:1"]) as gw:
        assert gw.retry_budget == DEFAULT_RETRY_BUDGET and gw.retries is None
        assert gw.max_retry_wait <= 5.0  # a restarted gateway is used again within 5 s


def test_a_flapping_gateway_is_reported_once_not_per_block(data, proxy, caplog):
    caplog.set_level(logging.WARNING, logger="torch_ipfs.sources.gateway")
    leaves = [c for c, _ in dag_blocks(data.store, data.file)][:6]
    with client(proxy.url, retry_budget=5.0, retries=None, backoff=0.01, max_retry_wait=0.05) as gw:
        for cid in leaves:  # every block: one 503, then the block
            proxy.set("status", status=503, times=1)
            assert gw.get(cid) == data.store.get(cid)
    messages = [r.getMessage() for r in caplog.records]
    assert len(proxy.requests) == 2 * len(leaves)
    assert sum("cannot fetch blocks" in m for m in messages) == 1, messages
    assert sum("answers again" in m for m in messages) == 1, messages

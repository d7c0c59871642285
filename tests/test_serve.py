"""The `serve` trustless gateway over a real store, checked with plain HTTP clients:
exact blocks per CAR scope and byte range (computed here from the DAG, independently of
the server's walk), headers, Range requests and the refusals."""

from __future__ import annotations

import io
import random
from http.client import HTTPConnection

import httpx
import pytest
from gatewayserver import running_gateway

from torch_ipfs.car import CarReader
from torch_ipfs.carverify import CarBlockVerifier
from torch_ipfs.cid import CID, RAW
from torch_ipfs.dag import walk_dfs
from torch_ipfs.dagpb import decode_node
from torch_ipfs.sources.base import MemoryStore
from torch_ipfs.sources.local import LocalStore
from torch_ipfs.unixfs.importer import ImportOptions, import_bytes, import_tree

CHUNK = 1000
OPTS = ImportOptions(cid_version=1, chunker=f"size-{CHUNK}", max_links=4)


class Data:
    store: LocalStore
    content: bytes
    file: CID  # 20 leaves of 1000 bytes, raw leaves, 3 levels
    same: CID  # 5 identical leaves
    tree: CID  # plain directory with a subdirectory
    hamt: CID  # HAMT-sharded directory


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Data:
    d = Data()
    d.store = LocalStore(tmp_path_factory.mktemp("serve_store"))
    d.content = random.Random(3).randbytes(20 * CHUNK)
    d.file = import_bytes(d.content, d.store, OPTS).cid
    d.same = import_bytes(b"x" * 5 * CHUNK, d.store, OPTS).cid
    d.tree = import_tree(
        {"a/b.txt": b"hello", "a/<c>&.html": b"<p>", "data.bin": d.content}, d.store, OPTS
    )
    d.hamt = import_tree(
        {f"n{i:03d}": bytes([i]) * 10 for i in range(60)},
        d.store,
        ImportOptions(cid_version=1, hamt_threshold=300),
    )
    return d


@pytest.fixture(scope="module")
def server(data):
    with running_gateway(data.store) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def car(http, path: str, accept: str = "application/vnd.ipld.car", **params) -> list[tuple[CID, bytes]]:
    r = http.get(path, params={"format": "car", **params}, headers={"Accept": accept})
    assert r.status_code == 200, r.text
    return list(CarReader(io.BytesIO(r.content)))


def leaves_of(store, root: CID) -> list[CID]:
    return [c for c, _ in walk_dfs(store, root, dedupe=False) if c.codec == RAW]


def blocks_for_leaves(store, root: CID, wanted: set[CID]) -> list[CID]:
    """DFS order of the nodes whose subtree holds one of ``wanted`` leaves (and the leaves)."""
    out: list[CID] = []

    def visit(cid: CID) -> bool:
        if cid.codec == RAW:
            if cid in wanted:
                out.append(cid)
                return True
            return False
        at = len(out)
        out.append(cid)
        hit = False
        for link in decode_node(store.get(cid)).links:
            hit |= visit(link.cid)
        if not hit:
            del out[at:]
        return hit

    visit(root)
    return out


# -- raw -----------------------------------------------------------------------------------


def test_raw_block_and_headers(data, http):
    r = http.get(f"/ipfs/{data.file}", params={"format": "raw"})
    assert r.status_code == 200
    assert r.content == data.store.get(data.file)
    assert r.headers["content-type"] == "application/vnd.ipld.raw"
    assert r.headers["etag"] == f'"{data.file}.raw"'
    assert r.headers["x-content-type-options"] == "nosniff"
    assert int(r.headers["content-length"]) == len(r.content)
    by_accept = http.get(f"/ipfs/{data.file}", headers={"Accept": "application/vnd.ipld.raw"})
    assert by_accept.content == r.content


def test_raw_block_by_path(data, http):
    r = http.get(f"/ipfs/{data.tree}/a/b.txt", params={"format": "raw"})
    assert r.status_code == 200 and r.content == b"hello"


def test_probe_cid(http):
    r = http.get("/ipfs/bafkqaaa", params={"format": "raw"})
    assert (r.status_code, r.content) == (200, b"")
    assert car(http, "/ipfs/bafkqaaa") == []


# -- CAR scopes ------------------------------------------------------------------------------


def test_car_scope_all_is_the_whole_dag_in_dfs_order(data, http):
    got = car(http, f"/ipfs/{data.tree}")
    assert [c for c, _ in got] == [c for c, _ in walk_dfs(data.store, data.tree)]
    r = http.get(f"/ipfs/{data.tree}", params={"format": "car"})
    assert r.headers["content-type"] == "application/vnd.ipld.car; version=1; order=dfs; dups=n"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert list(CarReader(io.BytesIO(r.content)).roots) == [data.tree]


def test_car_scope_block_and_entity_with_path(data, http):
    a = decode_node(data.store.get(data.tree)).links[0].cid  # "a"
    b_txt = next(link.cid for link in decode_node(data.store.get(a)).links if link.name == "b.txt")
    got = car(http, f"/ipfs/{data.tree}/a/b.txt", **{"dag-scope": "block"})
    assert [c for c, _ in got] == [data.tree, a, b_txt]
    # entity of a plain directory: just its block; of a file: the whole file DAG
    assert [c for c, _ in car(http, f"/ipfs/{data.tree}/a", **{"dag-scope": "entity"})] == [data.tree, a]
    root_links = decode_node(data.store.get(data.tree)).links
    data_bin = next(link.cid for link in root_links if link.name == "data.bin")
    got = car(http, f"/ipfs/{data.tree}/data.bin", **{"dag-scope": "entity"})
    assert [c for c, _ in got] == [data.tree] + [c for c, _ in walk_dfs(data.store, data_bin)]


def test_car_entity_of_hamt_directory_is_its_shard_nodes(data, http):
    shards = [data.hamt]
    for cid in shards:  # breadth here, order checked separately below
        shards += [link.cid for link in decode_node(data.store.get(cid)).links if len(link.name) == 2]
    assert len(shards) > 1, "fixture should have child shards"
    got = [c for c, _ in car(http, f"/ipfs/{data.hamt}", **{"dag-scope": "entity"})]
    assert sorted(got, key=str) == sorted(shards, key=str)
    assert got[0] == data.hamt
    v = CarBlockVerifier(data.hamt, scope="entity")
    for cid in got:
        v.push(cid, data.store.get(cid))
    v.finish()


@pytest.mark.parametrize(
    ("spec", "first", "last"),
    [
        ("2500:4499", 2, 4),
        ("0:0", 0, 0),
        ("0:*", 0, 19),
        ("-1500:*", 18, 19),
        ("19999:*", 19, 19),
        ("3000:-15001", 3, 4),
        ("999:1000", 0, 1),
    ],
)
def test_car_entity_bytes_sends_only_covering_paths(data, http, spec, first, last):
    leaves = leaves_of(data.store, data.file)
    assert len(leaves) == 20
    got = car(http, f"/ipfs/{data.file}", **{"entity-bytes": spec})
    expected = blocks_for_leaves(data.store, data.file, set(leaves[first:last + 1]))
    assert [c for c, _ in got] == expected
    assert [c for c, _ in got if c.codec == RAW] == leaves[first:last + 1]


def test_car_entity_bytes_outside_the_file_is_the_root_only(data, http):
    got = car(http, f"/ipfs/{data.file}", **{"entity-bytes": "50000:*"})
    assert [c for c, _ in got] == [data.file]


def test_car_dups(data, http):
    leaf = CID.compute(b"x" * CHUNK)
    y = car(http, f"/ipfs/{data.same}", accept="application/vnd.ipld.car; version=1; order=dfs; dups=y")
    n = car(http, f"/ipfs/{data.same}", accept="application/vnd.ipld.car; dups=n")
    assert [c for c, _ in y].count(leaf) == 5
    assert [c for c, _ in n].count(leaf) == 1
    r = http.get(f"/ipfs/{data.same}", params={"format": "car", "dups": "y"})
    assert r.headers["content-type"].endswith("dups=y")


def test_car_bad_parameters_are_400(data, http):
    for params in ({"dag-scope": "everything"}, {"entity-bytes": "abc"}, {"dups": "maybe"}):
        r = http.get(f"/ipfs/{data.file}", params={"format": "car", **params})
        assert r.status_code == 400, params
    assert http.get(f"/ipfs/{data.file}", params={"format": "dag-json"}).status_code == 400


def test_missing_child_truncates_the_stream(data):
    partial = MemoryStore()
    for cid, block in walk_dfs(data.store, data.file):
        partial.put(cid, block)
    victim = leaves_of(data.store, data.file)[7]
    del partial.blocks[victim.multihash]
    with (
        running_gateway(partial) as srv,
        httpx.Client(base_url=srv.url) as c,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        c.get(f"/ipfs/{data.file}", params={"format": "car"})


# -- the path gateway --------------------------------------------------------------------------


def test_file_bytes_and_ranges(data, http):
    r = http.get(f"/ipfs/{data.file}")
    assert r.status_code == 200 and r.content == data.content
    assert r.headers["accept-ranges"] == "bytes"
    cases = {
        "bytes=10-19": (10, 20),
        "bytes=1990-2010": (1990, 2011),
        "bytes=19990-": (19990, 20000),
        "bytes=-25": (19975, 20000),
        "bytes=100-999999": (100, 20000),
    }
    for header, (lo, hi) in cases.items():
        r = http.get(f"/ipfs/{data.file}", headers={"Range": header})
        assert r.status_code == 206, header
        assert r.content == data.content[lo:hi], header
        assert r.headers["content-range"] == f"bytes {lo}-{hi - 1}/20000"
    r = http.get(f"/ipfs/{data.file}", headers={"Range": "bytes=20000-"})
    assert r.status_code == 416 and r.headers["content-range"] == "bytes */20000"
    r = http.get(f"/ipfs/{data.file}", headers={"Range": "bytes=0-1,5-6"})  # multi-range: whole file
    assert r.status_code == 200 and r.content == data.content


def test_file_by_path_and_content_type(data, http):
    r = http.get(f"/ipfs/{data.tree}/a/b.txt")
    assert r.content == b"hello" and r.headers["content-type"].startswith("text/plain")
    r = http.get(f"/ipfs/{data.hamt}/n042")
    assert r.content == bytes([42]) * 10


def test_head(data, http):
    r = http.head(f"/ipfs/{data.file}")
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-length"] == "20000"
    r = http.head(f"/ipfs/{data.file}", params={"format": "raw"})
    assert r.status_code == 200 and r.content == b""


def test_directory_listing_escapes_names(data, http):
    r = http.get(f"/ipfs/{data.tree}/a")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "&lt;c&gt;&amp;.html" in r.text and "<c>" not in r.text
    assert "b.txt" in r.text
    assert "n059" in http.get(f"/ipfs/{data.hamt}").text


# -- refusals ------------------------------------------------------------------------------------


def test_missing_root_and_path_are_404(data, http):
    missing = CID.compute(b"not in the store")
    for params in ({"format": "raw"}, {"format": "car"}, {}):
        assert http.get(f"/ipfs/{missing}", params=params).status_code == 404
        assert http.get(f"/ipfs/{data.tree}/nope", params=params).status_code == 404
    assert http.get("/").status_code == 404
    assert http.get("/ipfs/not-a-cid").status_code == 400


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_read_only(data, http, method):
    r = http.request(method, f"/ipfs/{data.file}", content=b"x")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    "path", ["/ipfs/{cid}/../etc/passwd", "/ipfs/{cid}/a/%2e%2e/b", "/ipfs/{cid}/%2E%2E", "/ipfs/{cid}/a%2Fb"]
)
def test_traversal_is_400(data, server, path):
    conn = HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
    try:
        conn.request("GET", path.format(cid=data.tree))  # http.client sends the path verbatim
        assert conn.getresponse().status == 400
    finally:
        conn.close()


def test_oversized_requests_are_refused(data, http):
    assert http.get(f"/ipfs/{data.file}?x=" + "a" * 9000).status_code == 414
    big = {f"x-h{i}": "v" * 1000 for i in range(20)}
    assert http.get(f"/ipfs/{data.file}", headers=big).status_code == 431


def test_delay_is_injected(data):
    import time

    with running_gateway(data.store, delay=0.2) as srv, httpx.Client(base_url=srv.url) as c:
        start = time.monotonic()
        assert c.get("/ipfs/bafkqaaa", params={"format": "raw"}).status_code == 200
        assert time.monotonic() - start >= 0.2

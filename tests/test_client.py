"""The Python API: :class:`torch_ipfs.client.Client` over a real embedded store, and
over a real trustless gateway (``torch_ipfs.serve``) on 127.0.0.1."""

from __future__ import annotations

import io
import os
import threading

import pytest

from torch_ipfs.cid import CID, RAW
from torch_ipfs.client import Client, default_client
from torch_ipfs.dag import walk_dfs
from torch_ipfs.errors import (
    BlockNotFoundError,
    InvalidCIDError,
    NotADirectoryError,  # noqa: A004 - ours subclasses the builtin
    NotAFileError,
    PathNotFoundError,
)
from torch_ipfs.sources.base import NullStore
from torch_ipfs.unixfs.importer import ImportOptions, import_bytes, import_path

HELLO_V0 = "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"
HELLO_V1 = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
ZEROS_1M = "QmXXNNbwe4zzpdMg62ZXvnX1oU7MwSrQ3vAEtuwFKCm1oD"
MISSING = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"


@pytest.fixture
def client(tmp_path):
    with Client(home=tmp_path / "home") as c:
        yield c


@pytest.fixture
def tree(tmp_path, rng):
    base = tmp_path / "tree"
    (base / "sub" / "deeper").mkdir(parents=True)
    (base / "empty").mkdir()
    (base / "a.txt").write_bytes(b"hello world")
    (base / "sub" / "big.bin").write_bytes(rng.randbytes(7000))
    (base / "sub" / "deeper" / "ü.txt").write_text("grüße", encoding="utf-8")
    return base


def test_add_bytes_matches_published_cids(client):
    assert str(client.add(b"hello world")) == HELLO_V0
    assert str(client.add(b"hello world", cid_version=1)) == HELLO_V1
    assert str(client.add(io.BytesIO(bytes(1_000_000)))) == ZEROS_1M
    assert client.cat(HELLO_V0) == b"hello world"
    assert client.cat(ZEROS_1M, offset=999_990, length=100) == bytes(10)
    assert {str(c) for c in client.store.pins()} == {HELLO_V0, HELLO_V1, ZEROS_1M}


def test_add_only_hash_stores_and_pins_nothing(client):
    cid = client.add(b"hello world", only_hash=True)
    assert str(cid) == HELLO_V0
    assert not client.store.has(cid)
    assert list(client.store.pins()) == []


def test_add_all_tree_equals_importer(client, tree):
    options = {"chunker": "size-1000"}
    entries = client.add_all(tree, **options)
    expected = list(import_path(tree, NullStore(), ImportOptions(**options)))
    assert [(e.name, e.cid, e.size) for e in entries] == [(e.name, e.cid, e.size) for e in expected]
    root = entries[-1].cid
    assert list(client.store.pins()) == [root]
    big = (tree / "sub" / "big.bin").read_bytes()
    assert client.cat(f"{root}/sub/big.bin") == big
    assert client.cat(f"ipfs://{root}/sub/big.bin", 999, 1002) == big[999:2001]
    assert client.cat(f"/ipfs/{root}/sub/deeper/ü.txt") == "grüße".encode()
    assert client.resolve(f"{root}/a.txt") == CID.decode(HELLO_V0)


def test_open_is_seekable(client, rng):
    data = rng.randbytes(10_000)
    cid = client.add(data, chunker="size-1024")
    with client.open(cid) as f:
        assert f.seekable() and f.readable()
        assert f.read(10) == data[:10]
        f.seek(5000)
        assert f.read(2048) == data[5000:7048]
        assert f.tell() == 7048
        f.seek(-100, io.SEEK_END)
        assert f.read() == data[-100:]
        f.seek(0)
        assert f.read() == data


def test_ls_and_stat(client, tree):
    entries = {e.name: e for e in client.add_all(tree, chunker="size-1000")}
    root = entries["tree"].cid
    listing = client.ls(root)
    assert [(e.name, e.cid, e.type, e.size) for e in listing] == [
        ("a.txt", entries["tree/a.txt"].cid, "file", entries["tree/a.txt"].size),
        ("empty", entries["tree/empty"].cid, "dir", entries["tree/empty"].size),
        ("sub", entries["tree/sub"].cid, "dir", entries["tree/sub"].size),
    ]
    assert [e.name for e in client.ls(f"{root}/sub")] == ["big.bin", "deeper"]
    st = client.stat(f"{root}/sub/big.bin")
    assert (st.type, st.size, st.blocks) == ("file", 7000, 7)
    assert client.stat(root).type == "dir"


def test_get_writes_tree_and_file(client, tree, tmp_path):
    root = client.add(tree)
    client.get(root, tmp_path / "out")
    for path in tree.rglob("*"):
        copy = tmp_path / "out" / path.relative_to(tree)
        assert copy.is_dir() if path.is_dir() else copy.read_bytes() == path.read_bytes()
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == sorted(p.name for p in tree.rglob("*"))
    client.get(f"{root}/sub/big.bin", tmp_path / "one.bin")
    assert (tmp_path / "one.bin").read_bytes() == (tree / "sub" / "big.bin").read_bytes()
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.glob(".torch-ipfs-get-*"))


def test_car_round_trip_into_fresh_home(client, tree, tmp_path):
    root = client.add(tree, chunker="size-1000")
    buf = io.BytesIO()
    n = client.export_car(root, buf)
    assert n == len(buf.getvalue())
    client.export_car(f"ipfs://{root}", tmp_path / "x.car")
    assert (tmp_path / "x.car").read_bytes() == buf.getvalue()
    with Client(home=tmp_path / "fresh") as fresh:
        assert fresh.import_car(tmp_path / "x.car") == [root]
        assert list(fresh.store.pins()) == [root]
        assert fresh.cat(f"{root}/sub/big.bin") == (tree / "sub" / "big.bin").read_bytes()
    with Client(home=tmp_path / "fresh2") as fresh:
        assert fresh.import_car(buf.getvalue(), pin=False) == [root]
        assert list(fresh.store.pins()) == []
        # a sub-DAG exports on its own
        sub = io.BytesIO()
        fresh.export_car(f"{root}/sub", sub)
    with Client(home=tmp_path / "fresh3") as fresh:
        sub.seek(0)
        (sub_root,) = fresh.import_car(sub)
        assert sub_root == client.resolve(f"{root}/sub")
        assert fresh.cat(f"{sub_root}/big.bin") == (tree / "sub" / "big.bin").read_bytes()


def test_block_get(client):
    client.add(b"hello world", cid_version=1)
    assert client.block_get(HELLO_V1) == b"hello world"
    assert client.block_get(CID.decode(HELLO_V1)) == b"hello world"


def test_typed_errors(client, tree):
    root = client.add(tree)
    with pytest.raises(InvalidCIDError, match="not-a-cid"):
        client.cat("not-a-cid")
    with pytest.raises(BlockNotFoundError, match=MISSING) as info:
        client.cat(MISSING)
    assert "TORCH_IPFS_GATEWAYS" in str(info.value)  # says how to add a source
    with pytest.raises(PathNotFoundError, match="nope"):
        client.cat(f"{root}/nope")
    with pytest.raises(NotAFileError):
        client.cat(root)
    with pytest.raises(NotADirectoryError):
        client.ls(f"{root}/a.txt")
    with pytest.raises(NotADirectoryError):
        client.cat(f"{root}/a.txt/x")


def test_default_client_follows_environment(_isolated_home):
    c = default_client()
    assert c is default_client()
    assert str(c.store.root).startswith(str(_isolated_home))
    assert c.gateways == [] and not c.api


# -- gateway addresses --------------------------------------------------------------------


@pytest.fixture
def gateway(tmp_path):
    """A trustless gateway over a second home: (base URL, client of that home)."""
    serve = pytest.importorskip("torch_ipfs.serve")
    served = Client(home=tmp_path / "served")
    server = serve.make_server(served.store, host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
        served.close()


def test_pasted_gateway_url_is_read_trustlessly(client, gateway, rng):
    url, served = gateway
    data = rng.randbytes(6000)
    root = served.add_all(b"", chunker="size-1000")[-1].cid  # the empty file, to have two roots
    cid = import_bytes(data, served.store, ImportOptions(cid_version=1, chunker="size-1000")).cid
    assert client.cat(f"{url}/ipfs/{cid}") == data
    assert client.cat(f"{url}/ipfs/{cid}", offset=2500, length=1000) == data[2500:3500]
    port = url.rsplit(":", 1)[1]
    assert client.cat(f"http://{cid}.ipfs.localhost:{port}/") == data  # subdomain form
    assert client.cat(f"{url}/ipfs/{root}") == b""
    assert not client.store.has(cid)  # reads do not write to the embedded store


def test_a_pasted_gateway_gets_one_source_closed_with_the_client(tmp_path, gateway, rng):
    url, served = gateway
    data = rng.randbytes(6000)
    cid = import_bytes(data, served.store, ImportOptions(cid_version=1, chunker="size-1000")).cid

    def fetch_threads() -> int:
        return sum(t.name.startswith("gateway-fetch") for t in threading.enumerate())

    before = fetch_threads()
    c = Client(home=tmp_path / "home", api="", gateways=[])
    for _ in range(10):  # each read fetches 6 leaves in parallel
        assert c.cat(f"{url}/ipfs/{cid}") == data
    assert fetch_threads() - before <= 6  # one pool for the gateway, not one per call
    c.close()
    assert fetch_threads() == before


def test_configured_gateway_serves_paths(tmp_path, gateway, tree):
    url, served = gateway
    root = served.add(tree, chunker="size-1000")
    with Client(home=tmp_path / "empty", gateways=url) as c:
        assert c.cat(f"{root}/sub/big.bin") == (tree / "sub" / "big.bin").read_bytes()
        assert [e.name for e in c.ls(root)] == ["a.txt", "empty", "sub"]
        with pytest.raises(BlockNotFoundError, match=MISSING):
            c.cat(MISSING)


def test_cache_size_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_IPFS_CACHE_BYTES", "512MiB")
    with Client(home=tmp_path / "h") as c:
        assert c.cache_bytes == 512 * 1024**2
    monkeypatch.setenv("TORCH_IPFS_CACHE_BYTES", "lots")
    with pytest.raises(ValueError, match="TORCH_IPFS_CACHE_BYTES"):
        Client(home=tmp_path / "h")


def test_get_recreates_symlinks(client, tmp_path):
    base = tmp_path / "withlink"
    base.mkdir()
    (base / "target.txt").write_bytes(b"hello world")
    (base / "link").symlink_to("target.txt")
    root = client.add(base)
    assert [(e.name, e.type) for e in client.ls(root)] == [("link", "symlink"), ("target.txt", "file")]
    client.get(root, tmp_path / "out", symlinks=True)
    assert os.readlink(tmp_path / "out" / "link") == "target.txt"
    assert (tmp_path / "out" / "link").read_bytes() == b"hello world"


def test_get_and_export_leave_nothing_behind_on_a_missing_block(client, tmp_path, rng):
    data = rng.randbytes(5000)
    entries = client.add_all(data, chunker="size-1000", raw_leaves=True)
    root = entries[-1].cid
    leaves = [cid for cid, _ in walk_dfs(client.store, root) if cid.codec == RAW]
    assert client.store.delete(leaves[3])
    with pytest.raises(BlockNotFoundError, match=str(leaves[3])):
        client.get(root, tmp_path / "out.bin")
    with pytest.raises(BlockNotFoundError, match=str(leaves[3])):
        client.export_car(root, tmp_path / "out.car")
    assert list(tmp_path.iterdir()) == [tmp_path / "home"]


def test_client_crosses_pickle_and_fork_without_sharing_connections(tmp_path):
    import multiprocessing
    import pickle

    from torch_ipfs.metrics import MetricsCollector

    client = Client(home=tmp_path / "h", gateways=["http://127.0.0.1:9"], metrics=MetricsCollector())
    clone = pickle.loads(pickle.dumps(client))
    assert clone.settings["home"] == client.settings["home"]
    assert clone.gateways == ["http://127.0.0.1:9"] and clone.source is not client.source
    assert client.for_this_process() is client

    def child(queue):
        mine = client.for_this_process()
        queue.put((mine is client, mine is mine.for_this_process(), mine.gateways))

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=child, args=(queue,))
    proc.start()
    result = queue.get(timeout=30)
    proc.join(30)
    assert result == (False, True, ["http://127.0.0.1:9"])

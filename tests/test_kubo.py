"""KuboSource against the Kubo RPC stand-in (tests/standins/kubo_rpc.py).

No Kubo daemon can run on these machines; the stand-in is a real HTTP server on
loopback that follows Kubo's published RPC protocol and serves real blocks. CIDs are
compared with torch_ipfs's own importer, which other tests pin to Kubo v0.22.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import logging
import os
import re
import socket
import threading
import time
import urllib.parse

import httpx
import pytest
from standins.kubo_rpc import STANDIN_VERSION, KuboStandIn

from torch_ipfs.car import CarReader, write_car
from torch_ipfs.cid import CID, RAW
from torch_ipfs.dag import walk_dfs
from torch_ipfs.errors import (
    BlockNotFoundError,
    CARFormatError,
    IntegrityError,
    KuboError,
    SourceTimeoutError,
    SourceUnavailableError,
)
from torch_ipfs.sources.base import MemoryStore
from torch_ipfs.sources.kubo import KuboSource, LsEntry, authorization_header
from torch_ipfs.sources.trailers import ResponseTrailers, TrailerAwareTransport
from torch_ipfs.unixfs.importer import ImportOptions, import_bytes, import_path

TOKEN = "tok-5ecret-do-not-leak"


@pytest.fixture
def kubo():
    with KuboStandIn() as standin:
        yield standin


@pytest.fixture
def client(kubo):
    with KuboSource(kubo.api, timeout=10) as source:
        yield source


def _random(rng, n: int) -> bytes:
    return rng.randbytes(n)


def _put_file(kubo: KuboStandIn, data: bytes, chunker: str = "size-1024", **kw) -> CID:
    """Import straight into the stand-in's store (the node 'already has' the file)."""
    return import_bytes(data, kubo.store, ImportOptions(chunker=chunker, **kw)).cid


# ---------------------------------------------------------------- protocol basics


def test_version_and_post_only(kubo, client):
    assert client.version()["Version"] == STANDIN_VERSION
    assert kubo.requests[-1] == ("POST", "/api/v0/version")
    # The stand-in is protocol-exact: anything but POST is refused with 405.
    r = httpx.get(f"{kubo.url}/api/v0/version")
    assert r.status_code == 405


def test_unknown_command_is_a_kubo_error_naming_it(client):
    with pytest.raises(KuboError, match="no /api/v0/no/such/command"):
        client._json("no/such/command")


def test_positional_args_are_repeated_arg_parameters(kubo, client):
    a = _put_file(kubo, b"a")
    b = _put_file(kubo, b"b")
    assert client.pin_add(a) == [a]
    kubo.requests.clear()
    pins = client._json("pin/add", [a, b], {"recursive": True})
    assert pins == {"Pins": [str(a), str(b)]}
    assert kubo.requests == [("POST", f"/api/v0/pin/add?arg={a}&arg={b}&recursive=true")]


# ---------------------------------------------------------------- add


def test_add_bytes_matches_the_local_importer(kubo, client, rng):
    data = _random(rng, 300_000)
    for kwargs in ({}, {"cid_version": 1}, {"chunker": "size-4096", "raw_leaves": True}):
        entries = client.add(data, name="blob.bin", **kwargs)
        expected = import_bytes(data, MemoryStore(), ImportOptions(**kwargs))
        assert [(e.name, e.cid, e.size) for e in entries] == [("blob.bin", expected.cid, expected.size)]
        assert kubo.store.has(expected.cid)
        assert kubo.pins[expected.cid] == "recursive"


def test_add_published_vector_and_unnamed_bytes(client):
    entries = client.add(b"aoeuidhtns" * 200, chunker="size-4")
    root = CID.decode("QmRo11d4QJrST47aaiGVJYwPhoNA4ihRpJ5WaxBWjWDwbX")
    assert [(e.name, e.cid) for e in entries] == [(str(root), root)]  # Kubo names unnamed input by CID
    assert client.add(b"hello world", cid_version=1)[0].cid == CID.decode(
        "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
    )


def test_add_only_hash_stores_nothing(kubo, client):
    entry = client.add(b"x" * 5000, only_hash=True)[0]
    assert entry.cid == import_bytes(b"x" * 5000, MemoryStore()).cid
    assert not kubo.store.has(entry.cid)
    assert entry.cid not in kubo.pins


def _make_tree(root) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)) * 40)
    (root / "sub" / "deeper" / "ünïcødé name.txt").write_bytes(b"unicode and a space")
    (root / ".hidden").write_bytes(b"skipped unless hidden=True")


def test_add_directory_multipart_matches_the_local_importer(kubo, client, tmp_path):
    top = tmp_path / "top dir"
    top.mkdir()
    _make_tree(top)
    options = ImportOptions(cid_version=1, chunker="size-1000")
    entries = client.add(top, cid_version=1, chunker="size-1000")
    expected = list(import_path(top, MemoryStore(), options))
    assert [(e.name, e.cid, e.size) for e in entries] == [(e.name, e.cid, e.size) for e in expected]
    assert entries[-1].name == "top dir"
    assert {e.name for e in entries} >= {"top dir/empty", "top dir/sub/deeper/ünïcødé name.txt"}
    assert not any(".hidden" in e.name for e in entries)
    # The wire format is Kubo's client's: directory parts and url-escaped relative paths.
    body = kubo.bodies["add"]
    assert b'filename="top%20dir"\r\nContent-Type: application/x-directory\r\n' in body
    assert b'filename="top%20dir%2Fsub%2Fdeeper"\r\nContent-Type: application/x-directory' in body
    assert b'filename="top%20dir%2Fsub%2Fdeeper%2F%C3%BCn%C3%AFc%C3%B8d%C3%A9%20name.txt"' in body
    # ...and the node serves it: read a file back through verified blocks.
    assert client.ls(entries[-1].cid)[0] == LsEntry("a.txt", expected[0].cid, expected[0].size, "file")


def _decode_uri_component(text: str) -> str:
    """JavaScript's decodeURIComponent: %XX escapes as UTF-8, and nothing else ("+" stays)."""
    return urllib.parse.unquote(text, errors="strict")


def _parts_as_js_servers_read_them(body: bytes) -> list[tuple[str, str, bytes]]:
    """``(name, content type, payload)`` of each part, by a MIME parser, names decoded
    the way a JavaScript multipart server (js-ipfs's) decodes them."""
    boundary = re.search(rb"^--([0-9a-f]+)\r\n", body).group(1).decode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode() + body
    )
    return [
        (_decode_uri_component(part.get_param("filename", header="content-disposition")),
         part.get_content_type(), part.get_payload(decode=True) or b"")
        for part in message.iter_parts()
    ]


def test_multipart_names_decode_the_same_for_javascript_servers(kubo, client, tmp_path):
    top = tmp_path / "top dir"
    top.mkdir()
    _make_tree(top)
    (top / "a+b c%41.txt").write_bytes(b"a plus, a space and a percent")
    entries = client.add(top, cid_version=1)
    parts = _parts_as_js_servers_read_them(kubo.bodies["add"])
    names = [name for name, _, _ in parts]
    assert names[0] == "top dir" and "top dir/a+b c%41.txt" in names
    assert "top dir/sub/deeper/ünïcødé name.txt" in names
    # Rebuild the tree from what such a server decoded: the directory CID must not change.
    rebuilt = tmp_path / "rebuilt"
    for name, ctype, payload in parts:
        path = rebuilt / name
        if ctype == "application/x-directory":
            path.mkdir(parents=True)
        else:
            path.write_bytes(payload)
    again = list(import_path(rebuilt / "top dir", MemoryStore(), ImportOptions(cid_version=1)))
    assert again[-1].cid == entries[-1].cid


def test_add_directory_wrapped_and_hidden(client, tmp_path):
    top = tmp_path / "d"
    top.mkdir()
    _make_tree(top)
    entries = client.add(top, wrap_with_directory=True, hidden=True)
    expected = list(import_path(top, MemoryStore(), ImportOptions(hidden=True), wrap=True))
    assert [(e.name, e.cid) for e in entries] == [(e.name, e.cid) for e in expected]
    assert entries[-1].name == ""
    assert any(e.name == "d/.hidden" for e in entries)


# ---------------------------------------------------------------- verified reads


def test_get_many_fetches_in_parallel_in_order_verified(kubo, rng):
    data = _random(rng, 100 * 1024)
    root = _put_file(kubo, data, chunker="size-1024", raw_leaves=True)
    blocks = list(walk_dfs(kubo.store, root))
    cids = [c for c, _ in blocks]
    kubo.faults.delay["block/get"] = 0.01  # let requests overlap so parallelism shows
    with KuboSource(kubo.api, max_connections=4) as source:
        got = list(source.get_many(cids))
    assert got == blocks
    assert 2 <= kubo.max_concurrent <= 4


def test_read_file_byte_ranges_through_blocks(kubo, client, rng):
    data = _random(rng, 100_000)
    root = _put_file(kubo, data, chunker="size-512")  # 196 leaves > 174 links: a three-level DAG
    for offset, length in [(0, 1), (0, 512), (511, 2), (89_000, 11_000), (99_999, 10), (100_000, 5)]:
        assert client.read_file(root, offset, length) == data[offset : offset + length]
    assert client.read_file(root) == data
    with client.open_file(root) as f:
        f.seek(93_456)
        assert f.read(1000) == data[93_456:94_456]
    # Only block/get was used: the dataset path never relies on cat.
    assert {path.split("?")[0] for _, path in kubo.requests} == {"/api/v0/block/get"}


def test_tampered_block_is_never_returned(kubo, client, rng):
    data = _random(rng, 20_000)
    root = _put_file(kubo, data, chunker="size-1024")
    leaf = list(walk_dfs(kubo.store, root))[3][0]
    kubo.faults.tampered.add(leaf)
    with pytest.raises(IntegrityError) as info:
        client.get(leaf)
    assert info.value.cid == leaf
    assert client.name in str(info.value)
    with pytest.raises(IntegrityError):
        list(client.get_many([root, leaf]))
    with pytest.raises(IntegrityError):
        client.read_file(root, 0, len(data))
    assert client.block_get_raw(leaf) != kubo.store.get(leaf)  # the raw passthrough is what it is


def test_missing_block_is_block_not_found(client):
    missing = CID.compute(b"not on the node", codec=RAW)
    with pytest.raises(BlockNotFoundError) as info:
        client.get(missing)
    assert info.value.tried == [client.name]
    assert client.has(missing) is False
    assert client.has(CID.identity(b"inline")) is True


def test_dag_blocks_verifies_the_exported_car(kubo, client, rng):
    root = _put_file(kubo, _random(rng, 50_000), chunker="size-2048")
    assert list(client.dag_blocks(root)) == list(walk_dfs(kubo.store, root))
    car = b"".join(client.dag_export(root))
    assert CarReader(io.BytesIO(car)).roots == [root]
    kubo.faults.truncate.add("dag/export")
    with pytest.raises((SourceUnavailableError, CARFormatError)):
        list(client.dag_blocks(root))


def test_dag_import_then_read(kubo, client, rng):
    data = _random(rng, 30_000)
    store = MemoryStore()
    root = import_bytes(data, store, ImportOptions(chunker="size-4096")).cid
    out = io.BytesIO()
    write_car(out, [root], walk_dfs(store, root))
    assert client.dag_import(out.getvalue()) == [root]
    assert kubo.pins[root] == "recursive"
    assert client.read_file(root) == data


def test_cat_is_raw_passthrough_with_offset_and_length(kubo, client, rng):
    data = _random(rng, 10_000)
    root = _put_file(kubo, data, chunker="size-1000")
    assert client.cat(root) == data
    assert client.cat(f"/ipfs/{root}", offset=1500, length=2000) == data[1500:3500]
    assert b"".join(client.cat_stream(root, offset=9990)) == data[9990:]


def test_blocks_and_pins(kubo, client):
    cid = client.block_put(b"raw block bytes")
    assert cid == CID.compute(b"raw block bytes", codec=RAW)
    assert client.block_get(cid) == b"raw block bytes"
    assert client.block_stat(cid) == {"Key": str(cid), "Size": 15}
    assert client.pin_add(cid) == [cid]
    assert client.pin_ls() == {cid: "recursive"}
    assert client.pin_rm(cid) == [cid]
    assert client.pin_ls() == {}
    with pytest.raises(KuboError, match="is not pinned"):
        client.pin_rm(cid)


# ---------------------------------------------------------------- errors


def test_error_json_becomes_kubo_error_with_code(kubo, client):
    kubo.faults.error["version"] = ("injected failure", 0)
    with pytest.raises(KuboError) as info:
        client.version()
    assert info.value.code == 0
    assert "injected failure" in str(info.value)
    assert info.value.source == client.url
    kubo.faults.error["version"] = ("bad option", 1)  # ErrClient: Kubo answers 400
    with pytest.raises(KuboError) as info:
        client.version()
    assert info.value.code == 1


def test_stream_error_trailer_becomes_kubo_error(kubo, client, rng):
    data = _random(rng, 100_000)
    root = _put_file(kubo, data)
    kubo.faults.stream_error["cat"] = "context canceled"
    received = bytearray()
    with pytest.raises(KuboError, match="failed mid-stream: context canceled"):
        for chunk in client.cat_stream(root):
            received += chunk
    assert 0 < len(received) < len(data)  # data arrived, then the trailer said it failed
    kubo.faults.stream_error["add"] = "disk full"
    with pytest.raises(KuboError, match="disk full"):
        client.add(b"some bytes")
    kubo.faults.clear()
    assert client.cat(root) == data  # the same kept-alive connection works on


def test_trailers_of_interleaved_streams_are_not_confused(kubo, client, rng):
    """Two responses read alternately in one thread, on two connections: each is checked
    against its own trailer."""
    data = _random(rng, 600_000)
    root = _put_file(kubo, data)
    a = client.cat_stream(root)
    b = client.cat_stream(root)
    got_a, got_b = bytearray(), bytearray()
    for ca, cb in zip(a, b):
        got_a += ca
        got_b += cb
    got_a += b"".join(a)
    got_b += b"".join(b)
    assert got_a == data and got_b == data


def test_trailers_survive_a_slow_reader(kubo):
    """The connection goes back to the pool as soon as a body ends; its trailers must
    still be found however many responses it carries before the reader asks for them."""
    cid = import_bytes(b"z" * 5000, kubo.store, ImportOptions(chunker="size-1024")).cid
    kubo.faults.stream_error["block/get"] = "context canceled"
    url = f"/api/v0/block/get?arg={cid}"
    transport = TrailerAwareTransport(uds=None, max_connections=1)  # one connection for all
    with httpx.Client(transport=transport, base_url=kubo.url) as http:
        with http.stream("POST", url) as first:
            trailers = ResponseTrailers(first)
            first.read()
        kubo.faults.stream_error.clear()
        for _ in range(20):  # the same connection serves others meanwhile
            others = ResponseTrailers(resp := http.post(url))
            assert resp.status_code == 200 and others.pop() == {}
        assert trailers.pop() == {"x-stream-error": "context canceled"}
        assert trailers.pop() is None  # popped once


def test_truncated_block_response_is_unavailable_not_data(kubo, client):
    cid = client.block_put(b"y" * 10_000)
    kubo.faults.truncate.add("block/get")
    with pytest.raises(SourceUnavailableError):
        client.get(cid)


def test_timeout_is_source_timeout_error(kubo):
    kubo.faults.delay["version"] = 1.0
    with KuboSource(kubo.api, timeout=0.2) as source, pytest.raises(SourceTimeoutError) as info:
        source.version()
    assert isinstance(info.value, TimeoutError)
    assert info.value.source == source.url


def test_unreachable_node_is_source_unavailable():
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cid = CID.compute(b"anything", codec=RAW)
    with KuboSource(f"/ip4/127.0.0.1/tcp/{port}", timeout=5) as source:
        with pytest.raises(SourceUnavailableError) as info:
            source.get(cid)
        assert info.value.cid == cid
        assert info.value.source == f"http://127.0.0.1:{port}"
        assert "cannot reach the Kubo RPC API" in str(info.value)
        with pytest.raises(SourceUnavailableError):
            list(source.get_many([cid]))


def test_closed_source_refuses(client):
    client.close()
    client.close()  # idempotent
    with pytest.raises(SourceUnavailableError, match="closed"):
        client.version()


def test_translate_errors_is_the_one_httpx_boundary(client):
    request = httpx.Request("POST", "http://127.0.0.1:1/api/v0/version")
    cases = [
        (httpx.ConnectError("refused", request=request), SourceUnavailableError),
        (httpx.RemoteProtocolError("peer closed", request=request), SourceUnavailableError),
        (httpx.ReadTimeout("slow", request=request), SourceTimeoutError),
        (httpx.ConnectTimeout("slow", request=request), SourceTimeoutError),
    ]
    for raised, expected in cases:
        with pytest.raises(expected) as info, client._translate_errors(cid="some-cid"):
            raise raised
        assert info.value.__cause__ is raised
        assert info.value.cid == "some-cid"
    ours = KuboError("from Kubo")
    with pytest.raises(KuboError) as info, client._translate_errors():
        raise ours
    assert info.value is ours


# ---------------------------------------------------------------- auth


@pytest.fixture
def secured():
    with KuboStandIn(authorizations=[f"bearer:{TOKEN}", "basic:alice:wonder land"]) as standin:
        yield standin


@pytest.mark.parametrize(
    "auth", [f"bearer:{TOKEN}", TOKEN, "basic:alice:wonder land", ("alice", "wonder land")]
)
def test_auth_accepted(secured, auth):
    with KuboSource(secured.api, auth=auth) as source:
        cid = source.block_put(b"authorized")
        assert source.get(cid) == b"authorized"


def test_wrong_or_missing_auth_is_403_and_never_leaks_the_token(secured, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = TOKEN + "-wrong"
    cid = CID.compute(b"x", codec=RAW)
    with KuboSource(secured.api, auth=f"bearer:{wrong}") as source:
        assert source.version()["Version"] == STANDIN_VERSION  # /version is always allowed
        with pytest.raises(SourceUnavailableError) as info:
            source.get(cid)
        text = str(info.value) + repr(info.value) + repr(source) + str(info.value.__cause__)
        assert "authorization" in str(info.value) and "403" in str(info.value)
        assert wrong not in text and TOKEN not in text
        assert repr(source) == f"KuboSource({source.url!r})"
    with KuboSource(secured.api) as source, pytest.raises(SourceUnavailableError, match="403"):
        source.pin_ls()
    assert TOKEN not in caplog.text


def test_authorization_header_formats():
    assert authorization_header("bearer:abc") == "Bearer abc"
    assert authorization_header("abc") == "Bearer abc"
    assert authorization_header("basic:u:p:q") == "Basic dTpwOnE="  # base64("u:p:q")
    assert authorization_header(("u", "p")) == "Basic dTpw"
    for bad in ("bearer:", "basic:S3KR1T", "S3KR1T with-blank", ("S3KR1T",)):
        with pytest.raises(ValueError) as info:
            authorization_header(bad)  # type: ignore[arg-type]
        assert "S3KR1T" not in str(info.value)


# ---------------------------------------------------------------- unix socket


def test_unix_socket_multiaddr(tmp_path, rng):
    sock = tmp_path / "api.sock"
    if len(os.fsencode(sock)) > 100:  # AF_UNIX paths are limited to ~108 bytes
        pytest.fail(f"tmp path too long for a unix socket: {sock}")
    data = _random(rng, 40_000)
    with KuboStandIn(unix_socket=sock) as standin, KuboSource(f"/unix{sock}") as source:
        assert source.url == f"unix:{sock}"
        root = source.add(data, chunker="size-4096")[-1].cid
        assert source.read_file(root, 1000, 5000) == data[1000:6000]
        assert standin.requests[0][1].startswith("/api/v0/add?")


# -- settings, retry budget ------------------------------------------------------------------


def test_client_builds_kubo_from_the_settings(kubo, tmp_path, monkeypatch):
    from torch_ipfs.client import Client

    monkeypatch.setenv("TORCH_IPFS_READ_TIMEOUT", "0.2")
    monkeypatch.setenv("TORCH_IPFS_CONNECT_TIMEOUT", "2")
    monkeypatch.setenv("TORCH_IPFS_RETRY_BUDGET", "7")
    monkeypatch.setenv("TORCH_IPFS_KUBO_OFFLINE", "true")
    with Client(home=tmp_path / "h", api=kubo.api, gateways=[]) as client:
        (source,) = client._remote
        settings = (source.timeout, source.connect_timeout, source.retry_budget, source.offline)
        assert settings == (0.2, 2.0, 7.0, True)
        kubo.faults.delay["block/get"] = 2.0  # a node that holds the request open
        missing = CID.compute(b"a block the node would search the network for", codec=RAW)
        start = time.monotonic()
        with pytest.raises(SourceTimeoutError):
            client.source.get(missing)
        assert time.monotonic() - start < 1.5  # the read timeout from the environment, not 30 s
    with Client(home=tmp_path / "h2", api=kubo.api, gateways=["http://127.0.0.1:1"]) as client:
        kubo_source, gateway = client._remote
        assert kubo_source.retry_budget == 0  # fails over to the gateways at once
        assert gateway.retry_budget == 7.0 and gateway.stall_timeout == 0.2


def test_block_reads_are_retried_while_the_node_fails(kubo, rng):
    cid = _put_file(kubo, _random(rng, 500), chunker="size-1024")
    kubo.faults.truncate.add("block/get")  # a node restarting: cut responses, no answer
    threading.Timer(0.8, kubo.faults.truncate.discard, ["block/get"]).start()
    with KuboSource(kubo.api, timeout=5, retry_budget=10, backoff=0.05, max_retry_wait=0.2) as source:
        start = time.monotonic()
        assert source.get(cid) == kubo.store.get(cid)
        assert time.monotonic() - start >= 0.7


def test_an_unreachable_node_is_retried_until_the_budget_then_says_so():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cid = CID.compute(b"anything", codec=RAW)
    api = f"/ip4/127.0.0.1/tcp/{port}"
    with KuboSource(api, retry_budget=0.5, backoff=0.05, max_retry_wait=0.1) as source:
        start = time.monotonic()
        with pytest.raises(SourceUnavailableError, match="retried for") as info:
            source.get(cid)
        assert time.monotonic() - start >= 0.5
    assert str(info.value).count("cannot reach the Kubo RPC API") == 1
    assert "TORCH_IPFS_API" not in str(info.value)

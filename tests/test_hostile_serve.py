"""Findings 5, 6 and 9 of issue 10: ``serve`` against slow, many and malformed clients,
over real sockets on 127.0.0.1."""

from __future__ import annotations

import logging
import socket
import threading
import time

import httpx
import pytest

from torch_ipfs.cid import CID
from torch_ipfs.errors import InvalidCIDError
from torch_ipfs.serve import make_server
from torch_ipfs.sources.base import MemoryStore
from torch_ipfs.unixfs.importer import ImportOptions, import_bytes

CONTENT = bytes(range(256)) * 40


@pytest.fixture
def store():
    s = MemoryStore()
    s.root = import_bytes(CONTENT, s, ImportOptions(cid_version=1, chunker="size-1000", raw_leaves=True)).cid
    return s


def serving(store, **limits):
    server = make_server(store, "127.0.0.1", 0, **limits)
    server.start()
    return server


def stop(server):
    server.shutdown()
    server.server_close()


def test_many_silent_connections_are_bounded_and_dropped(store):
    server = serving(store, max_connections=8, header_timeout=2, idle_timeout=10)
    base = threading.active_count()
    host, port = server.server_address[:2]
    socks = []
    try:
        for _ in range(40):
            s = socket.create_connection((host, port))
            s.sendall(b"GET /ipfs/")  # never finishes its request line
            socks.append(s)
        time.sleep(0.2)
        assert threading.active_count() - base <= 8
        assert server.active_connections <= 8
        busy = 0
        for s in socks:
            s.settimeout(6)
            reply = s.recv(4096)
            if reply.startswith(b"HTTP/1.1 503"):
                assert b"Retry-After: 1\r\n" in reply
                busy += 1
            else:
                assert reply == b""  # closed by the header timeout, nothing sent
        assert busy >= 32
        deadline = time.monotonic() + 6
        while server.active_connections and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.active_connections == 0
        r = httpx.get(f"{server.url}/ipfs/{store.root}", timeout=5)
        assert r.status_code == 200 and r.content == CONTENT
    finally:
        for s in socks:
            s.close()
        stop(server)


def test_a_slowloris_dribbling_headers_is_cut_at_the_header_deadline(store):
    server = serving(store, header_timeout=0.6, idle_timeout=5)
    try:
        s = socket.create_connection(server.server_address[:2])
        s.settimeout(5)
        t0 = time.monotonic()
        closed = False
        for ch in b"GET /ipfs/" + str(store.root).encode() + b" HTTP/1.1\r\nHost: x\r\n":
            try:
                s.sendall(bytes([ch]))
            except OSError:
                closed = True
                break
            time.sleep(0.05)
            if time.monotonic() - t0 > 2:
                break
        if not closed:
            assert s.recv(100) == b""
        assert time.monotonic() - t0 < 3
        s.close()
    finally:
        stop(server)


@pytest.mark.parametrize(("value", "status"), [
    ("bytes=0-" + "9" * 5000, 400),  # the finding: used to close the connection unanswered
    ("bytes=" + "1" * 25 + "-", 416),
    ("bytes=abc", 400),
    ("bytes=5-2x", 400),
    ("bytes=0-9", 206),
    ("bytes=0-1,5-6", 200),  # several ranges: ignored, the whole file
    ("items=0-9", 200),  # another unit: ignored
])
def test_malformed_and_huge_ranges_get_an_answer(store, value, status):
    server = serving(store)
    try:
        r = httpx.get(f"{server.url}/ipfs/{store.root}", headers={"Range": value}, timeout=5)
        assert r.status_code == status
        if status == 416:
            assert r.headers["Content-Range"] == f"bytes */{len(CONTENT)}"
        if status == 206:
            assert r.content == CONTENT[:10]
        r = httpx.get(f"{server.url}/ipfs/{store.root}?format=car&entity-bytes=0:{'9' * 5000}", timeout=5)
        assert r.status_code == 400
    finally:
        stop(server)


def test_a_digest_longer_than_its_hash_function_is_400_and_never_cached(store, caplog):
    from multiformats import multibase

    mh = b"\x12" + bytes([0x90, 0x23]) + b"\x01" * 4496  # sha2-256 declaring 4496 bytes
    with pytest.raises(InvalidCIDError, match="32 bytes"):
        CID.decode(b"\x01\x55" + mh)
    bad = multibase.encode(b"\x01\x55" + mh, "base32")
    server = serving(store)
    try:
        with caplog.at_level(logging.WARNING, logger="torch_ipfs.serve"):
            r = httpx.get(f"{server.url}/ipfs/{bad[:3000]}", timeout=5)
        assert r.status_code == 400
        assert not caplog.records  # a client error, not a server one
        short = multibase.encode(b"\x01\x55\x12\x21" + b"\x02" * 33, "base32")
        r = httpx.get(f"{server.url}/ipfs/{short}", timeout=5)
        assert r.status_code == 400 and "32 bytes" in r.text
    finally:
        stop(server)
    from torch_ipfs import cid as cid_module

    assert cid_module._decode_text.cache_info().maxsize <= 8192


def test_a_server_side_failure_is_a_5xx_logged_at_warning(store, caplog):
    from dagbuild import file_node, raw_leaf

    hidden = raw_leaf(store, b"HIDDEN")[0]
    bad, _ = file_node(store, [(hidden, 0), raw_leaf(store, b"abc")], blocksizes=[0, 3], filesize=3)
    server = serving(store)
    try:
        with caplog.at_level(logging.WARNING, logger="torch_ipfs.serve"):
            r = httpx.get(f"{server.url}/ipfs/{bad}", timeout=5)
        assert r.status_code == 500 and "blocksize 0" in r.text
        assert any(rec.levelno == logging.WARNING and "500" in rec.getMessage() for rec in caplog.records)
        (record,) = caplog.records  # once, not once per layer that saw it
        assert record.getMessage() == f"GET /ipfs/{bad} -> 500: {r.text.strip()}"
    finally:
        stop(server)


def read_response(s: socket.socket) -> tuple[bytes, bytes]:
    """(status line, body) of one Content-Length response."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
                 .split(b":")[1])
    while len(body) < length:
        body += s.recv(4096)
    return head.split(b"\r\n")[0], body


def test_keep_alive_waits_for_the_idle_timeout_then_the_header_deadline_applies(store):
    server = serving(store, header_timeout=0.5, idle_timeout=3)
    try:
        s = socket.create_connection(server.server_address[:2])
        s.settimeout(5)
        request = f"GET /ipfs/{store.root} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-3\r\n\r\n".encode()
        s.sendall(request)
        assert read_response(s) == (b"HTTP/1.1 206 Partial Content", CONTENT[:4])
        time.sleep(0.9)  # longer than header_timeout, shorter than idle_timeout: still open
        s.sendall(request)
        assert read_response(s) == (b"HTTP/1.1 206 Partial Content", CONTENT[:4])
        s.sendall(b"GET /ipfs/")  # then stalls: cut at the header deadline, not the idle one
        t0 = time.monotonic()
        assert s.recv(4096) == b""
        assert time.monotonic() - t0 < 2.5  # 0.5 s plus slack for a loaded machine; idle is 3 s
        s.close()
    finally:
        stop(server)

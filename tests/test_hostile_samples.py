"""Findings 4, 7 and 10 (tar) of issue 10: samples are bounded, archive errors are typed.

Real datasets over a real embedded store: the hostile files are consistent,
well-hashed DAGs or real archives with a few bytes changed.
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
import time
import zipfile
import zlib

import pytest
from dagbuild import file_node, raw_leaf

from torch_ipfs.cid import parse_address
from torch_ipfs.client import Client
from torch_ipfs.config import DEFAULT_MAX_SAMPLE_BYTES, Settings, max_sample_bytes
from torch_ipfs.datasets import IPFSDataset, IPFSIterableDataset, IPFSObject, RemoteFileType
from torch_ipfs.errors import InvalidCIDError, ManifestError, SampleError, SampleTooLargeError
from torch_ipfs.formats import tar as tar_module
from torch_ipfs.formats.tar import scan_index


@pytest.fixture
def client(tmp_path):
    with Client(home=tmp_path / "home", api="", gateways=[]) as c:
        yield c


def huge_file(store, levels: int = 40):
    """``levels`` dag-pb nodes each linking the one below twice over a 1 KiB leaf: a
    consistent file of 2**(10 + levels) bytes in levels + 1 blocks."""
    node = raw_leaf(store, b"A" * 1024)
    for _ in range(levels):
        node = file_node(store, [node, node])
    return node


# -- finding 4 --------------------------------------------------------------------------


def test_a_2_pow_50_byte_sample_in_a_cid_list_is_refused_at_once(client):
    cid, size = huge_file(client.store)
    assert size == 2**50
    manifest = client.add(json.dumps({"name": "x", "samples": [str(cid)]}).encode())
    ds = IPFSDataset(str(manifest), client=client)
    t0 = time.monotonic()
    with pytest.raises(SampleTooLargeError) as err:
        ds[0]
    assert time.monotonic() - t0 < 5
    assert (err.value.size, err.value.limit) == (2**50, DEFAULT_MAX_SAMPLE_BYTES)
    assert isinstance(err.value, SampleError)
    for kind in (RemoteFileType.PLAIN, RemoteFileType.PLAIN_STREAM):
        with pytest.raises(SampleTooLargeError):
            IPFSDataset(IPFSObject(str(cid), kind), client=client)[0]


def test_the_limit_is_configurable_and_enforced_for_every_archive_layout(client, monkeypatch, tmp_path):
    assert max_sample_bytes({}) == 256 * 1024**2
    assert Settings.from_env({"TORCH_IPFS_MAX_SAMPLE_BYTES": "1KiB"}).max_sample_bytes == 1024
    monkeypatch.setenv("TORCH_IPFS_MAX_SAMPLE_BYTES", "4000")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in (("a.txt", b"small"), ("b.bin", bytes(5000))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tar_cid = str(client.add(buf.getvalue()))
    ds = IPFSDataset(IPFSObject(tar_cid, RemoteFileType.TAR), client=client)
    assert ds[0]["txt"] == "small"
    with pytest.raises(SampleTooLargeError, match="4000-byte"):
        ds[1]
    with pytest.raises(SampleTooLargeError):
        list(IPFSIterableDataset(IPFSObject(tar_cid, RemoteFileType.TAR), client=client))
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr("a.txt", b"small")
        z.writestr("b.bin", bytes(5000))
    ds = IPFSDataset(IPFSObject(str(client.add(zbuf.getvalue())), RemoteFileType.ZIP), client=client)
    assert ds[0]["txt"] == "small"
    with pytest.raises(SampleTooLargeError):
        ds[1]
    monkeypatch.setenv("TORCH_IPFS_MAX_SAMPLE_BYTES", "5000")
    assert ds[1]["bin"] == bytes(5000)


# -- finding 7: typed zip errors ----------------------------------------------------------


def stored_zip(name: str, data: bytes, *, method: int = zipfile.ZIP_DEFLATED) -> bytearray:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as z:
        z.writestr(zipfile.ZipInfo(name, date_time=(2000, 1, 1, 0, 0, 0)), data, compress_type=method)
    return bytearray(buf.getvalue())


def test_a_corrupt_deflate_stream_is_a_manifest_error(client):
    data = stored_zip("a.txt", b"hello " * 100)
    local_data = 30 + len("a.txt")
    data[local_data] = 0xFF  # reserved block type 3: invalid
    ds = IPFSDataset(IPFSObject(str(client.add(bytes(data))), RemoteFileType.ZIP), client=client)
    with pytest.raises(ManifestError, match="not a valid deflate stream") as err:
        ds[0]
    assert isinstance(err.value.__cause__, zlib.error)


def test_a_utf8_flag_on_a_non_utf8_name_is_a_manifest_error(client):
    data = stored_zip("aX.txt", b"x")
    cd = data.rfind(b"PK\x01\x02")
    flags = struct.unpack_from("<H", data, cd + 8)[0]
    struct.pack_into("<H", data, cd + 8, flags | 0x800)
    data[cd + 46 + 1] = 0xFF  # never valid in UTF-8
    with pytest.raises(ManifestError, match="flagged UTF-8") as err:
        len(IPFSDataset(IPFSObject(str(client.add(bytes(data))), RemoteFileType.ZIP), client=client))
    assert isinstance(err.value.__cause__, UnicodeDecodeError)


def test_a_central_directory_shorter_than_its_count_is_a_manifest_error(client):
    data = stored_zip("a.txt", b"x")
    eocd = data.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", data, eocd + 8, 3, 3)  # 3 entries on this disk / in total
    with pytest.raises(ManifestError, match="central directory"):
        len(IPFSDataset(IPFSObject(str(client.add(bytes(data))), RemoteFileType.ZIP), client=client))


@pytest.mark.parametrize("address", [
    "http://h:99999/ipfs/bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e",
    "http://[::1/ipfs/bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e",
    "http://h:port/ipfs/bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e",
])
def test_bad_gateway_urls_are_invalid_cid_errors(address):
    with pytest.raises(InvalidCIDError) as err:
        parse_address(address)
    assert isinstance(err.value.__cause__, ValueError)


# -- finding 10: the tar index never runs past the end ------------------------------------


def test_a_tar_without_final_padding_indexes_within_its_bytes(client):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("k.txt")
        info.size = 10
        tar.addfile(info, io.BytesIO(b"0123456789"))
    cut = buf.getvalue()[: 512 + 10]  # header + data: no padding, no end-of-archive blocks
    index = scan_index(lambda o, n: cut[o:o + n], len(cut), "cut.tar")
    assert (index.keys, index.offsets) == (["k"], [0, len(cut)])
    ds = IPFSDataset(IPFSObject(str(client.add(cut)), RemoteFileType.TAR), client=client)
    assert ds[0]["txt"] == "0123456789"


def test_a_2_pow_50_byte_manifest_is_refused_before_it_is_read(client):
    from dagbuild import directory

    node = raw_leaf(client.store, b"{" + b" " * 1023)
    for _ in range(40):
        node = file_node(client.store, [node, node])
    t0 = time.monotonic()
    with pytest.raises(ManifestError, match="manifest is 1125899906842624 bytes"):
        IPFSDataset(str(node[0]), client=client)
    root = directory(client.store, {"manifest.json": node[0]})
    with pytest.raises(ManifestError, match="manifest is 1125899906842624 bytes"):
        IPFSDataset(str(root), client=client)
    assert time.monotonic() - t0 < 5


def test_deeply_nested_json_is_a_manifest_error(client):
    from torch_ipfs.formats.manifest import load_json

    with pytest.raises(ManifestError, match="nested too deeply") as err:
        load_json(b"[" * 100_000, "m.json")
    assert isinstance(err.value.__cause__, RecursionError)
    with pytest.raises(ManifestError, match="nested too deeply"):
        IPFSDataset(str(client.add(b'{"samples": ' + b"[" * 100_000)), client=client)


def test_a_tar_of_too_many_headers_is_refused(monkeypatch):
    monkeypatch.setattr(tar_module, "MAX_MEMBERS", 5)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for i in range(6):
            t.addfile(tarfile.TarInfo(f"{i}.txt"), io.BytesIO(b""))
    data = buf.getvalue()
    with pytest.raises(ManifestError, match="more than 5 tar headers"):
        scan_index(lambda o, n: data[o:o + n], len(data), "many.tar")

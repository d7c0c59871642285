"""Zip archives (range reads, traversal and bomb refusals), folders with metadata.txt,
plain files and streams, and the ``IPFSObject`` inputs of the ipfs-dataset package."""

from __future__ import annotations

import io
import struct
import zipfile

import numpy as np
import pytest
from datasetcases import DatasetCase, image_key, npy_bytes, png_bytes

from torch_ipfs.client import Client
from torch_ipfs.datasets import IPFSDataset, IPFSIterableDataset, IPFSObject, RemoteFileType
from torch_ipfs.errors import ManifestError


def _png(seed):
    from PIL import Image

    return Image.open(io.BytesIO(png_bytes(seed)))


def zip_bytes(members: list[tuple[str, bytes]], method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as z:
        for name, data in members:
            z.writestr(zipfile.ZipInfo(name, date_time=(2000, 1, 1, 0, 0, 0)), data, compress_type=method)
    return buf.getvalue()


class TestZip(DatasetCase):
    def make(self, client, tmp_path):
        folder = tmp_path / "zips"
        folder.mkdir()
        n = 0
        for z, (count, method) in enumerate([(4, zipfile.ZIP_DEFLATED), (3, zipfile.ZIP_STORED)]):
            members = []
            for _ in range(count):
                members += [
                    (f"img/{n:03d}.png", png_bytes(n)),
                    (f"img/{n:03d}.npy", npy_bytes(np.full(3, n))),
                ]
                n += 1
            (folder / f"part{z}.zip").write_bytes(zip_bytes(members, method))
        cid = client.add(folder, chunker="size-2048")
        return f"ipfs://{cid}", [(f"img/{i:03d}", image_key(_png(i)), (i, i, i)) for i in range(n)]

    def canon(self, sample):
        return sample["__key__"], image_key(sample["png"]), tuple(sample["npy"].tolist())


class TestFolder(DatasetCase):
    def make(self, client, tmp_path):
        folder = tmp_path / "folder"
        (folder / "cats").mkdir(parents=True)
        (folder / "dogs").mkdir()
        lines = []
        for i in range(7):
            label = "cats" if i % 2 else "dogs"
            (folder / label / f"{i}.png").write_bytes(png_bytes(i))
            lines.append(f"{label}/{i}.png\t{label}")
        (folder / "metadata.txt").write_text("# path<TAB>label\n" + "\n".join(lines) + "\n\n")
        cid = client.add(folder)
        return str(cid), [(image_key(_png(i)), 0 if i % 2 else 1) for i in range(7)]

    def canon(self, sample):
        image, target = sample
        return image_key(image), target


class TestPlainObjects(DatasetCase):
    """A list of IPFSObject inputs as the ipfs-dataset package took them."""

    def make(self, client, tmp_path):
        (tmp_path / "a.json").write_text('{"k": 1}')
        objects = [
            IPFSObject(f"ipfs://{client.add(png_bytes(1))}", RemoteFileType.PLAIN),
            IPFSObject(
                str(client.add(tmp_path / "a.json", wrap=True)) + "/a.json", RemoteFileType.PLAIN_STREAM
            ),
            IPFSObject(str(client.add(zip_bytes([("x/0.txt", b"zero")]))), RemoteFileType.ZIP),
        ]
        return objects, [("image", image_key(_png(1))), ("json", 1), ("zip", "zero")]

    def canon(self, sample):
        if isinstance(sample, dict) and "__key__" in sample:
            return "zip", sample["txt"]
        if isinstance(sample, dict):
            return "json", sample["k"]
        return "image", image_key(sample)


def test_folder_object_without_metadata_lists_every_file(tmp_path):
    client = Client(home=tmp_path / "h", api="", gateways=[])
    (tmp_path / "f" / "sub").mkdir(parents=True)
    (tmp_path / "f" / "b.txt").write_text("b")
    (tmp_path / "f" / "sub" / "a.txt").write_text("a")
    ds = IPFSDataset(IPFSObject(str(client.add(tmp_path / "f")), RemoteFileType.FOLDER), client=client)
    assert [ds[i] for i in range(len(ds))] == ["b", "a"]  # sorted paths: b.txt < sub/a.txt


def test_folder_without_metadata_reads_each_file_by_its_cid(tmp_path):
    """The walk that lists the folder keeps each file's CID: a read fetches that file's
    blocks only, never the directories again."""
    from dagbuild import CountingStore

    from torch_ipfs.unixfs.importer import import_path

    (tmp_path / "f" / "sub").mkdir(parents=True)
    for i in range(5):
        (tmp_path / "f" / "sub" / f"{i}.txt").write_text(str(i))
    store = CountingStore()
    entries = list(import_path(tmp_path / "f", store))
    root = entries[-1].cid
    client = Client(home=tmp_path / "h", sources=[store])
    ds = IPFSDataset(IPFSObject(str(root), RemoteFileType.FOLDER), client=client)
    file_cids = {e.cid for e in entries if e.name.endswith(".txt")}
    store.fetched.clear()
    assert [ds[i] for i in range(len(ds))] == ["0", "1", "2", "3", "4"]
    assert set(store.fetched) == file_cids


def test_folder_metadata_is_checked(tmp_path):
    client = Client(home=tmp_path / "h", api="", gateways=[])
    for text, message in (
        ("../x.png\n", "traversal"),
        ("a.png\t1\nb.png\n", "every line"),
        ("\n", "no files"),
    ):
        folder = tmp_path / str(abs(hash(text)))
        folder.mkdir()
        (folder / "metadata.txt").write_text(text)
        with pytest.raises(ManifestError, match=message):
            IPFSDataset(str(client.add(folder)), client=client)


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/passwd", "a/../../b.txt", "C:/x.txt"])
def test_traversal_names_in_a_zip_are_refused(tmp_path, name):
    client = Client(home=tmp_path / "h", api="", gateways=[])
    cid = client.add(zip_bytes([("ok.txt", b"1"), (name, b"2")]))
    with pytest.raises(ManifestError, match="absolute|traversal"):
        len(IPFSDataset(IPFSObject(str(cid), RemoteFileType.ZIP), client=client))


def test_zip_bombs_are_refused(tmp_path):
    client = Client(home=tmp_path / "h", api="", gateways=[])
    ratio = zip_bytes([("zeros.bin", bytes(40 * 1024 * 1024))])  # deflates ~1000:1
    with pytest.raises(ManifestError, match="ratio"):
        len(IPFSDataset(IPFSObject(str(client.add(ratio)), RemoteFileType.ZIP), client=client))
    # a member whose central directory lies about its size: caught while inflating
    data = bytearray(zip_bytes([("a.txt", b"a" * 5000)]))
    cd = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, cd + 24, 100)  # uncompressed size field
    ds = IPFSDataset(IPFSObject(str(client.add(bytes(data))), RemoteFileType.ZIP), client=client)
    with pytest.raises(ManifestError, match="past its declared 100 bytes"):
        ds[0]
    # overlapping members (the flat zip bomb shape): two entries pointing at one local header
    data = bytearray(zip_bytes([("a.txt", b"a" * 100), ("b.txt", b"b" * 100)]))
    second = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, second + 42, 0)  # local header offset of b.txt -> a.txt's
    with pytest.raises(ManifestError, match="overlaps"):
        len(IPFSDataset(IPFSObject(str(client.add(bytes(data))), RemoteFileType.ZIP), client=client))


def test_zip_member_read_once_by_range(tmp_path):
    client = Client(home=tmp_path / "h", api="", gateways=[])
    members = [(f"{i:03d}.bin", np.random.default_rng(i).bytes(3000)) for i in range(40)]
    cid = client.add(zip_bytes(members, zipfile.ZIP_STORED), chunker="size-1024")
    ds = IPFSIterableDataset(IPFSObject(str(cid), RemoteFileType.ZIP), client=client)
    assert [(s["__key__"], s["bin"]) for s in ds] == [(n.split(".")[0], d) for n, d in members]


def test_unknown_layouts(tmp_path):
    client = Client(home=tmp_path / "h", api="", gateways=[])
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.csv").write_text("a,b\n")
    with pytest.raises(ManifestError, match="unknown dataset layout.*x.csv"):
        IPFSDataset(str(client.add(tmp_path / "d")), client=client)
    with pytest.raises(ManifestError, match="unknown dataset layout"):
        IPFSDataset(str(client.add(b"just some bytes")), client=client)
    with pytest.raises(ValueError, match="layout must be one of"):
        IPFSDataset(str(client.add(b"x")), client=client, layout="parquet")

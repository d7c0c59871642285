"""The sharded-tar layout: writer, manifest, index, map-style ranges, foreign tars."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
from datasetcases import DatasetCase, image_key, png_bytes

from torch_ipfs.client import Client
from torch_ipfs.datasets import IPFSDataset, IPFSIterableDataset, IPFSObject, RemoteFileType
from torch_ipfs.errors import ManifestError
from torch_ipfs.formats import tar, tarshards
from torch_ipfs.sources.base import BlockSource

SMALL = {"chunker": "size-1024"}  # multi-block shards out of tiny data


def _samples(start: int, n: int) -> list[tuple[str, dict[str, bytes]]]:
    return [(f"{i:06d}", {"png": png_bytes(i), "cls": str(i % 3).encode()}) for i in range(start, start + n)]


def write_dataset(folder, shard_counts, *, with_cids: bool = False, client: Client | None = None,
                  options: dict | None = None) -> None:  # fmt: skip
    """A sharded-tar dataset on disk: manifest.json + shards/shard-NNNNNN.tar."""
    (folder / "shards").mkdir(parents=True)
    infos, start = [], 0
    for s, count in enumerate(shard_counts):
        path = folder / "shards" / tarshards.shard_name(s)
        with open(path, "wb") as fh:
            index = tarshards.write_tar_shard(_samples(start, count), fh)
        cid = client.add(path, pin=False, **(options or SMALL)) if with_cids else None
        infos.append({"name": path.name, "cid": cid, "bytes": path.stat().st_size, "index": index})
        start += count
    manifest = tarshards.build_manifest(
        infos,
        name="toy",
        fields={"png": "image", "cls": "int"},
        structure="tuple",
        label_field="cls",
        classes=["a", "b", "c"],
    )
    if not with_cids:
        for entry in manifest["shards"]:
            del entry["cid"]
    (folder / "manifest.json").write_bytes(tarshards.encode_manifest(manifest))


class TestTarShards(DatasetCase):
    def make(self, client, tmp_path):
        write_dataset(tmp_path / "ds", [5, 1, 7], with_cids=True, client=client)
        cid = client.add(tmp_path / "ds", **SMALL)
        expected = [(image_key(_image(png_bytes(i))), i % 3) for i in range(13)]
        return f"ipfs://{cid}", expected

    def canon(self, sample):
        image, target = sample
        return image_key(image), target


class TestForeignTars(DatasetCase):
    """WebDataset tars made by ``tarfile`` (pax + GNU long names), no manifest: the index
    is built from the headers with range reads."""

    def make(self, client, tmp_path):
        folder = tmp_path / "wds"
        folder.mkdir()
        n = 0
        for s, (fmt, count) in enumerate([(tarfile.PAX_FORMAT, 4), (tarfile.GNU_FORMAT, 5)]):
            with tarfile.open(folder / f"part-{s}.tar", "w", format=fmt) as t:
                for _ in range(count):
                    key = f"deep/{'d' * 120}/{n:04d}"  # > 100 chars: long-name headers
                    for ext, data in (("jpg", png_bytes(n)), ("json", json.dumps({"n": n}).encode())):
                        info = tarfile.TarInfo(f"{key}.{ext}")
                        info.size = len(data)
                        t.addfile(info, io.BytesIO(data))
                    n += 1
        cid = client.add(folder, **SMALL)
        return str(cid), [(f"deep/{'d' * 120}/{i:04d}", image_key(_image(png_bytes(i))), i) for i in range(n)]

    def canon(self, sample):
        return sample["__key__"], image_key(sample["jpg"]), sample["json"]["n"]


def _image(data: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(data))


# -- writer and manifest -------------------------------------------------------------------


def test_writer_is_deterministic_and_matches_tarfile(tmp_path):
    out1, out2 = io.BytesIO(), io.BytesIO()
    index = tarshards.write_tar_shard(_samples(0, 3), out1)
    tarshards.write_tar_shard([{"__key__": k, **f} for k, f in _samples(0, 3)], out2)
    assert out1.getvalue() == out2.getvalue()
    assert len(out1.getvalue()) == index.offsets[-1] + 1024  # two zero blocks end it
    with tarfile.open(fileobj=io.BytesIO(out1.getvalue())) as archive:
        members = archive.getmembers()
    assert [m.name for m in members[:2]] == ["000000.png", "000000.cls"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o644)}
    assert index.keys == ["000000", "000001", "000002"]
    data = out1.getvalue()
    for key, offset, length in index.samples:
        group = list(tar.group_samples(tar.iter_members([data[offset : offset + length]], "t", offset), "t"))
        assert [g.key for g in group] == [key]
    assert set(data[index.offsets[-1] :]) == {0}  # only the end-of-archive padding follows
    assert tar.scan_index(lambda o, n: data[o : o + n], len(data), "t") == index


@pytest.mark.parametrize("name_bytes", [1, 99, 100, 101, 511, 512, 1000])
@pytest.mark.parametrize("size", [0, 1, 512, 513])
def test_member_size_is_what_the_writer_writes(name_bytes, size):
    key = "k" * (name_bytes - 4) if name_bytes > 4 else ""
    name = f"{key}.bin" if key else "b" * name_bytes
    out = io.BytesIO()
    if key:
        tarshards.write_tar_shard([(key, {"bin": b"x" * size})], out)
        written = len(out.getvalue()) - 1024  # minus the two end blocks
    else:  # too short for "<key>.<field>": compare with tarfile's GNU header directly
        info = tarfile.TarInfo(name)
        info.size = size
        written = len(info.tobuf(format=tarfile.GNU_FORMAT)) + -(-size // 512) * 512
    assert tar.member_size(name, size) == written


def test_writer_refuses_bad_samples():
    with pytest.raises(ValueError, match="duplicate key"):
        tarshards.write_tar_shard([("a", {"x": b"1"}), ("a", {"x": b"2"})], io.BytesIO())
    with pytest.raises(ValueError, match="'.'"):
        tarshards.write_tar_shard([("a.b", {"x": b"1"})], io.BytesIO())
    with pytest.raises(TypeError, match="bytes"):
        tarshards.write_tar_shard([("a", {"x": "text"})], io.BytesIO())
    with pytest.raises(ManifestError, match="traversal"):
        tarshards.write_tar_shard([("../a", {"x": b"1"})], io.BytesIO())


def test_manifest_schema(tmp_path):
    write_dataset(tmp_path / "ds", [2, 3])
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_bytes())
    assert manifest["format"] == "torch_ipfs.tarshards" and manifest["version"] == 1
    assert manifest["total_samples"] == 5 and manifest["structure"] == "tuple"
    assert manifest["fields"] == [{"name": "png", "type": "image"}, {"name": "cls", "type": "int"}]
    shard = manifest["shards"][1]
    assert shard["path"] == "shards/shard-000001.tar" and shard["num_samples"] == 3
    assert shard["keys"] == ["000002", "000003", "000004"] and len(shard["offsets"]) == 4


# -- only the sample's blocks --------------------------------------------------------------


class CountingSource(BlockSource):
    """Counts the blocks asked of a store (a real store underneath)."""

    name = "counting"

    def __init__(self, inner: BlockSource) -> None:
        self.inner = inner
        self.gets = 0

    def _get_raw(self, cid):
        self.gets += 1
        return self.inner.get(cid)


def test_map_style_reads_only_the_samples_blocks(tmp_path):
    writer = Client(home=tmp_path / "home", api="", gateways=[])
    options = {"chunker": "size-4096"}
    write_dataset(tmp_path / "ds", [300], with_cids=True, client=writer, options=options)  # ~500 KiB
    cid = writer.add(tmp_path / "ds", **options)
    counting = CountingSource(writer.store)
    reader = Client(home=tmp_path / "home", sources=[counting])
    ds = IPFSDataset(f"ipfs://{cid}", client=reader)
    ds[0]  # the shard's root node is fetched once and kept
    for i in (150, 299, 7):
        before = counting.gets
        image, target = ds[i]
        assert target == i % 3 and image_key(image) == image_key(_image(png_bytes(i)))
        assert counting.gets - before <= 2, f"sample {i} fetched {counting.gets - before} blocks"
    leaves = reader.stat(f"{cid}/shards/shard-000000.tar").blocks
    assert leaves > 100
    before = counting.gets
    assert len(list(IPFSIterableDataset(f"ipfs://{cid}", client=reader))) == 300
    assert counting.gets - before >= leaves  # streaming reads the whole shard


# -- refusals -------------------------------------------------------------------------------


def test_traversal_names_in_a_tar_are_refused(tmp_path):
    client = Client(home=tmp_path / "home", api="", gateways=[])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name in ("ok.txt", "../evil.txt"):
            info = tarfile.TarInfo(name)
            info.size = 1
            t.addfile(info, io.BytesIO(b"x"))
    cid = client.add(buf.getvalue())
    with pytest.raises(ManifestError, match="traversal.*evil"):
        IPFSDataset(IPFSObject(str(cid), RemoteFileType.TAR), client=client)[0]


def test_malformed_manifests(tmp_path):
    client = Client(home=tmp_path / "home", api="", gateways=[])
    write_dataset(tmp_path / "ok", [2])
    good = json.loads((tmp_path / "ok" / "manifest.json").read_bytes())
    broken = {
        "version 3": {**good, "version": 3},
        "missing field 'shards'": {k: v for k, v in good.items() if k != "shards"},
        "need 3 offsets": {**good, "shards": [{**good["shards"][0], "offsets": [0]}]},
        "total_samples 9": {**good, "total_samples": 9},
        "unknown dataset layout": {"format": "something-else"},
    }
    for message, manifest in broken.items():
        folder = tmp_path / message.replace(" ", "_").replace("'", "")
        folder.mkdir()
        (folder / "manifest.json").write_text(json.dumps(manifest))
        cid = client.add(folder)
        with pytest.raises(ManifestError, match=message) as info:
            IPFSDataset(f"ipfs://{cid}", client=client)
        assert "manifest.json" in str(info.value)
    (tmp_path / "bad_json").mkdir()
    (tmp_path / "bad_json" / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        IPFSDataset(client.add(tmp_path / "bad_json"), client=client)


def test_shard_contents_must_match_the_index(tmp_path):
    client = Client(home=tmp_path / "home", api="", gateways=[])
    write_dataset(tmp_path / "ds", [3])
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_bytes())
    manifest["shards"][0]["keys"][1] = "999999"
    (tmp_path / "ds" / "manifest.json").write_text(json.dumps(manifest))
    ds = IPFSDataset(client.add(tmp_path / "ds"), client=client)
    assert ds[0][1] == 0
    with pytest.raises(ManifestError, match="999999"):
        ds[1]


_NAMES = ["a.b", "000000.png", "é/ü.cls", "k" * 96 + ".bin", "x" * 100, "y" * 101, "ü" * 50 + ".x"]


@pytest.mark.parametrize("name", _NAMES)
@pytest.mark.parametrize("size", [0, 1, 511, 512, 2361, 123_456_789, 8**11 - 1, 8**11])
def test_headers_are_the_bytes_tarfile_writes(name, size):
    # The short-name header is built by hand; it must equal tarfile's GNU header byte for
    # byte (a long name or a size past 11 octal digits goes through tarfile itself).
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uname, info.gname = size, 0, 0o644, "", ""
    assert tar._header(name, size) == info.tobuf(format=tarfile.GNU_FORMAT, encoding="utf-8")

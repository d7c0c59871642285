"""Map-style ``ds[i]`` on sharded-tar roots: the short path (read_plain) returns exactly
the samples of the strict read, over trees of every shape the importer makes; a leaf
evicted from the verified-block cache is fetched and hashed again; a hostile index or
header is a ManifestError naming the shard and the key, never other bytes."""

from __future__ import annotations

import hashlib
import logging
import random

import pytest
import torch
from dagbuild import GrowingTensors
from torch.utils.data import DataLoader

from torch_ipfs import datasets
from torch_ipfs.cid import CID
from torch_ipfs.client import Client
from torch_ipfs.datasets import IPFSDataset
from torch_ipfs.decoders import DecodeError
from torch_ipfs.errors import IntegrityError, ManifestError
from torch_ipfs.exporter import export_dataset
from torch_ipfs.formats import tarshards
from torch_ipfs.formats.base import RawSample
from torch_ipfs.formats.shardindex import PackedIndex, encode_index
from torch_ipfs.formats.shardtable import ShardFile, ShardTable, encode_table
from torch_ipfs.sources.base import BlockSource
from torch_ipfs.unixfs import blockcache
from torch_ipfs.unixfs.importer import ImportOptions


def blobs(n: int) -> GrowingTensors:
    """Sample ``i``: ``(int32 tensor of 25 + 9 * i values i, i % 5)``: sizes vary, so
    samples sit across leaf boundaries of small chunks."""
    return GrowingTensors(n, base=25, step=9, dtype=torch.int32, modulo=1 << 31, classes=5)


class Recording(BlockSource):
    """The writer's store underneath; records the CIDs asked; ``tamper`` flips a byte of
    the named block (then the BlockSource check must refuse it)."""

    name = "recording"

    def __init__(self, inner: BlockSource) -> None:
        self.inner = inner
        self.asked: list[CID] = []
        self.tamper: set[bytes] = set()

    def _get_raw(self, cid: CID) -> bytes:
        self.asked.append(cid)
        data = self.inner.get(cid)
        if cid.multihash in self.tamper:
            data = bytes([data[0] ^ 1]) + data[1:]
        return data


def _export(tmp_path, n=60, per_shard=25, **import_options):
    writer = Client(home=tmp_path / "writer", api="", gateways=[])
    options = ImportOptions(**import_options) if import_options else None
    result = export_dataset(blobs(n), samples_per_shard=per_shard, client=writer, progress=False,
                            import_options=options)  # fmt: skip
    return writer, result


def _reader(tmp_path, writer, name="reader"):
    source = Recording(writer.store)
    return Client(home=tmp_path / name, sources=[source]), source


SHAPES = {
    "one leaf per shard (Kubo defaults)": {},
    "dag-pb leaves of 1 KiB, one level": {"chunker": "size-1024"},
    "raw leaves of 700 B, one level": {"chunker": "size-700", "raw_leaves": True, "cid_version": 1},
    "deep tree (4 links per node)": {"chunker": "size-512", "max_links": 4},
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_short_path_gives_exactly_the_strict_samples(tmp_path, shape):
    writer, result = _export(tmp_path, **SHAPES[shape])
    reader, _ = _reader(tmp_path, writer)
    raw = IPFSDataset(result.url, client=reader, decode="raw")
    decoded = IPFSDataset(result.url, client=reader)
    layout = raw.layout
    order = list(range(len(raw)))
    random.Random(3).shuffle(order)
    taken = 0
    for i in order:
        strict = layout._read_sample_strict(i)
        plain = layout.read_plain(i)
        taken += plain is not None
        if plain is not None:
            assert plain == (strict.key, strict.fields)
        assert layout.read_sample(i) == strict
        assert raw[i] == tuple(strict.fields[f] for f in ("npy", "cls"))
        image, label = decoded[i]
        want = decoded.make_item(RawSample(strict.key, strict.fields))
        assert torch.equal(image, want[0]) and label == want[1] == i % 5
        assert image.tolist() == [i] * (25 + 9 * i)
    assert taken == len(order)  # every sample went the short way
    assert raw[-1] == raw[len(raw) - 1]
    with pytest.raises(IndexError):
        raw[len(raw)]


def test_transforms_and_subclasses_see_the_same_samples(tmp_path):
    writer, result = _export(tmp_path, n=12, per_shard=5)
    reader, _ = _reader(tmp_path, writer)
    ds = IPFSDataset(result.url, client=reader, decode="raw", target_transform=lambda t: int(t) * 10)
    assert [ds[i][1] for i in range(12)] == [(i % 5) * 10 for i in range(12)]

    class Named(IPFSDataset):
        def read_raw(self, index):
            raw = super().read_raw(index)
            return RawSample(raw.key, {**raw.fields, "cls": raw.key.encode()})

    named = Named(result.url, client=reader, decode="raw")
    assert named[7][1] == named.layout.sample_key(7).encode() == b"000000007"  # its own read_raw


def label_unless_2(name: str, data: bytes) -> int:
    """A label decoder that cannot read label 2 (samples 2 and 7 of ``_export(n=12)``)."""
    if data == b"2":
        raise ValueError("unreadable label")
    return int(data)


def test_a_sample_that_fails_to_decode_on_the_short_path_follows_on_error(tmp_path, caplog):
    writer, result = _export(tmp_path, n=12, per_shard=5)
    reader, _ = _reader(tmp_path, writer)

    strict = IPFSDataset(result.url, client=reader, decode={"cls": label_unless_2})
    with pytest.raises(DecodeError, match=r"sample '000000007': cannot decode field 'cls'.*unreadable label"):
        strict[7]
    skipping = IPFSDataset(result.url, client=reader, decode={"cls": label_unless_2}, on_error="skip")
    with caplog.at_level(logging.WARNING, logger="torch_ipfs.datasets"):
        image, target = skipping[7]  # replaced by the next sample, counted, logged
    assert target == 3 and image.tolist() == [8] * (25 + 9 * 8)
    assert skipping.skipped == 1 and "skipping sample 7" in caplog.text
    assert skipping[6][1] == 1 and skipping.skipped == 1

    def fail_on_9(x):
        if x.numel() == 25 + 9 * 9:
            raise ValueError("transform refused sample 9")
        return x

    skip_transform = IPFSDataset(result.url, client=reader, transform=fail_on_9, on_error="skip")
    with caplog.at_level(logging.WARNING, logger="torch_ipfs.datasets"):
        image, target = skip_transform[9]  # replaced by the next sample, counted, logged
    assert image.tolist() == [10] * (25 + 9 * 10) and target == 0
    assert skip_transform.skipped == 1 and "transform refused sample 9" in caplog.text
    raising = IPFSDataset(result.url, client=reader, transform=fail_on_9)
    with pytest.raises(ValueError, match="transform refused sample 9"):
        raising[9]
    assert [raising[i][1] for i in (0, 8, 10)] == [0, 3, 0]


@pytest.mark.parametrize("round_bytes", [1, 1 << 30])  # a round per sample; one for the batch
def test_a_batch_gives_exactly_the_samples_of_ds_i_in_order(tmp_path, monkeypatch, round_bytes):
    monkeypatch.setattr(datasets, "READ_ROUND_BYTES", round_bytes)
    writer, result = _export(tmp_path, n=30, per_shard=7, chunker="size-1024")
    reader, _ = _reader(tmp_path, writer)
    indices = [29, 0, 7, 7, -1, 13, 6, 22, -30]  # repeated, negative, across shards
    for decode in ("tensor", "raw"):
        ds = IPFSDataset(result.url, client=reader, decode=decode, target_transform=lambda t: -int(t))
        batch = ds.__getitems__(indices)
        one_by_one = [ds[i] for i in indices]
        assert len(batch) == len(indices)
        for (x, y), (want_x, want_y), i in zip(batch, one_by_one, indices):
            i %= 30
            assert y == want_y == -(i % 5)
            if decode == "raw":
                assert x == want_x and len(x) > 0
            else:
                assert torch.equal(x, want_x) and x.tolist() == [i] * (25 + 9 * i)
    with pytest.raises(IndexError, match="index 30 out of range"):
        ds.__getitems__([1, 30])


@pytest.mark.parametrize(("round_bytes", "order"), [(1, "RDRDRDRD"), (1 << 30, "RRRRDDDD")])
def test_a_batch_reads_a_round_of_samples_then_decodes_them(tmp_path, monkeypatch, round_bytes, order):
    monkeypatch.setattr(datasets, "READ_ROUND_BYTES", round_bytes)
    writer, result = _export(tmp_path, n=10, per_shard=10)
    reader, _ = _reader(tmp_path, writer)
    events = []

    def label(name, data):
        events.append("D")
        return int(data)

    ds = IPFSDataset(result.url, client=reader, decode={"cls": label, "npy": "raw"})
    read_plain = ds.layout.read_plain
    monkeypatch.setattr(ds.layout, "read_plain", lambda i: events.append("R") or read_plain(i))
    assert [y for _, y in ds.__getitems__([4, 1, 8, 3])] == [4, 1, 3, 3]
    assert "".join(events) == order


def test_a_batch_follows_on_error_and_a_subclass_own_getitem(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(datasets, "READ_ROUND_BYTES", 700)  # rounds of about two samples
    writer, result = _export(tmp_path, n=12, per_shard=5)
    reader, _ = _reader(tmp_path, writer)

    skipping = IPFSDataset(result.url, client=reader, decode={"cls": label_unless_2}, on_error="skip")
    with caplog.at_level(logging.WARNING, logger="torch_ipfs.datasets"):
        batch = skipping.__getitems__([1, 2, 3, 7, 11])
    assert [y for _, y in batch] == [1, 3, 3, 3, 1]  # 2 -> 3 and 7 -> 8: the next readable ones
    assert [x.numel() for x, _ in batch] == [25 + 9 * i for i in (1, 3, 3, 8, 11)]
    assert skipping.skipped == 2 and "skipping sample 7" in caplog.text
    strict = IPFSDataset(result.url, client=reader, decode={"cls": label_unless_2})
    with pytest.raises(DecodeError, match="sample '000000007'"):
        strict.__getitems__([0, 1, 7, 8])

    class Offset(IPFSDataset):
        def __getitem__(self, index):
            return super().__getitem__(index + 1)

    shifted = Offset(result.url, client=reader, decode="raw")
    assert [y for _, y in shifted.__getitems__([0, 3, 9])] == [b"1", b"4", b"0"]


def test_an_evicted_leaf_is_fetched_and_hashed_again(tmp_path, monkeypatch):
    writer, result = _export(tmp_path, n=40, per_shard=40, chunker="size-1024")
    reader, source = _reader(tmp_path, writer)
    # room for about two 1 KiB leaves: reading far apart evicts
    small = blockcache.VerifiedBlockCache(2 * 1024 + 2 * 400)
    monkeypatch.setattr(blockcache, "_cache", small)
    ds = IPFSDataset(result.url, client=reader, decode="raw")
    ds[39]  # opens the shard (root node, index)
    before = len(source.asked)
    first = ds[0]
    leaves = source.asked[before:]  # the leaves holding sample 0, fetched and hashed now
    assert 1 <= len(leaves) <= 2 and all(c.multihash in small._items for c in leaves)
    asked = len(source.asked)
    assert ds[0] == first and len(source.asked) == asked  # cached: not fetched again
    for i in (20, 30, 39):
        ds[i]
    assert small.nbytes <= small.max_bytes and len(small) <= 3
    source.tamper.update(c.multihash for c in leaves)  # the store now holds other bytes
    with pytest.raises(IntegrityError):
        ds[0]  # evicted: fetched again, and hashed again
    source.tamper.clear()
    assert ds[0] == first


def _tampered_root(tmp_path, writer, result, *, index=None, tar=None, name="t"):
    """A v2 root with shard 0's index bytes and/or tar bytes replaced."""
    table = ShardTable(writer.cat(f"{result.cid}/shard-table.bin"), "t")
    files = [table.file_entry(i) for i in range(len(table))]
    entry = files[0]
    index_cid, index_bytes, index_sha = entry.index_cid, entry.index_bytes, entry.index_sha256
    if index is not None:
        index_cid, index_bytes, index_sha = writer.add(index), len(index), hashlib.sha256(index).digest()
    tar_cid, tar_bytes = entry.tar_cid, entry.tar_bytes
    if tar is not None:
        tar_cid, tar_bytes = writer.add(tar), len(tar)
    files[0] = ShardFile(tar_cid, index_cid, tar_bytes, entry.samples, index_bytes, index_sha)
    pieces = [(i, 0, f.samples) for i, f in enumerate(files)]
    data = encode_table(files, pieces)
    total = sum(f.samples for f in files)
    schema = {"fields": {"npy": "tensor", "cls": "int"}, "structure": "tuple"}
    manifest = tarshards.build_manifest_v2(writer.add(data), data, total, len(files), **schema)
    folder = tmp_path / name
    folder.mkdir()
    (folder / "manifest.json").write_bytes(tarshards.encode_manifest(manifest))
    return f"ipfs://{writer.add(folder)}", tar_cid


def test_a_hostile_index_is_a_manifest_error_naming_shard_and_key(tmp_path):
    writer, result = _export(tmp_path, n=20, per_shard=10)
    idx = PackedIndex(writer.cat(f"{result.cid}/index/shard-000000.idx"), "i")
    offsets = [int(o) for o in idx.offsets]
    keys = [idx.key(j) for j in range(len(idx))]
    cases = {
        "sample 3 starts inside its data": (
            keys,
            [*offsets[:3], offsets[3] + 512, *offsets[4:]],
            2,
            "'000000002'",
        ),
        "sample 4 spans two samples": (keys, offsets[:5] + offsets[6:] + [offsets[-1]], 4, "'000000004'"),
        "keys that are not the tar's": ([f"k{j}" for j in range(10)], offsets, 6, "'k6'"),
    }
    for n, (what, (ks, offs, i, key)) in enumerate(cases.items()):
        url, tar_cid = _tampered_root(tmp_path, writer, result, index=encode_index(ks[: len(offs) - 1], offs),
                                      name=f"idx{n}")  # fmt: skip
        ds = IPFSDataset(url, client=writer, decode="raw")
        with pytest.raises(ManifestError) as info:
            ds[i]
        message = str(info.value)
        assert "shard 0" in message and str(tar_cid) in message and key in message, (what, message)
        assert ds[15] == IPFSDataset(result.url, client=writer, decode="raw")[15]  # shard 1 is fine


def test_a_bad_header_checksum_is_a_manifest_error_naming_the_shard(tmp_path):
    writer, result = _export(tmp_path, n=20, per_shard=10)
    tar = bytearray(writer.cat(f"{result.cid}/shards/shard-000000.tar"))
    idx = PackedIndex(writer.cat(f"{result.cid}/index/shard-000000.idx"), "i")
    head = int(idx.offsets[3])
    tar[head + 153] = ord("0") if tar[head + 153] != ord("0") else ord("1")  # a wrong checksum digit
    url, tar_cid = _tampered_root(tmp_path, writer, result, tar=bytes(tar), name="sum")
    ds = IPFSDataset(url, client=writer, decode="raw")
    assert ds[2] == IPFSDataset(result.url, client=writer, decode="raw")[2]
    with pytest.raises(ManifestError, match="checksum mismatch") as info:
        ds[3]
    assert "shard 0" in str(info.value) and str(tar_cid) in str(info.value)
    skipping = IPFSDataset(url, client=writer, decode="raw", on_error="skip")
    assert skipping[3] == ds[4] and skipping.skipped == 1  # replaced by the next readable one


def test_shuffled_dataloader_workers_read_each_sample_once_and_exactly(tmp_path):
    writer, result = _export(tmp_path, n=50, per_shard=20, chunker="size-1024")
    ds = IPFSDataset(result.url, client=writer, decode="raw")
    order = torch.Generator().manual_seed(5)
    loader = DataLoader(ds, batch_size=None, shuffle=True, generator=order, num_workers=2,
                        multiprocessing_context="fork")  # fmt: skip
    got = sorted(((int(cls), bytes(npy)) for npy, cls in loader), key=lambda s: s[1])
    strict = [ds.layout._read_sample_strict(i).fields for i in range(50)]
    want = sorted(((int(f["cls"]), f["npy"]) for f in strict), key=lambda s: s[1])
    assert got == want and len({npy for _, npy in got}) == 50


def test_a_deeper_tree_never_fetches_an_inner_node_again_to_learn_it_is_one(tmp_path):
    writer, result = _export(tmp_path, n=30, per_shard=30, chunker="size-4096", max_links=3)
    reader, source = _reader(tmp_path, writer)
    ds = IPFSDataset(result.url, client=reader, decode="raw")
    want = [ds.layout._read_sample_strict(i).fields for i in range(30)]
    root = ds.layout._checked_file(0)._root
    assert all(c.codec == 0x70 for c in root.links)  # dag-pb children: inner nodes here
    for i in range(30):
        assert ds[i] == (want[i]["npy"], want[i]["cls"])
    inner = set(root.links)
    asked = [c for c in source.asked if c in inner]
    for i in range(30):
        assert ds[i] == (want[i]["npy"], want[i]["cls"])
    assert [c for c in source.asked if c in inner] == asked  # held in the reader's inner LRU

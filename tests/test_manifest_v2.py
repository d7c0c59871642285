"""Manifest v2 (binary shard table + per-shard binary indexes) and datasets composed by
CID (concat, subset, mix): exact round trips, lazy per-shard index fetches, the DDP plan
from shard sizes alone, and loud errors for corrupt or inconsistent files."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import torch_ipfs
from torch_ipfs.cid import CID
from torch_ipfs.cli import main as cli_main
from torch_ipfs.client import Client
from torch_ipfs.datasets import IPFSDataset, IPFSIterableDataset
from torch_ipfs.errors import ManifestError
from torch_ipfs.exporter import export_dataset
from torch_ipfs.formats import tarshards
from torch_ipfs.formats.shardindex import HEADER_BYTES, PackedIndex, encode_index
from torch_ipfs.formats.shardtable import ShardFile, ShardTable, encode_table
from torch_ipfs.sharding import StreamMix, mix_epoch_order, plan_epoch, plan_rank, split_for_worker
from torch_ipfs.sources.base import BlockSource


class Numbers:
    """Sample ``i`` is ``(tensor([offset + i]), i % 3)``: every sample says who it is."""

    def __init__(self, n: int, offset: int = 0) -> None:
        self.n, self.offset = n, offset

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return torch.tensor([self.offset + i]), i % 3


class RecordingSource(BlockSource):
    """A real store underneath; records every CID asked of it."""

    name = "recording"

    def __init__(self, inner: BlockSource) -> None:
        self.inner = inner
        self.asked: list[CID] = []

    def _get_raw(self, cid):
        self.asked.append(cid)
        return self.inner.get(cid)


def _client(tmp_path, name="home") -> Client:
    return Client(home=tmp_path / name, api="", gateways=[])


def _export(client, n, per_shard, offset=0, **options):
    return export_dataset(Numbers(n, offset), samples_per_shard=per_shard, client=client, progress=False,
                          **options)  # fmt: skip


def _ids(ds) -> list[int]:
    return [int(ds[i][0][0]) for i in range(len(ds))]


def _reader(tmp_path, writer: Client, name="reader") -> tuple[Client, RecordingSource]:
    recording = RecordingSource(writer.store)
    return Client(home=tmp_path / name, sources=[recording]), recording


# -- the two binary files ---------------------------------------------------------------------


def test_index_file_round_trip_with_derived_and_stored_keys():
    offsets = [0, 1536, 3072, 5120]
    derived = encode_index(["000000041", "000000042", "000000043"], offsets)
    assert len(derived) == HEADER_BYTES + 8 * 4  # decimal keys take no space
    idx = PackedIndex(derived, "d")
    assert len(idx) == 3 and list(idx.keys) == ["000000041", "000000042", "000000043"]
    assert idx.span(1, 3) == (1536, 3584) and idx.keys[-1] == "000000043"
    keys = ["a/x", "a/y", "ü"]
    stored = encode_index(keys, offsets)
    assert len(stored) == HEADER_BYTES + 8 * 4 + 4 * 4 + len("a/xa/yü".encode())
    idx = PackedIndex(stored, "s")
    assert list(idx.keys) == keys and idx.keys[0:2] == ["a/x", "a/y"]
    # not a count from the first key: stored ("9", "10" is not zero-padded to one width)
    assert list(PackedIndex(encode_index(["9", "10"], [0, 1, 2]), "w").keys) == ["9", "10"]
    assert encode_index(keys, offsets) == stored  # same input, same bytes


def test_corrupt_index_files_are_refused_naming_them():
    good = encode_index(["k1", "k2"], [0, 512, 1024])
    cases = {
        "bad magic": b"X" + good[1:],
        "shard index is 39 bytes, shorter than its header": good[: HEADER_BYTES - 1],
        "shard index version 2 is not supported": good[:8] + b"\x02" + good[9:],
        "declares 2 samples": good[:HEADER_BYTES + 8],
        "offsets decrease": good[:HEADER_BYTES] + np.array([0, 900, 512], "<u8").tobytes()
        + good[HEADER_BYTES + 24 :],
        "do not match its key bytes": good[:-1],
        "past the shard size 1000": good,
    }  # fmt: skip
    for message, data in cases.items():
        with pytest.raises(ManifestError, match=f"idx-of-shard-7: .*{message}"):
            PackedIndex(data, "idx-of-shard-7", tar_bytes=1000 if "size" in message else None)
    # a hostile header declaring 2**50 samples is refused before anything is allocated
    huge = bytearray(good)
    huge[16:24] = (1 << 50).to_bytes(8, "little")
    with pytest.raises(ManifestError, match="declares 1125899906842624 samples"):
        PackedIndex(bytes(huge), "h")


def _file(i: int, samples: int = 10) -> ShardFile:
    tar = CID.compute(f"tar{i}".encode())
    index = CID.compute(f"idx{i}".encode())
    return ShardFile(tar, index, 5000, samples, 120, hashlib.sha256(b"%d" % i).digest())


def test_shard_table_round_trip_lists_each_file_once():
    files = [_file(0), _file(1, 4)]
    pieces = [(0, 0, 10)] * 5 + [(1, 1, 3), (0, 9, 1)]
    data = encode_table(files, pieces)
    assert len(data) == 32 + 2 * 56 + 7 * 24 + 4 * 5 + sum(len(f.tar_cid.to_bytes()) * 2 for f in files)
    table = ShardTable(data, "t", total_samples=54)
    assert len(table) == 7 and table.total == 54
    assert table.counts.tolist() == [10, 10, 10, 10, 10, 3, 1]
    assert table.starts().tolist() == [0, 10, 20, 30, 40, 50, 53]
    assert [table.locate(i) for i in (0, 9, 10, 49, 50, 53)] == [0, 0, 1, 4, 5, 6]
    assert table.file_entry(1) == files[1] and table.cid(0, 1) == files[0].index_cid


def test_corrupt_shard_tables_are_refused_naming_the_entry():
    files = [_file(0)]
    good = encode_table(files, [(0, 0, 10), (0, 2, 8)])
    pieces_at = 32 + 56

    def piece(p, file, start, count):
        row = np.array([(file, 0, start, count)], dtype="<u4,<u4,<u8,<u8").tobytes()
        at = pieces_at + 24 * p
        return good[:at] + row + good[at + 24 :]

    cases = {
        "bad magic": b"Y" + good[1:],
        "shard table is 31 bytes, shorter than its header": good[:31],
        "shard table version 7 is not supported": good[:8] + b"\x07" + good[9:],
        "cut off": good[:pieces_at + 30],
        "piece 1 names file 3, the table lists 1": piece(1, 3, 0, 1),
        "piece 1 covers samples 5..\\+8 of file 0, which has 10": piece(1, 0, 5, 8),
        "CID offsets do not match": good[:-1],
    }  # fmt: skip
    for message, data in cases.items():
        with pytest.raises(ManifestError, match=f"table-at-x: .*{message}"):
            ShardTable(data, "table-at-x")
    with pytest.raises(ManifestError, match="total_samples 19 but the shard table's pieces hold 18"):
        ShardTable(good, "t", total_samples=19)
    huge = bytearray(good)
    huge[24:32] = (1 << 40).to_bytes(8, "little")
    with pytest.raises(ManifestError, match="declares 1 files and 1099511627776 pieces"):
        ShardTable(bytes(huge), "t")


# -- export writes v2, v1 still reads ------------------------------------------------------------


def test_export_writes_v2_and_reads_back_exactly(tmp_path):
    client = _client(tmp_path)
    result = _export(client, 25, 10)
    manifest = result.manifest
    assert manifest["version"] == 2 and manifest["total_samples"] == 25 and manifest["num_shards"] == 3
    assert "shards" not in manifest  # no per-shard, let alone per-sample, JSON
    table_bytes = client.cat(f"{result.cid}/shard-table.bin")
    assert str(client.resolve(f"{result.cid}/shard-table.bin")) == manifest["shard_table"]["cid"]
    assert hashlib.sha256(table_bytes).hexdigest() == manifest["shard_table"]["sha256"]
    table = ShardTable(table_bytes, "t", total_samples=25)
    assert table.counts.tolist() == [10, 10, 5] and table.pieces["start"].tolist() == [0, 0, 0]
    assert [table.cid(f, 0) for f in range(3)] == result.shard_cids
    index = PackedIndex(client.cat(f"{result.cid}/index/shard-000001.idx"), "i")
    assert list(index.keys) == [f"{i:09d}" for i in range(10, 20)]  # the exporter's keys, derived
    ds = IPFSDataset(result.url, client=client)
    assert isinstance(ds.layout, tarshards.PackedTarShardsLayout)
    assert len(ds) == 25 and ds.shard_sizes() == [10, 10, 5]
    assert _ids(ds) == list(range(25)) and [ds[i][1] for i in range(25)] == [i % 3 for i in range(25)]
    assert ds[-1][0].tolist() == [24]
    assert [int(x[0][0]) for x in IPFSIterableDataset(result.url, client=client)] == list(range(25))
    with pytest.raises(IndexError):
        ds[25]


def test_v1_export_still_reads_the_same_samples(tmp_path):
    client = _client(tmp_path)
    v1 = _export(client, 25, 10, manifest_version=1)
    v2 = _export(client, 25, 10)
    assert v1.manifest["version"] == 1 and v1.cid != v2.cid
    assert v1.shard_cids == v2.shard_cids  # the shards are the same bytes
    a, b = IPFSDataset(v1.url, client=client), IPFSDataset(v2.url, client=client)
    assert type(a.layout) is tarshards.TarShardsLayout
    assert _ids(a) == _ids(b) == list(range(25)) and a.shard_sizes() == b.shard_sizes()


def test_index_is_fetched_only_for_the_shards_touched(tmp_path):
    writer = _client(tmp_path)
    result = _export(writer, 40, 10)
    index_cids = [writer.resolve(f"{result.cid}/index/shard-00000{i}.idx") for i in range(4)]
    reader, recording = _reader(tmp_path, writer)
    ds = IPFSDataset(result.url, client=reader)
    assert len(ds) == 40 and ds.shard_sizes() == [10] * 4
    assert not set(index_cids) & set(recording.asked)  # open, len, shard_sizes: no index
    assert ds[25][0].tolist() == [25]
    assert [c for c in index_cids if c in recording.asked] == [index_cids[2]]
    assert ds.layout.loaded_indexes() == [2]
    ds[21], ds[29]
    assert recording.asked.count(index_cids[2]) == 1  # once, then mapped
    # a second dataset object in a new process state maps the verified local copy: no fetch
    before = len(recording.asked)
    again = IPFSDataset(result.url, client=reader)
    assert again[22][0].tolist() == [22]
    assert index_cids[2] not in recording.asked[before:]


def test_a_rank_never_loads_another_ranks_indexes(tmp_path, monkeypatch):
    writer = _client(tmp_path)
    result = _export(writer, 60, 10)
    index_cids = [writer.resolve(f"{result.cid}/index/shard-00000{i}.idx") for i in range(6)]
    seen = []
    for rank in range(3):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "3")
        reader, recording = _reader(tmp_path, writer, name=f"rank{rank}")  # a host per rank
        ds = IPFSIterableDataset(result.url, client=reader)
        got = [int(x[0][0]) for x in ds]
        assert got == list(range(20 * rank, 20 * rank + 20))
        assert [i for i, c in enumerate(index_cids) if c in recording.asked] == [2 * rank, 2 * rank + 1]
        seen += got
    assert sorted(seen) == list(range(60))


def test_shuffled_ranks_read_only_their_planned_shards(tmp_path, monkeypatch):
    writer = _client(tmp_path)
    result = _export(writer, 80, 10)
    index_cids = [writer.resolve(f"{result.cid}/index/shard-{i:06d}.idx") for i in range(8)]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    reader, recording = _reader(tmp_path, writer)
    ds = IPFSIterableDataset(result.url, client=reader, shuffle=True, seed=3)
    ds.set_epoch(2)
    got = [int(x[0][0]) for x in ds]
    planned = plan_rank([10] * 8, 1, seed=3, epoch=2, shuffle=True, world_size=4)
    assert planned == plan_epoch([10] * 8, seed=3, epoch=2, shuffle=True, world_size=4)[1]
    assert got == [10 * s.shard + j for s in planned for j in range(s.start, s.stop)]
    touched = sorted(i for i, c in enumerate(index_cids) if c in recording.asked)
    assert touched == sorted({s.shard for s in planned}) and len(touched) < 8


def test_dataloader_workers_over_a_v2_root_read_each_sample_once(tmp_path):
    client = _client(tmp_path)
    result = _export(client, 30, 7)
    loader = DataLoader(IPFSIterableDataset(result.url, client=client), batch_size=None, num_workers=2)
    assert sorted(int(x[0][0]) for x in loader) == list(range(30))
    ds = IPFSDataset(result.url, client=client)
    generator = torch.Generator().manual_seed(0)
    mapped = DataLoader(ds, batch_size=4, num_workers=2, shuffle=True, generator=generator)
    assert sorted(int(v) for batch in mapped for v in batch[0][:, 0]) == list(range(30))


# -- inconsistent v2 roots -----------------------------------------------------------------------


def _root_with(client, tmp_path, manifest: dict, files: dict[str, bytes], name: str) -> CID:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "manifest.json").write_bytes(tarshards.encode_manifest(manifest))
    for fname, data in files.items():
        (folder / fname).write_bytes(data)
    return client.add(folder)


def test_inconsistent_v2_manifests_raise_manifest_error_naming_what(tmp_path):
    client = _client(tmp_path)
    result = _export(client, 20, 10)
    good = result.manifest
    table = client.cat(f"{result.cid}/shard-table.bin")
    bad_table = b"Z" + table[1:]
    bad_table_cid = client.add(bad_table)

    def table_with(**change):
        return {**good, "shard_table": {**good["shard_table"], **change}}

    def mix_of(shards, weight):
        return {**good, "mix": {"streams": [{"shards": shards, "weight": weight}]}}

    cases = {
        "missing field 'shard_table'": {k: v for k, v in good.items() if k != "shard_table"},
        "shard_table.sha256: expected 64 hex digits": table_with(sha256="ab"),
        "SHA-256 of the file does not match": table_with(cid=str(bad_table_cid)),
        "the manifest says 99": table_with(bytes=99),
        "total_samples 21 but the shard table's pieces hold 20": {**good, "total_samples": 21},
        "mix: the streams cover 1 shards, the shard table has 2": mix_of(1, 1),
        r"mix.streams\[0\]: weight must be a positive number": mix_of(2, 0),
    }
    for i, (message, manifest) in enumerate(cases.items()):
        cid = _root_with(client, tmp_path, manifest, {}, f"case{i}")
        with pytest.raises(ManifestError, match=message) as info:
            IPFSDataset(f"ipfs://{cid}", client=client)
        assert "manifest.json" in str(info.value) or "shard table" in str(info.value)
    # a table whose index SHA-256 does not match the index it names: refused at the first read
    entry = ShardTable(table, "t").file_entry(1)
    wrong = ShardFile(entry.tar_cid, entry.index_cid, entry.tar_bytes, entry.samples, entry.index_bytes,
                      b"\x01" * 32)  # fmt: skip
    tampered = encode_table([ShardTable(table, "t").file_entry(0), wrong], [(0, 0, 10), (1, 0, 10)])
    table_cid = client.add(tampered)
    manifest = tarshards.build_manifest_v2(table_cid, tampered, 20, 2, fields={"npy": "tensor", "cls": "int"},
                                           structure="tuple")  # fmt: skip
    ds = IPFSDataset(_root_with(client, tmp_path, manifest, {}, "tampered"), client=client)
    assert ds[3][0].tolist() == [3]
    with pytest.raises(ManifestError, match=f"index {entry.index_cid} of shard {entry.tar_cid}: SHA-256"):
        ds[13]


def test_a_damaged_local_copy_is_fetched_again(tmp_path):
    writer = _client(tmp_path)
    result = _export(writer, 20, 10)
    reader, recording = _reader(tmp_path, writer)
    assert IPFSDataset(result.url, client=reader)[15][0].tolist() == [15]
    index_cid = writer.resolve(f"{result.cid}/index/shard-000001.idx")
    copy = tmp_path / "reader" / tarshards.LOCAL_COPIES_DIR / str(index_cid)
    copy.write_bytes(b"\0" * copy.stat().st_size)
    before = recording.asked.count(index_cid)
    assert IPFSDataset(result.url, client=reader)[16][0].tolist() == [16]
    assert recording.asked.count(index_cid) == before + 1
    assert PackedIndex(copy.read_bytes(), "c").keys[0] == "000000010"


# -- composing by CID ------------------------------------------------------------------------------


def test_concat_references_the_shards_and_is_reproducible(tmp_path):
    client = _client(tmp_path)
    a = _export(client, 25, 10)
    b = _export(client, 7, 4, offset=100, manifest_version=1)
    cid = torch_ipfs.concat([a.cid, b.cid, a.cid], client=client)
    ds = IPFSDataset(cid, client=client)
    assert _ids(ds) == list(range(25)) + list(range(100, 107)) + list(range(25))
    assert ds.shard_sizes() == [10, 10, 5, 4, 3, 10, 10, 5]
    table = ds.layout.table
    assert len(table.files) == 5  # a's three shards listed once, though used twice
    assert {table.cid(f, 0) for f in range(5)} == set(a.shard_cids + b.shard_cids)
    manifest = json.loads(client.cat(f"{cid}/manifest.json"))
    assert manifest["class_counts"] == {"0": 9 + 3 + 9, "1": 8 + 2 + 8, "2": 8 + 2 + 8}
    parts = [e.cid for e in client.ls(f"{cid}/parts")]
    assert parts == [a.cid, b.cid]  # the inputs, each once: pinning the root keeps them
    # the same inputs give the same CID, in another store too; another order another CID
    other = _client(tmp_path, "other")
    a2, b2 = _export(other, 25, 10), _export(other, 7, 4, offset=100, manifest_version=1)
    assert torch_ipfs.concat([a2.cid, b2.cid, a2.cid], client=other) == cid
    assert torch_ipfs.concat([b.cid, a.cid, a.cid], client=client) != cid
    assert torch_ipfs.concat(iter([a.cid, b.cid, a.cid]), client=client) == cid  # read once
    # concatenating a concatenation is the flat concatenation's samples
    nested = torch_ipfs.concat([cid, a.cid], client=client)
    assert _ids(IPFSDataset(nested, client=client)) == _ids(ds) + list(range(25))


def test_subset_keeps_the_order_given_and_is_reproducible(tmp_path):
    client = _client(tmp_path)
    a = _export(client, 25, 10)
    big = torch_ipfs.concat([a.cid, a.cid], client=client)
    selection = [range(18, 33), 3, 4, 5, 0, 49, 49]
    cid = torch_ipfs.subset(big, selection, client=client)
    expected = [i % 25 for i in range(18, 33)] + [3, 4, 5, 0, 24, 24]
    ds = IPFSDataset(cid, client=client)
    assert _ids(ds) == expected
    # runs become pieces: 18..19 | 20..24 | 0..7 (second copy) | 3..5 | 0 | 24 | 24
    assert ds.shard_sizes() == [2, 5, 8, 3, 1, 1, 1]
    assert [int(x[0][0]) for x in IPFSIterableDataset(cid, client=client)] == expected
    assert torch_ipfs.subset(big, selection, client=client) == cid
    assert torch_ipfs.subset(big, np.array([18, 19, 20]), client=client) == torch_ipfs.subset(
        big, range(18, 21), client=client
    )
    with pytest.raises(ValueError, match="index 50 is out of range for 50 samples"):
        torch_ipfs.subset(big, [50], client=client)
    with pytest.raises(TypeError, match="integer indices"):
        torch_ipfs.subset(big, [1.5], client=client)


def test_compose_refuses_roots_it_cannot_compose(tmp_path):
    client = _client(tmp_path)
    a = _export(client, 5, 5)
    words = export_dataset([{"text": "x"}] * 3, client=client, progress=False)
    with pytest.raises(ValueError, match="same fields"):
        torch_ipfs.concat([a.cid, words.cid], client=client)
    with pytest.raises(TypeError, match="a list of roots"):
        torch_ipfs.concat(str(a.cid), client=client)
    with pytest.raises(ValueError, match="2 roots but 1 weights"):
        torch_ipfs.mix([a.cid, a.cid], [1], client=client)
    folder = tmp_path / "foreign"
    folder.mkdir()
    with tarfile.open(folder / "part-0.tar", "w") as t:
        info = tarfile.TarInfo("0001.txt")
        info.size = 1
        t.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ManifestError, match="composing needs torch_ipfs.tarshards datasets"):
        torch_ipfs.concat([a.cid, client.add(folder)], client=client)


def test_concat_of_a_v1_root_whose_shards_are_named_by_path(tmp_path):
    """A v1 manifest without shard CIDs (shards resolved under the root): concat writes
    each shard's index file once and links it under index/."""
    client = _client(tmp_path)
    v1 = _export(client, 12, 5, offset=7, manifest_version=1)
    manifest = json.loads(client.cat(f"{v1.cid}/manifest.json"))
    for entry in manifest["shards"]:
        del entry["cid"]
    folder = tmp_path / "by-path"
    client.get(v1.cid, folder)
    (folder / "manifest.json").write_bytes(tarshards.encode_manifest(manifest))
    root = client.add(folder)
    cid = torch_ipfs.concat([root, root], client=client)
    assert _ids(IPFSDataset(cid, client=client)) == list(range(7, 19)) * 2
    assert len(client.ls(f"{cid}/index")) == 3


def test_cli_concat_and_subset_print_the_apis_cids(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_IPFS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_IPFS_API", "")
    monkeypatch.setenv("TORCH_IPFS_GATEWAYS", "")
    client = _client(tmp_path)
    a = str(_export(client, 12, 5).cid)
    assert cli_main(["concat", a, a]) == 0
    assert capsys.readouterr().out.strip() == str(torch_ipfs.concat([a, a], client=client))
    assert cli_main(["subset", a, "2:5", "9"]) == 0
    assert capsys.readouterr().out.strip() == str(torch_ipfs.subset(a, [range(2, 5), 9], client=client))
    assert cli_main(["mix", a, a, "--weights", "1", "3", "--epoch-samples", "8"]) == 0
    mixed = capsys.readouterr().out.strip()
    assert mixed == str(torch_ipfs.mix([a, a], [1, 3], epoch_samples=8, client=client))
    assert cli_main(["subset", a, "0:99"]) == 1
    assert "out of range for 12 samples" in capsys.readouterr().err


# -- mixing ------------------------------------------------------------------------------------------


def test_mix_epoch_quotas_windows_and_exactly_once_split():
    sizes = [10, 10, 5, 4, 3]  # stream 0: shards 0..2 (25 samples), stream 1: shards 3..4 (7)
    mix = StreamMix(((0, 3, 1.0), (3, 2, 3.0)), epoch_samples=20)
    seen_a = []
    for epoch in range(5):
        order = mix_epoch_order(sizes, mix, seed=4, epoch=epoch)
        draws = [(s.shard, j) for s in order for j in range(s.start, s.stop)]
        a = [d for d in draws if d[0] < 3]
        b = [d for d in draws if d[0] >= 3]
        assert (len(a), len(b)) == (5, 15)  # 20 * 1/4 and 20 * 3/4
        assert sorted(set(b)) == sorted({(3, j) for j in range(4)} | {(4, j) for j in range(3)})
        seen_a += a
        # every draw goes to exactly one (rank, worker); ranks get equal counts
        for world, workers in ((1, 1), (3, 2), (8, 1)):
            plans = plan_epoch(sizes, seed=4, epoch=epoch, world_size=world, shuffle=True, mix=mix)
            assert {sum(len(s) for s in p) for p in plans} == {-(-20 // world)}
            got = [
                (s.shard, j)
                for p in plans
                for w in range(workers)
                for s in split_for_worker(p, w, workers)
                for j in range(s.start, s.stop)
            ]
            if world == 1:
                assert sorted(got) == sorted(draws)
            else:
                padding = world * -(-20 // world) - 20
                assert len(got) == 20 + padding and set(got) == set(draws)
    # stream 0 is drawn 5 of 25 per epoch: 5 epochs show each of its samples exactly once
    assert sorted(seen_a) == sorted((s, j) for s, n in enumerate(sizes[:3]) for j in range(n))
    assert mix_epoch_order(sizes, mix, seed=4, epoch=1) != mix_epoch_order(sizes, mix, seed=5, epoch=1)


def test_mixed_root_streams_by_weight(tmp_path, monkeypatch):
    client = _client(tmp_path)
    a = _export(client, 25, 10)
    b = _export(client, 7, 4, offset=100)
    cid = torch_ipfs.mix([a.cid, b.cid], [1, 3], epoch_samples=20, client=client)
    assert torch_ipfs.mix([a.cid, b.cid], [1, 3], epoch_samples=20, client=client) == cid
    ds = IPFSIterableDataset(cid, client=client, seed=4)
    counts = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        got = [int(x[0][0]) for x in ds]
        assert len(got) == len(ds) == 20
        counts.append(sum(v >= 100 for v in got))
        order = mix_epoch_order(ds.shard_sizes(), ds.stream_mix(), seed=4, epoch=epoch)
        starts = [0, 10, 20, 0, 4]
        base = [0, 0, 0, 100, 100]
        assert got == [base[s.shard] + starts[s.shard] + j for s in order for j in range(s.start, s.stop)]
    assert counts == [15, 15]
    assert len(IPFSDataset(cid, client=client)) == 32  # map-style: the concatenation
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    ranked = IPFSIterableDataset(cid, client=client, seed=4)
    assert len(list(ranked)) == len(ranked) == 10


def test_hostile_sizes_are_refused_before_fetching(tmp_path):
    client = _client(tmp_path)
    result = _export(client, 20, 10)
    good = result.manifest
    huge = {**good, "shard_table": {**good["shard_table"], "bytes": 1 << 40}}
    cid = _root_with(client, tmp_path, huge, {}, "huge-table")
    with pytest.raises(ManifestError, match="the table is 1099511627776 bytes, over"):
        IPFSDataset(f"ipfs://{cid}", client=client)
    # a table row declaring a 1 TiB index for one shard: refused at that shard's first read
    table = ShardTable(client.cat(f"{result.cid}/shard-table.bin"), "t")
    entry = table.file_entry(1)
    files = [table.file_entry(0), ShardFile(entry.tar_cid, entry.index_cid, entry.tar_bytes, entry.samples,
                                            1 << 40, entry.index_sha256)]  # fmt: skip
    data = encode_table(files, [(0, 0, 10), (1, 0, 10)])
    schema = {"fields": {"npy": "tensor", "cls": "int"}, "structure": "tuple"}
    manifest = tarshards.build_manifest_v2(client.add(data), data, 20, 2, **schema)
    ds = IPFSDataset(_root_with(client, tmp_path, manifest, {}, "huge-index"), client=client)
    assert ds[0][0].tolist() == [0]
    with pytest.raises(ManifestError, match="the index is 1099511627776 bytes, over"):
        ds[10]
    # a file declaring 2**40 samples (sums over pieces could overflow): refused at open
    wide = bytearray(data)
    wide[32 + 8 : 32 + 16] = (1 << 40).to_bytes(8, "little")
    with pytest.raises(ManifestError, match="file 0 declares 1099511627776 samples"):
        ShardTable(bytes(wide), "t")

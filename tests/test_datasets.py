"""IPFSDataset / IPFSIterableDataset behaviour shared by all layouts: decoding choices,
per-sample errors, pickle refusal, subclassing, samplers and splits."""

from __future__ import annotations

import io
import json
import logging
import pickle

import numpy as np
import pytest
import torch
from datasetcases import as_list, image_key, npy_bytes, png_bytes
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler, random_split

from torch_ipfs.client import Client
from torch_ipfs.datasets import IPFSDataset, IPFSIterableDataset
from torch_ipfs.decoders import DecodeError, Decoder, PickleRefusedError
from torch_ipfs.errors import ManifestError
from torch_ipfs.formats import tarshards


def _tar_dataset(client: Client, tmp_path, samples, **manifest) -> str:
    folder = tmp_path / "ds"
    (folder / "shards").mkdir(parents=True)
    infos = []
    for s, part in enumerate(samples):
        path = folder / "shards" / tarshards.shard_name(s)
        with open(path, "wb") as fh:
            index = tarshards.write_tar_shard(part, fh)
        infos.append({"name": path.name, "cid": client.add(path, pin=False), "bytes": path.stat().st_size,
                      "index": index})  # fmt: skip
    (folder / "manifest.json").write_bytes(
        tarshards.encode_manifest(tarshards.build_manifest(infos, **manifest))
    )
    return f"ipfs://{client.add(folder)}"


@pytest.fixture
def client(tmp_path):
    return Client(home=tmp_path / "home", api="", gateways=[])


@pytest.fixture
def pairs(client, tmp_path):
    """20 (png, cls) samples in 3 shards, declared as (image, target) pairs."""
    samples = [(f"{i:04d}", {"png": png_bytes(i), "cls": str(i % 4).encode()}) for i in range(20)]
    return _tar_dataset(client, tmp_path, [samples[:8], samples[8:15], samples[15:]],
                        fields={"png": "image", "cls": "int"}, structure="tuple", label_field="cls",
                        classes=["w", "x", "y", "z"])  # fmt: skip


def test_pairs_with_transforms_torchvision_style(client, pairs):
    seen = []
    ds = IPFSDataset(pairs, client=client, transform=lambda im: (seen.append(type(im)), im.size)[1],
                     target_transform=lambda t: t * 10)  # fmt: skip
    assert ds[5] == ((6, 6), 10) and seen == [Image.Image.__mro__[0]] or issubclass(seen[0], Image.Image)
    assert ds.classes == ["w", "x", "y", "z"] and ds.class_to_idx["y"] == 2


def test_decode_modes(client, pairs):
    image, target = IPFSDataset(pairs, client=client, decode="tensor")[3]
    expected = torch.from_numpy(np.array(Image.open(io.BytesIO(png_bytes(3))))).permute(2, 0, 1)
    assert image.dtype == torch.uint8 and torch.equal(image, expected) and target == 3
    raw_image, raw_target = IPFSDataset(pairs, client=client, decode=None)[3]
    assert raw_image == png_bytes(3) and raw_target == b"3"
    mixed = IPFSDataset(pairs, client=client, decode={"png": "raw"})[3]
    assert mixed == (png_bytes(3), 3)
    called = IPFSDataset(pairs, client=client, decode=lambda field, data: (field, len(data)))[3]
    assert called == (("png", len(png_bytes(3))), ("cls", 1))
    with pytest.raises(ValueError, match="decode must be one of"):
        IPFSDataset(pairs, client=client, decode="jpeg")


def test_fields_selection_and_dicts(client, tmp_path):
    samples = [(f"k{i}", {"seg.png": png_bytes(i), "meta.json": json.dumps({"i": i}).encode(),
                          "arr.npy": npy_bytes(np.arange(i + 1))}) for i in range(4)]  # fmt: skip
    root = _tar_dataset(client, tmp_path, [samples])
    ds = IPFSDataset(root, client=client)
    sample = ds[2]
    # a torch_ipfs manifest makes samples round-trip exactly: no "__key__" added
    assert set(sample) == {"seg.png", "meta.json", "arr.npy"} and ds.read_raw(2).key == "k2"
    assert sample["meta.json"] == {"i": 2} and sample["arr.npy"].tolist() == [0, 1, 2]
    image, meta = IPFSDataset(root, client=client, fields=("png", "meta.json"))[1]
    assert image_key(image) == image_key(Image.open(io.BytesIO(png_bytes(1)))) and meta == {"i": 1}
    with pytest.raises(Exception, match="no field 'cls'"):
        IPFSDataset(root, client=client, fields=("cls",))[0]


def _broken(client, tmp_path) -> str:
    """8 samples, numbers 2 and 5 with corrupt PNG bytes."""
    samples = [(f"{i:02d}", {"png": b"not a png" if i in (2, 5) else png_bytes(i), "cls": str(i).encode()})
               for i in range(8)]  # fmt: skip
    return _tar_dataset(client, tmp_path, [samples[:4], samples[4:]])


def test_on_error_raise_is_the_default(client, tmp_path):
    ds = IPFSDataset(_broken(client, tmp_path), client=client)
    with pytest.raises(DecodeError, match="'02'.*field 'png'"):
        ds[2]


def test_on_error_skip_counts_map_and_iterable(client, tmp_path, caplog):
    root = _broken(client, tmp_path)
    ds = IPFSDataset(root, client=client, on_error="skip")
    with caplog.at_level(logging.WARNING, logger="torch_ipfs.datasets"):
        assert ds[2]["cls"] == 3  # replaced by the next readable sample
    assert ds.skipped == 1 and "skipping sample 2" in caplog.text
    it = IPFSIterableDataset(root, client=client, on_error="skip")
    assert [s["cls"] for s in it] == [0, 1, 3, 4, 6, 7] and it.skipped == 2


def test_on_error_warn(client, tmp_path):
    ds = IPFSIterableDataset(_broken(client, tmp_path), client=client, on_error="warn")
    with pytest.warns(RuntimeWarning, match="skipping sample '0[25]'"):
        assert len(list(ds)) == 6
    assert ds.skipped == 2
    with pytest.raises(ValueError, match="on_error must be one of"):
        IPFSDataset(_broken(client, tmp_path / "x"), client=client, on_error="ignore")


def test_pickles_are_refused_unless_allowed(client, tmp_path):
    blob = io.BytesIO()
    torch.save({"w": torch.ones(2)}, blob)
    samples = [("a", {"pth": blob.getvalue(), "pickle": pickle.dumps([1, 2])})]
    root = _tar_dataset(client, tmp_path, [samples])
    for on_error in ("raise", "skip"):  # a policy refusal is never skipped quietly
        with pytest.raises(PickleRefusedError, match="allow_pickle=True"):
            IPFSDataset(root, client=client, on_error=on_error)[0]
    sample = IPFSDataset(root, client=client, allow_pickle=True)[0]
    assert torch.equal(sample["pth"]["w"], torch.ones(2)) and sample["pickle"] == [1, 2]


def test_safetensors_and_npy_never_unpickle():
    from safetensors.torch import save

    decoder = Decoder()
    out = decoder.decode_field("w.safetensors", save({"a": torch.arange(3)}), None, "t")
    assert torch.equal(out["a"], torch.arange(3))
    object_array = io.BytesIO()
    np.save(object_array, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DecodeError, match="npy"):
        decoder.decode_field("x.npy", object_array.getvalue(), None, "t")


def test_subclass_overriding_getitem(client, pairs):
    class Flipped(IPFSDataset):
        def __getitem__(self, index):
            image, target = super().__getitem__(index)
            return target, self.read_raw(index).key

    ds = Flipped(pairs, client=client)
    assert ds[9] == (1, "0009")
    assert [b for batch in DataLoader(ds, batch_size=5, num_workers=2, collate_fn=as_list) for b in batch][
        :2
    ] == [
        (0, "0000"),
        (1, "0001"),
    ]


def test_random_split_and_distributed_sampler(client, pairs):
    ds = IPFSDataset(pairs, client=client)
    train, val = random_split(ds, [0.75, 0.25], generator=torch.Generator().manual_seed(0))
    keys = lambda subset: {subset.dataset.read_raw(i).key for i in subset.indices}  # noqa: E731
    assert len(train) == 15 and len(val) == 5 and not keys(train) & keys(val)
    seen = []
    for rank in range(3):
        sampler = DistributedSampler(ds, num_replicas=3, rank=rank, shuffle=True, seed=1)
        seen += [target for _, target in (ds[i] for i in sampler)]
    assert len(seen) == 21  # 20 padded to 3 x 7, as DistributedSampler does


def test_iterable_epochs_shuffle_and_ranks(client, pairs, monkeypatch):
    def keys(ds):
        return [ds_sample[1] * 100 + j for j, ds_sample in enumerate(ds)]

    ds = IPFSIterableDataset(pairs, client=client, shuffle=True, seed=3, fields=("cls", "png"))
    first = [t for t, _ in ds]
    ds.set_epoch(1)
    second = [t for t, _ in ds]
    assert sorted(first) == sorted(second) == sorted(i % 4 for i in range(20)) and first != second
    monkeypatch.setenv("WORLD_SIZE", "3")
    counts = []
    for rank in range(3):
        monkeypatch.setenv("RANK", str(rank))
        counts.append(len(list(IPFSIterableDataset(pairs, client=client))))
    assert counts == [7, 7, 7]
    assert "Shuffle: True (seed 3)" in repr(ds)


def test_iterable_resume(client, pairs):
    ds = IPFSIterableDataset(pairs, client=client, decode=None)
    it = iter(ds)
    head = [next(it)[1] for _ in range(6)]
    state = ds.state_dict()
    fresh = IPFSIterableDataset(pairs, client=client, decode=None)
    fresh.load_state_dict(state)
    rest = [s[1] for s in fresh]
    assert head + rest == [str(i % 4).encode() for i in range(20)]


def test_raw_iteration_gives_the_map_style_items(client, pairs):
    """decode="raw" streams tuples sliced straight out of the shards: the same items as
    ds[i], with transforms, picked fields and DataLoader workers."""
    items = [IPFSDataset(pairs, client=client, decode="raw")[i] for i in range(20)]
    assert items[3] == (png_bytes(3), b"3")
    assert list(IPFSIterableDataset(pairs, client=client, decode="raw")) == items
    ds = IPFSIterableDataset(pairs, client=client, decode="raw", transform=len, target_transform=int)
    assert list(ds) == [(len(png), int(cls)) for png, cls in items]
    picked = IPFSIterableDataset(pairs, client=client, decode="raw", fields=("cls", "png"))
    assert list(picked) == [(cls, png) for png, cls in items]
    stream = IPFSIterableDataset(pairs, client=client, decode="raw")
    loader = DataLoader(stream, batch_size=None, num_workers=2)
    assert sorted(tuple(s) for s in loader) == sorted(items)  # (default_convert makes lists)


def test_raw_iteration_of_a_hostile_shard_fails_loudly_or_skips_exactly(client, tmp_path):
    """A shard whose third header is corrupt (its CID is of the corrupt bytes, so it
    verifies): the slicer hands over to the strict walker, which names shard and offset."""
    samples = [(f"{i:02d}", {"png": png_bytes(i), "cls": str(i).encode()}) for i in range(8)]
    root = _tar_dataset(client, tmp_path, [samples[:4], samples[4:]], fields={"png": "image", "cls": "int"},
                        structure="tuple", label_field="cls")  # fmt: skip
    layout = IPFSDataset(root, client=client).layout
    shard = tmp_path / "ds" / "shards" / tarshards.shard_name(0)
    data = bytearray(shard.read_bytes())
    data[layout.shards[0].index.offsets[2] + 20] ^= 0x20  # a byte of sample 2's first name
    shard.write_bytes(bytes(data))
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_bytes())
    manifest["shards"][0]["cid"] = str(client.add(shard, pin=False))
    (tmp_path / "ds" / "manifest.json").write_bytes(tarshards.encode_manifest(manifest))
    hostile = f"ipfs://{client.add(tmp_path / 'ds')}"
    with pytest.raises(ManifestError, match=r"shards/shard-000000.tar.*offset .*checksum mismatch"):
        list(IPFSIterableDataset(hostile, client=client, decode="raw"))
    ds = IPFSIterableDataset(hostile, client=client, decode="raw", on_error="skip")
    # as the strict walker: sample 1 ends only where sample 2's broken header starts
    assert [cls for _, cls in ds] == [b"0", b"4", b"5", b"6", b"7"] and ds.skipped == 3


def test_decoded_tuple_items_from_sliced_tuples_name_the_failing_sample(client, tmp_path):
    samples = [(f"{i:02d}", {"png": b"not a png" if i == 5 else png_bytes(i), "cls": str(i).encode()})
               for i in range(8)]  # fmt: skip
    root = _tar_dataset(client, tmp_path, [samples[:4], samples[4:]], fields={"png": "image", "cls": "int"},
                        structure="tuple", label_field="cls")  # fmt: skip
    items = list(IPFSIterableDataset(root, client=client, decode="tensor", on_error="skip"))
    assert [t for _, t in items] == [0, 1, 2, 3, 4, 6, 7]
    assert torch.equal(items[0][0], IPFSDataset(root, client=client, decode="tensor")[0][0])
    with pytest.raises(DecodeError, match=r"sample '05': cannot decode field 'png' as image"):
        list(IPFSIterableDataset(root, client=client))
    with pytest.warns(RuntimeWarning, match=r"skipping sample '05' \(shard 1\)"):
        assert len(list(IPFSIterableDataset(root, client=client, on_error="warn"))) == 7

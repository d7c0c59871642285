"""Programs in the style of the ipfs-dataset README run on torch_ipfs with only their
imports changed (torch_ipfs.compat.ipfs_dataset), on a loopback Kubo API stand-in and
on the embedded store."""

from __future__ import annotations

import io
import zipfile

import pytest
from datasetcases import png_bytes
from PIL import Image
from standins.kubo_rpc import KuboStandIn
from torch.utils.data import DataLoader
from torchvision import transforms

import torch_ipfs
from torch_ipfs.cid import CID
from torch_ipfs.compat.ipfs_dataset import (
    IPFSDataset,
    IPFSIterableDataset,
    IPFSObject,
    RemoteFileType,
    ShuffleDataset,
)
from torch_ipfs.errors import InvalidCIDError
from torch_ipfs.sources.base import MemoryStore
from torch_ipfs.unixfs.importer import import_bytes


def _zip(names: list[str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i, name in enumerate(names):
            z.writestr(zipfile.ZipInfo(name, date_time=(2000, 1, 1, 0, 0, 0)), png_bytes(i, size=8))
    return buf.getvalue()


TRAIN = [f"train/{i:04d}_cat.png" for i in range(5)]
TEST = [f"test/{i:04d}_dog.png" for i in range(3)]


@pytest.fixture
def kubo():
    store = MemoryStore()
    cids = [import_bytes(_zip(TRAIN), store).cid, import_bytes(_zip(TEST), store).cid]
    with KuboStandIn(store=store) as server:
        yield server.api, cids


def zip_objects(*cids) -> list[IPFSObject]:
    """The README's inputs: one zip ``IPFSObject`` per CID."""
    return [IPFSObject(f"ipfs://{cid}", RemoteFileType.ZIP) for cid in cids]


# The README's regular dataset, as written there (only the import changed).
class IPFSCifar10Dataset(IPFSDataset):
    def __init__(self, ipfs_objs, ipfs_api_address, transform=None):
        super().__init__(ipfs_objs, ipfs_api_address)
        self.transform = transform

    def __getitem__(self, idx):
        file_name, file_obj = super(IPFSDataset, self).__getitem__(idx)
        img = Image.open(io.BytesIO(file_obj)).convert("RGB")
        if self.transform is not None:
            img = self.transform(img)
        return img, file_name


# The README's iterable dataset, as written there.
class IPFSCifar10IterableDataset(IPFSIterableDataset):
    def __init__(self, ipfs_objs_list, ipfs_api_address, shuffle_urls=False, transform=None):
        self.ipfs_dataset = IPFSIterableDataset(ipfs_objs_list, ipfs_api_address, shuffle_urls)
        self.transform = transform

    def data_generator(self):
        try:
            while True:
                fname, fobj = next(self.ipfs_dataset_iter)
                image_np = Image.open(io.BytesIO(fobj)).convert("RGB")
                if self.transform is not None:
                    image_np = self.transform(image_np)
                yield image_np, fname
        except StopIteration:
            return

    def __iter__(self):
        self.ipfs_dataset_iter = iter(self.ipfs_dataset)
        return self.data_generator()


TRANSFORM = transforms.Compose(
    [
        transforms.RandomCrop(8, padding=2),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    ]
)


def test_regular_dataset_subclass_from_the_readme(kubo):
    api, (train, test) = kubo
    ipfs_objs = zip_objects(train, test)
    ds = IPFSCifar10Dataset(ipfs_objs, api, transform=TRANSFORM)
    assert len(ds) == 8
    img, name = ds[6]
    assert name == TEST[1] and img.shape == (3, 8, 8)
    names = [n for _, batch in DataLoader(ds, batch_size=4) for n in batch]
    assert names == TRAIN + TEST
    with_workers = [n for _, batch in DataLoader(ds, batch_size=2, num_workers=2) for n in batch]
    assert with_workers == TRAIN + TEST


def test_iterable_dataset_subclass_from_the_readme(kubo):
    api, (train, test) = kubo
    ipfs_objs = zip_objects(train, test)
    ds = IPFSCifar10IterableDataset(ipfs_objs, api, transform=TRANSFORM)
    got = [(img.shape, name) for img, name in ds]
    assert got == [((3, 8, 8), n) for n in TRAIN + TEST]
    batches = list(DataLoader(ds, batch_size=3))
    assert [n for _, names in batches for n in names] == TRAIN + TEST
    shuffled = ShuffleDataset(ds, buffer_size=4)
    assert sorted(name for _, name in shuffled) == sorted(TRAIN + TEST)


def test_base_iterable_gives_file_name_and_bytes_per_member(kubo):
    api, (train, _) = kubo
    it = iter(IPFSIterableDataset(zip_objects(train), api, False))
    fname, fobj = next(it)  # not the keys of a dict
    assert (fname, fobj) == (TRAIN[0], png_bytes(0, size=8))


def test_shuffle_urls_permutes_objects_not_files(kubo):
    api, (train, test) = kubo
    objs = zip_objects(train, test)
    orders = set()
    for epoch in range(6):
        ds = IPFSIterableDataset(objs, api, True)
        ds.set_epoch(epoch)
        names = [n for n, _ in ds]
        assert sorted(names) == sorted(TRAIN + TEST)
        # files are not mixed: each object's files keep their cyclic order (the native
        # shard shuffle permutes objects and rotates the start)
        for part in (TRAIN, TEST):
            mine = [n for n in names if n in part]
            assert any(mine == part[k:] + part[:k] for k in range(len(part)))
        orders.add(tuple(names))
    assert len(orders) >= 2


def test_api_address_none_uses_the_default_sources(tmp_path):
    cid = torch_ipfs.add(_zip(TRAIN))
    ds = IPFSDataset([IPFSObject(f"ipfs://{cid}", RemoteFileType.ZIP)], None)
    assert ds[4] == (TRAIN[4], png_bytes(4, size=8))


def test_native_dataset_still_decodes(tmp_path):
    cid = torch_ipfs.add(_zip(TRAIN))
    sample = torch_ipfs.IPFSDataset(IPFSObject(cid, RemoteFileType.ZIP))[0]  # a CID object as url
    assert isinstance(sample, dict) and sample["__key__"] == "train/0000_cat"
    assert isinstance(sample["png"], Image.Image)
    assert torch_ipfs.IPFSDataset(f"ipfs://{cid}", items="files")[1] == (TRAIN[1], png_bytes(1, size=8))


def test_ipfs_object_filetype():
    obj = IPFSObject("ipfs://" + str(CID.decode("bafkqaaa")), RemoteFileType.TAR)
    assert obj.filetype is RemoteFileType.TAR and obj.type is RemoteFileType.TAR


def test_grouped_files_are_refused_by_name(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.png", png_bytes(0))
        z.writestr("a.txt", b"x")
    ds = IPFSDataset([IPFSObject(str(torch_ipfs.add(buf.getvalue())), RemoteFileType.ZIP)], None)
    with pytest.raises(torch_ipfs.datasets.SampleError, match=r"files \['png', 'txt'\]"):
        ds[0]


@pytest.mark.parametrize("path", ["./photos", "../photos", "~/data", "photos/x"])
def test_local_path_says_what_to_do(tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "x").write_text("x")
    with pytest.raises(InvalidCIDError, match=r"local path.*torch-ipfs add -r.*torch_ipfs.export"):
        torch_ipfs.IPFSDataset(path)


def test_gateway_url_objects_and_a_folder_with_metadata(tmp_path):
    """The README's other inputs: a gateway URL (here a loopback trustless gateway; the
    blocks are verified) with ipfs_api_address None, and a folder with metadata.txt."""
    from gatewayserver import running_gateway

    store = MemoryStore()
    zip_cid = import_bytes(_zip(TEST), store).cid
    with running_gateway(store) as gw:
        objs = [IPFSObject(f"{gw.url}/ipfs/{zip_cid}", RemoteFileType.ZIP)]
        ds = IPFSDataset(objs, None)
        assert [ds[i][0] for i in range(len(ds))] == TEST
    folder = tmp_path / "dataset"
    (folder / "another_dir").mkdir(parents=True)
    names = ["truck_lorry_s_000528.png", "another_dir/automobile_convertible_s_001372.png"]
    for i, name in enumerate(names):
        (folder / name).write_bytes(png_bytes(i, size=8))
    (folder / "metadata.txt").write_text("\n".join(names) + "\n")
    cid = torch_ipfs.add(folder)
    ds = IPFSDataset([IPFSObject(f"ipfs://{cid}", RemoteFileType.FOLDER)], None)
    assert [ds[i] for i in range(2)] == [(n, png_bytes(i, size=8)) for i, n in enumerate(names)]


@pytest.mark.parametrize("cls", [torch_ipfs.IPFSDataset, torch_ipfs.IPFSIterableDataset])
def test_native_classes_point_positional_callers_to_the_compat_module(cls):
    with pytest.raises(TypeError, match=r"torch_ipfs\.compat\.ipfs_dataset.*Client\(api=ipfs_api_address\)"):
        cls([IPFSObject("ipfs://bafkqaaa", RemoteFileType.ZIP)], "/ip4/127.0.0.1/tcp/5001")

"""The ``ipfs://`` fsspec filesystem over a real embedded store (and the registration
that makes ``fsspec.open("ipfs://...")`` find it)."""

from __future__ import annotations

import importlib
import io
import pickle
import tarfile

import fsspec
import pytest

from torch_ipfs.client import Client
from torch_ipfs.errors import IntegrityError, InvalidCIDError
from torch_ipfs.fs import IPFSFileSystem, register_webdataset, webdataset_gopen
from torch_ipfs.sources.base import MemoryStore
from torch_ipfs.unixfs.importer import ImportOptions, import_bytes, import_tree


@pytest.fixture
def content(_isolated_home, rng):
    """A tree in the default embedded store ($TORCH_IPFS_HOME): (root CID str, files)."""
    files = {
        "a/x.txt": b"hello world",
        "a/y.bin": rng.randbytes(10_000),
        "b.txt": b"bee",
        "deep/er/est/z.bin": rng.randbytes(3000),
    }
    client = Client()
    root = import_tree({**files, "empty": None}, client.store, ImportOptions(chunker="size-1000"))
    client.store.pin(root)
    client.close()
    return str(root), files


@pytest.fixture
def fs():
    fs = IPFSFileSystem()
    fs.dircache.clear()  # instances are cached by fsspec; start each test cold
    return fs


def test_registered_under_ipfs_protocol():
    assert fsspec.get_filesystem_class("ipfs") is IPFSFileSystem


def test_fsspec_open_reads_verified_bytes(content):
    root, files = content
    with fsspec.open(f"ipfs://{root}/a/y.bin") as f:
        assert f.read() == files["a/y.bin"]
    with fsspec.open(f"ipfs://{root}/a/y.bin") as f:
        f.seek(4321)
        assert f.read(1500) == files["a/y.bin"][4321:5821]
        assert f.tell() == 5821
        assert f.size == 10_000
    of = fsspec.open(f"ipfs://{root}/b.txt", "rt")
    with of as f:
        assert f.read() == "bee"


def test_cat_file_ranges(content, fs):
    root, files = content
    y = files["a/y.bin"]
    assert fs.cat_file(f"{root}/a/y.bin") == y
    assert fs.cat_file(f"ipfs://{root}/a/y.bin", 999, 2001) == y[999:2001]
    assert fs.cat_file(f"/ipfs/{root}/a/y.bin", -10) == y[-10:]
    assert fs.cat_file(f"{root}/a/y.bin", 9000, -500) == y[9000:-500]
    assert fs.cat_file(f"{root}/a/y.bin", 20_000) == b""
    assert fs.cat(f"ipfs://{root}/b.txt") == b"bee"


def test_ls_details(content, fs):
    root, files = content
    listing = fs.ls(f"ipfs://{root}")
    assert [(e["name"], e["type"], e["size"]) for e in listing] == [
        (f"{root}/a", "directory", 0),
        (f"{root}/b.txt", "file", 3),
        (f"{root}/deep", "directory", 0),
        (f"{root}/empty", "directory", 0),
    ]
    assert listing[3]["cid"] == "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"  # the empty directory
    assert fs.ls(f"{root}/a", detail=False) == [f"{root}/a/x.txt", f"{root}/a/y.bin"]
    # a file lists as itself
    (entry,) = fs.ls(f"{root}/a/y.bin")
    assert (entry["name"], entry["type"], entry["size"]) == (f"{root}/a/y.bin", "file", 10_000)
    assert fs.info(f"ipfs://{root}/a/y.bin") == entry


def test_info_exists_isdir(content, fs):
    root, _ = content
    info = fs.info(f"{root}/a/x.txt")
    assert info["cid"] == "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"
    assert (info["type"], info["size"]) == ("file", 11)
    assert fs.info(root)["type"] == "directory"
    assert fs.isdir(f"{root}/deep/er") and not fs.isfile(f"{root}/deep/er")
    assert fs.isfile(f"{root}/b.txt")
    assert fs.exists(f"{root}/a") and not fs.exists(f"{root}/nope")
    assert not fs.exists(f"{root}/b.txt/under-a-file")
    assert not fs.exists("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")  # in no source
    with pytest.raises(FileNotFoundError):
        fs.info(f"{root}/nope")
    with pytest.raises(InvalidCIDError):
        fs.exists("not-a-cid/x")
    assert fs.ukey(f"{root}/a/x.txt") == info["cid"]


def test_find_glob_du_on_tree(content, fs):
    root, files = content
    assert fs.find(f"ipfs://{root}") == sorted(f"{root}/{name}" for name in files)
    assert fs.glob(f"ipfs://{root}/*/*.bin") == [f"{root}/a/y.bin"]
    assert fs.glob(f"{root}/**/*.bin") == [f"{root}/a/y.bin", f"{root}/deep/er/est/z.bin"]
    assert fs.du(root) == sum(len(v) for v in files.values())
    dirs = fs.find(root, withdirs=True)
    assert f"{root}/empty" in dirs and f"{root}/deep/er" in dirs


def test_options_and_pickling(content, _isolated_home, tmp_path, monkeypatch):
    """A filesystem built with options pickles by them (DataLoader workers) and reads
    from the home it was given, whatever the environment says later."""
    root, files = content
    fs = IPFSFileSystem(home=str(_isolated_home))
    monkeypatch.setenv("TORCH_IPFS_HOME", str(tmp_path / "elsewhere"))
    copy = pickle.loads(pickle.dumps(fs))
    assert copy.cat_file(f"{root}/a/x.txt") == b"hello world"
    with fsspec.open(f"ipfs://{root}/b.txt", home=str(_isolated_home)) as f:
        assert f.read() == b"bee"
    assert not IPFSFileSystem(home=str(tmp_path / "elsewhere")).exists(f"{root}/b.txt")


def test_read_only(content, fs):
    root, _ = content
    with pytest.raises(NotImplementedError, match="read-only"):
        fs.open(f"{root}/new.txt", "wb")


def test_tampered_block_is_never_returned(tmp_path, rng):
    """A source that answers with wrong bytes: fsspec reads raise, they never return them."""

    class LyingStore(MemoryStore):
        """A store that flips a bit in every block it holds (a bad disk or peer)."""

        def _get_raw(self, cid):
            block = bytearray(super()._get_raw(cid))
            block[-1] ^= 1
            return bytes(block)

    store = LyingStore()
    data = rng.randbytes(3000)
    cid = import_bytes(data, store, ImportOptions(cid_version=1)).cid
    fs = IPFSFileSystem(client=Client(home=tmp_path / "h", sources=[store]))
    with pytest.raises(IntegrityError, match="failed verification"):
        fs.cat_file(str(cid))
    with pytest.raises(IntegrityError, match="failed verification"), fs.open(str(cid)) as f:
        f.read()


def _shard(samples: list[tuple[str, dict[str, bytes]]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, fields in samples:
            for ext, payload in fields.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(payload)
                info.mtime = 0
                tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def test_webdataset_reads_ipfs_shards(_isolated_home, monkeypatch):
    """webdataset 1.x opens URLs through its own gopen table, not fsspec:
    ``register_webdataset`` adds ``ipfs://`` to it."""
    wds = pytest.importorskip("webdataset")
    shards = {
        f"shard-{i:06d}.tar": _shard([(f"s{i}{j}", {"txt": f"{i}-{j}".encode(), "cls": str(j).encode()})
                                      for j in range(3)])
        for i in range(2)
    }
    client = Client()
    root = import_tree(shards, client.store, ImportOptions(chunker="size-2048"))
    client.close()
    gopen_module = importlib.import_module("webdataset.gopen")
    monkeypatch.setitem(gopen_module.gopen_schemes, "ipfs", None)  # restored after the test
    register_webdataset()
    assert gopen_module.gopen_schemes["ipfs"] is webdataset_gopen
    ds = wds.WebDataset(f"ipfs://{root}/shard-{{000000..000001}}.tar", shardshuffle=False)
    got = [(s["__key__"], s["txt"], s["cls"]) for s in ds]
    assert got == [(f"s{i}{j}", f"{i}-{j}".encode(), str(j).encode()) for i in range(2) for j in range(3)]

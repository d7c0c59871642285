"""Finding 1 of issue 10: ``get`` of a well-hashed but hostile directory never writes
outside its target, never writes through a symlink and leaves nothing half-written.

Each DAG is built block by block with the real dag-pb codec (importers never make these
shapes) and read through a real :class:`Client` over a real in-memory store.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from dagbuild import pb_leaf, put_pb, symlink

from torch_ipfs.client import Client
from torch_ipfs.dagpb import DataType, PBLink, PBNode, UnixFSData
from torch_ipfs.errors import UnsafePathError
from torch_ipfs.sources.base import MemoryStore


def raw_directory(store: MemoryStore, links: list[tuple[str, object]]) -> object:
    """A directory with exactly these links, in this order (duplicates allowed)."""
    node = PBNode([PBLink(cid, name, 1) for name, cid in links], UnixFSData(DataType.Directory).encode())
    return put_pb(store, node)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def client(store, tmp_path_factory):
    with Client(home=tmp_path_factory.mktemp("home"), sources=[store]) as c:
        yield c


def listing(base) -> list[str]:
    return sorted(str(p.relative_to(base)) for p in base.rglob("*"))


def test_a_directory_then_a_symlink_with_the_same_name_is_refused(store, client, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    inner = raw_directory(store, [("pwned.txt", pb_leaf(store, b"owned")[0])])
    root = raw_directory(store, [("x", inner), ("x", symlink(store, str(victim)))])
    with pytest.raises(UnsafePathError, match="second entry") as err:
        client.get(root, tmp_path / "out", symlinks=True)
    assert err.value.path.endswith("out/x")
    assert list(victim.iterdir()) == []
    # the other order too, and a ../.. target
    root = raw_directory(store, [("x", symlink(store, "../../victim")), ("x", inner)])
    with pytest.raises(UnsafePathError):
        client.get(root, tmp_path / "out2", symlinks=True)
    assert list(victim.iterdir()) == []


def test_f_and_a_symlink_named_f_part_cannot_truncate_a_victim(store, client, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    root = raw_directory(store, [("f", pb_leaf(store, b"evil")[0]), ("f.part", symlink(store, str(victim)))])
    client.get(root, tmp_path / "out", symlinks=True)
    assert victim.read_bytes() == b"precious"
    assert (tmp_path / "out" / "f").read_bytes() == b"evil"
    assert not (tmp_path / "out" / "f").is_symlink()
    assert os.readlink(tmp_path / "out" / "f.part") == str(victim)
    assert listing(tmp_path / "out") == ["f", "f.part"]
    # the temporary directory is gone, nothing else was created beside the target
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "victim.txt"]


def test_an_existing_symlink_in_the_target_is_never_written_through(store, client, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "f").write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "d").symlink_to(victim)  # left from an earlier get, or planted
    (out / "f").symlink_to(victim / "f")
    inner = raw_directory(store, [("g", pb_leaf(store, b"evil")[0])])
    with pytest.raises(UnsafePathError, match="not a directory") as err:
        client.get(raw_directory(store, [("d", inner)]), out)
    assert err.value.path == f"{out}/d"
    # a file entry replaces the link itself, never the file it points at
    client.get(raw_directory(store, [("f", pb_leaf(store, b"new")[0])]), out)
    assert (victim / "f").read_bytes() == b"precious"
    assert (out / "f").read_bytes() == b"new" and not (out / "f").is_symlink()
    assert sorted(p.name for p in victim.iterdir()) == ["f"]


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../escape", "nul\0x"])
def test_names_that_could_escape_are_refused(store, client, tmp_path, name):
    root = raw_directory(store, [("ok", pb_leaf(store, b"1")[0]), (name, pb_leaf(store, b"2")[0])])
    with pytest.raises(UnsafePathError, match="entry name") as err:
        client.get(root, tmp_path / "out")
    assert err.value.path == f"{tmp_path / 'out'}/{name}"
    assert listing(tmp_path) == ["out"]  # refused before anything of that directory was written


def test_symlinks_are_refused_unless_asked(store, client, tmp_path):
    root = raw_directory(store, [("link", symlink(store, "/etc/passwd"))])
    with pytest.raises(UnsafePathError, match="symlinks=True") as err:
        client.get(root, tmp_path / "out")
    assert err.value.path == f"{tmp_path / 'out'}/link"
    assert listing(tmp_path / "out") == []
    with pytest.raises(UnsafePathError, match="symlink"):
        client.get(symlink(store, "/etc/passwd"), tmp_path / "alone")
    assert not os.path.lexists(tmp_path / "alone")
    client.get(root, tmp_path / "out", symlinks=True)
    assert os.readlink(tmp_path / "out" / "link") == "/etc/passwd"


def test_the_cli_refuses_the_hostile_tree_with_one_error_line(tmp_path):
    home = tmp_path / "home"
    with Client(home=home) as c:
        inner = raw_directory(c.store, [("pwned.txt", pb_leaf(c.store, b"owned")[0])])
        root = raw_directory(c.store, [("x", inner), ("x", symlink(c.store, str(tmp_path)))])
    env = {**os.environ, "TORCH_IPFS_HOME": str(home)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch_ipfs.cli", "get", str(root), "-o", str(tmp_path / "out"), "--symlinks"],
        capture_output=True, env=env, timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.decode().startswith("Error: refusing to write")
    assert b"second entry" in proc.stderr
    assert not (tmp_path / "pwned.txt").exists()


def test_a_directory_chain_deeper_than_the_limit_stops_with_a_typed_error(store, client, tmp_path):
    from torch_ipfs.unixfs.walk import MAX_DAG_DEPTH

    node = raw_directory(store, [("f", pb_leaf(store, b"bottom")[0])])
    for _ in range(MAX_DAG_DEPTH + 5):
        node = raw_directory(store, [("d", node)])
    fds = len(os.listdir("/proc/self/fd"))
    try:
        with pytest.raises(UnsafePathError, match="nested directories"):
            client.get(node, tmp_path / "out")
        assert len(os.listdir("/proc/self/fd")) == fds  # the walk's descriptors are all closed
    finally:
        # 2,048 levels written before the refusal: Python 3.11's shutil.rmtree (which
        # pytest uses to prune old temp dirs, in a later session) recurses once per level
        # and would fail there with RecursionError. rm -rf does not recurse on the stack.
        subprocess.run(["rm", "-rf", str(tmp_path / "out")], check=True)

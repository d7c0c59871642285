"""Benchmark: verified sequential read of a UnixFS file from the on-disk store vs reading
the same bytes as a plain file (issue 2: goal >= 0.5x).

    python bench/bench_read.py [--size-mib 256] [--cid-version 0|1] [--repeat 3]

Both sides read from the page cache (each is read once before timing): the comparison
is the cost of our path (block files, sha2-256 of every block, dag-pb decoding, the
walk) against ``open().read`` in 1 MiB pieces. The store is
``torch_ipfs.sources.local.LocalStore`` when present, else a minimal stand-in with the
same on-disk shape (one file per block, keyed by multihash).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from torch_ipfs.cid import CID
from torch_ipfs.errors import BlockNotFoundError
from torch_ipfs.sources.base import BlockStore
from torch_ipfs.unixfs.importer import ImportOptions, import_file
from torch_ipfs.unixfs.reader import UnixFSFile

PIECE = 1 << 20


class _DirStore(BlockStore):
    """Stand-in for LocalStore: one file per block under ``root``, named by multihash."""

    name = "bench dir store"

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, cid: CID) -> Path:
        key = cid.multihash.hex()
        return self.root / key[-4:-2] / key

    def _get_raw(self, cid: CID) -> bytes:
        try:
            return self._path(cid).read_bytes()
        except FileNotFoundError:
            raise BlockNotFoundError(cid, [self.name]) from None

    def put(self, cid: CID, data: bytes) -> None:
        self.check(cid, data)
        path = self._path(cid)
        if path.exists():
            return
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)


def _open_store(home: Path) -> BlockStore:
    try:
        from torch_ipfs.sources.local import LocalStore
    except ImportError:
        return _DirStore(home / "blocks")
    return LocalStore(home)


def _plain_read(path: Path) -> int:
    n = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(PIECE):
            n += len(chunk)
    return n


def _verified_stream(store: BlockStore, root: CID) -> int:
    return sum(len(chunk) for chunk in UnixFSFile(store, root).iter_chunks())


def _verified_file_object(store: BlockStore, root: CID) -> int:
    n = 0
    with UnixFSFile(store, root).open() as fh:
        while chunk := fh.read(PIECE):
            n += len(chunk)
    return n


def _evict(*roots: Path) -> None:
    """Drop our own files from the page cache (posix_fadvise DONTNEED), so the next
    read comes from the disk; other processes' caches are left alone."""
    for root in roots:
        paths = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for path in paths:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _best(fn, repeat: int, before=None) -> float:
    best = float("inf")
    for _ in range(repeat):
        if before is not None:
            before()
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--cid-version", type=int, default=0, choices=(0, 1))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(prefix="bench-read-") as tmp:
        home = Path(tmp)
        plain = home / "plain.bin"
        with open(plain, "wb") as fh:
            for _ in range(0, size, 16 << 20):
                fh.write(os.urandom(min(16 << 20, size - fh.tell())))
        store = _open_store(home / "store")
        with open(plain, "rb") as fh:
            root = import_file(fh, store, ImportOptions(cid_version=args.cid_version)).cid
        assert _plain_read(plain) == size  # warm the page cache
        assert _verified_stream(store, root) == size
        name = type(store).__name__
        results = []
        for cache, before in (("hot", None), ("cold", lambda: _evict(plain, home / "store"))):
            t_plain = _best(lambda: _plain_read(plain), args.repeat, before)
            t_stream = _best(lambda: _verified_stream(store, root), args.repeat, before)
            t_fileobj = _best(lambda: _verified_file_object(store, root), args.repeat, before)
            results += [
                (f"{cache}: plain open().read, 1 MiB pieces", t_plain, t_plain),
                (f"{cache}: verified UnixFSFile.iter_chunks ({name})", t_stream, t_plain),
                (f"{cache}: verified UnixFSFile.open().read(1 MiB) ({name})", t_fileobj, t_plain),
            ]
    mb = size / 1e6
    sys.stdout.write(f"file: {args.size_mib} MiB, CIDv{args.cid_version}, root {root}\n")
    for label, t, base in results:
        sys.stdout.write(f"{label:66s} {mb / t:9.1f} MB/s  ratio {base / t:5.2f}x\n")
    sys.stdout.write("goal: verified >= 0.5x plain\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: verified sequential read of a UnixFS file from the on-disk store vs reading
the same bytes as a plain file (issue 2: goal >= 0.5x).

    python bench/bench_read.py [--size-mib 256] [--cid-version 0|1] [--repeat 3]

The file is imported into a fresh ``torch_ipfs.sources.local.LocalStore`` (one file per
block, flatfs layout). Each reader is timed hot (everything in the page cache) and cold
(our own files dropped from the page cache with ``posix_fadvise(DONTNEED)`` before each
run); every ratio is against the plain ``open().read`` of the same bytes in the same run
and cache state. The verified side does everything a real read does: opens one file per
block, sha2-256 of every block against its CID, dag-pb / UnixFS decoding and the DAG walk.

Two reference lines show the ceiling: sha2-256 alone over the same bytes already in
memory, on one thread and on two (hashlib releases the GIL), with no I/O at all.
The ``cpu`` column is the process CPU time of the best run (all threads), which is less
noisy than wall time on a shared machine.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from torch_ipfs.cid import CID
from torch_ipfs.sources.local import LocalStore
from torch_ipfs.unixfs.importer import ImportOptions, import_file
from torch_ipfs.unixfs.reader import UnixFSFile

PIECE = 1 << 20
BLOCK = 256 * 1024


def _plain_read(path: Path) -> int:
    n = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(PIECE):
            n += len(chunk)
    return n


def _verified_stream(store: LocalStore, root: CID) -> int:
    return sum(len(chunk) for chunk in UnixFSFile(store, root).iter_chunks())


def _verified_file_object(store: LocalStore, root: CID) -> int:
    n = 0
    with UnixFSFile(store, root).open() as fh:
        while chunk := fh.read(PIECE):
            n += len(chunk)
    return n


def _hash_only(blocks: list[memoryview], threads: int) -> int:
    if threads == 1:
        for block in blocks:
            hashlib.sha256(block).digest()
    else:
        with ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(lambda b: hashlib.sha256(b).digest(), blocks, chunksize=16):
                pass
    return sum(len(b) for b in blocks)


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


def _best(fn, expected: int, repeat: int, before=None) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of the fastest of ``repeat`` runs."""
    best = (float("inf"), 0.0)
    for _ in range(repeat):
        if before is not None:
            before()
        cpu, wall = time.process_time(), time.perf_counter()
        n = fn()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if n != expected:
            raise AssertionError(f"read {n} bytes, expected {expected}")
        best = min(best, (wall, cpu))
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--cid-version", type=int, default=0, choices=(0, 1))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    size = args.size_mib << 20
    results: list[tuple[str, float, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-read-") as tmp:
        home = Path(tmp)
        plain = home / "plain.bin"
        with open(plain, "wb") as fh:
            for _ in range(0, size, 16 << 20):
                fh.write(os.urandom(min(16 << 20, size - fh.tell())))
        store = LocalStore(home / "store")
        with open(plain, "rb") as fh:
            root = import_file(fh, store, ImportOptions(cid_version=args.cid_version)).cid
        assert _plain_read(plain) == size  # warm the page cache
        assert _verified_stream(store, root) == size
        for cache, before in (("hot", None), ("cold", lambda: _evict(plain, home / "store"))):
            t_plain = _best(lambda: _plain_read(plain), size, args.repeat, before)
            t_stream = _best(lambda: _verified_stream(store, root), size, args.repeat, before)
            t_fileobj = _best(lambda: _verified_file_object(store, root), size, args.repeat, before)
            results += [
                (f"{cache}: plain open().read(1 MiB)", *t_plain, t_plain[0]),
                (f"{cache}: verified UnixFSFile.iter_chunks()", *t_stream, t_plain[0]),
                (f"{cache}: verified UnixFSFile.open().read(1 MiB)", *t_fileobj, t_plain[0]),
            ]
        data = plain.read_bytes()
        view = memoryview(data)
        blocks = [view[i:i + BLOCK] for i in range(0, size, BLOCK)]
        hot_plain = results[0][1]
        for threads in (1, 2):
            t = _best(lambda threads=threads: _hash_only(blocks, threads), size, args.repeat)
            results.append((f"ceiling: sha2-256 alone, in memory, {threads} thread(s)", *t, hot_plain))
    mb = size / 1e6
    sys.stdout.write(
        f"file: {args.size_mib} MiB, CIDv{args.cid_version}, root {root}, {os.cpu_count()} CPUs\n"
    )
    for label, wall, cpu, base in results:
        sys.stdout.write(
            f"{label:52s} {mb / wall:9.1f} MB/s  ratio {base / wall:5.2f}x  cpu {cpu:6.3f} s\n"
        )
    sys.stdout.write("goal: verified >= 0.5x plain (same cache state)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

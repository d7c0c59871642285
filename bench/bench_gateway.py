"""Benchmark: reading through the `serve` trustless gateway on loopback (issue 3).

    python bench/bench_gateway.py [--size-mib 256] [--files 100] [--file-kib 1024]
                                  [--delay-ms 50] [--repeat 2]

Ratios measured in one run, against baselines from the same run:

1. Latency hiding: throughput of a verified read of one large file (and of a set of
   small files, the stand-in for a sharded dataset) through a gateway that adds
   ``--delay-ms`` to every request, as a fraction of the same read with no delay.
   Goal >= 0.8. Large file: ``GatewaySource.iter_range`` (pipelined ``entity-bytes`` CAR
   requests); also shown: block by block (``UnixFSFile.iter_chunks`` over ``get_many``).
2. Verification overhead: ``GatewaySource.get_many`` (hash every block) against fetching
   the same blocks with the same parallelism over the same pooled httpx client without
   hashing. Goal <= 5% slower.

The gateways run in separate processes (as a real gateway would), over one on-disk store
(``LocalStore``) imported once; every figure is the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from torch_ipfs.cid import CID, RAW
from torch_ipfs.dag import walk_dfs
from torch_ipfs.sources.gateway import ACCEPT_RAW, GatewaySource
from torch_ipfs.sources.local import LocalStore
from torch_ipfs.unixfs.importer import ImportOptions, import_bytes, import_file
from torch_ipfs.unixfs.reader import UnixFSFile

MIB = 1024 * 1024

_SERVER = """
import sys
from torch_ipfs.serve import make_server
from torch_ipfs.sources.local import LocalStore
srv = make_server(LocalStore(sys.argv[1]), port=0, delay=float(sys.argv[2]))
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""


def start_gateway(store_dir: str, delay: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER, store_dir, str(delay)], stdout=subprocess.PIPE, text=True
    )
    port = int(proc.stdout.readline())  # type: ignore[union-attr]
    return proc, f"http://127.0.0.1:{port}"


def best(repeat: int, fn) -> float:
    """Best wall time of ``repeat`` runs of ``fn`` (which must return the bytes it read)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def read_file_ranges(url: str, cid: CID, size: int) -> None:
    with GatewaySource(url) as gw:
        got = sum(len(c) for c in gw.iter_range(cid, chunk_size=8 * MIB, parallel=8))
    assert got == size, (got, size)


def read_file_blocks(url: str, cid: CID, size: int) -> None:
    with GatewaySource(url, max_connections=32) as gw:
        got = sum(len(c) for c in UnixFSFile(gw, cid, prefetch=64).iter_chunks())
    assert got == size, (got, size)


def read_small_files(url: str, files: list[tuple[CID, int]]) -> None:
    with GatewaySource(url) as gw, ThreadPoolExecutor(16) as pool:
        sizes = pool.map(lambda f: len(gw.read_range(f[0], 0, f[1])), files)
        assert list(sizes) == [n for _, n in files]


def fetch_verified(url: str, cids: list[CID], expect: int) -> None:
    with GatewaySource(url, max_connections=16) as gw:
        got = sum(len(b) for _, b in gw.get_many(cids))
    assert got == expect


def fetch_unverified(url: str, cids: list[CID], expect: int) -> None:
    """The same requests, parallelism and client as get_many, minus hashing/verification."""
    with GatewaySource(url, max_connections=16) as gw:
        client = gw._client  # the same pooled client settings

        def fetch(cid: CID) -> bytes:
            r = client.get(f"{url}/ipfs/{cid}", params={"format": "raw"}, headers={"Accept": ACCEPT_RAW})
            r.raise_for_status()
            return r.content

        with ThreadPoolExecutor(16) as pool:
            window: deque = deque()
            got = 0
            for cid in cids:
                window.append(pool.submit(fetch, cid))
                if len(window) >= 32:
                    got += len(window.popleft().result())
            while window:
                got += len(window.popleft().result())
    assert got == expect


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--file-kib", type=int, default=1024)
    ap.add_argument("--delay-ms", type=float, default=50.0)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    size = args.size_mib * MIB
    with tempfile.TemporaryDirectory(prefix="bench_gateway_") as tmp:
        store = LocalStore(os.path.join(tmp, "store"))
        opts = ImportOptions(cid_version=1)
        t0 = time.perf_counter()
        path = os.path.join(tmp, "big.bin")
        with open(path, "wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(MIB))
        with open(path, "rb") as f:
            big = import_file(f, store, opts).cid
        os.remove(path)
        small_bytes = args.file_kib * 1024
        files = [
            (import_bytes(os.urandom(small_bytes), store, opts).cid, small_bytes) for _ in range(args.files)
        ]
        leaves = [c for c, _ in walk_dfs(store, big) if c.codec == RAW]
        print(f"setup: {args.size_mib} MiB file ({len(leaves)} leaves) + {args.files} x {args.file_kib} KiB "
              f"files imported in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

        fast, fast_url = start_gateway(store.root.as_posix(), 0.0)
        slow, slow_url = start_gateway(store.root.as_posix(), args.delay_ms / 1000)
        try:
            rows = []

            def pair(label: str, total: int, fn) -> None:
                t_fast = best(args.repeat, lambda: fn(fast_url))
                t_slow = best(args.repeat, lambda: fn(slow_url))
                rows.append((label, total / MIB / t_fast, total / MIB / t_slow, t_fast / t_slow))

            pair("large file, range CARs", size, lambda u: read_file_ranges(u, big, size))
            pair("large file, block by block", size, lambda u: read_file_blocks(u, big, size))
            pair(f"{args.files} small files", small_bytes * args.files, lambda u: read_small_files(u, files))
            leaf_bytes = sum(len(store.get(c)) for c in leaves)
            t_ver = best(args.repeat, lambda: fetch_verified(fast_url, leaves, leaf_bytes))
            t_raw = best(args.repeat, lambda: fetch_unverified(fast_url, leaves, leaf_bytes))
        finally:
            for proc in (fast, slow):
                proc.terminate()
                proc.wait()

    print(f"\n## Gateway reads through `serve` on loopback ({args.delay_ms:g} ms injected delay)\n")
    print(f"| read | 0 ms MiB/s | {args.delay_ms:g} ms MiB/s | ratio (goal >= 0.8) |")
    print("|---|---:|---:|---:|")
    for label, fast_mbs, slow_mbs, ratio in rows:
        print(f"| {label} | {fast_mbs:.1f} | {slow_mbs:.1f} | {ratio:.2f} |")
    overhead = t_ver / t_raw - 1
    print("\n## Verification overhead (same blocks, same parallelism, 0 ms delay)\n")
    print("| fetch | MiB/s |\n|---|---:|")
    print(f"| unverified (httpx, no hashing) | {leaf_bytes / MIB / t_raw:.1f} |")
    print(f"| verified (GatewaySource.get_many) | {leaf_bytes / MIB / t_ver:.1f} |")
    print(f"\nverified is {overhead * 100:+.1f}% slower (goal <= 5%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

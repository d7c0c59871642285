"""Export throughput: torch_ipfs ``export`` vs webdataset's ``ShardWriter`` alone.

Both write the same CIFAR-size samples (32x32 RGB PIL images as PNG + an int label as
``.cls``) into tar shards of the same sample count, both encoding the images themselves.
torch_ipfs additionally hashes every block, builds the UnixFS DAG and stores it in a
fresh embedded store (the difference the goal allows for).

    python bench/bench_export.py                   # 50,000 samples
    python bench/bench_export.py --samples 5000    # quicker

Goal (issue 5): export >= 0.7x ShardWriter's samples/s. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


class CifarLike:
    """Deterministic 32x32 RGB images with smooth structure (PNG compresses them like
    natural images, not like noise) and labels 0-9."""

    classes = [f"class-{i}" for i in range(10)]

    def __init__(self, n: int) -> None:
        rng = np.random.default_rng(0)
        self.n = n
        base = rng.integers(0, 256, (256, 8, 8, 3), dtype=np.uint8)
        self.bases = base.repeat(4, axis=1).repeat(4, axis=2)  # 8x8 blocks -> 32x32
        self.noise = rng.integers(0, 16, (n, 32, 32, 3), dtype=np.uint8)
        self.labels = rng.integers(0, 10, n)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        pixels = self.bases[i % len(self.bases)] + self.noise[i]
        return Image.fromarray(pixels), int(self.labels[i])


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_webdataset(dataset: CifarLike, per_shard: int, out: Path) -> tuple[float, int]:
    import webdataset as wds

    out.mkdir()
    t0 = time.perf_counter()
    with wds.ShardWriter(str(out / "shard-%06d.tar"), maxcount=per_shard, verbose=0) as sink:
        for i in range(len(dataset)):
            image, label = dataset[i]
            sink.write({"__key__": f"{i:09d}", "png": image, "cls": label})
    return time.perf_counter() - t0, tree_bytes(out)


def run_torch_ipfs(dataset: CifarLike, per_shard: int, home: Path) -> tuple[float, int, str]:
    from torch_ipfs.client import Client
    from torch_ipfs.exporter import export_dataset

    client = Client(home=home, api="", gateways=[])
    t0 = time.perf_counter()
    result = export_dataset(dataset, samples_per_shard=per_shard, client=client, progress=False)
    return time.perf_counter() - t0, sum(result.shard_bytes), str(result.cid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--samples-per-shard", type=int, default=10_000)
    args = parser.parse_args(argv)

    dataset = CifarLike(args.samples)
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        wds_s, wds_bytes = run_webdataset(dataset, args.samples_per_shard, Path(tmp) / "wds")
        ipfs_s, ipfs_bytes, cid = run_torch_ipfs(dataset, args.samples_per_shard, Path(tmp) / "home")
        store_bytes = tree_bytes(Path(tmp) / "home" / "blocks")

    n = args.samples
    rows = [
        ("webdataset ShardWriter (baseline)", wds_s, wds_bytes),
        ("torch_ipfs export -> embedded store", ipfs_s, ipfs_bytes),
    ]
    per = args.samples_per_shard
    print(f"# export of {n} CIFAR-size PNG samples, {per} per shard, {os.cpu_count()} CPUs\n")
    print("| writer | seconds | samples/s | tar MB/s |")
    print("|---|---:|---:|---:|")
    for name, secs, nbytes in rows:
        print(f"| {name} | {secs:.2f} | {n / secs:,.0f} | {nbytes / secs / 1e6:.1f} |")
    ratio = wds_s / ipfs_s
    print(f"\nratio torch_ipfs / webdataset (samples/s): {ratio:.2f}x (goal >= 0.70x)")
    print(f"root CID: {cid}; tar bytes {ipfs_bytes:,} (webdataset {wds_bytes:,})")
    print(f"embedded store: {store_bytes:,} bytes")
    return 0 if ratio >= 0.7 else 1


if __name__ == "__main__":
    sys.exit(main())

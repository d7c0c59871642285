"""Benchmark (issue 4): iterate CIFAR-size PNG samples in tar shards from the embedded
store vs ``webdataset`` reading the very same tar files from local disk; and map-style
random access to single samples vs reading the whole shard for each sample.

    python bench/bench_datasets.py [--samples 50000] [--per-shard 5000] [--workers 2]

Both iterators decode every sample the same way (PNG -> uint8 tensor [3, 32, 32] with
``pil_to_tensor``, label -> int) inside 2 DataLoader workers, batch 256. Goals: embedded
iterable >= 1.0x webdataset-local. Prints a markdown table; all ratios come from one run.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms.functional import pil_to_tensor  # imported once, before workers fork

from torch_ipfs.client import Client
from torch_ipfs.datasets import IPFSDataset, IPFSIterableDataset
from torch_ipfs.formats import tarshards


def _png(rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def make_shards(folder: Path, samples: int, per_shard: int) -> None:
    """manifest.json + shards/shard-NNNNNN.tar of random 32x32 PNGs with labels."""
    rng = np.random.default_rng(0)
    (folder / "shards").mkdir(parents=True)
    infos = []
    for s, start in enumerate(range(0, samples, per_shard)):
        members = [(f"{i:09d}", {"png": _png(rng), "cls": str(i % 10).encode()})
                   for i in range(start, min(samples, start + per_shard))]  # fmt: skip
        path = folder / "shards" / tarshards.shard_name(s)
        with open(path, "wb") as fh:
            index = tarshards.write_tar_shard(members, fh)
        infos.append({"name": path.name, "cid": "", "bytes": path.stat().st_size, "index": index})
    manifest = tarshards.build_manifest(infos, fields={"png": "image", "cls": "int"}, structure="tuple",
                                        label_field="cls")  # fmt: skip
    for entry in manifest["shards"]:
        del entry["cid"]  # located by path under the root
    (folder / "manifest.json").write_bytes(tarshards.encode_manifest(manifest))


def _to_tensor(image):
    return pil_to_tensor(image)


def _wds_decode(sample):
    image = Image.open(io.BytesIO(sample["png"]))
    image.load()
    return pil_to_tensor(image), int(sample["cls"])


def _rate(loader) -> tuple[float, int]:
    start = time.perf_counter()
    n = 0
    for images, _labels in loader:
        n += len(images)
    return n / (time.perf_counter() - start), n


def bench_webdataset(tars: list[str], workers: int, batch: int) -> tuple[float, int]:
    import webdataset as wds

    ds = wds.WebDataset(tars, shardshuffle=False, empty_check=False, nodesplitter=None,
                        workersplitter=wds.split_by_worker).map(_wds_decode)  # fmt: skip
    return _rate(DataLoader(ds, batch_size=batch, num_workers=workers))


def bench_ipfs_iterable(root: str, client: Client, workers: int, batch: int) -> tuple[float, int]:
    ds = IPFSIterableDataset(root, client=client, transform=_to_tensor)
    return _rate(DataLoader(ds, batch_size=batch, num_workers=workers))


def bench_random_access(root: str, client: Client, reads: int) -> tuple[float, float]:
    """Single-sample map-style reads vs reading (and parsing) the whole shard each time."""
    ds = IPFSDataset(root, client=client, transform=_to_tensor)
    rng = random.Random(0)
    picks = [rng.randrange(len(ds)) for _ in range(reads)]
    start = time.perf_counter()
    for i in picks:
        ds[i]
    ranged = reads / (time.perf_counter() - start)
    layout = ds.layout
    start = time.perf_counter()
    for i in picks[: max(1, reads // 20)]:
        shard, offset = layout.locate(i)
        f = layout.file(layout.shards[shard].ref)
        data = f.read_range(0, f.size)  # the whole shard, as a download-then-read loader does
        with tarfile_open(data) as t:
            t.extractfile(f"{layout._index(shard).keys[offset]}.png").read()
    whole = max(1, reads // 20) / (time.perf_counter() - start)
    return ranged, whole


def tarfile_open(data: bytes):
    import tarfile

    return tarfile.open(fileobj=io.BytesIO(data))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--per-shard", type=int, default=5_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--reads", type=int, default=500, help="random single-sample reads")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ds"
        t0 = time.perf_counter()
        make_shards(folder, args.samples, args.per_shard)
        client = Client(home=Path(tmp) / "home", api="", gateways=[])
        root = f"ipfs://{client.add(folder)}"
        setup = time.perf_counter() - t0
        tars = sorted(str(p) for p in (folder / "shards").glob("*.tar"))
        for path in tars:  # both sides read warm: the OS page cache holds tars and blocks
            Path(path).read_bytes()
        bench_ipfs_iterable(root, client, 0, args.batch) if args.samples <= 2000 else None
        wds_rate, n_wds = bench_webdataset(tars, args.workers, args.batch)
        ipfs_rate, n_ipfs = bench_ipfs_iterable(root, client, args.workers, args.batch)
        ranged, whole = bench_random_access(root, client, args.reads)
    if n_wds != args.samples or n_ipfs != args.samples:
        print(f"sample count mismatch: webdataset {n_wds}, torch_ipfs {n_ipfs}, expected {args.samples}")
        return 1
    print(f"# {args.samples} samples, {len(tars)} shards, {args.workers} workers, batch {args.batch} "
          f"(setup {setup:.1f}s, {os.cpu_count()} CPUs)\n")  # fmt: skip
    print("| contender | samples/s | ratio |")
    print("|---|---:|---:|")
    print(f"| webdataset, local tar files | {wds_rate:,.0f} | 1.00 |")
    print(
        f"| torch_ipfs IPFSIterableDataset, embedded store | {ipfs_rate:,.0f} | {ipfs_rate / wds_rate:.2f} |"
    )
    print("\n| map-style random access | samples/s | ratio |\n|---|---:|---:|")
    print(f"| whole shard per sample | {whole:,.1f} | 1.00 |")
    print(f"| IPFSDataset (byte range of one sample) | {ranged:,.1f} | {ranged / whole:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

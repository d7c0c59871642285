"""Benchmark: shuffled map-style epochs with and without the workers' shared digests.

    python -m bench.bench_map_epochs [--variant png32|jpeg224] [--workers 2,4] [--epochs 3]
                                     [--rounds 2] [--decode raw|tensor] [--work DIR]

The suite's data (``bench.suite.data``: 50,000 32x32 PNGs or 5,000 224x224 JPEGs in the
embedded store, exported once into ``--work``). Each run is a fresh process doing
``--epochs`` epochs of ``DataLoader(IPFSDataset(url, decode=...), batch_size=256,
shuffle=True, num_workers=W)`` (workers not persistent, so each epoch forks new ones),
with ``TORCH_IPFS_SHARED_DIGESTS_MB=0`` (each worker hashes every leaf it uses) or the
default (siblings and later epochs spot-check leaves another worker verified). Runs
alternate between the two; reported: samples/s per epoch, median over ``--rounds``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _child(url: str, home: str, workers: int, epochs: int, decode: str) -> list[float]:
    import torch
    from torch.utils.data import DataLoader

    from torch_ipfs.client import Client
    from torch_ipfs.datasets import IPFSDataset

    ds = IPFSDataset(url, client=Client(home=home, api="", gateways=[]), decode=decode)
    loader = DataLoader(ds, batch_size=256, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))  # fmt: skip
    rates = []
    for _ in range(epochs):
        start = time.perf_counter()
        n = sum(len(batch[1]) for batch in loader)
        rates.append(n / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", default="png32", choices=["png32", "jpeg224"])
    parser.add_argument("--workers", default="2,4")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--decode", default="raw")
    parser.add_argument("--work", type=Path, default=Path("bench-work"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        url, home, workers = json.loads(args.child)
        print(json.dumps(_child(url, home, workers, args.epochs, args.decode)))
        return

    from bench.suite.data import PROFILES, prepare

    variant = next(v for v in PROFILES["full"].variants if v.name == args.variant)
    data = prepare(variant, args.work / variant.name)
    print(f"{variant.name}: {variant.samples} samples, decode={args.decode}, {args.epochs} epochs, "
          f"median of {args.rounds} runs, samples/s per epoch")  # fmt: skip
    for workers in (int(w) for w in args.workers.split(",")):
        runs: dict[str, list[list[float]]] = {"not shared": [], "shared": []}
        for _ in range(args.rounds):
            for setting in runs:
                env = dict(os.environ, TORCH_IPFS_SHARED_DIGESTS_MB="0" if setting == "not shared" else "64")
                child = json.dumps([data.url, str(data.home), workers])
                out = subprocess.run(
                    [sys.executable, "-m", "bench.bench_map_epochs", "--child", child,
                     "--epochs", str(args.epochs), "--decode", args.decode],
                    env=env, check=True, capture_output=True, text=True,
                )  # fmt: skip
                runs[setting].append(json.loads(out.stdout.strip().splitlines()[-1]))
        for setting, rates in runs.items():
            medians = [statistics.median(epoch) for epoch in zip(*rates)]
            spread = [f"{min(e):,.0f}-{max(e):,.0f}" for e in zip(*rates)]
            print(f"  {workers} workers, {setting:>10}: " + "  ".join(
                f"{m:,.0f} ({s})" for m, s in zip(medians, spread)))  # fmt: skip


if __name__ == "__main__":
    main()

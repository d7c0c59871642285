"""Export a torchvision dataset to IPFS shards and read it back, offline.

By default the dataset is ``torchvision.datasets.FakeData`` (random images generated
locally, seeded). ``--image-folder`` builds a small ``ImageFolder`` tree on the fly
(class sub-folders of PNG files) and exports that instead; ``--dataset CIFAR10 --root
DIR`` exports a torchvision dataset already on disk (never downloaded here).

    python examples/export_torchvision.py                  # FakeData, 200 images
    python examples/export_torchvision.py --image-folder   # an ImageFolder tree
    python examples/export_torchvision.py --dataset CIFAR10 --root ~/data --car cifar.car

It prints the root CID (the same on every run), then checks that the dataset read back
from IPFS has the same pixels and labels as the original.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torchvision
from PIL import Image

from torch_ipfs.datasets import IPFSDataset
from torch_ipfs.exporter import export


def make_image_folder(root: Path, per_class: int = 20) -> Path:
    """A tiny ImageFolder tree: ``root/<class>/<n>.png``, deterministic pixels."""
    rng = np.random.default_rng(0)
    for name in ("cat", "dog", "horse"):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


def open_dataset(args: argparse.Namespace, scratch: Path):
    if args.image_folder:
        return torchvision.datasets.ImageFolder(str(make_image_folder(scratch / "folder")))
    if args.dataset == "FakeData":
        return torchvision.datasets.FakeData(
            size=args.size, image_size=(3, 32, 32), num_classes=10, random_offset=0
        )
    cls = getattr(torchvision.datasets, args.dataset)
    return cls(root=args.root, download=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="export a torchvision dataset to IPFS (offline)")
    parser.add_argument("--dataset", default="FakeData", help="a torchvision.datasets class name")
    parser.add_argument("--root", default="data", help="dataset root for real torchvision datasets")
    parser.add_argument("--image-folder", action="store_true", help="export an ImageFolder built here")
    parser.add_argument("--size", type=int, default=200, help="FakeData size")
    parser.add_argument("--samples-per-shard", type=int, default=64)
    parser.add_argument("--car", help="also write the DAG to this CAR file")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        dataset = open_dataset(args, Path(tmp))
        t0 = time.perf_counter()
        cid = export(dataset, samples_per_shard=args.samples_per_shard, name=args.dataset)
        print(f"root CID: {cid} ({len(dataset)} samples, {time.perf_counter() - t0:.2f}s)")
        if args.car:
            export(dataset, samples_per_shard=args.samples_per_shard, destination=f"car:{args.car}")
            print(f"wrote {args.car}: `ipfs dag import {args.car}` on any node gives the same root")

        back = IPFSDataset(f"ipfs://{cid}")
        assert len(back) == len(dataset)
        for i in range(len(dataset)):
            (img_a, y_a), (img_b, y_b) = dataset[i], back[i]
            if y_a != y_b or not np.array_equal(np.asarray(img_a), np.asarray(img_b)):
                print(f"sample {i} differs after the round trip", file=sys.stderr)
                return 1
        print(f"read back {len(back)} samples: same pixels and labels")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Read a dataset from your own Kubo node, every block verified here.

    python examples/kubo_read.py --api /ip4/127.0.0.1/tcp/5001 --export   # export FakeData to it
    python examples/kubo_read.py --api /ip4/127.0.0.1/tcp/5001 <root CID>
    TORCH_IPFS_API=/ip4/127.0.0.1/tcp/5001 python examples/kubo_read.py <root CID>

The node's RPC address comes from ``--api`` or ``TORCH_IPFS_API``; there is no default
host. Blocks are fetched with the node's RPC API (``block/get``) and hashed against their
CIDs before use; the node is not trusted. A fresh, temporary embedded store is used so
that every block really comes from the node.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from torch_ipfs.client import Client
from torch_ipfs.datasets import IPFSDataset
from torch_ipfs.exporter import export


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="read a dataset through a Kubo node's RPC API")
    parser.add_argument("root", nargs="?", help="dataset root: CID, ipfs://CID or /ipfs/CID")
    parser.add_argument("--api", default=os.environ.get("TORCH_IPFS_API", ""), help="Kubo RPC multiaddr/URL")
    parser.add_argument("--export", action="store_true", help="first export 100 FakeData images to the node")
    parser.add_argument("--limit", type=int, default=16, help="samples to read")
    args = parser.parse_args(argv)
    if not args.api:
        parser.error("give the node's RPC address with --api or TORCH_IPFS_API (no default host)")

    root = args.root
    if args.export:
        import torchvision

        fake = torchvision.datasets.FakeData(size=100, image_size=(3, 32, 32), num_classes=10)
        root = str(export(fake, samples_per_shard=25, destination=f"kubo:{args.api}", progress=False))
        print(f"exported to the node and pinned: {root}")
    if not root:
        parser.error("give a dataset root CID (or --export)")

    with tempfile.TemporaryDirectory() as home:
        client = Client(home=home, api=args.api, gateways=[])
        address = root if "://" in root or root.startswith("/") else f"ipfs://{root}"
        dataset = IPFSDataset(address, client=client)
        t0 = time.perf_counter()
        n = min(args.limit, len(dataset))
        for i in range(n):
            image, label = dataset[i]
            print(f"sample {i}: {getattr(image, 'size', type(image).__name__)} label {label}")
        print(f"{n} samples of {len(dataset)} read in {time.perf_counter() - t0:.2f}s, every block verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())

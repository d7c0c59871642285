"""Read a dataset through trustless HTTP gateways, verifying every block.

    python examples/gateway_read.py --gateway http://127.0.0.1:8080 <root CID>
    TORCH_IPFS_GATEWAYS=http://127.0.0.1:8080,http://10.0.0.2:8080 python examples/gateway_read.py <root CID>
    python examples/gateway_read.py http://127.0.0.1:8080/ipfs/<root CID>     # a pasted gateway URL

Gateways come from ``--gateway`` (repeatable), ``TORCH_IPFS_GATEWAYS`` or the pasted URL;
there is no default, and public gateways are never contacted unless you name them.
Serve a store of your own with ``torch-ipfs serve`` (loopback by default) to try it.
Nothing a gateway sends is trusted: blocks (``?format=raw``) and CAR streams
(``?format=car``) are hashed against their CIDs before use, with failover between gateways.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from torch_ipfs.client import Client
from torch_ipfs.datasets import IPFSDataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="read a dataset through trustless gateways")
    parser.add_argument("root", help="dataset root: CID, ipfs://CID, /ipfs/CID or a gateway URL")
    parser.add_argument("--gateway", action="append", default=[], help="gateway base URL (repeatable)")
    parser.add_argument("--limit", type=int, default=16, help="samples to read")
    args = parser.parse_args(argv)
    env = [g.strip() for g in os.environ.get("TORCH_IPFS_GATEWAYS", "").split(",") if g.strip()]
    gateways = args.gateway or env
    if not gateways and not args.root.startswith(("http://", "https://")):
        parser.error("name a gateway with --gateway, TORCH_IPFS_GATEWAYS or a gateway URL (no default)")

    root = args.root
    if "://" not in root and not root.startswith("/"):
        root = f"ipfs://{root}"
    with tempfile.TemporaryDirectory() as home:  # a fresh store: every block comes from a gateway
        client = Client(home=home, api="", gateways=gateways)
        dataset = IPFSDataset(root, client=client)
        t0 = time.perf_counter()
        n = min(args.limit, len(dataset))
        for i in range(n):
            sample = dataset[i]
            label = sample[1] if isinstance(sample, tuple) and len(sample) > 1 else None
            print(f"sample {i}: {type(sample).__name__} label {label}")
        print(f"{n} samples of {len(dataset)} read in {time.perf_counter() - t0:.2f}s through {gateways}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

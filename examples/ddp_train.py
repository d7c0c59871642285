"""Distributed data-parallel training from IPFS shards with ``torchrun``.

    torchrun --nproc_per_node=2 examples/ddp_train.py --epochs 2 --out-dir runs/ddp
    # more machines: torchrun --nnodes=2 --node_rank=N --master_addr=HOST ... (same command)

gloo on CPU, nccl when every rank has a GPU. Each rank reads the dataset with
``IPFSIterableDataset``, whose rank x worker splitter gives every (rank, DataLoader
worker) pair its own exact slice of the samples: over one epoch every sample is seen
exactly once across all ranks and workers, and every rank gets the same number of
samples. ``set_epoch(e)`` makes the shuffled order depend on (seed, epoch), identical on
every rank, like ``DistributedSampler``.

The dataset is a synthetic, seeded classification set of dicts ``{"x": tensor,
"label": int, "index": int}`` exported on the spot. Every rank computes its root CID
(reproducible export: no communication needed to agree on it); rank 0 stores it, the
others only hash. Each rank writes the sample indices it saw per epoch to
``--out-dir/rank<R>.json`` and prints its per-epoch sample counts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from torch_ipfs.cid import CID
from torch_ipfs.datasets import IPFSIterableDataset
from torch_ipfs.exporter import export
from torch_ipfs.sources.base import NullStore

FEATURES = 16
CLASSES = 4


class Clusters(Dataset):
    """Gaussian clusters, one per class; sample ``i`` is the same on every rank and run."""

    classes = [f"cluster-{c}" for c in range(CLASSES)]

    def __init__(self, size: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        centers = rng.normal(0, 3, (CLASSES, FEATURES)).astype(np.float32)
        self.labels = rng.integers(0, CLASSES, size)
        self.x = (centers[self.labels] + rng.normal(0, 1, (size, FEATURES))).astype(np.float32)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"x": torch.from_numpy(self.x[i]), "label": int(self.labels[i]), "index": i}


def field(sample: dict, name: str):
    """A field of a decoded sample, by the dataset's key (``label``) or file name (``label.cls``)."""
    for key in (name, f"{name}.cls", f"{name}.npy"):
        if key in sample:
            return sample[key]
    raise KeyError(f"sample has no field {name!r}: {sorted(sample)}")


def collate(samples: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = torch.stack([torch.as_tensor(field(s, "x")) for s in samples])
    y = torch.tensor([int(field(s, "label")) for s in samples])
    idx = torch.tensor([int(field(s, "index")) for s in samples])
    return x, y, idx


def agree_on_root(cid: CID) -> None:
    """Check every rank computed the same root CID (a cheap proof of reproducibility)."""
    mine = torch.tensor(list(cid.to_bytes()), dtype=torch.uint8)
    others = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(others, mine)
    if any(not torch.equal(o, mine) for o in others):
        raise RuntimeError("ranks computed different root CIDs for the same dataset")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="DDP training from IPFS shards (run with torchrun)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--samples-per-shard", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=None, help="write rank<R>.json with the indices seen")
    args = parser.parse_args(argv)

    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    use_cuda = torch.cuda.is_available() and torch.cuda.device_count() >= local_world
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)

    data = Clusters(args.samples, args.seed)
    # Rank 0 writes the shards to the shared embedded store; the others only hash (same CID).
    destination = "store" if rank == 0 else NullStore()
    cid = export(data, samples_per_shard=args.samples_per_shard, destination=destination, progress=False)
    agree_on_root(cid.to_v1() if cid.version == 0 else cid)
    dist.barrier()  # rank 0's blocks are in the store before anyone reads
    if rank == 0:
        print(f"root CID: {cid} ({len(data)} samples, world size {world})", flush=True)

    dataset = IPFSIterableDataset(f"ipfs://{cid}", shuffle=True, seed=args.seed)
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers, collate_fn=collate)
    model = nn.Linear(FEATURES, CLASSES).to(device)
    ddp = DistributedDataParallel(model, device_ids=[device.index] if use_cuda else None)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()

    seen: dict[int, list[int]] = {}
    for epoch in range(args.epochs):
        dataset.set_epoch(epoch)
        indices: list[int] = []
        correct = 0
        for x, y, idx in loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            logits = ddp(x)
            loss = loss_fn(logits, y)
            loss.backward()
            optimizer.step()
            correct += int((logits.argmax(1) == y).sum())
            indices.extend(idx.tolist())
        seen[epoch] = indices
        accuracy = correct / max(1, len(indices))
        print(f"rank {rank}: epoch {epoch}: {len(indices)} samples, train acc {accuracy:.3f}", flush=True)

    if args.out_dir:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        epochs = {str(e): v for e, v in seen.items()}
        record = {"rank": rank, "world_size": world, "root": str(cid), "epochs": epochs}
        tmp = out / f"rank{rank}.json.part"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, out / f"rank{rank}.json")
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

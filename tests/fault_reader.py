"""The reader processes ``test_faults.py`` starts: real processes reading one dataset by
CID through a real loopback gateway (``TORCH_IPFS_GATEWAYS``), with DataLoader workers.

    python fault_reader.py concurrent ROOT OUT.json GO_FILE
        wait for GO_FILE (so every process starts at once), then read every sample with
        a 2-worker DataLoader; several such processes share one TORCH_IPFS_HOME.
    torchrun --nproc_per_node=2 fault_reader.py ddp ROOT OUT_DIR SYNC_DIR
        rank R (gloo) reads its ShardAwareSampler share with a 2-worker DataLoader from
        its own TORCH_IPFS_HOME (``$FAULT_HOME_BASE/rank<R>``); after a few batches it
        writes SYNC_DIR/midway<R> and waits for SYNC_DIR/stopped (the test stops the
        gateway then), and finishes the epoch while the gateway is down and restarted.

Each writes ``{"samples": [[index, sha256 of the data field], ...]}``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

#: Samples of the exported test dataset and the bytes of each one's data field.
SAMPLES = 96
SAMPLE_BYTES = 48 * 1024
SAMPLES_PER_SHARD = 12


def sample_data(i: int) -> bytes:
    """The data field of sample ``i`` (what the test exports and checks against)."""
    seed = hashlib.sha256(f"fault-sample-{i}".encode()).digest()
    return (seed * (SAMPLE_BYTES // len(seed) + 1))[:SAMPLE_BYTES]


def _record(sample: dict) -> list:
    data = next(v for k, v in sample.items() if k.startswith("data"))
    index = next(v for k, v in sample.items() if k.startswith("index"))
    raw = data.tobytes() if hasattr(data, "tobytes") else bytes(data)
    return [int(index), hashlib.sha256(raw).hexdigest()]


def _wait_for(path: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear in {timeout} s")
        time.sleep(0.01)


def _write(out: Path, samples: list) -> None:
    tmp = out.with_suffix(".part")
    tmp.write_text(json.dumps({"samples": samples}))
    os.replace(tmp, out)


def concurrent(root: str, out: str, go: str) -> int:
    from torch.utils.data import DataLoader

    from torch_ipfs.datasets import IPFSDataset

    _wait_for(Path(go))
    dataset = IPFSDataset(f"ipfs://{root}")
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=list)
    _write(Path(out), [_record(s) for batch in loader for s in batch])
    return 0


def ddp(root: str, out_dir: str, sync_dir: str) -> int:
    rank = int(os.environ["RANK"])
    os.environ["TORCH_IPFS_HOME"] = os.path.join(os.environ["FAULT_HOME_BASE"], f"rank{rank}")
    import torch.distributed as dist
    from torch.utils.data import DataLoader

    from torch_ipfs.datasets import IPFSDataset
    from torch_ipfs.sampler import ShardAwareSampler

    dist.init_process_group("gloo")
    dataset = IPFSDataset(f"ipfs://{root}")
    sampler = ShardAwareSampler(dataset, seed=5)
    sampler.set_epoch(0)
    loader = DataLoader(dataset, batch_size=4, sampler=sampler, num_workers=2, collate_fn=list)
    sync = Path(sync_dir)
    samples = []
    for n, batch in enumerate(loader):
        samples += [_record(s) for s in batch]
        if n == 1:  # mid-epoch: let the test stop the gateway, then read on through it
            (sync / f"midway{rank}").touch()
            _wait_for(sync / "stopped")
    _write(Path(out_dir) / f"rank{rank}.json", samples)
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    sys.exit({"concurrent": concurrent, "ddp": ddp}[mode](*args))

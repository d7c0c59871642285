"""``examples/ddp_train.py`` under a real ``torchrun --nproc_per_node=2`` (gloo on
loopback): it trains, and every sample is seen exactly once per epoch across the ranks
(checked from the indices each rank wrote out), with equal counts per rank."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ddp_train.py"
SAMPLES = 480
EPOCHS = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_example_sees_every_sample_once_per_epoch(tmp_path):
    out_dir = tmp_path / "ranks"
    env = {
        **os.environ,
        "TORCH_IPFS_HOME": str(tmp_path / "home"),
        "TORCH_IPFS_API": "",
        "TORCH_IPFS_GATEWAYS": "",
        "GLOO_SOCKET_IFNAME": "lo",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}",
        str(EXAMPLE), "--epochs", str(EPOCHS), "--samples", str(SAMPLES),
        "--samples-per-shard", "70", "--workers", "2", "--out-dir", str(out_dir),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout}\n{proc.stderr}"

    records = [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(2)]
    assert {r["world_size"] for r in records} == {2}
    assert records[0]["root"] == records[1]["root"]
    orders = []
    for epoch in range(EPOCHS):
        per_rank = [rec["epochs"][str(epoch)] for rec in records]
        assert len(per_rank[0]) == len(per_rank[1]) == SAMPLES // 2
        seen = sorted(per_rank[0] + per_rank[1])
        assert seen == list(range(SAMPLES)), f"epoch {epoch}: not exactly once"
        orders.append(per_rank[0])
    assert orders[0] != orders[1]  # set_epoch reshuffles
    for rank in range(2):
        for epoch in range(EPOCHS):
            assert f"rank {rank}: epoch {epoch}: {SAMPLES // 2} samples" in proc.stdout

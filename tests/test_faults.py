"""Faults a training cluster meets, with real processes, real DataLoader workers and a
real loopback gateway (``torch-ipfs serve``): concurrent misses on one cache directory,
and a gateway that goes away mid-epoch and comes back."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from fault_reader import SAMPLES, SAMPLES_PER_SHARD, sample_data
from faultproxy import FaultProxy
from gatewayserver import free_port, running_gateway, serve_process

from torch_ipfs.client import Client
from torch_ipfs.exporter import export
from torch_ipfs.sources.local import LocalStore

READER = Path(__file__).resolve().parent / "fault_reader.py"


class Items:
    """The dataset the readers check: sample ``i`` is ``{"data": sample_data(i), "index": i}``."""

    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, i: int) -> dict:
        return {"data": np.frombuffer(sample_data(i), dtype=np.uint8), "index": i}


EXPECTED = sorted([i, hashlib.sha256(sample_data(i)).hexdigest()] for i in range(SAMPLES))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, str]:
    """``(server home, root CID)``: the dataset in a store only the gateway serves."""
    home = tmp_path_factory.mktemp("server-home")
    with Client(home=home, api="", gateways=[]) as client:
        root = export(Items(), samples_per_shard=SAMPLES_PER_SHARD, destination="store", client=client,
                      progress=False)
    return home, str(root)


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "TORCH_IPFS_API": "", "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    for name in ("TORCH_IPFS_RETRY_BUDGET", "TORCH_IPFS_READ_TIMEOUT", "TORCH_IPFS_CONNECT_TIMEOUT"):
        env.pop(name, None)  # the defaults are what is under test
    env.update(extra)
    return env


@pytest.mark.slow
def test_concurrent_misses_on_one_cache_dir_fetch_each_block_once(exported, tmp_path):
    """2 processes x 2 DataLoader workers, one TORCH_IPFS_HOME, the same samples at the
    same moment, through a counting proxy: no block is fetched twice."""
    server_home, root = exported
    go = tmp_path / "go"
    with running_gateway(LocalStore(server_home), delay=0.01) as server, FaultProxy(server.url) as proxy:
        env = _env(TORCH_IPFS_HOME=str(tmp_path / "shared-home"), TORCH_IPFS_GATEWAYS=proxy.url)
        outs = [tmp_path / f"reader{i}.json" for i in range(2)]
        procs = [
            subprocess.Popen([sys.executable, str(READER), "concurrent", root, str(out), str(go)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for out in outs
        ]
        time.sleep(0.5)  # both interpreters up and waiting
        go.touch()
        for proc in procs:
            _, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err
        requests = list(proxy.requests)
    for out in outs:
        assert sorted(json.loads(out.read_text())["samples"]) == EXPECTED
    counts = Counter(requests)
    duplicates = {path: n for path, n in counts.items() if n > 1}
    assert len(counts) > SAMPLES * 48 * 1024 // (256 * 1024)  # the data blocks, at least
    extra = sum(n - 1 for n in duplicates.values())
    message = f"{len(duplicates)} of {len(counts)} blocks fetched twice or more ({extra} extra)"
    assert duplicates == {}, message


def _wait_for(paths: list[Path], proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"torchrun ended early ({proc.returncode}):\n{out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"{paths} did not appear in {timeout} s")
        time.sleep(0.05)


@pytest.mark.slow
def test_ddp_ranks_ride_out_a_gateway_stopped_for_10_s_mid_epoch(exported, tmp_path):
    """torchrun, 2 ranks (gloo), 2 DataLoader workers each, each rank with its own home,
    map-style with ShardAwareSampler, default retry settings. The only gateway is killed
    mid-epoch and restarted on the same port 10 s later: the epoch completes, every
    sample exactly once across the ranks, equal counts, every byte right."""
    server_home, root = exported
    port = free_port()
    out_dir, sync = tmp_path / "out", tmp_path / "sync"
    out_dir.mkdir()
    sync.mkdir()
    gateway = serve_process(server_home, port, env=_env(TORCH_IPFS_GATEWAYS=""))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}",
        str(READER), "ddp", root, str(out_dir), str(sync),
    ]  # fmt: skip
    env = _env(TORCH_IPFS_GATEWAYS=f"http://127.0.0.1:{port}", FAULT_HOME_BASE=str(tmp_path / "homes"))
    run = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for([sync / "midway0", sync / "midway1"], run, timeout=180)
        gateway.send_signal(signal.SIGKILL)  # as abrupt as a crashed or rebooted host
        gateway.wait()
        stopped_at = time.monotonic()
        (sync / "stopped").touch()
        time.sleep(10)
        gateway = serve_process(server_home, port, env=_env(TORCH_IPFS_GATEWAYS=""))
        out, err = run.communicate(timeout=240)
        finished_after = time.monotonic() - stopped_at
    finally:
        run.kill()
        gateway.kill()
        gateway.wait()
    assert run.returncode == 0, f"{out}\n{err}"
    per_rank = [json.loads((out_dir / f"rank{r}.json").read_text())["samples"] for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) == SAMPLES // 2
    assert sorted(per_rank[0] + per_rank[1]) == EXPECTED  # exactly once, right bytes
    assert finished_after >= 10  # the reads really waited for the gateway
    # The wait was reported once per reading process, not once per block.
    waiting = err.count("cannot fetch blocks")
    assert 1 <= waiting <= 2 * 3, err  # at most once per process (2 ranks x (1 + 2 workers))
    assert "answers again" in err

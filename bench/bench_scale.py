"""Benchmark (issue 12): opening and reading datasets of up to a billion samples.

    python bench/bench_scale.py [--home DIR] [--copies 100000] [--ranks 8]

One 10,000-sample export (tiny samples: a 1-element int64 tensor and a label, one tar
shard) is concatenated by CID 100 times (1,000,000 samples) and 100,000 times
(1,000,000,000 samples); a 2,000-sample export is the baseline. For context, the
1,000,000-sample case is also written as a version-1 manifest (every key and offset in
JSON, what torch_ipfs wrote before manifest v2) over the very same shard.

Every measurement runs in a fresh process, with the verified local copies of shard
tables and indexes deleted first (cold), reading from the embedded store:

- open: ``IPFSDataset(root)`` wall time, and the RSS it adds;
- ``ds[i]``: the first read (its shard's index fetched, verified, mapped) and 200 more
  at random positions, each checked to return the right sample;
- workers: RSS of each of 2 DataLoader workers after reading 20 random samples, against
  the same for the 2,000-sample dataset;
- ranks: ``IPFSIterableDataset(root, shuffle=True)`` under ``RANK=r WORLD_SIZE=8`` (one
  process per rank): time from the constructor to the first sample; its first 2,000
  samples (2 workers' shares) checked against the plan;
- exactly once: for a sample of epochs, the 8 ranks' plans together cover every sample
  of the billion exactly once, with equal counts per rank (span arithmetic over the
  shard table).

Prints a markdown table and the goals (docs/benchmarks.md, "Scaling").
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

PER_EXPORT = 10_000
BASELINE = 2_000


class Numbers(torch.utils.data.Dataset):
    """Sample ``i``: ``(tensor([i]), i % 10)``: tiny, and it says which sample it is."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return torch.tensor([i]), i % 10


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _client(home: str):
    from torch_ipfs.client import Client

    return Client(home=home, api="", gateways=[])


# -- building the roots ---------------------------------------------------------------------------


def build(home: str, copies: int) -> dict[str, str]:
    from torch_ipfs.compose import concat
    from torch_ipfs.exporter import export_dataset
    from torch_ipfs.formats import tarshards

    client = _client(home)
    start = time.perf_counter()
    base = export_dataset(Numbers(PER_EXPORT), samples_per_shard=PER_EXPORT, client=client, progress=False)
    small = export_dataset(Numbers(BASELINE), samples_per_shard=PER_EXPORT, client=client, progress=False)
    v1 = export_dataset(Numbers(PER_EXPORT), samples_per_shard=PER_EXPORT, client=client, progress=False,
                        manifest_version=1)  # fmt: skip
    exported = time.perf_counter() - start
    start = time.perf_counter()
    million = concat([base.cid] * 100, client=client)
    concat_million = time.perf_counter() - start
    start = time.perf_counter()
    billion = concat([base.cid] * copies, client=client)
    concat_billion = time.perf_counter() - start
    # the same million as a version-1 manifest: the one shard listed 100 times, keys inline
    manifest = dict(v1.manifest)
    manifest["shards"] = manifest["shards"] * 100
    manifest["total_samples"] = PER_EXPORT * 100
    folder = Path(tempfile.mkdtemp(prefix="v1-million-", dir=home))
    (folder / "manifest.json").write_bytes(tarshards.encode_manifest(manifest))
    v1_million = client.add(folder)
    shutil.rmtree(folder)
    table_bytes = client.stat(f"{billion}/shard-table.bin").size
    return {
        "baseline": str(small.cid),
        "million_v1": str(v1_million),
        "million": str(million),
        "billion": str(billion),
        "export_s": f"{exported:.1f}",
        "concat_million_s": f"{concat_million:.2f}",
        "concat_billion_s": f"{concat_billion:.2f}",
        "billion_table_bytes": str(table_bytes),
        "v1_million_manifest_bytes": str(client.stat(f"{v1_million}/manifest.json").size),
    }


# -- probes (each in a fresh process) ----------------------------------------------------------------


def _drop_local_copies(home: str) -> None:
    from torch_ipfs.formats.tarshards import LOCAL_COPIES_DIR

    shutil.rmtree(Path(home) / LOCAL_COPIES_DIR, ignore_errors=True)


def _expected(index: int) -> int:
    return index % PER_EXPORT


class _Probe(torch.utils.data.Dataset):
    def __init__(self, ds) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        value = int(self.ds[i][0][0])
        return value == _expected(i), os.getpid(), rss_bytes()


def probe_map(home: str, cid: str) -> dict[str, object]:
    from torch_ipfs.datasets import IPFSDataset

    _drop_local_copies(home)
    client = _client(home)
    client.stat(cid)  # the store opened, as any run has it
    before = rss_bytes()
    start = time.perf_counter()
    ds = IPFSDataset(cid, client=client)
    n = len(ds)
    open_s = time.perf_counter() - start
    opened = rss_bytes()
    rng = random.Random(0)
    first = rng.randrange(n)
    start = time.perf_counter()
    ok = int(ds[first][0][0]) == _expected(first)
    cold_ms = (time.perf_counter() - start) * 1000
    times = []
    for _ in range(200):
        i = rng.randrange(n)
        start = time.perf_counter()
        ok &= int(ds[i][0][0]) == _expected(i)
        times.append((time.perf_counter() - start) * 1000)
    picks = [rng.randrange(n) for _ in range(40)]
    loader = torch.utils.data.DataLoader(_Probe(ds), batch_size=None, num_workers=2, sampler=picks)
    workers: dict[int, int] = {}
    for good, pid, rss in loader:
        ok &= bool(good)
        workers[int(pid)] = max(workers.get(int(pid), 0), int(rss))
    return {
        "samples": n,
        "open_s": open_s,
        "open_rss_mb": (opened - before) / 2**20,
        "cold_getitem_ms": cold_ms,
        "getitem_median_ms": float(np.median(times)),
        "getitem_max_ms": max(times),
        "worker_rss_mb": sorted(v / 2**20 for v in workers.values()),
        "correct": bool(ok),
    }


def probe_rank(home: str, cid: str, rank: int, world: int, epoch: int) -> dict[str, object]:
    os.environ["RANK"], os.environ["WORLD_SIZE"] = str(rank), str(world)
    from torch_ipfs.datasets import IPFSIterableDataset
    from torch_ipfs.sharding import SampleSpan, split_for_worker

    if rank == 0:
        _drop_local_copies(home)
    client = _client(home)
    client.stat(cid)
    start = time.perf_counter()
    ds = IPFSIterableDataset(cid, client=client, shuffle=True, seed=0)
    ds.set_epoch(epoch)
    it = iter(ds)
    first = next(it)
    first_s = time.perf_counter() - start
    # the plan says which samples come first; the pieces of a concat start at 0 in their shard
    spans = ds.split.plan_for_rank(rank, world)
    ok = len(ds) == sum(len(s) for s in spans) and int(first[0][0]) == _expected(spans[0].start)
    for worker in range(2):  # each of 2 DataLoader workers' shares: its first 1,000 samples
        want: list[int] = []
        got: list[int] = []
        for s in split_for_worker(spans, worker, 2):
            take = SampleSpan(s.shard, s.start, min(s.stop, s.start + 1000 - len(got)))
            want += [_expected(j) for j in range(take.start, take.stop)]
            got += [int(x[0][0]) for x in ds.read_span(take)]
            if len(got) >= 1000:
                break
        ok &= got == want
    return {"rank": rank, "first_sample_s": first_s, "rank_samples": len(ds), "correct": bool(ok),
            "indexes_loaded": len(ds.layout.loaded_indexes())}  # fmt: skip


def probe_iter_workers(home: str, cid: str, world: int) -> dict[str, object]:
    """RSS of each of 2 DataLoader workers of rank 0 streaming ``IPFSIterableDataset``
    (shuffled: each worker plans its rank's epoch from the shard table)."""
    os.environ["RANK"], os.environ["WORLD_SIZE"] = "0", str(world)
    from torch_ipfs.datasets import IPFSIterableDataset

    class Probe(IPFSIterableDataset):
        def read_span(self, span):
            for sample in super().read_span(span):
                yield sample, os.getpid(), rss_bytes()

    _drop_local_copies(home)
    client = _client(home)
    start = time.perf_counter()
    ds = Probe(cid, client=client, shuffle=True, seed=0)
    ds.set_epoch(3)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    workers: dict[int, int] = {}
    first_s = None
    for count, (_, pid, rss) in enumerate(loader):
        first_s = first_s if first_s is not None else time.perf_counter() - start
        workers[int(pid)] = max(workers.get(int(pid), 0), int(rss))
        if count >= 200 and len(workers) == 2:
            break
    return {"worker_rss_mb": sorted(v / 2**20 for v in workers.values()), "first_sample_s": first_s}


def exactly_once(sizes: list[int], world: int, epochs: list[int]) -> dict[str, object]:
    from torch_ipfs.sharding import plan_rank

    size_arr = np.asarray(sizes, dtype=np.int64)
    per_epoch = []
    for epoch in epochs:
        start = time.perf_counter()
        shard, lo, hi, counts = [], [], [], []
        for rank in range(world):
            spans = plan_rank(sizes, rank, seed=0, epoch=epoch, shuffle=True, world_size=world)
            counts.append(sum(len(s) for s in spans))
            shard += [s.shard for s in spans]
            lo += [s.start for s in spans]
            hi += [s.stop for s in spans]
        s, a, b = (np.asarray(x, dtype=np.int64) for x in (shard, lo, hi))
        order = np.lexsort((a, s))
        s, a, b = s[order], a[order], b[order]
        same = s[1:] == s[:-1]
        contiguous = bool(np.all(a[1:][same] == b[:-1][same]))
        firsts = np.concatenate([[True], ~same])
        lasts = np.concatenate([~same, [True]])
        covered = (
            contiguous
            and bool(np.all(a[firsts] == 0))
            and bool(np.all(b[lasts] == size_arr[s[lasts]]))
            and len(np.unique(s)) == int(np.count_nonzero(size_arr))
        )
        per_epoch.append({"epoch": epoch, "equal_counts": len(set(counts)) == 1, "exactly_once": covered,
                          "plan_s": time.perf_counter() - start})  # fmt: skip
    return {"epochs": per_epoch}


def _run_probe(args: list[str]) -> dict[str, object]:
    env = {**os.environ, "TORCH_IPFS_API": "", "TORCH_IPFS_GATEWAYS": ""}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    command = [sys.executable, __file__, *args]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"probe {args} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", help="store directory (default: a temporary one, removed after)")
    parser.add_argument("--copies", type=int, default=100_000, help="exports concatenated (default 100,000)")
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--probe", choices=("map", "rank", "iter"), help=argparse.SUPPRESS)
    parser.add_argument("--cid", help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--epoch", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe == "map":
        print(json.dumps(probe_map(args.home, args.cid)))
        return 0
    if args.probe == "iter":
        print(json.dumps(probe_iter_workers(args.home, args.cid, args.ranks)))
        return 0
    if args.probe == "rank":
        print(json.dumps(probe_rank(args.home, args.cid, args.rank, args.ranks, args.epoch)))
        return 0

    home = args.home or tempfile.mkdtemp(prefix="bench-scale-")
    try:
        built = build(home, args.copies)
        billion_n = PER_EXPORT * args.copies
        rows = {}
        for name in ("baseline", "million_v1", "million", "billion"):
            rows[name] = _run_probe(["--probe", "map", "--home", home, "--cid", built[name]])
        ranks = [
            _run_probe(["--probe", "rank", "--home", home, "--cid", built["billion"], "--rank", str(r),
                        "--ranks", str(args.ranks), "--epoch", "3"])  # fmt: skip
            for r in range(args.ranks)
        ]
        streams = {
            name: _run_probe(["--probe", "iter", "--home", home, "--cid", built[name], "--ranks",
                              str(args.ranks)])  # fmt: skip
            for name in ("baseline", "million", "billion")
        }
        once = exactly_once([PER_EXPORT] * args.copies, args.ranks, [0, 1, 7])
    finally:
        if not args.home:
            shutil.rmtree(home, ignore_errors=True)

    base_worker = max(rows["baseline"]["worker_rss_mb"])  # type: ignore[arg-type]
    print(f"# one {PER_EXPORT:,}-sample export; 1,000,000 = 100 copies, "
          f"{billion_n:,} = {args.copies:,} copies "
          f"(built in {built['export_s']} s export + {built['concat_billion_s']} s concat; shard table "
          f"{int(built['billion_table_bytes']) / 2**20:.2f} MB; v1 manifest of the million "
          f"{int(built['v1_million_manifest_bytes']) / 2**20:.1f} MB)\n")  # fmt: skip
    print("| dataset | samples | open | RSS added by open | cold `ds[i]` | `ds[i]` median / max | "
          "worker RSS (vs 2,000) | right samples |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    labels = {"baseline": "2,000 (v2)", "million_v1": "1,000,000, manifest v1 (before)",
              "million": "1,000,000 (v2, concat)", "billion": f"{billion_n:,} (v2, concat)"}  # fmt: skip
    for name, row in rows.items():
        worker = max(row["worker_rss_mb"])  # type: ignore[arg-type]
        cells = [
            labels[name],
            f"{row['samples']:,}",
            f"{row['open_s']:.3f} s",
            f"{row['open_rss_mb']:.1f} MB",
            f"{row['cold_getitem_ms']:.1f} ms",
            f"{row['getitem_median_ms']:.2f} / {row['getitem_max_ms']:.1f} ms",
            f"{worker:.0f} MB ({worker - base_worker:+.1f})",
            str(row["correct"]),
        ]
        print("| " + " | ".join(cells) + " |")
    print(f"\n| rank (of {args.ranks}), shuffled, epoch 3 | first sample | samples per rank | indexes mapped "
          "| first 2x1,000 samples as planned |\n|---|---:|---:|---:|---|")  # fmt: skip
    for r in ranks:
        print(f"| {r['rank']} | {r['first_sample_s']:.2f} s | {r['rank_samples']:,} | {r['indexes_loaded']} "
              f"| {r['correct']} |")  # fmt: skip
    base_stream = max(streams["baseline"]["worker_rss_mb"])  # type: ignore[arg-type]
    print(f"\n| iterable, rank 0 of {args.ranks}, 2 workers, shuffled | first sample "
          "| worker RSS (vs 2,000) |")  # fmt: skip
    print("|---|---:|---:|")
    for name, row in streams.items():
        worker = max(row["worker_rss_mb"])  # type: ignore[arg-type]
        extra = worker - base_stream
        print(f"| {labels[name]} | {row['first_sample_s']:.2f} s | {worker:.0f} MB ({extra:+.1f}) |")
    print("\n| epoch | equal counts per rank | every sample exactly once | planning all ranks |")
    print("|---|---|---|---:|")
    for e in once["epochs"]:  # type: ignore[union-attr]
        print(f"| {e['epoch']} | {e['equal_counts']} | {e['exactly_once']} | {e['plan_s']:.1f} s |")

    b, m = rows["billion"], rows["million"]
    goals = [
        ("1e9: open < 1 s", b["open_s"] < 1),  # type: ignore[operator]
        ("1e9: RSS added by open < 64 MB", b["open_rss_mb"] < 64),  # type: ignore[operator]
        ("1e9: each worker within 64 MB of the 2,000-sample worker",
         max(b["worker_rss_mb"]) - base_worker < 64),  # type: ignore[arg-type]  # fmt: skip
        ("1e9: cold ds[i] < 10 ms, right sample", b["cold_getitem_ms"] < 10 and b["correct"]),  # type: ignore[operator]
        (f"1e9: first sample < 2 s on each of {args.ranks} ranks",
         all(r["first_sample_s"] < 2 and r["correct"] for r in ranks)),  # type: ignore[operator]  # fmt: skip
        ("1e9: exactly once, equal counts (sampled epochs)",
         all(e["exactly_once"] and e["equal_counts"] for e in once["epochs"])),  # type: ignore[union-attr,index]  # fmt: skip
        ("1e9: each iterable worker within 64 MB of the 2,000-sample one",
         max(streams["billion"]["worker_rss_mb"]) - base_stream < 64),  # type: ignore[arg-type]  # fmt: skip
        ("1e6: RSS added by open < 8 MB", m["open_rss_mb"] < 8),  # type: ignore[operator]
        ("1e6: each worker within 10 MB of the 2,000-sample worker",
         max(m["worker_rss_mb"]) - base_worker < 10),  # type: ignore[arg-type]  # fmt: skip
        ("1e6: each iterable worker within 10 MB of the 2,000-sample one",
         max(streams["million"]["worker_rss_mb"]) - base_stream < 10),  # type: ignore[arg-type]  # fmt: skip
    ]
    print("\n| goal | met |\n|---|---|")
    for text, met in goals:
        print(f"| {text} | {'yes' if met else 'NO'} |")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())

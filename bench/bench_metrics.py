"""Benchmark: the cost of leaving metrics on (issue 6: "cheap enough to leave on").

    python bench/bench_metrics.py [--ops 200000] [--samples 2000] [--repeat 3] [--fetch-workers 4]

Two measurements, both ratios inside the same run:

1. Per-call overhead of :class:`~torch_ipfs.metrics.MetricsCollector` in microseconds:
   ``start_operation``+``end_operation``, ``with track()``, ``record_metric``,
   ``increment``, against an empty loop of the same length.
2. A real loader epoch (a CID-list dataset of ``--samples`` JSON samples in a fresh
   embedded store; every sample one file; two epochs per run, best of ``--repeat``):
   the loader with its always-on collector, and the same with every block source
   wrapped in :class:`~torch_ipfs.metrics.InstrumentedSource` (per-block timing), against
   the loader with a collector whose methods do nothing. Reported as % overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

from torch_ipfs.client import Client
from torch_ipfs.loader import IPFSDataLoader
from torch_ipfs.metrics import MetricsCollector, instrument_client


class NullMetrics(MetricsCollector):
    """A collector that records nothing: the baseline."""

    def start_operation(self, name: str, **meta: Any) -> int:
        return 0

    def end_operation(self, op_id: int, success: bool = True, **meta: Any) -> float:
        return 0.0

    def record_metric(self, name: str, value: float, **labels: Any) -> None:
        pass

    def increment(self, name: str, amount: int = 1) -> None:
        pass


def per_call(ops: int) -> dict[str, float]:
    m = MetricsCollector(max_events=ops)
    t0 = time.perf_counter()
    for _ in range(ops):
        pass
    empty = time.perf_counter() - t0

    def timed(fn) -> float:
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t - empty) / ops * 1e6

    def start_end() -> None:
        for _ in range(ops):
            m.end_operation(m.start_operation("op"))

    def start_end_meta() -> None:
        for _ in range(ops):
            m.end_operation(m.start_operation("op", source="local"), size=10)

    def track() -> None:
        for _ in range(ops):
            with m.track("t"):
                pass

    def record() -> None:
        for i in range(ops):
            m.record_metric("v", i)

    def inc() -> None:
        for _ in range(ops):
            m.increment("c")

    return {
        "start+end_operation": timed(start_end),
        "start+end_operation with metadata": timed(start_end_meta),
        "with track()": timed(track),
        "record_metric": timed(record),
        "increment": timed(inc),
    }


def epoch_time(
    root: str, home: str, metrics: MetricsCollector, instrument: bool, repeat: int, workers: int
) -> float:
    best = float("inf")
    for _ in range(repeat):
        with Client(home=home) as client:
            if instrument:
                instrument_client(client, metrics)
            with IPFSDataLoader(client, batch_size=64, metrics=metrics, fetch_workers=workers) as loader:
                loader.load_dataset(root)
                t0 = time.perf_counter()
                for _epoch in range(2):
                    for _batch in loader:
                        pass
                best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", type=int, default=200_000)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--fetch-workers", type=int, default=4, help="the loader's fetch threads")
    args = parser.parse_args(argv)

    sys.stdout.write(f"per call, {args.ops:,} calls (empty loop subtracted):\n")
    for name, us in per_call(args.ops).items():
        sys.stdout.write(f"  {name:<36} {us:6.2f} us\n")

    with tempfile.TemporaryDirectory() as home:
        os.environ["TORCH_IPFS_HOME"] = home
        with Client(home=home) as client:
            cids = [
                str(client.add(json.dumps({"id": i, "features": [i] * 16, "labels": i % 10}).encode()))
                for i in range(args.samples)
            ]
            root = str(client.add(json.dumps({"samples": cids}).encode()))
        base = epoch_time(root, home, NullMetrics(), False, args.repeat, args.fetch_workers)
        on = epoch_time(root, home, MetricsCollector(), False, args.repeat, args.fetch_workers)
        full = epoch_time(root, home, MetricsCollector(), True, args.repeat, args.fetch_workers)
    n = 2 * args.samples
    sys.stdout.write(f"\nloader, 2 epochs x {args.samples:,} samples (best of {args.repeat}):\n")
    sys.stdout.write(f"  metrics off (null collector)      {base:7.3f} s  {n / base:9,.0f} samples/s\n")
    sys.stdout.write(
        f"  loader metrics (default)          {on:7.3f} s  {n / on:9,.0f} samples/s  "
        f"overhead {100 * (on / base - 1):+.1f}%\n"
    )
    sys.stdout.write(
        f"  + InstrumentedSource per block    {full:7.3f} s  {n / full:9,.0f} samples/s  "
        f"overhead {100 * (full / base - 1):+.1f}%\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Issue 7's goals: the two throughput ratios, blocks per map-style read, RSS over epochs.

- Embedded store, warm: ``torch_ipfs-embedded-iterable`` >= 1.0x ``webdataset-local``
  (both warm: the page cache holds the files after the first pass; medians of passes).
- Verified gateway with 50 ms per request >= 0.8x the same read with 0 ms. Compared on the
  cold-cache contenders (every block crosses the gateway, hash-checked); the client's
  connection pool is warm after the first requests of a pass.
- Map-style single-sample reads fetch <= 2 blocks beyond the leaves covering the
  sample's own bytes (:func:`map_block_probe`, counting every ``get`` on the store).
- Worker RSS flat across epochs with ``persistent_workers=True`` (:func:`rss_over_epochs`):
  the largest worker's RSS after the last epoch is within 5% of the one after epoch 2
  (epoch 1 legitimately fills buffers and caches).
"""

from __future__ import annotations

import io
import math
import random
import tarfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from bench.suite.data import BenchData
from bench.suite.measure import read_proc
from torch_ipfs.cid import CID
from torch_ipfs.sources.base import BlockSource

__all__ = ["Goal", "evaluate", "map_block_probe", "rss_over_epochs"]

#: The exporter builds shards with Kubo's default chunker (size-262144).
CHUNK_SIZE = 262_144
RSS_FLAT_TOLERANCE = 0.05


@dataclass
class Goal:
    """One goal: what was measured against what target, and whether it was met."""

    name: str
    target: str
    measured: float
    met: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class CountingSource(BlockSource):
    """Counts every block requested through it (``get`` and ``get_many``)."""

    def __init__(self, source: BlockSource) -> None:
        self.source = source
        self.name = f"counting({source.name})"
        self.blocks = 0
        self.bytes = 0

    def _get_raw(self, cid: CID) -> bytes:  # pragma: no cover - get() is overridden
        return self.source.get(cid)

    def get(self, cid: CID) -> bytes:
        block = self.source.get(cid)
        self.blocks += 1
        self.bytes += len(block)
        return block

    def get_many(self, cids: Iterable[CID]) -> Iterator[tuple[CID, bytes]]:
        for cid, block in self.source.get_many(cids):
            self.blocks += 1
            self.bytes += len(block)
            yield cid, block

    def has(self, cid: CID) -> bool:
        return self.source.has(cid)

    def close(self) -> None:
        self.source.close()


def _covering_leaves(start: int, end: int) -> int:
    return (end - 1) // CHUNK_SIZE - start // CHUNK_SIZE + 1


def map_block_probe(data: BenchData, samples: int, seed: int = 0) -> dict[str, Any]:
    """Read ``samples`` random samples one at a time through ``IPFSDataset`` and count the
    blocks each read fetched beyond the leaves covering the sample's bytes. Also times
    single-sample reads against reading the whole shard for each sample (issue 4)."""
    from torch_ipfs.client import Client
    from torch_ipfs.datasets import IPFSDataset
    from torch_ipfs.formats.tarshards import TarShardsLayout
    from torch_ipfs.sources.local import LocalStore

    store = CountingSource(LocalStore(data.home))
    client = Client(home=data.home, api="", gateways=[], sources=[store])
    dataset = IPFSDataset(data.url, client=client, decode="tensor")
    open_blocks = store.blocks
    layout = dataset.layout
    if not isinstance(layout, TarShardsLayout):
        raise RuntimeError(f"expected the tar-shard layout, got {type(layout).__name__}")
    picks = random.Random(seed).sample(range(len(dataset)), min(samples, len(dataset)))
    extras: list[int] = []
    first_in_shard: list[int] = []
    fetched_bytes = own_bytes = 0
    seen_shards: set[int] = set()
    start = time.perf_counter()
    for index in picks:
        shard, begin, length = layout.byte_span(index)
        before_blocks, before_bytes = store.blocks, store.bytes
        dataset[index]
        extra = store.blocks - before_blocks - _covering_leaves(begin, begin + length)
        (extras if shard in seen_shards else first_in_shard).append(extra)
        seen_shards.add(shard)
        fetched_bytes += store.bytes - before_bytes
        own_bytes += length
    single_seconds = time.perf_counter() - start
    # The alternative: fetch the whole shard for every sample (what a reader without
    # byte ranges must do), then find the sample in it.
    whole_picks = picks[: max(1, min(len(picks), 16))]
    start = time.perf_counter()
    whole_bytes = 0
    for index in whole_picks:
        shard, _ = layout.locate(index)
        blob = client.cat(layout.shard_ref(shard))
        whole_bytes += len(blob)
        key = layout.sample_key(index)
        with tarfile.open(fileobj=io.BytesIO(blob)) as tf:
            tf.extractfile(f"{key}.{data.variant.extension}").read()  # type: ignore[union-attr]
    whole_seconds = time.perf_counter() - start
    client.close()
    every = extras + first_in_shard
    return {
        "samples": len(picks),
        "blocks_to_open_dataset": open_blocks,
        "extra_blocks_max": max(every),
        "extra_blocks_max_repeat_shard": max(extras) if extras else None,
        "extra_blocks_max_first_in_shard": max(first_in_shard),
        "extra_blocks_mean": sum(every) / len(every),
        "extra_blocks_histogram": {str(k): v for k, v in sorted(Counter(every).items())},
        "bytes_fetched_per_sample": fetched_bytes / len(picks),
        "sample_bytes_per_sample": own_bytes / len(picks),
        "single_sample_reads_per_s": len(picks) / single_seconds,
        "whole_shard_reads_per_s": len(whole_picks) / whole_seconds,
        "whole_shard_bytes_per_sample": whole_bytes / len(whole_picks),
    }


def rss_over_epochs(data: BenchData, epochs: int, batch_size: int, kind: str) -> dict[str, Any]:
    """RSS of 2 persistent DataLoader workers after each of ``epochs`` epochs."""
    from torch.utils.data import DataLoader

    from torch_ipfs.client import Client
    from torch_ipfs.datasets import IPFSDataset, IPFSIterableDataset

    client = Client(home=data.home, api="", gateways=[])
    if kind == "iterable":
        dataset: Any = IPFSIterableDataset(data.url, client=client, decode="tensor")
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=2, persistent_workers=True)
    else:
        dataset = IPFSDataset(data.url, client=client, decode="tensor")
        loader = DataLoader(
            dataset, batch_size=batch_size, num_workers=2, persistent_workers=True, shuffle=True
        )
    rss_mb: list[float] = []
    hwm_mb: list[float] = []
    counts: list[int] = []
    for epoch in range(epochs):
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        n = 0
        for _, labels in loader:
            n += len(labels)
        counts.append(n)
        pids = [w.pid for w in loader._iterator._workers]  # type: ignore[union-attr]
        figures = [read_proc(pid) for pid in pids]
        rss_mb.append(max(f["rss_kb"] for f in figures) / 1024)
        hwm_mb.append(max(f["hwm_kb"] for f in figures) / 1024)
    del loader
    base = rss_mb[1] if len(rss_mb) > 1 else rss_mb[0]
    return {
        "kind": kind,
        "epochs": epochs,
        "samples_per_epoch": counts,
        "worker_rss_mb": [round(x, 1) for x in rss_mb],
        "worker_peak_rss_mb": [round(x, 1) for x in hwm_mb],
        "growth_after_epoch2": (rss_mb[-1] - base) / base,
        "growth_after_epoch1": (rss_mb[-1] - rss_mb[0]) / rss_mb[0],
    }


def _ratio(results: dict[str, Any], name: str, base: str, workers: str) -> float:
    try:
        a = results[name]["by_workers"][workers]["samples_per_s"]
        b = results[base]["by_workers"][workers]["samples_per_s"]
    except KeyError:
        return math.nan
    return a / b if b else math.nan


def evaluate(results: dict[str, Any], probes: dict[str, Any], workers: tuple[int, ...]) -> list[Goal]:
    """The goals, judged on ``results`` (contender -> figures) and the separate probes."""
    goals: list[Goal] = []
    # (label, contender, reference, minimum ratio, what the figure is)
    ratio_goals = [
        ("embedded iterable vs webdataset-local", "torch_ipfs-embedded-iterable", "webdataset-local", 1.0,
         "medians of passes, warm page cache"),
        ("verified gateway 50 ms vs 0 ms", "torch_ipfs-gateway-50ms-cold", "torch_ipfs-gateway-0ms-cold", 0.8,
         "cold cache: every block over the gateway, verified"),
    ]  # fmt: skip
    for label, contender, reference, minimum, what in ratio_goals:
        for w in map(str, workers):
            r = _ratio(results, contender, reference, w)
            detail = f"samples/s ratio {r:.2f}x ({what})"
            goals.append(Goal(f"{label}, workers={w}", f">= {minimum}x", r, r >= minimum, detail))
    for name, probe in probes.items():
        if "error" in probe:
            last = probe["error"].strip().splitlines()[-1]
            goals.append(Goal(f"probe {name}", "runs", math.nan, False, f"failed: {last}"))
    probe = probes.get("map_blocks")
    if probe and "error" not in probe:
        goals.append(
            Goal(
                "map-style single-sample read: blocks beyond the sample's own leaves",
                "<= 2",
                probe["extra_blocks_max"],
                probe["extra_blocks_max"] <= 2,
                f"max {probe['extra_blocks_max']} (first read in a shard "
                f"{probe['extra_blocks_max_first_in_shard']}, later reads "
                f"{probe['extra_blocks_max_repeat_shard']}), mean {probe['extra_blocks_mean']:.2f} "
                "(below 0 when a leaf was still in the reader's leaf cache) "
                f"over {probe['samples']} random samples; {probe['bytes_fetched_per_sample']:.0f} bytes "
                f"fetched per sample of {probe['sample_bytes_per_sample']:.0f} bytes",
            )
        )
    for kind in ("iterable", "map"):
        rss = probes.get(f"rss_{kind}")
        if rss and "error" not in rss:
            growth = rss["growth_after_epoch2"]
            goals.append(
                Goal(
                    f"worker RSS flat over {rss['epochs']} epochs, persistent workers ({kind})",
                    f"growth epoch 2 -> {rss['epochs']} <= {RSS_FLAT_TOLERANCE:.0%}",
                    growth,
                    growth <= RSS_FLAT_TOLERANCE,
                    f"worker RSS per epoch (MB): {rss['worker_rss_mb']}; "
                    f"growth after epoch 2 {growth:+.1%}, after epoch 1 {rss['growth_after_epoch1']:+.1%}",
                )
            )
    return goals

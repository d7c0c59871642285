"""Measuring one pass of a DataLoader: time, time to first batch, peak RSS, bytes read.

Every pass runs in a child forked from one lean process (a ``forkserver`` that imported
what the contenders use, and nothing else: :func:`start_pass_server`), so that each pass
of each contender starts from the same memory image, and no thread pool, HTTP connection,
cache or data of the harness, of an earlier pass or of another contender is still around
to take CPU or memory from the next. (Forked from the harness itself, a child's baseline
RSS was whatever the harness held at that moment: 396 MB for one contender's main
process and 742 MB for another's in one run.)

What is counted, per pass:

- ``seconds``: from building the dataset and DataLoader to the end of the last batch;
  ``time_to_first_batch_s``: from the same start to the first batch in hand.
- ``peak_rss_mb``: ``VmHWM`` of the process doing the loading (the measuring child with
  ``num_workers=0``, reset with ``/proc/self/clear_refs`` at the start; with workers, the
  largest ``VmHWM`` of the worker processes, read while they are alive). A forked worker
  counts the pages it shares with its parent, so this is "memory a worker touches".
  ``total_rss_mb``: the sum of the ``VmHWM`` of the loading child and of every worker
  (issue 11's "peak RSS of main + workers"); pages shared after the fork count once per
  process, alike for every contender.
- ``disk_bytes``: ``rchar`` from ``/proc/<pid>/io`` (bytes returned by read-like system
  calls) of the loading processes over the pass: the measuring child (less what the probe
  itself read from ``/proc``) with ``num_workers=0``, the workers otherwise (the main
  process then only receives batches). The bytes of tar files, store blocks or cache
  entries read, plus whatever else the loader reads (``tarfile`` probes for compression,
  curl's pipe for webdataset over HTTP).
- ``net_bytes``: bytes the gateway sent while the pass's child ran (counted by the server,
  read by the harness around the child; its untimed preparation fetches nothing).
- ``checksum``: sum of all pixel values and labels, and the sample count; equal across
  contenders means they delivered the same tensors, each sample once.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import re
import statistics
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["PassFigures", "isolated", "measure_pass", "median_figures", "read_proc", "start_pass_server"]

#: Where :func:`isolated` starts its children: ``fork`` until :func:`start_pass_server`.
_children: Any = multiprocessing.get_context("fork")


def start_pass_server(modules: list[str]) -> None:
    """Run every later :func:`isolated` call in a child of one ``forkserver`` process
    that has imported ``modules`` (those that import; a peer not installed is skipped).
    Call it once, before the harness itself holds data."""
    global _children
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(modules)
    _children = context

_HWM = re.compile(rb"VmHWM:\s+(\d+) kB")
_RSS = re.compile(rb"VmRSS:\s+(\d+) kB")
_RCHAR = re.compile(rb"rchar:\s+(\d+)")


@dataclass
class PassFigures:
    """Figures of one pass over the dataset."""

    samples: int
    seconds: float
    time_to_first_batch_s: float
    peak_rss_mb: float
    total_rss_mb: float
    disk_bytes: int
    net_bytes: int
    pixel_sum: int
    label_sum: int

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else math.nan


class _ProcProbe:
    """Reads ``/proc`` figures of a set of processes, remembering the last value per pid
    (a worker's counters vanish with it) and how many bytes the probe itself read."""

    def __init__(self) -> None:
        self.hwm_kb: dict[int, int] = {}
        self.rss_kb: dict[int, int] = {}
        self.rchar: dict[int, int] = {}
        self.own_bytes = 0

    def _read(self, path: str) -> bytes:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:  # the process already exited
            return b""
        self.own_bytes += len(data)
        return data

    def sample(self, pids: Iterable[int]) -> None:
        for pid in pids:
            status = self._read(f"/proc/{pid}/status")
            hwm, rss = _HWM.search(status), _RSS.search(status)
            if hwm:
                self.hwm_kb[pid] = max(self.hwm_kb.get(pid, 0), int(hwm.group(1)))
            if rss:
                self.rss_kb[pid] = int(rss.group(1))
            io = _RCHAR.search(self._read(f"/proc/{pid}/io"))
            if io:
                self.rchar[pid] = int(io.group(1))


def read_proc(pid: int | str = "self") -> dict[str, int]:
    """``{"hwm_kb", "rss_kb", "rchar"}`` of one process (0 when unreadable)."""
    probe = _ProcProbe()
    key = os.getpid() if pid == "self" else int(pid)
    probe.sample([key])
    return {
        "hwm_kb": probe.hwm_kb.get(key, 0),
        "rss_kb": probe.rss_kb.get(key, 0),
        "rchar": probe.rchar.get(key, 0),
    }


def reset_peak_rss() -> None:
    """Start ``VmHWM`` over from the current RSS (Linux: ``echo 5 > clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass  # then the peak includes whatever came before; still an upper bound


def worker_pids(iterator: Any) -> list[int]:
    """PIDs of a DataLoader iterator's worker processes (none with ``num_workers=0``)."""
    return [w.pid for w in getattr(iterator, "_workers", []) if w.pid is not None]


def measure_pass(
    make_loader: Callable[[], Iterable[Any]], net_bytes: Callable[[], int] | None
) -> PassFigures:
    """Build a loader with ``make_loader()`` and run one full pass over it."""
    me = os.getpid()
    probe = _ProcProbe()
    reset_peak_rss()
    probe.sample([me])
    start_rchar = probe.rchar.get(me, 0)
    net_start = net_bytes() if net_bytes else 0
    start = time.perf_counter()
    loader = make_loader()
    iterator = iter(loader)
    first = math.nan
    samples = pixel_sum = label_sum = 0
    workers: list[int] = []
    for images, labels in iterator:
        if samples == 0:
            first = time.perf_counter() - start
            workers = worker_pids(iterator)
        samples += len(labels)
        pixel_sum += _pixel_sum(images)
        label_sum += int(labels.sum())
        if workers:  # workers' counters are gone once they exit: read them as we go
            probe.sample(workers)
    seconds = time.perf_counter() - start
    del iterator, loader
    net = (net_bytes() - net_start) if net_bytes else 0
    probe.sample([me])
    if workers:
        # With workers the main process only receives batches (through pipes and shared
        # memory): what was fetched is what the workers read.
        disk = sum(probe.rchar.get(pid, 0) for pid in workers)
        peak_kb = max(probe.hwm_kb.get(pid, 0) for pid in workers)
        total_kb = probe.hwm_kb.get(me, 0) + sum(probe.hwm_kb.get(pid, 0) for pid in workers)
    else:
        disk = probe.rchar.get(me, 0) - start_rchar - probe.own_bytes
        peak_kb = total_kb = probe.hwm_kb.get(me, 0)
    return PassFigures(
        samples=samples,
        seconds=seconds,
        time_to_first_batch_s=first,
        peak_rss_mb=peak_kb / 1024,
        total_rss_mb=total_kb / 1024,
        disk_bytes=max(0, disk),
        net_bytes=net,
        pixel_sum=pixel_sum,
        label_sum=label_sum,
    )


def _pixel_sum(images: Any) -> int:
    """The sum of a batch's pixel values, exact, in a few KB of scratch memory.

    ``images.sum(dtype=torch.int64)`` of a uint8 batch first makes an int64 copy of it
    (8x its size: 6 MB for 256 CIFAR images). Those copies, one per batch, grew the
    measuring process's heap by up to ~350 MB that glibc kept (its mmap threshold rises
    after the first frees), in some passes and not others, for any contender: it was
    counted as the loader's "main process" memory. numpy casts in small buffers instead.
    """
    import numpy as np
    import torch

    if images.dtype.is_floating_point:  # not what the contenders deliver (all uint8)
        return int(images.sum(dtype=torch.int64))
    return int(images.numpy().sum(dtype=np.int64))


def median_figures(passes: list[PassFigures]) -> dict[str, Any]:
    """The per-contender figures of repeated passes: medians, plus every pass's raw values."""
    if not passes:
        raise ValueError("no passes to summarise")
    total = passes[0].samples

    def med(values: Iterable[float]) -> float:
        return float(statistics.median(values))

    return {
        "samples_per_s": med(p.samples_per_s for p in passes),
        "samples_per_s_min": min(p.samples_per_s for p in passes),
        "samples_per_s_max": max(p.samples_per_s for p in passes),
        "time_to_first_batch_s": med(p.time_to_first_batch_s for p in passes),
        "peak_rss_mb": max(p.peak_rss_mb for p in passes),
        "total_rss_mb": max(p.total_rss_mb for p in passes),
        "bytes_per_sample": med(p.net_bytes for p in passes) / total if total else math.nan,
        "disk_bytes_per_sample": med(p.disk_bytes for p in passes) / total if total else math.nan,
        "samples": total,
        "repeats": len(passes),
        "passes": [asdict(p) | {"samples_per_s": p.samples_per_s} for p in passes],
    }


def isolated(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` in a forked child and return its result (picklable), or raise
    ``RuntimeError`` carrying the child's traceback. After :func:`start_pass_server`,
    ``fn`` and ``args`` travel to the child pickled."""
    receiver, sender = _children.Pipe(duplex=False)
    child = _children.Process(target=_child_main, args=(sender, fn, args), daemon=False)
    child.start()
    sender.close()
    try:
        ok, value = receiver.recv()
    except EOFError:
        child.join()
        raise RuntimeError(f"{getattr(fn, '__name__', fn)}: child exited with {child.exitcode}") from None
    finally:
        receiver.close()
    child.join()
    if not ok:
        raise RuntimeError(value)
    return value


def _child_main(sender: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    # A fork server's child inherits "forkserver" as its default start method; a Linux
    # process's default is "fork", and that is what DataLoader workers are measured with.
    multiprocessing.set_start_method("fork", force=True)
    try:
        result = (True, fn(*args))
    except BaseException:  # everything goes back to the parent, which decides
        result = (False, traceback.format_exc())
    sender.send(result)
    sender.close()

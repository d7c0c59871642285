"""Exact splitting of a sharded dataset over DDP ranks x DataLoader workers, per epoch.

This layer knows nothing about IPFS. It plans which samples of which shards each
(rank, worker) pair reads, as :class:`SampleSpan` runs ``[start, stop)`` inside shards,
so readers stream contiguous byte ranges. The guarantees (see ``docs/ddp.md``):

- **Identical plan on every rank** for the same ``(seed, epoch)``: the plan is a pure
  function of ``(shard_sizes, seed, epoch, shuffle, drop_last, world_size)``; its random
  numbers come from a self-contained generator (:class:`_SplitMix64`), not from a
  library whose streams may change between versions.
- **Exactly once**: over one epoch every sample goes to exactly one (rank, worker); every
  rank gets the same count, ``ceil(N / W)`` padded by repeating samples from the start of
  the epoch's order (as ``DistributedSampler`` does) or ``floor(N / W)`` with
  ``drop_last=True``; the workers of a rank differ by at most one sample.
- **Resumable**: :class:`SplitIterator` records how many samples this worker has
  yielded; a resumed pass starts exactly after them by moving span starts (no reading).

- **From the sizes alone**: a plan needs only the per-shard sample counts, and each rank
  computes only its own (:func:`plan_rank`), so it reads nothing of other ranks' shards.
- **Mixing**: with a :class:`StreamMix` an epoch's samples are weighted draws from streams
  of shards (:func:`mix_epoch_order`), split over ranks and workers by the same rules.

Typical use is to subclass :class:`ShardedIterableDataset` (implement ``shard_sizes()``
and ``read_span(span)``); :class:`SplitIterator` is the same machinery for datasets
that need their own ``__iter__``.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from torch_ipfs.errors import ManifestError

__all__ = [
    "SKIPPED",
    "SampleSpan",
    "ShardedIterableDataset",
    "SplitIterator",
    "distributed_context",
    "StreamMix",
    "epoch_seed",
    "mix_epoch_order",
    "plan_epoch",
    "plan_rank",
    "rank_sample_count",
    "split_for_worker",
    "worker_context",
]

logger = logging.getLogger(__name__)

#: Version of the dict :meth:`SplitIterator.state_dict` returns.
STATE_VERSION = 1
#: At most this many samples of a span are read before the next span's prefetch starts
#: (a quarter of a shorter span): the first batch is then decoded without a whole next
#: span streaming in beside it, taking the CPU the batch waits for.
PREFETCH_AFTER = 256


def prefetch_lead(span_samples: int) -> int:
    """After how many of a span's samples the next span's prefetch starts."""
    return min(PREFETCH_AFTER, max(1, span_samples // 4))


@dataclass(frozen=True, slots=True)
class SampleSpan:
    """Samples ``[start, stop)`` of the shard at index ``shard``."""

    shard: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


# -- where am I ----------------------------------------------------------------------------


def distributed_context() -> tuple[int, int]:
    """``(rank, world_size)`` now: from ``torch.distributed`` when it is initialised, else
    from the ``RANK`` / ``WORLD_SIZE`` environment torchrun sets, else ``(0, 1)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    rank_env, world_env = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    if rank_env is None and world_env is None:
        return 0, 1
    try:
        rank, world = int(rank_env or "0"), int(world_env or "1")
    except ValueError:
        raise ValueError(f"RANK={rank_env!r} and WORLD_SIZE={world_env!r} must be integers") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(
            f"RANK={rank} and WORLD_SIZE={world}: need WORLD_SIZE >= 1 and 0 <= RANK < WORLD_SIZE"
        )
    return rank, world


def worker_context() -> tuple[int, int]:
    """``(worker_id, num_workers)`` of the DataLoader worker running this code, else ``(0, 1)``."""
    info = get_worker_info()
    if info is None:
        return 0, 1
    return info.id, info.num_workers


def reader_context() -> tuple[int, int, int, int]:
    """``(rank, world_size, worker_id, num_workers)`` of the code running now."""
    return (*distributed_context(), *worker_context())


# -- deterministic randomness --------------------------------------------------------------


def epoch_seed(*parts: int) -> int:
    """A 64-bit seed derived from integers such as ``(seed, epoch)``: distinct tuples give
    unrelated seeds (unlike ``seed + epoch``), identical on every machine and Python."""
    text = ",".join(str(int(p)) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little")


class _SplitMix64:
    """A tiny PRNG (SplitMix64) whose stream is fixed forever, so every rank, whatever its
    Python or torch version, draws the same shard order."""

    _MASK = (1 << 64) - 1

    def __init__(self, seed: int) -> None:
        self._state = seed & self._MASK

    def next64(self) -> int:
        self._state = (self._state + 0x9E3779B97F4A7C15) & self._MASK
        z = self._state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & self._MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & self._MASK
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        """Uniform in ``[0, n)`` (rejection sampling: no modulo bias)."""
        limit = (1 << 64) - (1 << 64) % n
        while True:
            x = self.next64()
            if x < limit:
                return x % n

    def shuffle(self, items: list[Any]) -> None:
        """Fisher-Yates in place."""
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]


# -- the plan -------------------------------------------------------------------------------


def check_int(name: str, value: Any, minimum: int | None) -> int:
    """``value`` if it is an int (not a bool) of at least ``minimum``, else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"{name} must be an integer{bound}, got {value!r}")
    return value


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def _check_sizes(shard_sizes: Sequence[int]) -> list[int]:
    sizes = list(shard_sizes)
    for i, size in enumerate(sizes):
        check_int(f"shard_sizes[{i}]", size, 0)
    return sizes


def _epoch_order(sizes: list[int], seed: int, epoch: int, shuffle: bool) -> list[SampleSpan]:
    """The epoch's global sample order as spans: shards in order (or permuted), and when
    shuffling, the sequence rotated to start at a random sample."""
    spans = [SampleSpan(i, 0, n) for i, n in enumerate(sizes) if n > 0]
    if not shuffle or not spans:
        return spans
    return _shuffled(spans, seed, epoch)


def _shuffled(spans: list[SampleSpan], seed: int, epoch: int) -> list[SampleSpan]:
    rng = _SplitMix64(epoch_seed(seed, epoch))
    rng.shuffle(spans)
    # Rotating moves the rank boundaries, the padded head and the dropped tail every
    # epoch (otherwise the same samples would be repeated / dropped each epoch when the
    # shard order is the same, e.g. with a single shard). Costs one extra split shard.
    total = sum(len(s) for s in spans)
    offset = rng.below(total)
    return _take(spans, offset, total) + _take(spans, 0, offset)


def _take(spans: Sequence[SampleSpan], start: int, stop: int) -> list[SampleSpan]:
    """The spans covering positions ``[start, stop)`` of the concatenation of ``spans``."""
    ends: list[int] = []
    total = 0
    for span in spans:
        total += len(span)
        ends.append(total)
    out: list[SampleSpan] = []
    i = bisect.bisect_right(ends, start)
    while start < stop and i < len(spans):
        span = spans[i]
        span_begin = ends[i] - len(span)
        lo = span.start + (start - span_begin)
        hi = span.start + (min(stop, ends[i]) - span_begin)
        if hi > lo:
            out.append(SampleSpan(span.shard, lo, hi))
        start = ends[i]
        i += 1
    return out


def _take_cyclic(spans: Sequence[SampleSpan], total: int, start: int, stop: int) -> list[SampleSpan]:
    """Like :func:`_take`, with positions past the end wrapping to the start (padding)."""
    out: list[SampleSpan] = []
    while start < stop:
        pos = start % total
        n = min(stop - start, total - pos)
        out.extend(_take(spans, pos, pos + n))
        start += n
    return _merged(out)


def _merged(spans: Sequence[SampleSpan]) -> list[SampleSpan]:
    """Adjacent runs of the same shard joined (a wrap can put [0, k) after [k, n))."""
    out: list[SampleSpan] = []
    for span in spans:
        if out and out[-1].shard == span.shard and out[-1].stop == span.start:
            out[-1] = SampleSpan(span.shard, out[-1].start, span.stop)
        else:
            out.append(span)
    return out


def rank_sample_count(num_samples: int, world_size: int, drop_last: bool) -> int:
    """Samples each rank gets: ``ceil(N / W)`` (padded) or ``floor(N / W)`` (``drop_last``)."""
    return num_samples // world_size if drop_last else -(-num_samples // world_size)


def plan_epoch(
    shard_sizes: Sequence[int],
    *,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = False,
    drop_last: bool = False,
    world_size: int = 1,
    mix: StreamMix | None = None,
) -> list[list[SampleSpan]]:
    """Per rank, the spans it reads this epoch; the same on every rank for the same inputs.

    The epoch's global order is the shards in index order, or with ``shuffle`` the shards
    permuted by a generator seeded from ``(seed, epoch)`` and the whole sequence rotated to
    start at a random sample. Rank ``r`` gets positions ``[r*M, (r+1)*M)`` of that order,
    where ``M`` is :func:`rank_sample_count`; positions past the end wrap to the start
    (padding, like ``DistributedSampler``), and with ``drop_last`` the last ``N mod W``
    samples of the order are left out. Spans split shards at sample granularity wherever
    a rank boundary falls, so uneven shards and fewer shards than ranks are fine.
    With ``mix``, the epoch's samples are the streams' draws (:func:`mix_epoch_order`).
    """
    check_int("world_size", world_size, 1)
    return [
        plan_rank(shard_sizes, r, seed=seed, epoch=epoch, shuffle=shuffle, drop_last=drop_last,
                  world_size=world_size, mix=mix)  # fmt: skip
        for r in range(world_size)
    ]


def plan_rank(
    shard_sizes: Sequence[int],
    rank: int,
    *,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = False,
    drop_last: bool = False,
    world_size: int = 1,
    mix: StreamMix | None = None,
) -> list[SampleSpan]:
    """``plan_epoch(...)[rank]``, computed without planning the other ranks. It needs the
    shard sizes only (a rank reads nothing of the shards it does not read)."""
    sizes = _check_sizes(shard_sizes)
    check_int("seed", seed, None)
    check_int("epoch", epoch, 0)
    _check_bool("shuffle", shuffle)
    _check_bool("drop_last", drop_last)
    check_int("world_size", world_size, 1)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an integer in [0, {world_size}), got {rank!r}")
    if mix is None:
        order = _epoch_order(sizes, seed, epoch, shuffle)
    else:
        order = mix_epoch_order(sizes, mix, seed=seed, epoch=epoch)
        if shuffle and order:
            order = _shuffled(order, seed, epoch)
    total = sum(len(s) for s in order)
    per_rank = rank_sample_count(total, world_size, drop_last)
    if total == 0:
        return []
    return _take_cyclic(order, total, rank * per_rank, (rank + 1) * per_rank)


# -- mixing streams ------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamMix:
    """Weighted streams over one shard list, for :func:`mix_epoch_order`.

    ``streams`` holds ``(first_shard, num_shards, weight)`` per stream: consecutive runs
    of the shard list, weights > 0. ``epoch_samples`` is how many samples an epoch draws
    in all (default: the sum of the streams' sizes).
    """

    streams: tuple[tuple[int, int, float], ...]
    epoch_samples: int | None = None


def _quotas(weights: Sequence[float], total: int) -> list[int]:
    """``total`` split by ``weights`` (largest remainder; ties go to the earlier stream):
    integers summing to ``total`` exactly, each within 1 of its exact share."""
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    quotas = [int(x) for x in exact]
    rest = total - sum(quotas)
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(exact[i] - quotas[i]), i))
    for i in by_remainder[:rest]:
        quotas[i] += 1
    return quotas


def mix_epoch_order(
    sizes: Sequence[int], mix: StreamMix, *, seed: int = 0, epoch: int = 0
) -> list[SampleSpan]:
    """The samples epoch ``epoch`` draws from weighted streams, as spans in stream order.

    Stream ``s`` (``n_s`` samples, weight ``w_s``) gets a quota ``k_s`` of the epoch's
    ``K`` samples, ``K * w_s / sum(w)`` rounded by largest remainder (the quotas sum to
    ``K``). It contributes ``k_s // n_s`` whole passes over its samples plus a window of
    ``r = k_s mod n_s`` consecutive samples (wrapping at its end) that starts at a
    seeded offset and moves on by ``r`` every epoch: an under-sampled stream shows every
    sample once before any sample twice, over consecutive epochs. The result depends on
    ``(sizes, mix, seed, epoch)`` only.
    """
    sizes = _check_sizes(sizes)
    order: list[SampleSpan] = []
    stream_sizes: list[int] = []
    for s, (first, count, weight) in enumerate(mix.streams):
        if first < 0 or count < 0 or first + count > len(sizes):
            raise ValueError(f"stream {s}: shards {first}..{first + count - 1} are not in the shard list")
        if not weight > 0 or weight == float("inf"):
            raise ValueError(f"stream {s}: weight must be a positive number, got {weight!r}")
        stream_sizes.append(sum(sizes[first : first + count]))
    total = mix.epoch_samples if mix.epoch_samples is not None else sum(stream_sizes)
    check_int("epoch_samples", total, 0)
    quotas = _quotas([w for _, _, w in mix.streams], total)
    for s, ((first, count, _), n, k) in enumerate(zip(mix.streams, stream_sizes, quotas)):
        if k == 0:
            continue
        if n == 0:
            raise ValueError(f"stream {s} has no samples but a quota of {k}")
        spans = [SampleSpan(i, 0, sizes[i]) for i in range(first, first + count) if sizes[i] > 0]
        passes, r = divmod(k, n)
        order.extend(spans * passes)
        if r:
            start = (_SplitMix64(epoch_seed(seed, s, -1)).below(n) + epoch * r) % n
            order.extend(_take_cyclic(spans, n, start, start + r))
    return order


def split_for_worker(spans: Sequence[SampleSpan], worker_id: int, num_workers: int) -> list[SampleSpan]:
    """Worker ``worker_id``'s contiguous share of one rank's ``spans``.

    Worker ``w`` of ``K`` gets positions ``[w*T//K, (w+1)*T//K)`` of the rank's ``T``
    samples: every sample goes to exactly one worker, counts differ by at most one, and
    each worker streams one run (it switches shards only where the rank's order does).
    """
    check_int("num_workers", num_workers, 1)
    if isinstance(worker_id, bool) or not isinstance(worker_id, int) or not 0 <= worker_id < num_workers:
        raise ValueError(f"worker_id must be an integer in [0, {num_workers}), got {worker_id!r}")
    total = sum(len(s) for s in spans)
    return _take(spans, worker_id * total // num_workers, (worker_id + 1) * total // num_workers)


def skip_samples(spans: Sequence[SampleSpan], n: int) -> list[SampleSpan]:
    """``spans`` without their first ``n`` samples (span starts moved; nothing is read)."""
    return _take(spans, n, sum(len(s) for s in spans))


# -- state shared with DataLoader worker processes -----------------------------------------


class SharedInts:
    """A few integers in shared memory.

    ``set_epoch`` in the main process must reach DataLoader workers that already exist
    (``persistent_workers=True``): workers hold a copy of the dataset, but a shared-memory
    tensor in it is the same memory in every process (forked or spawned).
    """

    def __init__(self, values: Sequence[int]) -> None:
        self._t = torch.tensor(list(values), dtype=torch.int64).share_memory_()

    def __getitem__(self, i: int) -> int:
        return int(self._t[i])

    def __setitem__(self, i: int, value: int) -> None:
        self._t[i] = value

    def __len__(self) -> int:
        return self._t.numel()


_EPOCH = 0  # index of the epoch in SplitIterator's shared ints


@dataclass
class _Progress:
    """How far this worker got through one pass (or, ``pending``, a loaded resume point)."""

    epoch: int
    yielded: int
    context: tuple[int, int, int, int] | None  # (rank, world_size, worker_id, num_workers)
    pending: bool = False


class SplitIterator:
    """Per-epoch plan, this worker's share of it, and resume state for one dataset.

    ``shard_sizes`` may be a callable, evaluated once on first need (so a dataset can
    defer reading its manifest). Typical ``__iter__``::

        for span in self.split.spans_for_current_worker():
            for sample in read(span):
                self.split.advance(1)   # before yielding: the sample counts as delivered
                yield sample

    Epoch semantics are ``DistributedSampler``'s: the order changes only through
    :meth:`set_epoch`. Rank/world size and worker id are read when a pass starts.
    """

    def __init__(
        self,
        shard_sizes: Sequence[int] | Callable[[], Sequence[int]],
        *,
        seed: int = 0,
        shuffle: bool = False,
        drop_last: bool = False,
        mix: StreamMix | Callable[[], StreamMix | None] | None = None,
    ) -> None:
        self.seed = check_int("seed", seed, None)
        self.shuffle = _check_bool("shuffle", shuffle)
        self.drop_last = _check_bool("drop_last", drop_last)
        self._mix_source = mix
        self._mix_known = not callable(mix)
        self._sizes_source = shard_sizes
        self._sizes: list[int] | None = None if callable(shard_sizes) else _check_sizes(shard_sizes)
        self._shared = SharedInts([0])
        self._progress: _Progress | None = None

    # -- configuration

    @property
    def shard_sizes(self) -> list[int]:
        if self._sizes is None:
            assert callable(self._sizes_source)
            self._sizes = _check_sizes(self._sizes_source())
        return self._sizes

    @property
    def mix(self) -> StreamMix | None:
        """The weighted streams the epochs draw from, or None (every sample once)."""
        if not self._mix_known:
            assert callable(self._mix_source)
            self._mix_source = self._mix_source()
            self._mix_known = True
        return self._mix_source  # type: ignore[return-value]

    def epoch_samples(self) -> int:
        """Samples one epoch holds over all ranks (before padding or dropping)."""
        mix = self.mix
        if mix is None:
            return sum(self.shard_sizes)
        if mix.epoch_samples is not None:
            return mix.epoch_samples
        return sum(sum(self.shard_sizes[a : a + n]) for a, n, _ in mix.streams)

    @property
    def epoch(self) -> int:
        return self._shared[_EPOCH]

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` from the next pass on (in every worker process)."""
        check_int("epoch", epoch, 0)
        self._shared[_EPOCH] = epoch
        if self._progress is not None and self._progress.epoch != epoch:
            self._progress = None  # a new epoch starts from its beginning

    def plan(self, world_size: int | None = None) -> list[list[SampleSpan]]:
        """:func:`plan_epoch` for the current epoch (and current world size by default)."""
        if world_size is None:
            world_size = distributed_context()[1]
        return plan_epoch(
            self.shard_sizes,
            seed=self.seed,
            epoch=self.epoch,
            shuffle=self.shuffle,
            drop_last=self.drop_last,
            world_size=world_size,
            mix=self.mix,
        )

    def plan_for_rank(self, rank: int, world_size: int) -> list[SampleSpan]:
        """:func:`plan_rank` for the current epoch: this rank's spans only."""
        return plan_rank(
            self.shard_sizes,
            rank,
            seed=self.seed,
            epoch=self.epoch,
            shuffle=self.shuffle,
            drop_last=self.drop_last,
            world_size=world_size,
            mix=self.mix,
        )

    def num_samples(self) -> int:
        """Samples this rank yields per epoch (all its workers together)."""
        return rank_sample_count(self.epoch_samples(), distributed_context()[1], self.drop_last)

    # -- one pass

    def spans_for_current_worker(self) -> list[SampleSpan]:
        """Start a pass: the spans this (rank, worker) reads, minus what a loaded state says
        was already yielded. Call :meth:`advance` for each sample delivered."""
        context = reader_context()
        rank, world, worker, workers = context
        epoch = self.epoch
        skip = 0
        resume = self._progress
        if resume is not None and resume.pending and resume.epoch == epoch:
            if resume.yielded and resume.context != context:
                raise ValueError(
                    f"cannot resume: the state was saved by (rank, world_size, worker_id, num_workers)="
                    f"{resume.context} but is loaded by {context}; resume with the same world size and "
                    "num_workers (each worker must load its own state, as StatefulDataLoader does)"
                )
            skip = resume.yielded
        spans = split_for_worker(self.plan_for_rank(rank, world), worker, workers)
        available = sum(len(s) for s in spans)
        if skip > available:
            raise ValueError(
                f"cannot resume: the state says {skip} samples were yielded, this worker has {available}"
            )
        self._progress = _Progress(epoch, skip, context)
        if skip:
            logger.debug("resuming epoch %d at sample %d of %d (context %s)", epoch, skip, available, context)
        return skip_samples(spans, skip)

    def advance(self, n: int = 1) -> None:
        """Record ``n`` more samples delivered in the current pass."""
        if self._progress is None or self._progress.pending:
            raise RuntimeError("advance() before spans_for_current_worker() started a pass")
        self._progress.yielded += n

    # -- resume

    def state_dict(self) -> dict[str, Any]:
        """``{"version", "seed", "shuffle", "drop_last", "epoch", "yielded", "context"}``:
        the pass in progress (or last finished, or a loaded one not yet started)."""
        progress = self._progress or _Progress(self.epoch, 0, None)
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "epoch": progress.epoch,
            "yielded": progress.yielded,
            "context": list(progress.context) if progress.context is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next pass continue the saved one: same epoch, first ``yielded`` samples
        of this worker's share skipped. The saved seed/shuffle/drop_last must match."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"unsupported split state version {state.get('version')!r} (expected {STATE_VERSION})"
            )
        for name in ("seed", "shuffle", "drop_last"):
            if state[name] != getattr(self, name):
                raise ValueError(
                    f"cannot resume: the state was saved with {name}={state[name]!r}, "
                    f"this dataset has {name}={getattr(self, name)!r}"
                )
        epoch = check_int("epoch", state["epoch"], 0)
        yielded = check_int("yielded", state["yielded"], 0)
        context = tuple(state["context"]) if state.get("context") is not None else None
        self._shared[_EPOCH] = epoch
        self._progress = _Progress(epoch, yielded, context, pending=True)  # type: ignore[arg-type]


# -- the dataset base ----------------------------------------------------------------------


class _Skipped:
    def __repr__(self) -> str:
        return "SKIPPED"


#: What :meth:`ShardedIterableDataset.read_span` yields in place of a sample it dropped on
#: purpose (e.g. ``on_error="skip"``): the position still counts, so resume stays exact.
SKIPPED: Any = _Skipped()


class ShardedIterableDataset(IterableDataset):
    """An iterable dataset of samples in shards, split exactly over ranks and workers.

    Subclasses implement :meth:`shard_sizes` (samples per shard, the same on every rank)
    and :meth:`read_span` (samples ``[start, stop)`` of one shard, in order); this class
    provides ``set_epoch``, ``state_dict``/``load_state_dict`` (torchdata's
    ``StatefulDataLoader``), ``__iter__`` and ``__len__`` (this rank's samples per epoch).
    Call ``super().__init__(shuffle=..., seed=..., drop_last=...)`` from ``__init__``.
    """

    def __init__(self, *, shuffle: bool = False, seed: int = 0, drop_last: bool = False) -> None:
        super().__init__()
        self.split = SplitIterator(
            self.shard_sizes, seed=seed, shuffle=shuffle, drop_last=drop_last, mix=self.stream_mix
        )

    def shard_sizes(self) -> Sequence[int]:
        """Number of samples in each shard."""
        raise NotImplementedError

    def stream_mix(self) -> StreamMix | None:
        """Weighted streams each epoch draws from (:class:`StreamMix`); default None:
        every sample exactly once per epoch."""
        return None

    def read_span(self, span: SampleSpan) -> Iterator[Any]:
        """Samples ``span.start .. span.stop - 1`` of shard ``span.shard``, exactly
        ``len(span)`` items (:data:`SKIPPED` for a sample dropped on purpose)."""
        raise NotImplementedError

    def prefetch_span(self, span: SampleSpan) -> None:
        """Called with the next span once the current span's first sample is read, so a
        subclass can start fetching it in the background meanwhile. Default: nothing."""

    def set_epoch(self, epoch: int) -> None:
        """Order of ``epoch`` (deterministic for ``(seed, epoch)``, identical on every rank)."""
        self.split.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        return self.split.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.split.load_state_dict(state)

    def __len__(self) -> int:
        return self.split.num_samples()

    def __iter__(self) -> Iterator[Any]:
        # The pass starts here, not at the first next(): StatefulDataLoader takes a state
        # right after iter(), and it must describe the new pass, not the previous one.
        return self._samples(self.split.spans_for_current_worker())

    def _samples(self, spans: list[SampleSpan]) -> Iterator[Any]:
        split = self.split
        for i, span in enumerate(spans):
            expected = span.stop - span.start
            count = 0
            progress = split._progress
            samples = iter(self.read_span(span))
            lead = prefetch_lead(expected) if i + 1 < len(spans) else -1
            for sample in samples:  # the first sample alone (it may start the next prefetch)
                count = 1
                if count == lead:
                    self.prefetch_span(spans[i + 1])
                split.advance(1)
                if sample is not SKIPPED:
                    yield sample
                break
            for sample in samples:
                count += 1
                if count > expected:
                    break
                if count == lead:
                    self.prefetch_span(spans[i + 1])
                # Delivered once handed out: counted before the yield (what advance() does,
                # inline; a set_epoch/load_state_dict since then goes through advance()).
                if progress is split._progress and progress is not None and not progress.pending:
                    progress.yielded += 1
                else:
                    split.advance(1)
                if sample is not SKIPPED:
                    yield sample
            if count != expected:
                raise ManifestError(
                    f"shard {span.shard}: read_span({span.start}, {span.stop}) gave "
                    f"{'more' if count > expected else count} samples, the shard sizes say {expected}"
                )

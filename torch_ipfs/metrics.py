"""Performance metrics: a thread-safe collector cheap enough to leave on, and a block
source wrapper that feeds it.

:class:`MetricsCollector` has the ipfs_kit ``AIMLMetricsCollector`` API
(``start_operation`` / ``end_operation`` / ``record_metric`` / ``get_metrics`` /
``get_summary``) plus a context-manager form::

    metrics = MetricsCollector()
    with metrics.track("decode", field="png"):
        image = decode(data)
    metrics.record_metric("queue_occupancy", 2)
    metrics.increment("loader.skipped")
    metrics.report("out/")          # HTML + PNG plots (see torch_ipfs.report)

What it keeps, per name, in bounded ring buffers (``max_events`` each; older events are
dropped from the series but still counted in the totals):

- operations: ``(start, duration, success)`` with start relative to the collector's
  creation (``time.perf_counter``), plus the metadata when some was given;
- metrics: ``(time, value)`` plus labels when given;
- counters: plain integers (``increment``), never dropped.

:class:`InstrumentedSource` wraps any :class:`~torch_ipfs.sources.base.BlockSource`
and records, under ``source.<name>``-free metric names with a ``source`` label:
blocks and bytes delivered, fetch latency, hash-verification time (for sources that use
the base class's ``get``), integrity failures, missing blocks and source errors.

Everything is per process: DataLoader worker processes have their own copies.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch_ipfs.cid import CID
from torch_ipfs.errors import BlockNotFoundError, IntegrityError
from torch_ipfs.sources.base import BlockSource

__all__ = [
    "InstrumentedSource",
    "MetricsCollector",
    "instrument_client",
    "percentile",
]

#: Version of the JSON written by :meth:`MetricsCollector.save`.
FORMAT = "torch_ipfs.metrics/1"


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of already sorted values, linearly interpolated."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass
class _Series:
    """One named series: a bounded window of events plus running totals over all events."""

    events: deque
    count: int = 0
    total: float = 0.0
    failures: int = 0
    minimum: float = math.inf
    maximum: float = -math.inf
    last: float = math.nan
    labels: deque | None = None
    errors: dict[str, int] = field(default_factory=dict)


class MetricsCollector:
    """Collects timed operations, metric values and counters (thread-safe).

    Args:
        max_events: events kept per name for plots and percentiles (totals and counts
            cover every event regardless).
        enable_detailed_tracking: keep per-event metadata/labels (ipfs_kit's name);
            off keeps only numbers, which is a little cheaper.
    """

    def __init__(self, *, max_events: int = 100_000, enable_detailed_tracking: bool = True) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events}")
        self.max_events = max_events
        self.detailed = enable_detailed_tracking
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._open: dict[int, tuple[str, float, dict[str, Any] | None]] = {}
        self._ops: dict[str, _Series] = {}
        self._values: dict[str, _Series] = {}
        self._counters: dict[str, int] = {}
        self._t0 = time.perf_counter()
        self.started_at = time.time()
        #: what was measured: ``dataset`` (the loaded CID), ``sources`` (read order), ...
        self.info: dict[str, Any] = {}

    def __reduce__(self) -> tuple[Any, ...]:
        # Crossing into a spawned worker gives an empty collector with the same settings:
        # a lock cannot be pickled, and a worker's counts never flow back anyway.
        return (MetricsCollector, (), {"max_events": self.max_events, "detailed": self.detailed})

    def __setstate__(self, state: dict[str, Any]) -> None:
        settings = {"max_events": state["max_events"], "enable_detailed_tracking": state["detailed"]}
        MetricsCollector.__init__(self, **settings)

    # -- recording -----------------------------------------------------------------------

    def start_operation(self, name: str, **meta: Any) -> int:
        """Start timing an operation; returns the id :meth:`end_operation` takes."""
        op_id = next(self._ids)  # itertools.count is atomic under the GIL
        self._open[op_id] = (name, time.perf_counter(), _meta(meta) if self.detailed else None)
        return op_id

    def end_operation(self, op_id: int, success: bool = True, **meta: Any) -> float:
        """Stop timing ``op_id``; returns its duration in seconds. ``meta`` (and ipfs_kit's
        ``metadata={...}``) is stored with the event; ``error="TypeName"`` is tallied."""
        end = time.perf_counter()
        try:
            name, start, started_meta = self._open.pop(op_id)
        except KeyError:
            raise KeyError(f"unknown or already ended operation id {op_id!r}") from None
        duration = end - start
        info = None
        if self.detailed and (started_meta or meta):
            info = dict(started_meta or {})
            info.update(_meta(meta))
        with self._lock:
            series = self._ops.get(name)
            if series is None:
                series = self._ops[name] = self._new_series()
            self._add(series, (start - self._t0, duration, success), duration, info)
            if not success:
                series.failures += 1
                error = (info or {}).get("error") or meta.get("error")
                if error:
                    series.errors[str(error)] = series.errors.get(str(error), 0) + 1
        return duration

    def record_metric(self, name: str, value: float, **labels: Any) -> None:
        """Record one value of a metric (bytes of a block, queue length, ...)."""
        now = time.perf_counter() - self._t0
        info = _meta(labels) if self.detailed and labels else None
        with self._lock:
            series = self._values.get(name)
            if series is None:
                series = self._values[name] = self._new_series()
            self._add(series, (now, float(value)), float(value), info)

    def set_info(self, key: str, value: Any) -> None:
        """Describe the run (JSON values): the report names the dataset and sources."""
        with self._lock:
            self.info[key] = value

    def increment(self, name: str, amount: int = 1) -> None:
        """Add to a counter (skipped samples, retries, integrity failures, ...)."""
        with self._lock:
            self._counters[name] = self._counters.get(name, 0) + amount

    def track(self, name: str, **meta: Any) -> _Tracked:
        """Time a ``with`` body as operation ``name``. An exception marks it failed
        (with ``error=<exception type>``) and propagates. The dict the ``with`` yields
        is added to the event's metadata."""
        return _Tracked(self, name, meta)

    def _new_series(self) -> _Series:
        return _Series(deque(maxlen=self.max_events), labels=deque(maxlen=self.max_events))

    @staticmethod
    def _add(series: _Series, event: tuple, value: float, info: dict[str, Any] | None) -> None:
        series.events.append(event)
        assert series.labels is not None
        series.labels.append(info)
        series.count += 1
        series.total += value
        series.last = value
        if value < series.minimum:
            series.minimum = value
        if value > series.maximum:
            series.maximum = value

    def reset(self) -> None:
        """Forget everything recorded (open operations stay open)."""
        with self._lock:
            self._ops.clear()
            self._values.clear()
            self._counters.clear()
            self.info.clear()
            self._t0 = time.perf_counter()
            self.started_at = time.time()

    # -- reading -------------------------------------------------------------------------

    @property
    def elapsed(self) -> float:
        """Seconds since the collector was created (or reset)."""
        return time.perf_counter() - self._t0

    def counter(self, name: str) -> int:
        with self._lock:
            return self._counters.get(name, 0)

    def operation_names(self) -> list[str]:
        with self._lock:
            return sorted(self._ops)

    def metric_names(self) -> list[str]:
        with self._lock:
            return sorted(self._values)

    def durations(self, name: str) -> list[float]:
        """Durations (seconds) of the kept events of operation ``name``."""
        with self._lock:
            series = self._ops.get(name)
            return [e[1] for e in series.events] if series else []

    def operation_events(self, name: str) -> list[tuple[float, float, bool]]:
        """``(start, duration, success)`` of the kept events of operation ``name``."""
        with self._lock:
            series = self._ops.get(name)
            return list(series.events) if series else []

    def values(self, name: str) -> list[tuple[float, float]]:
        """``(time, value)`` of the kept events of metric ``name``."""
        with self._lock:
            series = self._values.get(name)
            return list(series.events) if series else []

    def get_metrics(self) -> dict[str, Any]:
        """Everything kept: ``{"operations": {name: [event, ...]}, "metrics": {...},
        "counters": {...}, "started_at", "elapsed_s"}`` (JSON-serialisable)."""
        with self._lock:
            ops = {
                name: [
                    {"start": s, "duration": d, "success": ok, **(info or {})}
                    for (s, d, ok), info in zip(series.events, series.labels or ())
                ]
                for name, series in self._ops.items()
            }
            values = {
                name: [
                    {"time": t, "value": v, **(info or {})}
                    for (t, v), info in zip(series.events, series.labels or ())
                ]
                for name, series in self._values.items()
            }
            counters = dict(self._counters)
            info = dict(self.info)
        return {
            "format": FORMAT,
            "started_at": self.started_at,
            "elapsed_s": self.elapsed,
            "info": info,
            "operations": ops,
            "metrics": values,
            "counters": counters,
        }

    def get_summary(self) -> dict[str, Any]:
        """Statistics per name: operations (count, failures, total/mean/p50/p95/max in
        ms), metrics (count, sum, mean, min, max, last) and counters."""
        with self._lock:
            op_series = {n: (s, sorted(e[1] for e in s.events)) for n, s in self._ops.items()}
            value_series = dict(self._values)
            counters = dict(self._counters)
            elapsed = self.elapsed
        operations = {}
        for name, (s, durations) in sorted(op_series.items()):
            operations[name] = {
                "count": s.count,
                "failures": s.failures,
                "success_rate": (s.count - s.failures) / s.count if s.count else math.nan,
                "total_s": s.total,
                "mean_ms": 1000 * s.total / s.count if s.count else math.nan,
                "p50_ms": 1000 * percentile(durations, 0.5),
                "p95_ms": 1000 * percentile(durations, 0.95),
                "max_ms": 1000 * s.maximum if s.count else math.nan,
                "errors": dict(s.errors),
            }
        metrics = {
            name: {
                "count": s.count,
                "sum": s.total,
                "mean": s.total / s.count if s.count else math.nan,
                "min": s.minimum if s.count else math.nan,
                "max": s.maximum if s.count else math.nan,
                "last": s.last,
            }
            for name, s in sorted(value_series.items())
        }
        return {"elapsed_s": elapsed, "operations": operations, "metrics": metrics, "counters": counters}

    # -- persistence and reports ---------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`get_metrics` as JSON (atomically); ``torch-ipfs report`` reads it."""
        path = Path(path)
        tmp = path.with_name(path.name + ".part")
        tmp.write_text(json.dumps(self.get_metrics(), default=str), encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MetricsCollector:
        """A collector holding the events of a file written by :meth:`save`."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} metrics file")
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricsCollector:
        """Rebuild a collector from :meth:`get_metrics` output."""
        m = cls()
        for name, events in data.get("operations", {}).items():
            series = m._ops[name] = m._new_series()
            for e in events:
                info = {k: v for k, v in e.items() if k not in ("start", "duration", "success")} or None
                ok = bool(e.get("success", True))
                cls._add(series, (e["start"], e["duration"], ok), e["duration"], info)
                if not ok:
                    series.failures += 1
        for name, events in data.get("metrics", {}).items():
            series = m._values[name] = m._new_series()
            for e in events:
                info = {k: v for k, v in e.items() if k not in ("time", "value")} or None
                cls._add(series, (e["time"], e["value"]), e["value"], info)
        m._counters.update({k: int(v) for k, v in data.get("counters", {}).items()})
        m.info.update(data.get("info") or {})
        m.started_at = float(data.get("started_at", m.started_at))
        m._t0 = time.perf_counter() - float(data.get("elapsed_s", 0.0))
        return m

    def report(self, path: str | os.PathLike[str]) -> Path:
        """Render the HTML report with PNG plots into directory ``path`` (a text summary
        when matplotlib is missing); returns the page's path. See :mod:`torch_ipfs.report`."""
        from torch_ipfs.report import render

        return render(self, path)

    def __repr__(self) -> str:
        with self._lock:
            n_ops = sum(s.count for s in self._ops.values())
            n_values = sum(s.count for s in self._values.values())
        return f"MetricsCollector({n_ops} operations, {n_values} values, {len(self._counters)} counters)"


class _Tracked:
    """The context manager of :meth:`MetricsCollector.track` (a class: half the cost of
    a ``contextlib`` generator, and this runs per sample)."""

    __slots__ = ("extra", "meta", "metrics", "name", "op")

    def __init__(self, metrics: MetricsCollector, name: str, meta: dict[str, Any]) -> None:
        self.metrics, self.name, self.meta = metrics, name, meta
        self.extra: dict[str, Any] = {}
        self.op = 0

    def __enter__(self) -> dict[str, Any]:
        self.op = self.metrics.start_operation(self.name, **self.meta)
        return self.extra

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.metrics.end_operation(self.op, **self.extra)
        else:
            self.metrics.end_operation(self.op, success=False, error=exc_type.__name__, **self.extra)


def _meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten ipfs_kit's ``metadata={...}`` keyword into the event's metadata."""
    if "metadata" in meta and isinstance(meta["metadata"], Mapping):
        flat = dict(meta["metadata"])
        flat.update({k: v for k, v in meta.items() if k != "metadata"})
        return flat
    return dict(meta)


# -- block sources ---------------------------------------------------------------------------

#: Metric and operation names written by :class:`InstrumentedSource`.
FETCH = "source.fetch"
VERIFY = "source.verify"
BYTES = "source.bytes"


class InstrumentedSource(BlockSource):
    """A :class:`BlockSource` that records what the source it wraps delivers.

    Records, each labelled ``source=<label>``:

    - operation ``source.fetch``: latency of each block (for ``get_many``, the wait for
      each block as the caller sees it);
    - operation ``source.verify``: hashing time, when the wrapped source uses the base
      class's ``get`` (the split is then network vs verification);
    - metric ``source.bytes``: size of each delivered block;
    - counters ``source.blocks[<label>]``, ``source.bytes[<label>]``,
      ``source.integrity_errors[<label>]``, ``source.not_found[<label>]``,
      ``source.errors[<label>]``.

    Every block is still verified (by the wrapped source, or here for split timing).
    """

    def __init__(self, source: BlockSource, metrics: MetricsCollector, label: str | None = None) -> None:
        self.source = source
        self.metrics = metrics
        self.label = label or source.name
        self.prefetch_window = source.prefetch_window
        self.parallel_get_many = source.parallel_get_many
        self.reads_stored = source.reads_stored
        self.name = source.name
        # Only a source using the base class's get() can be timed network/verify apart.
        self._split = type(source).get is BlockSource.get

    def _get_raw(self, cid: CID) -> bytes:  # pragma: no cover - get() is overridden
        return self.source._get_raw(cid)

    def get(self, cid: CID) -> bytes:
        if cid.is_identity:
            return cid.digest
        m, label = self.metrics, self.label
        op = m.start_operation(FETCH, source=label)
        try:
            if self._split:
                data = self.source._get_raw(cid)
                m.end_operation(op, source=label)
                with m.track(VERIFY, source=label):
                    self.source.check(cid, data)
            else:
                data = self.source.get(cid)
                m.end_operation(op, source=label)
        except BaseException as e:
            self._end_failed(op, e)
            raise
        self._count_block(len(data))
        return data

    def read_stored(self, cid: CID, offset: int, length: int) -> bytes | None:
        return self.source.read_stored(cid, offset, length)  # unverified: the caller checks

    def get_many(self, cids: Iterable[CID]) -> Iterator[tuple[CID, bytes]]:
        if self._split and type(self.source).get_many is BlockSource.get_many:
            for cid in cids:  # one by one anyway: time network and hashing apart
                yield cid, self.get(cid)
            return
        m, label = self.metrics, self.label
        it = iter(self.source.get_many(cids))
        while True:
            op = m.start_operation(FETCH, source=label)
            try:
                cid, data = next(it)
            except StopIteration:
                m._open.pop(op, None)  # not a fetch: nothing was waited for
                return
            except BaseException as e:
                self._end_failed(op, e)
                raise
            m.end_operation(op, source=label)
            self._count_block(len(data))
            yield cid, data

    def has(self, cid: CID) -> bool:
        return self.source.has(cid)

    def close(self) -> None:
        self.source.close()

    def _count_block(self, size: int) -> None:
        m, label = self.metrics, self.label
        m.record_metric(BYTES, size, source=label)
        m.increment(f"source.blocks[{label}]")
        m.increment(f"source.bytes[{label}]", size)

    def _end_failed(self, op: int, e: BaseException) -> None:
        """A lookup that found nothing is no failed fetch (a chain asks the next source):
        it is counted under ``source.not_found[...]`` only, its time left out of the
        fetch latencies. Errors end the fetch as failed."""
        m = self.metrics
        if op in m._open:
            if isinstance(e, BlockNotFoundError) and not isinstance(e.__cause__, IntegrityError):
                m._open.pop(op, None)
            else:
                m.end_operation(op, success=False, error=type(e).__name__, source=self.label)
        self._count_error(e)

    def _count_error(self, e: BaseException) -> None:
        if isinstance(e, IntegrityError):
            kind = "integrity_errors"
        elif isinstance(e, BlockNotFoundError):
            kind = "not_found"
            if isinstance(e.__cause__, IntegrityError):
                self.metrics.increment(f"source.integrity_errors[{self.label}]")
        else:
            kind = "errors"
        self.metrics.increment(f"source.{kind}[{self.label}]")

    def __getattr__(self, name: str) -> Any:
        # stats() of a CachedSource, pins of a store, ...: the wrapped source's
        if name == "source":
            raise AttributeError(name)
        return getattr(self.source, name)

    def __repr__(self) -> str:
        return f"InstrumentedSource({self.source!r})"


def instrument_client(client: Any, metrics: MetricsCollector) -> Any:
    """Wrap each source of ``client``'s read order in an :class:`InstrumentedSource`
    (in place; returns the client). Blocks are then counted per source: the local store,
    the cache, each remote source. Call it before opening datasets on the client.

    The wrapped client is used as is in forked DataLoader workers (it is not rebuilt
    from settings there), so prefer it for ``num_workers=0`` or local-store clients.
    """
    source = client.source
    members = getattr(source, "sources", None)
    if isinstance(members, list):
        source.sources = [
            s if isinstance(s, InstrumentedSource) else InstrumentedSource(s, metrics) for s in members
        ]
        labels = [s.label for s in source.sources]
    else:
        if not isinstance(source, InstrumentedSource):
            client.source = source = InstrumentedSource(source, metrics)
        labels = [source.label]
    metrics.set_info("sources", labels)
    return client

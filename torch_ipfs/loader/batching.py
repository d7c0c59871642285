"""The batch loader: ``IPFSDataLoader``, its epochs (a producer thread filling a bounded
queue), loading, splitting, lifecycle and performance metrics."""

from __future__ import annotations

import collections
import itertools
import logging
import math
import queue
import random
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from torch_ipfs.errors import IPFSError
from torch_ipfs.formats.base import ClientHandle, Layout, ListLayout
from torch_ipfs.loader.media import fetch_image, process_audio, process_text
from torch_ipfs.loader.reading import ON_ERROR, Failed, SampleReader, result_dict
from torch_ipfs.metrics import MetricsCollector, percentile
from torch_ipfs.stoppable import put_until_stopped

if TYPE_CHECKING:
    from torch_ipfs.loader.numpy_adapter import NumpyBatches
    from torch_ipfs.loader.torch_adapter import SampleDataset

__all__ = ["IPFSDataLoader", "get_data_loader"]

log = logging.getLogger("torch_ipfs.loader")


_END = object()


class _Raised:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Epoch:
    """One complete pass: a producer thread reads samples in ``order`` and puts batches
    into a queue of at most ``prefetch`` batches; iterating takes them out.

    The consumer blocks until the next batch or the end marker arrives (it polls only to
    notice a producer that died or a ``close()`` from another thread): a slow source
    delays batches but never ends an epoch early.
    """

    def __init__(self, loader: IPFSDataLoader, reader: SampleReader, epoch: int, order: list[int]) -> None:
        self.loader = loader
        self.reader = reader
        self.epoch = epoch
        self.order = order
        self.metrics = loader.metrics
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, loader.prefetch))
        self.stop = threading.Event()
        self.done = False
        self.started = False
        self.samples = 0
        self._op: int | None = None
        self.thread = threading.Thread(target=self._produce, name=f"IPFSDataLoader-epoch{epoch}", daemon=True)
        self.thread.start()

    # -- producer side -------------------------------------------------------------------

    def _put(self, item: Any) -> bool:
        return put_until_stopped(self.queue, item, self.stop)

    def _produce(self) -> None:
        try:
            batch: list[dict[str, Any]] = []
            size = self.loader.batch_size
            for result in self._read_all():
                if isinstance(result, Failed):
                    self.reader.record_skip(result)
                    continue
                batch.append(result)
                if len(batch) == size:
                    if not self._put(batch):
                        return
                    batch = []
            if self.stop.is_set():
                return
            if batch and not self.loader.drop_last and not self._put(batch):
                return
            self._put(_END)
        except BaseException as e:  # delivered to the consumer, raised there
            self._put(_Raised(e))

    def _read_all(self) -> Iterator[dict[str, Any] | Failed]:
        """Samples in ``order``, read by a pool of ``fetch_workers`` threads at most
        ``window`` samples ahead, yielded in order."""
        workers = self.loader.fetch_workers
        read = self.reader.read
        if workers <= 1:
            for i in self.order:
                if self.stop.is_set():
                    return
                yield read(i)
            return
        window = max(workers * 2, self.loader.batch_size)
        pending: collections.deque[Future] = collections.deque()
        indices = iter(self.order)
        with ThreadPoolExecutor(workers, thread_name_prefix=f"IPFSDataLoader-fetch{self.epoch}") as pool:
            try:
                for i in itertools.islice(indices, window):
                    pending.append(pool.submit(read, i))
                while pending:
                    if self.stop.is_set():
                        return
                    result = pending.popleft().result()
                    nxt = next(indices, None)
                    if nxt is not None:
                        pending.append(pool.submit(read, nxt))
                    yield result
            finally:
                for f in pending:  # shutdown() then waits only for reads already running
                    f.cancel()

    # -- consumer side -------------------------------------------------------------------

    def __iter__(self) -> _Epoch:
        return self

    def __next__(self) -> list[dict[str, Any]]:
        if self.done:
            raise StopIteration
        m = self.metrics
        if self._op is None:
            self._op = m.start_operation("loader.epoch", epoch=self.epoch)
        occupancy = self.queue.qsize()
        t0 = time.perf_counter()
        while True:
            try:
                item = self.queue.get(timeout=0.5)
                break
            except queue.Empty:
                if self.stop.is_set():  # closed (clear()/close()) while we waited
                    self._finish(completed=False)
                    raise StopIteration from None
                if not self.thread.is_alive() and self.queue.empty():
                    self._finish(completed=False)
                    raise RuntimeError(
                        "the IPFSDataLoader producer thread ended without finishing the epoch"
                    ) from None
        m.record_metric("loader.batch_wait", time.perf_counter() - t0)
        m.record_metric("loader.queue_occupancy", occupancy)
        if item is _END:
            self._finish(completed=True)
            raise StopIteration
        if isinstance(item, _Raised):
            self._finish(completed=False)
            raise item.error
        self.samples += len(item)
        m.record_metric("loader.batch_samples", len(item))
        m.increment("loader.samples", len(item))
        m.increment("loader.batches")
        return item

    def _finish(self, *, completed: bool) -> None:
        self.done = True
        self.thread.join()
        if self._op is not None:
            self.metrics.end_operation(self._op, success=completed, samples=self.samples)
            self._op = None
        if completed:
            self.metrics.increment("loader.epochs")
            self.loader._record_cache_stats(self.epoch)

    def close(self) -> None:
        """Stop the producer and wait for it (and its fetch threads) to end."""
        self.stop.set()
        while self.thread.is_alive():
            try:  # make room so a producer blocked on put() sees the stop flag
                while True:
                    self.queue.get_nowait()
            except queue.Empty:
                pass
            self.thread.join(timeout=0.05)
        if not self.done:
            self.done = True
            if self._op is not None:
                self.metrics.end_operation(self._op, success=False, samples=self.samples)
                self._op = None


class IPFSDataLoader:
    """Batches of samples from an IPFS dataset, prefetched by a background thread.

    Args:
        ipfs_client: a :class:`torch_ipfs.client.Client`; ``None`` for the process's
            default client (re-created in forked processes).
        batch_size: samples per batch.
        shuffle: a different seeded order each epoch (else dataset order).
        prefetch: batches the background thread may hold ready (the queue's bound).
        metrics: a :class:`~torch_ipfs.metrics.MetricsCollector` to record into; one is
            created when ``None`` (metrics are always on; they are cheap).
        seed: seed of the per-epoch orders: epoch ``e`` of ``seed`` is always the same.
        drop_last: drop a short last batch (``len()`` then rounds down).
        decode: how sample fields are decoded (see :class:`torch_ipfs.decoders.Decoder`).
        fetch_workers: threads reading samples concurrently (in order) for the producer.
        on_error: ``"skip"`` (ipfs_kit's behaviour: warn, count, go on) or ``"raise"``.
        retries: extra attempts for a sample whose read failed, before skipping it.
        fetch_media: for multimodal datasets, fetch and decode the ``*_cid`` media into
            the samples instead of handing out the CIDs.
        sample_rate: resample decoded audio fields to this rate.
    """

    def __init__(
        self,
        ipfs_client: Any = None,
        batch_size: int = 32,
        shuffle: bool = True,
        prefetch: int = 2,
        metrics: MetricsCollector | None = None,
        *,
        seed: int = 0,
        drop_last: bool = False,
        decode: Any = "auto",
        fetch_workers: int = 4,
        on_error: str = "skip",
        retries: int = 0,
        fetch_media: bool = False,
        sample_rate: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch}")
        if fetch_workers < 1:
            raise ValueError(f"fetch_workers must be >= 1, got {fetch_workers}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {', '.join(map(repr, ON_ERROR))}; got {on_error!r}")
        self.ipfs = ipfs_client
        self._handle = ClientHandle(ipfs_client)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.prefetch = prefetch
        self.metrics = metrics if metrics is not None else MetricsCollector()
        self.seed = seed
        self.drop_last = drop_last
        self.fetch_workers = fetch_workers
        self._reader_options = {
            "decode": decode,
            "fetch_media": fetch_media,
            "on_error": on_error,
            "retries": retries,
            "sample_rate": sample_rate,
        }
        #: the epoch the next iteration runs (0 after each load)
        self.epoch = 0
        self.dataset_cid: str | None = None
        self.dataset_metadata: dict[str, Any] | None = None
        #: the exception of the last ``load_dataset`` that failed (its result dict names
        #: it), for callers that want it raised; ``None`` after a load that succeeded
        self.load_error: Exception | None = None
        self.total_samples = 0
        self.layout: Layout | None = None
        self._reader: SampleReader | None = None
        self._pending: _Epoch | None = None  # started by load_dataset, not iterated yet
        self._current: _Epoch | None = None
        self._lock = threading.RLock()
        self._cache_seen: tuple[int, int] | None = None

    # -- loading ---------------------------------------------------------------------------

    def load_dataset(self, dataset_cid: Any) -> dict[str, Any]:
        """Open the dataset at ``dataset_cid`` (a CID, ``ipfs://`` address, gateway URL);
        its layout is detected. Starts prefetching the first epoch.

        Returns ``{"success", "operation", "timestamp", "dataset_cid", "total_samples",
        "layout", "batches"}``, or ``{"success": False, ..., "error", "error_type"}``
        (the loader then holds no dataset).
        """
        from torch_ipfs.formats.detect import open_layout

        result = result_dict("load_dataset", dataset_cid=str(dataset_cid))
        self.clear()
        self.load_error = None
        try:
            with self.metrics.track("loader.load_dataset"):
                layout = open_layout(dataset_cid, self._handle)
                self._use(layout, str(dataset_cid))
        except (IPFSError, OSError, ValueError, TypeError) as e:
            log.error("failed to load dataset %s: %s: %s", dataset_cid, type(e).__name__, e)
            result.update(error=str(e), error_type=type(e).__name__)
            self.load_error = e
            return result
        result.update(success=True, total_samples=self.total_samples, layout=layout.name, batches=len(self))
        return result

    def load_embedded_dataset(self, data_array: Sequence[Any]) -> dict[str, Any]:
        """Use an in-memory list of samples (dicts) as the dataset; starts prefetching."""
        from torch_ipfs.formats.embedded import EmbeddedLayout

        result = result_dict("load_embedded_dataset")
        self.clear()
        if not isinstance(data_array, (list, tuple)):
            result.update(
                error=f"data_array must be a list of samples, got {type(data_array).__name__}",
                error_type="TypeError",
            )
            return result
        self._use(EmbeddedLayout(self._handle, "<embedded samples>", list(data_array)), None)
        result.update(success=True, total_samples=self.total_samples, layout="embedded", batches=len(self))
        return result

    def _use(self, layout: Layout, cid: str | None, indices: Sequence[int] | None = None) -> None:
        with self._lock:
            self.layout = layout
            self._reader = SampleReader(layout, metrics=self.metrics, indices=indices, **self._reader_options)
            self.total_samples = len(self._reader)
            self.dataset_cid = cid
            self.metrics.set_info("dataset", cid if cid is not None else layout.where)
            self.metrics.set_info("layout", layout.name)
            self.dataset_metadata = dict(getattr(layout, "meta", {}) or {})
            self.epoch = 0
            self._cache_seen = self._cache_counts()
            if self.total_samples:
                self._pending = self._start(self.epoch)

    def split(self, train_ratio: float = 0.8, seed: int = 42) -> tuple[IPFSDataLoader, IPFSDataLoader]:
        """A seeded train/validation split (Artifex's ``split_dataset``): two new loaders
        with this one's options over disjoint parts of the loaded dataset, together every
        sample once. The first ``int(n * train_ratio)`` of a permutation seeded by ``seed``
        train, the rest validate; the same ``seed`` gives the same split in every process.
        The layout (and its client) is shared; close each loader when done."""
        reader = self._require()
        if not 0.0 <= train_ratio <= 1.0:
            raise ValueError(f"train_ratio must be in [0, 1], got {train_ratio}")
        n = len(reader)
        order = list(range(n))
        random.Random(f"torch_ipfs.loader.split:{seed}").shuffle(order)
        cut = int(n * train_ratio)
        base = reader.indices
        parts = []
        for part in (order[:cut], order[cut:]):
            loader = IPFSDataLoader(
                self.ipfs,
                self.batch_size,
                self.shuffle,
                self.prefetch,
                self.metrics,
                seed=self.seed,
                drop_last=self.drop_last,
                fetch_workers=self.fetch_workers,
                **self._reader_options,
            )
            assert self.layout is not None
            loader._use(self.layout, self.dataset_cid, [base[i] for i in part] if base is not None else part)
            parts.append(loader)
        return parts[0], parts[1]

    # -- epochs ----------------------------------------------------------------------------

    def epoch_order(self, epoch: int) -> list[int]:
        """Sample indices in the order epoch ``epoch`` reads them.

        Shuffled orders are a pure function of ``(seed, epoch)``. List-like layouts get a
        full permutation; sharded layouts (tar, sharded JSON) a permutation of shards
        with each shard's samples permuted inside it, so each shard is fetched once."""
        layout, reader = self.layout, self._reader
        if layout is None or reader is None:
            return []
        n = len(reader)
        if not self.shuffle:
            return list(range(n))
        rng = random.Random(f"torch_ipfs.loader:{self.seed}:{epoch}")
        if isinstance(layout, ListLayout) or reader.indices is not None:
            order = list(range(n))
            rng.shuffle(order)
            return order
        starts, sizes = layout.shard_starts(), layout.shard_sizes()
        shards = list(range(len(sizes)))
        rng.shuffle(shards)
        order = []
        for s in shards:
            inside = list(range(starts[s], starts[s] + sizes[s]))
            rng.shuffle(inside)
            order += inside
        return order

    def _drop_head_start(self) -> None:
        """Stop the first epoch ``load_dataset`` started ahead, if it is still unread."""
        with self._lock:
            if self._pending is not None:
                self._pending.close()
                self._pending = None

    def _start(self, epoch: int) -> _Epoch:
        assert self._reader is not None
        return _Epoch(self, self._reader, epoch, self.epoch_order(epoch))

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        """One epoch: every sample once (minus skipped ones), in the epoch's order."""
        with self._lock:
            if self._current is not None:  # an earlier pass abandoned half-way
                self._current.close()
                self._current = None
            if self.layout is None or self.total_samples == 0:
                return iter(())
            ep = self._pending if self._pending is not None else self._start(self.epoch)
            self._pending = None
            self._current = ep
            self.epoch += 1
            return ep

    def __next__(self) -> list[dict[str, Any]]:
        """ipfs_kit's ``next(loader)``: the next batch of the running epoch (one is
        started if none runs); ``StopIteration`` once at the end of each epoch."""
        with self._lock:
            current = self._current
            if current is None or current.done:
                iter(self)
                current = self._current
                if current is None:
                    raise StopIteration
        return next(current)

    def __len__(self) -> int:
        """Number of batches in an epoch (skipped samples can make an epoch shorter)."""
        if self.drop_last:
            return self.total_samples // self.batch_size
        return math.ceil(self.total_samples / self.batch_size)

    # -- lifecycle -------------------------------------------------------------------------

    def clear(self) -> None:
        """Stop and join the producer, and forget the dataset (the loader can load another)."""
        with self._lock:
            for ep in (self._pending, self._current):
                if ep is not None:
                    ep.close()
            self._pending = self._current = None
            self.layout = None
            self._reader = None
            self.total_samples = 0
            self.dataset_cid = None
            self.dataset_metadata = None
            self.epoch = 0

    def close(self) -> None:
        """Release everything: no thread of this loader runs after it returns. The client
        is the caller's (or the shared default one) and stays open."""
        self.clear()

    def __enter__(self) -> IPFSDataLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A forgotten loader must not leave a thread polling forever.
        for ep in (getattr(self, "_pending", None), getattr(self, "_current", None)):
            if ep is not None:
                ep.stop.set()

    def __repr__(self) -> str:
        return (
            f"IPFSDataLoader(dataset={self.dataset_cid!r}, total_samples={self.total_samples}, "
            f"batch_size={self.batch_size}, shuffle={self.shuffle}, prefetch={self.prefetch}, "
            f"epoch={self.epoch})"
        )

    # -- metrics ---------------------------------------------------------------------------

    def _cache_counts(self) -> tuple[int, int] | None:
        caches = _find_caches(self._handle.get().source) if self.layout is not None else []
        if not caches:
            return None
        return sum(c.hits for c in caches), sum(c.misses for c in caches)

    def _record_cache_stats(self, epoch: int) -> None:
        """Cache lookups of the epoch that just ended, every epoch (none is left out of
        the report's per-epoch table, also one with no lookups)."""
        now = self._cache_counts()
        if now is None:
            return
        before = self._cache_seen or (0, 0)
        hits, misses = now[0] - before[0], now[1] - before[1]
        self._cache_seen = now
        self.metrics.increment("cache.hits", hits)
        self.metrics.increment("cache.misses", misses)
        self.metrics.record_metric("cache.epoch_hits", hits, epoch=epoch)
        self.metrics.record_metric("cache.epoch_misses", misses, epoch=epoch)
        if hits + misses:
            self.metrics.record_metric("cache.hit_rate", hits / (hits + misses), epoch=epoch)

    def get_performance_metrics(self) -> dict[str, Any]:
        """Loader performance so far (ipfs_kit's method, with skips counted)::

        {"success", "operation", "timestamp", "dataset_cid", "total_samples",
         "epochs_completed", "samples_loaded", "batches_loaded", "skipped_samples",
         "skipped_by_error": {type: n}, "retries", "samples_per_second",
         "batch_wait_ms": {"mean", "p50", "p95", "max"}, "queue_occupancy_mean",
         "sample_read_ms": {...}, "decode_ms": {...}, "cache": {"hits", "misses",
         "hit_rate"} or None, "summary": collector summary}
        """
        m = self.metrics
        summary = m.get_summary()
        counters = summary["counters"]
        ops = summary["operations"]
        values = summary["metrics"]
        epochs = m.operation_events("loader.epoch")
        epoch_time = sum(d for _, d, _ in epochs)
        samples = counters.get("loader.samples", 0)
        hits, misses = counters.get("cache.hits"), counters.get("cache.misses")
        cache = None
        if hits is not None or misses is not None:
            total = (hits or 0) + (misses or 0)
            cache = {
                "hits": hits or 0,
                "misses": misses or 0,
                "hit_rate": (hits or 0) / total if total else None,
            }
        waits = sorted(v for _, v in m.values("loader.batch_wait"))
        result = result_dict(
            "get_performance_metrics",
            success=True,
            dataset_cid=self.dataset_cid,
            total_samples=self.total_samples,
            epochs_completed=counters.get("loader.epochs", 0),
            samples_loaded=samples,
            batches_loaded=counters.get("loader.batches", 0),
            skipped_samples=counters.get("loader.skipped", 0),
            skipped_by_error={
                k[len("loader.skipped[") : -1]: v
                for k, v in counters.items()
                if k.startswith("loader.skipped[")
            },
            retries=counters.get("loader.retries", 0),
            samples_per_second=samples / epoch_time if epoch_time > 0 else None,
            batch_wait_ms={
                "mean": 1000 * sum(waits) / len(waits) if waits else None,
                "p50": 1000 * percentile(waits, 0.5) if waits else None,
                "p95": 1000 * percentile(waits, 0.95) if waits else None,
                "max": 1000 * waits[-1] if waits else None,
            },
            queue_occupancy_mean=values.get("loader.queue_occupancy", {}).get("mean"),
            sample_read_ms=_op_ms(ops.get("loader.read")),
            decode_ms=_op_ms(ops.get("loader.decode")),
            cache=cache,
            summary=summary,
        )
        return result

    # -- framework adapters ----------------------------------------------------------------

    def _require(self) -> SampleReader:
        if self._reader is None:
            raise RuntimeError("no dataset loaded: call load_dataset() or load_embedded_dataset() first")
        return self._reader

    def _first_sample(self, reader: SampleReader | None = None) -> dict[str, Any]:
        """A sample to infer keys, types and shapes from (read directly: no epoch is used)."""
        reader = reader or self._require()
        for i in range(len(reader)):
            sample = reader.read(i)
            if not isinstance(sample, Failed):
                return sample
        raise RuntimeError(f"no sample of {self.dataset_cid or 'the dataset'} could be read")

    def to_pytorch_dataset(self, features: str | None = None, labels: str | None = None) -> SampleDataset:
        """A map-style dataset of ``(features, labels)`` tensor pairs; see
        :func:`torch_ipfs.loader.torch_adapter.pytorch_dataset`."""
        from torch_ipfs.loader.torch_adapter import pytorch_dataset

        return pytorch_dataset(self, features, labels)

    def to_pytorch(
        self,
        features: str | None = None,
        labels: str | None = None,
        *,
        num_workers: int = 0,
        batch_size: int | None = None,
        **dataloader_options: Any,
    ) -> Any:
        """A ``torch.utils.data.DataLoader`` of ``(features, labels)`` tensor batches; see
        :func:`torch_ipfs.loader.torch_adapter.pytorch_loader`."""
        from torch_ipfs.loader.torch_adapter import pytorch_loader

        return pytorch_loader(
            self, features, labels, num_workers=num_workers, batch_size=batch_size, **dataloader_options
        )

    def to_tensorflow(self, features: str | None = None, labels: str | None = None) -> Any:
        """A ``tf.data.Dataset`` (or ipfs_kit's error result without TensorFlow); see
        :func:`torch_ipfs.loader.tf_adapter.tensorflow_dataset`."""
        from torch_ipfs.loader.tf_adapter import tensorflow_dataset

        return tensorflow_dataset(self, features, labels)

    def iter_numpy(self, keys: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """One epoch of batches as ``{key: numpy array}``; see
        :func:`torch_ipfs.loader.numpy_adapter.iter_numpy`."""
        from torch_ipfs.loader.numpy_adapter import iter_numpy

        return iter_numpy(self, keys)

    def to_numpy(self, keys: Iterable[str] | None = None) -> NumpyBatches:
        """A re-iterable of NumPy batches: each ``iter()`` is one epoch."""
        from torch_ipfs.loader.numpy_adapter import NumpyBatches

        return NumpyBatches(self, tuple(keys) if keys is not None else None)

    # -- helpers of ipfs_kit ---------------------------------------------------------------

    def fetch_image(
        self, image_cid: Any, transform_to_tensor: bool = False, image_transforms: Any = None
    ) -> Any:
        """See :func:`fetch_image` (reads through this loader's client)."""
        with self.metrics.track("loader.fetch_image"):
            return fetch_image(image_cid, transform_to_tensor, image_transforms, client=self._handle.get())

    def process_text(self, text: str, tokenizer: Any = None, max_length: int | None = None) -> Any:
        """See :func:`process_text`."""
        return process_text(text, tokenizer, max_length)

    def process_audio(
        self, audio_cid: Any, sample_rate: int | None = None, transform_to_tensor: bool = False
    ) -> Any:
        """See :func:`process_audio` (reads through this loader's client)."""
        with self.metrics.track("loader.process_audio"):
            return process_audio(audio_cid, sample_rate, transform_to_tensor, client=self._handle.get())


def _op_ms(stats: dict[str, Any] | None) -> dict[str, Any] | None:
    if not stats:
        return None
    return {k: stats[k] for k in ("count", "mean_ms", "p50_ms", "p95_ms", "max_ms")}


def _find_caches(source: Any, depth: int = 0) -> list[Any]:
    """CachedSource objects in a source tree (chains, wrappers)."""
    from torch_ipfs.sources.cache import CachedSource

    if depth > 8 or source is None:
        return []
    if isinstance(source, CachedSource):
        return [source]
    found = []
    for child in getattr(source, "sources", None) or []:
        found += _find_caches(child, depth + 1)
    inner = source.__dict__.get("source") if hasattr(source, "__dict__") else None
    if inner is not None:
        found += _find_caches(inner, depth + 1)
    return found


def get_data_loader(
    ipfs_client: Any = None,
    batch_size: int = 32,
    shuffle: bool = True,
    prefetch: int = 2,
    metrics: MetricsCollector | None = None,
    **options: Any,
) -> IPFSDataLoader:
    """An :class:`IPFSDataLoader` (ipfs_kit's ``kit.get_data_loader(...)``)."""
    return IPFSDataLoader(ipfs_client, batch_size, shuffle, prefetch, metrics, **options)

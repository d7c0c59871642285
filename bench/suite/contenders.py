"""The contenders: one small class each, every one making a DataLoader over the same data.

All of them yield ``(images, labels)`` batches of ``uint8 [B, 3, H, W]`` tensors (PIL
decode + ``torchvision.transforms.functional.pil_to_tensor``: exact pixels, no scaling)
and ``int64 [B]`` labels, with the same DataLoader settings (``batch_size``,
``num_workers``); iterable ones split shards over workers, map-style ones use the
DataLoader's sampler. Nothing is shuffled except ``torch_ipfs-embedded-map``, which
reads in a seeded random order because random access is what a map-style dataset is for
(and its cost is the point of measuring it).

Each timed pass runs in its own child forked from the benchmark process (see
:mod:`bench.suite.measure`). A contender's ``setup`` runs once per measurement in a child
of its own (untimed; only what it leaves on disk survives), ``before_pass`` in each
pass's child before the clock starts, ``loader`` builds the dataset and DataLoader inside
the timed region.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, TensorDataset, get_worker_info

from bench.suite.data import BenchData

__all__ = ["CONTENDER_NAMES", "Context", "Contender", "all_contenders", "decode_image", "preload"]


@dataclass
class Context:
    """What contenders need: the data, the DataLoader batch size, the gateways, scratch space."""

    data: BenchData
    batch_size: int
    gateway_urls: dict[float, str]  # injected delay (s) -> gateway base URL
    scratch: Path

    def shard_urls(self, delay: float = 0.0) -> list[str]:
        """Path-gateway URLs of the tar shards (``/ipfs/<root>/shards/<name>``)."""
        base = self.gateway_urls[delay]
        return [f"{base}/ipfs/{self.data.root}/shards/{name}" for name in self.data.shard_names]


def preload() -> None:
    """Import everything the contenders use, once, in the process the measurements fork
    from: otherwise each measured pass would pay (and count the reads of) its imports
    (``import streaming`` alone takes ~3.7 s here, ``import litdata`` ~0.4 s)."""
    import importlib

    import httpx  # noqa: F401
    import torchvision.transforms.functional  # noqa: F401
    import webdataset  # noqa: F401

    import torch_ipfs.client
    import torch_ipfs.datasets
    import torch_ipfs.sources.cache
    import torch_ipfs.sources.gateway  # noqa: F401

    for peer in ("litdata", "litdata.streaming.resolver", "streaming", "streaming.base.util"):
        try:  # the peers of the bench env, when installed
            importlib.import_module(peer)
        except ImportError:
            pass
    Image.init()  # PIL's format plugins load lazily otherwise


def decode_image(data: bytes) -> torch.Tensor:
    """Encoded image bytes -> ``uint8 [3, H, W]`` tensor, the way every contender decodes."""
    from torchvision.transforms.functional import pil_to_tensor

    return pil_to_tensor(Image.open(io.BytesIO(data)))


def _identity(x: Any) -> Any:
    return x


def _tar_samples(tf: tarfile.TarFile, ext: str) -> Iterator[tuple[torch.Tensor, int]]:
    """Decoded ``(image, label)`` pairs of an open tar, grouping members by key."""
    key: str | None = None
    fields: dict[str, bytes] = {}
    for member in tf:
        if not member.isfile():
            continue
        k, _, field = member.name.partition(".")
        if k != key:
            if fields:
                yield decode_image(fields[ext]), int(fields["cls"])
            key, fields = k, {}
        fields[field] = tf.extractfile(member).read()  # type: ignore[union-attr]
    if fields:
        yield decode_image(fields[ext]), int(fields["cls"])


def _my_share(items: list[Any]) -> list[Any]:
    """This DataLoader worker's shards (every ``num_workers``-th, like split_by_worker)."""
    info = get_worker_info()
    return items if info is None else items[info.id :: info.num_workers]


class Contender:
    """Base class: ``name`` (the results key), ``description`` (one line for the report)."""

    name = "contender"
    description = ""
    #: the delay of the gateway this contender reads through (its bytes are counted), or None
    gateway_delay: float | None = None
    #: the package it needs beyond the test environment's (None: none); a contender whose
    #: package is missing is reported as not installed, not run
    requires: str | None = None

    def setup(self, ctx: Context, workers: int) -> None:
        """Untimed preparation on disk, once per measurement (in a child of its own)."""

    def before_pass(self, ctx: Context, workers: int) -> None:
        """Untimed, in the pass's process, before the clock starts."""

    def loader(self, ctx: Context, workers: int) -> DataLoader:
        raise NotImplementedError

    def _dataloader(self, ctx: Context, dataset: Any, workers: int, **kwargs: Any) -> DataLoader:
        return DataLoader(dataset, batch_size=ctx.batch_size, num_workers=workers, **kwargs)


class InMemory(Contender):
    name = "in-memory-tensors"
    description = (
        "LOADER CEILING: TensorDataset of the decoded tensors, built before timing "
        "(the DataLoader's own cost, nothing read or decoded)"
    )

    def before_pass(self, ctx: Context, workers: int) -> None:
        images, labels = [], []
        for path in ctx.data.shard_paths:
            with tarfile.open(path) as tf:
                for image, label in _tar_samples(tf, ctx.data.variant.extension):
                    images.append(image)
                    labels.append(label)
        self.dataset = TensorDataset(torch.stack(images), torch.tensor(labels, dtype=torch.int64))

    def loader(self, ctx: Context, workers: int) -> DataLoader:
        return self._dataloader(ctx, self.dataset, workers)


class _DecodeBytes(torch.utils.data.Dataset):
    def __init__(self, records: list[tuple[bytes, int]]) -> None:
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label = self.records[i]
        return decode_image(image), label


class DecodeOnly(Contender):
    name = "decode-only-ceiling"
    description = (
        "DECODE CEILING: the encoded bytes held in memory before timing, decoded in the "
        "DataLoader (the decode function's cost plus the loader's, no reading)"
    )

    def before_pass(self, ctx: Context, workers: int) -> None:
        from bench.suite.peers import shard_records

        ext = ctx.data.variant.extension
        self.records = [r for path in ctx.data.shard_paths for r in shard_records(path, ext)]

    def loader(self, ctx: Context, workers: int) -> DataLoader:
        return self._dataloader(ctx, _DecodeBytes(self.records), workers)


class _TarfileShards(IterableDataset):
    def __init__(self, paths: list[Path], ext: str) -> None:
        self.paths, self.ext = paths, ext

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        for path in _my_share(self.paths):
            with tarfile.open(path) as tf:
                yield from _tar_samples(tf, self.ext)


class TarfileLoop(Contender):
    name = "tarfile-loop"
    description = "bare tarfile read-and-decode loop over the local tar files (floor of work)"

    def loader(self, ctx: Context, workers: int) -> DataLoader:
        return self._dataloader(
            ctx, _TarfileShards(list(ctx.data.shard_paths), ctx.data.variant.extension), workers
        )


def _webdataset(urls: list[str], ext: str) -> Any:
    import webdataset as wds

    return (
        wds.WebDataset(urls, shardshuffle=False, empty_check=False)
        .decode("pil")
        .to_tuple(ext, "cls")
        .map_tuple(_pil_to_tensor, _identity)
    )


def _pil_to_tensor(image: Any) -> torch.Tensor:
    from torchvision.transforms.functional import pil_to_tensor

    return pil_to_tensor(image)


class WebDatasetLocal(Contender):
    name = "webdataset-local"
    description = "webdataset 1.0 over the local tar files (the baseline of every ratio)"

    def loader(self, ctx: Context, workers: int) -> DataLoader:
        urls = [str(p) for p in ctx.data.shard_paths]
        return self._dataloader(ctx, _webdataset(urls, ctx.data.variant.extension), workers)


class WebDatasetHTTP(Contender):
    """webdataset over HTTP (it runs curl) from the loopback gateway's path URLs."""

    def __init__(self, delay: float = 0.0) -> None:
        self.gateway_delay = delay
        ms = round(delay * 1000)
        self.name = "webdataset-http" if delay == 0 else f"webdataset-http-{ms}ms"
        self.description = (
            "webdataset over HTTP (it runs curl) from the same loopback gateway's path URLs, "
            f"{ms} ms per request"
        )

    def loader(self, ctx: Context, workers: int) -> DataLoader:
        assert self.gateway_delay is not None
        urls = ctx.shard_urls(self.gateway_delay)
        return self._dataloader(ctx, _webdataset(urls, ctx.data.variant.extension), workers)


def _local_client(ctx: Context) -> Any:
    from torch_ipfs.client import Client

    return Client(home=ctx.data.home, api="", gateways=[])


class EmbeddedIterable(Contender):
    name = "torch_ipfs-embedded-iterable"
    description = "IPFSIterableDataset over the embedded store (verified blocks, streamed)"

    def loader(self, ctx: Context, workers: int) -> DataLoader:
        from torch_ipfs.datasets import IPFSIterableDataset

        dataset = IPFSIterableDataset(ctx.data.url, client=_local_client(ctx), decode="tensor")
        return self._dataloader(ctx, dataset, workers)


class EmbeddedMap(Contender):
    name = "torch_ipfs-embedded-map"
    description = (
        "IPFSDataset (map-style) over the embedded store, seeded random order: one byte range per sample"
    )

    def loader(self, ctx: Context, workers: int) -> DataLoader:
        from torch_ipfs.datasets import IPFSDataset

        dataset = IPFSDataset(ctx.data.url, client=_local_client(ctx), decode="tensor")
        order = torch.Generator().manual_seed(0)
        return self._dataloader(ctx, dataset, workers, shuffle=True, generator=order)


class Gateway(Contender):
    """IPFSIterableDataset through ``Client(home=fresh, gateways=[url])``: every block comes
    from the gateway (verified) through the client's CachedSource. Cold: a fresh home each
    pass (empty cache). Warm: one untimed pass fills the cache, the timed passes read it."""

    def __init__(self, delay: float, warm: bool) -> None:
        self.gateway_delay = delay
        self.warm = warm
        ms = round(delay * 1000)
        self.name = f"torch_ipfs-gateway-{ms}ms-{'warm' if warm else 'cold'}"
        self.description = f"IPFSIterableDataset via the `serve` gateway, {ms} ms per request, " + (
            "warm cache (second pass)" if warm else "cold cache (fresh home each pass)"
        )

    def _home(self, ctx: Context, workers: int) -> Path:
        return ctx.scratch / f"{self.name}-w{workers}"

    def setup(self, ctx: Context, workers: int) -> None:
        shutil.rmtree(self._home(ctx, workers), ignore_errors=True)
        if self.warm:  # one untimed pass leaves every block in the home's cache
            for _ in self.loader(ctx, workers):
                pass

    def before_pass(self, ctx: Context, workers: int) -> None:
        if not self.warm:
            shutil.rmtree(self._home(ctx, workers), ignore_errors=True)

    def loader(self, ctx: Context, workers: int) -> DataLoader:
        from torch_ipfs.client import Client
        from torch_ipfs.datasets import IPFSIterableDataset

        assert self.gateway_delay is not None
        url = ctx.gateway_urls[self.gateway_delay]
        client = Client(home=self._home(ctx, workers), api="", gateways=[url])
        dataset = IPFSIterableDataset(ctx.data.url, client=client, decode="tensor")
        return self._dataloader(ctx, dataset, workers)


class _WholeArchives(IterableDataset):
    def __init__(self, urls: list[str], ext: str) -> None:
        self.urls, self.ext = urls, ext

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        import httpx

        with httpx.Client(timeout=120) as http:
            for url in _my_share(self.urls):
                response = http.get(url)
                response.raise_for_status()
                with tarfile.open(fileobj=io.BytesIO(response.content)) as tf:
                    yield from _tar_samples(tf, self.ext)


class IPFSDatasetBaseline(Contender):
    name = "ipfs-dataset-baseline"
    description = (
        "BASELINE, reimplemented: the earlier ipfs-dataset package's approach (GET each whole "
        "archive from the path gateway, unverified, then tarfile), 0 ms"
    )
    gateway_delay = 0.0

    def loader(self, ctx: Context, workers: int) -> DataLoader:
        return self._dataloader(ctx, _WholeArchives(ctx.shard_urls(0.0), ctx.data.variant.extension), workers)


class _Decoded(IterableDataset):
    """A peer's dataset of ``{"image": bytes, "cls": int}`` dicts, decoded like the rest.
    The peer splits its samples over DataLoader workers itself (inside ``__iter__``)."""

    def __init__(self, peer: Any) -> None:
        self.peer = peer

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        for sample in self.peer:
            yield decode_image(sample["image"]), int(sample["cls"])


class LitData(Contender):
    """litdata 0.2's ``StreamingDataset`` over chunks ``litdata.optimize`` wrote from the
    same samples. ``remote``: the chunks are a local "remote" (``local:`` URL) copied
    into a fresh cache directory each pass, litdata's streaming mode."""

    requires = "litdata"

    def __init__(self, remote: bool = False) -> None:
        self.remote = remote
        self.name = "litdata-local-remote+cache" if remote else "litdata-local"
        self.description = "litdata StreamingDataset, chunks from litdata.optimize (64 MiB), " + (
            "local dir as 'remote' (local:) + fresh cache dir per pass" if remote else "read in place"
        )

    def setup(self, ctx: Context, workers: int) -> None:
        from bench.suite.peers import write_litdata

        write_litdata(ctx.data)

    def _cache(self, ctx: Context, workers: int) -> Path:
        return ctx.scratch / f"{self.name}-w{workers}"

    def before_pass(self, ctx: Context, workers: int) -> None:
        shutil.rmtree(self._cache(ctx, workers), ignore_errors=True)

    def dataset(self, ctx: Context, workers: int) -> Any:
        import litdata

        from bench.suite.peers import litdata_dir

        where = litdata_dir(ctx.data)
        if self.remote:
            from litdata.streaming.resolver import Dir

            return litdata.StreamingDataset(Dir(path=str(self._cache(ctx, workers)), url=f"local:{where}"))
        return litdata.StreamingDataset(str(where))

    def loader(self, ctx: Context, workers: int) -> DataLoader:
        return self._dataloader(ctx, _Decoded(self.dataset(ctx, workers)), workers)


class Mosaic(Contender):
    """Mosaic streaming 0.13's ``StreamingDataset`` over MDS shards ``MDSWriter`` wrote
    from the same samples (uncompressed). Local: ``local=`` the shards. ``remote``: the
    shards as ``remote=`` (a local path), copied into a fresh ``local=`` cache per pass."""

    requires = "streaming"

    def __init__(self, remote: bool = False) -> None:
        self.remote = remote
        self.name = "mosaic-local-remote+cache" if remote else "mosaic-local"
        self.description = "Mosaic StreamingDataset, MDS shards from MDSWriter (64 MiB, no compression), " + (
            "local dir as remote= + fresh local= cache per pass" if remote else "local= the shards"
        )

    def setup(self, ctx: Context, workers: int) -> None:
        from bench.suite.peers import write_mosaic

        write_mosaic(ctx.data)

    def _cache(self, ctx: Context, workers: int) -> Path:
        return ctx.scratch / f"{self.name}-w{workers}"

    def before_pass(self, ctx: Context, workers: int) -> None:
        from streaming.base.util import clean_stale_shared_memory

        clean_stale_shared_memory()
        shutil.rmtree(self._cache(ctx, workers), ignore_errors=True)

    def dataset(self, ctx: Context, workers: int, batch_size: int | None = None) -> Any:
        from streaming import StreamingDataset

        from bench.suite.peers import mosaic_dir

        where = str(mosaic_dir(ctx.data))
        if self.remote:
            return StreamingDataset(
                remote=where, local=str(self._cache(ctx, workers)), batch_size=batch_size, shuffle=False
            )
        return StreamingDataset(local=where, batch_size=batch_size, shuffle=False)

    def loader(self, ctx: Context, workers: int) -> DataLoader:
        return self._dataloader(ctx, _Decoded(self.dataset(ctx, workers, ctx.batch_size)), workers)


def all_contenders(delays: tuple[float, ...] = (0.0, 0.05)) -> list[Contender]:
    """Every contender, in report order."""
    contenders: list[Contender] = [
        TarfileLoop(),  # first: its checksum is the reference the others must match
        InMemory(),
        DecodeOnly(),
        WebDatasetLocal(),
        *(WebDatasetHTTP(d) for d in delays),
        LitData(),
        LitData(remote=True),
        Mosaic(),
        Mosaic(remote=True),
        EmbeddedIterable(),
        EmbeddedMap(),
    ]
    for delay in delays:
        contenders += [Gateway(delay, warm=False), Gateway(delay, warm=True)]
    contenders.append(IPFSDatasetBaseline())
    return contenders


CONTENDER_NAMES = [c.name for c in all_contenders()]

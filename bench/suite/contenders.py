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
    from: otherwise each measured pass would pay (and count the reads of) its imports."""
    import httpx  # noqa: F401
    import torchvision.transforms.functional  # noqa: F401
    import webdataset  # noqa: F401

    import torch_ipfs.client
    import torch_ipfs.datasets
    import torch_ipfs.sources.cache
    import torch_ipfs.sources.gateway  # noqa: F401

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
    description = "TensorDataset of the decoded tensors, built before timing (upper bound)"

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
    name = "webdataset-http"
    description = "webdataset over HTTP (it runs curl) from the same loopback gateway's path URLs, 0 ms"
    gateway_delay = 0.0

    def loader(self, ctx: Context, workers: int) -> DataLoader:
        return self._dataloader(ctx, _webdataset(ctx.shard_urls(0.0), ctx.data.variant.extension), workers)


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


def all_contenders(delays: tuple[float, ...] = (0.0, 0.05)) -> list[Contender]:
    """Every contender, in report order."""
    contenders: list[Contender] = [
        TarfileLoop(),  # first: its checksum is the reference the others must match
        InMemory(),
        WebDatasetLocal(),
        WebDatasetHTTP(),
        EmbeddedIterable(),
        EmbeddedMap(),
    ]
    for delay in delays:
        contenders += [Gateway(delay, warm=False), Gateway(delay, warm=True)]
    contenders.append(IPFSDatasetBaseline())
    return contenders


CONTENDER_NAMES = [c.name for c in all_contenders()]

"""The PyTorch adapter: a loader's dataset as a map-style dataset of ``(features,
labels)`` tensors and a ``DataLoader`` whose sampler keeps the loader's seeded epochs."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from torch_ipfs.loader.reading import Failed, SampleReader, is_pil, pick_keys

if TYPE_CHECKING:
    from torch_ipfs.loader.batching import IPFSDataLoader

__all__ = ["EpochSampler", "SampleDataset", "collate_pairs", "pytorch_dataset", "pytorch_loader"]


def pytorch_dataset(
    loader: IPFSDataLoader, features: str | None = None, labels: str | None = None
) -> SampleDataset:
    """A map-style dataset of ``(features, labels)`` tensor pairs (``len()``, indexable;
    works with ``DistributedSampler``, ``random_split`` and DataLoader workers).
    ``features``/``labels`` name the sample entries (default: :data:`FEATURE_KEYS` /
    :data:`LABEL_KEYS`); ``labels=""`` for features only."""
    reader = loader._require()
    # A DataLoader reads by index: the head start load_dataset gave the first epoch of
    # batches would only be read twice.
    loader._drop_head_start()
    if features is None and reader._entries is not None:
        # Multimodal entries link their media by CID: the tensors a model takes are
        # the media, so the adapter fetches and decodes them (``sample["image"]``).
        options = {**loader._reader_options, "fetch_media": True}
        reader = SampleReader(reader.layout, metrics=loader.metrics, indices=reader.indices, **options)
    fkey, lkey = pick_keys(loader._first_sample(reader), features, labels)
    return SampleDataset(reader, fkey, lkey)


def pytorch_loader(
    loader: IPFSDataLoader,
    features: str | None = None,
    labels: str | None = None,
    *,
    num_workers: int = 0,
    batch_size: int | None = None,
    **dataloader_options: Any,
) -> Any:
    """A ``torch.utils.data.DataLoader`` yielding ``(features, labels)`` tensor batches.

    Every epoch (each ``iter()`` of the DataLoader) reads every sample exactly once,
    in the loader's seeded per-epoch order when ``shuffle`` is on, with any
    ``num_workers``: the order comes from a sampler in the main process and workers
    only read the indices they are given. Samples that cannot be read are skipped
    (logged by the process that read them) and left out of their batch.
    """
    from torch.utils.data import DataLoader

    dataset = pytorch_dataset(loader, features, labels)
    sampler = EpochSampler(len(dataset), shuffle=loader.shuffle, seed=loader.seed, order=loader.epoch_order)
    return DataLoader(
        dataset,  # type: ignore[arg-type]  # a plain sequence (torch stays a lazy import)
        batch_size=batch_size or loader.batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_pairs,
        drop_last=loader.drop_last,
        **dataloader_options,
    )


class SampleDataset:
    """Map-style ``(features, labels)`` pairs over a loader's dataset.

    A plain sequence (``len`` + ``__getitem__``), which is all ``DataLoader``,
    ``DistributedSampler`` and ``random_split`` need; picklable for spawned workers.
    An unreadable sample gives ``None`` (``on_error="skip"``), which :func:`collate_pairs`
    leaves out of its batch; the reading process logs it.
    """

    def __init__(self, reader: SampleReader, features: str, labels: str | None) -> None:
        self.reader = reader
        self.features = features
        self.labels = labels

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> Any:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        sample = self.reader.read(index % n)
        if isinstance(sample, Failed):
            self.reader.record_skip(sample)
            return None
        x = _as_tensor(sample[self.features])
        if not self.labels:
            return x
        return x, _as_tensor(sample[self.labels])

    def __repr__(self) -> str:
        return f"SampleDataset({len(self)} samples, features={self.features!r}, labels={self.labels!r})"


class EpochSampler:
    """Indices ``0..n-1`` once per ``iter()``; with ``shuffle``, in the order ``order(epoch)``
    gives (the loader's seeded per-epoch order), advancing the epoch on every ``iter()``
    or to the one :meth:`set_epoch` sets."""

    def __init__(
        self, n: int, *, shuffle: bool, seed: int = 0, order: Callable[[int], list[int]] | None = None
    ) -> None:
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self._order = order
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        if not self.shuffle:
            return iter(range(self.n))
        if self._order is not None:
            order = self._order(epoch)
            if len(order) == self.n:
                return iter(order)
        order = list(range(self.n))
        random.Random(f"torch_ipfs.loader:{self.seed}:{epoch}").shuffle(order)
        return iter(order)


def collate_pairs(items: list[Any]) -> Any:
    """``default_collate`` over the readable items of a batch (``None`` = skipped)."""
    from torch.utils.data import default_collate

    kept = [item for item in items if item is not None]
    if not kept:
        import torch

        return (torch.empty(0), torch.empty(0))
    return default_collate(kept)


def _as_tensor(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], torch.Tensor):
        return value[0]  # decoded audio: (waveform, sample_rate)
    if is_pil(value):
        from torchvision.transforms.functional import to_tensor

        return to_tensor(value)
    import numpy as np

    if isinstance(value, np.ndarray):
        return torch.from_numpy(value if value.flags.writeable else value.copy())
    return torch.as_tensor(value)

"""Artifex-style JAX data loading on torch_ipfs: batch dicts of NumPy arrays (JAX takes
them as they are), multi-epoch seeded loaders, prefetch, a seeded train/validation
split. Written from the Artifex data-loading guide's patterns, on the embedded store."""

from __future__ import annotations

import json

import numpy as np

import torch_ipfs
from torch_ipfs.loader import IPFSDataLoader


def image_dataset(n: int = 20) -> str:
    rng = np.random.default_rng(0)
    data = [{"images": rng.random((4, 4, 3)).round(3).tolist(), "labels": i % 10} for i in range(n)]
    return str(torch_ipfs.add(json.dumps({"data": data}).encode()))


def test_batches_are_dicts_of_arrays():
    with IPFSDataLoader(batch_size=8, shuffle=False) as loader:
        loader.load_dataset(image_dataset())
        batch = next(iter(loader.to_numpy()))
        assert batch["images"].shape == (8, 4, 4, 3) and batch["images"].dtype == np.float64
        assert batch["labels"].tolist() == list(range(8))
        assert [b["images"].shape[0] for b in loader.to_numpy()] == [8, 8, 4]


def test_multi_epoch_seeded_iteration_is_reproducible():
    root = image_dataset()

    def orders(seed: int) -> list[list[int]]:
        with IPFSDataLoader(batch_size=5, shuffle=True, seed=seed, prefetch=3) as loader:
            loader.load_dataset(root)
            return [[int(x) for b in loader.to_numpy(["labels"]) for x in b["labels"]] for _ in range(3)]

    a, b, c = orders(42), orders(42), orders(7)
    assert a == b and a != c
    assert len({tuple(e) for e in a}) == 3  # each epoch its own order
    assert all(sorted(e) == sorted(i % 10 for i in range(20)) for e in a)


def test_train_validation_split_like_split_dataset():
    root = image_dataset(30)
    with IPFSDataLoader(batch_size=4) as loader:
        loader.load_dataset(root)
        train, val = loader.split(train_ratio=0.8, seed=42)
        assert (train.total_samples, val.total_samples) == (24, 6)
        t = [x for b in train.to_numpy(["images"]) for x in b["images"].reshape(-1, 48).sum(1).round(6)]
        v = [x for b in val.to_numpy(["images"]) for x in b["images"].reshape(-1, 48).sum(1).round(6)]
        assert len(t) == 24 and len(v) == 6 and not set(t) & set(v)
        train.close()
        val.close()

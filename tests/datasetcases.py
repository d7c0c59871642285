"""One set of checks run on every dataset layout (torchvision's ``DatasetTestCase`` idea).

A layout's test module subclasses :class:`DatasetCase` and implements :meth:`make`
(write real data into a real embedded store, return the root address and the samples
expected, in order) and :meth:`canon` (a sample -> a comparable value). The checks:
length, every item map-style, real DataLoaders with 0 and 2 workers (map-style and
iterable), pickling (spawn-started workers), and the torchvision-style repr.
"""

from __future__ import annotations

import io
import pickle
from collections import Counter
from typing import Any

import numpy as np
import pytest
import soundfile
from PIL import Image
from torch.utils.data import DataLoader

from torch_ipfs.client import Client
from torch_ipfs.datasets import IPFSDataset, IPFSIterableDataset


def as_list(batch: list[Any]) -> list[Any]:
    """A DataLoader collate_fn that keeps samples as they are."""
    return batch


def png_bytes(seed: int, size: int = 6, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, (size, size, channels), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode=mode)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def wav_bytes(seed: int, frames: int = 64, rate: int = 8000) -> bytes:
    wave = np.random.default_rng(seed).integers(-3000, 3000, (frames, 2), dtype=np.int16)
    buf = io.BytesIO()
    soundfile.write(buf, wave, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def image_key(image: Any) -> tuple[str, tuple[int, int], bytes]:
    return image.mode, image.size, image.tobytes()


class DatasetCase:
    """Subclass and implement :meth:`make` / :meth:`canon`; the tests below run as is."""

    #: extra keyword arguments for the dataset classes
    options: dict[str, Any] = {}

    def make(self, client: Client, tmp_path) -> tuple[Any, list[Any]]:
        """Store the data; return ``(root, expected canonical samples in order)``."""
        raise NotImplementedError

    def canon(self, sample: Any) -> Any:
        """A hashable, comparable form of a sample."""
        raise NotImplementedError

    @pytest.fixture
    def case(self, tmp_path):
        client = Client(home=tmp_path / "home", api="", gateways=[])
        root, expected = self.make(client, tmp_path)
        return client, root, expected

    def test_map_style_items(self, case):
        client, root, expected = case
        ds = IPFSDataset(root, client=client, **self.options)
        assert len(ds) == len(expected)
        assert [self.canon(ds[i]) for i in range(len(ds))] == expected
        assert self.canon(ds[-1]) == expected[-1]
        with pytest.raises(IndexError):
            ds[len(expected)]

    @pytest.mark.parametrize("workers", [0, 2])
    def test_map_style_dataloader(self, case, workers):
        client, root, expected = case
        ds = IPFSDataset(root, client=client, **self.options)
        loader = DataLoader(ds, batch_size=3, shuffle=True, num_workers=workers, collate_fn=as_list)
        seen = [self.canon(s) for batch in loader for s in batch]
        assert Counter(seen) == Counter(expected)

    @pytest.mark.parametrize("workers", [0, 2])
    def test_iterable_dataloader(self, case, workers):
        client, root, expected = case
        ds = IPFSIterableDataset(root, client=client, **self.options)
        loader = DataLoader(ds, batch_size=4, num_workers=workers, collate_fn=as_list)
        seen = [self.canon(s) for batch in loader for s in batch]
        assert Counter(seen) == Counter(expected)
        if workers == 0:
            assert seen == expected  # no shuffle, one reader: the stored order

    def test_pickles_for_spawned_workers(self, case):
        client, root, expected = case
        ds = IPFSDataset(root, client=client, **self.options)
        clone = pickle.loads(pickle.dumps(ds))
        assert len(clone) == len(expected) and self.canon(clone[0]) == expected[0]

    def test_repr(self, case):
        client, root, expected = case
        text = repr(IPFSDataset(root, client=client, **self.options))
        lines = text.splitlines()
        assert lines[0] == "Dataset IPFSDataset"
        assert f"    Number of datapoints: {len(expected)}" in lines
        assert any(line.startswith("    Layout: ") for line in lines)

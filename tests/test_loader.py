"""IPFSDataLoader: ipfs_kit's batch loader API over real data in a real embedded store."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
from collections import Counter

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image
from torch.utils.data import DistributedSampler

from torch_ipfs.cid import CID
from torch_ipfs.client import Client
from torch_ipfs.loader import (
    IPFSDataLoader,
    fetch_image,
    get_data_loader,
    process_audio,
    process_text,
)
from torch_ipfs.metrics import InstrumentedSource, MetricsCollector
from torch_ipfs.sources.base import BlockSource


def sample(i: int) -> dict:
    return {"id": i, "features": [float(i), float(i) / 2, 1.0], "labels": i % 3}


def add_json(client: Client, value: object) -> str:
    return str(client.add(json.dumps(value).encode(), chunker="size-64", raw_leaves=True, cid_version=1))


def embedded(client: Client, n: int) -> str:
    return add_json(client, {"name": "e", "version": "1", "data": [sample(i) for i in range(n)]})


def cidlist(client: Client, n: int) -> str:
    return add_json(
        client, {"name": "c", "version": "1", "samples": [add_json(client, sample(i)) for i in range(n)]}
    )


def sharded(client: Client, n: int, per_shard: int) -> str:
    shards = []
    for k, start in enumerate(range(0, n, per_shard)):
        shard = {"shard_id": k, "samples": [sample(i) for i in range(start, min(n, start + per_shard))]}
        shards.append(add_json(client, shard))
    return add_json(client, {"shards": shards, "samples_per_shard": per_shard, "total_samples": n})


def png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def ids(batches) -> list[int]:
    return [s["id"] for b in batches for s in b]


class SlowSource(BlockSource):
    """A real source that takes ``delay`` seconds per block (a slow network)."""

    def __init__(self, inner: BlockSource, delay: float) -> None:
        self.inner, self.delay, self.name = inner, delay, f"slow {inner.name}"

    def _get_raw(self, cid: CID) -> bytes:
        time.sleep(self.delay)
        return self.inner._get_raw(cid)


@pytest.fixture
def client():
    with Client() as c:
        yield c


# -- load results ------------------------------------------------------------------------------


def test_load_dataset_result_and_len(client):
    root = embedded(client, 10)
    with IPFSDataLoader(client, batch_size=4) as loader:
        result = loader.load_dataset(root)
        assert result["success"] is True
        assert result["operation"] == "load_dataset"
        assert result["dataset_cid"] == root
        assert result["total_samples"] == 10
        assert result["layout"] == "embedded"
        assert isinstance(result["timestamp"], float)
        assert len(loader) == 3 == result["batches"]
        batches = list(loader)
        assert [len(b) for b in batches] == [4, 4, 2]
        assert sorted(ids(batches)) == list(range(10))
        assert batches[0][0] == sample(batches[0][0]["id"])


def test_load_dataset_failure_is_a_result(client):
    missing = str(CID.compute(b"never added"))
    with IPFSDataLoader(client) as loader:
        result = loader.load_dataset(missing)
        assert result["success"] is False
        assert result["error_type"] == "BlockNotFoundError"
        assert missing in result["error"]
        assert loader.total_samples == 0 and list(loader) == []
        bad = loader.load_dataset("not a cid")
        assert bad["success"] is False and bad["error_type"] == "InvalidCIDError"


@pytest.mark.parametrize("layout", ["embedded", "cidlist", "sharded"])
def test_every_layout_every_sample_each_epoch(client, layout):
    n = 23
    root = {"embedded": embedded, "cidlist": cidlist, "sharded": lambda c, n: sharded(c, n, 5)}[layout](
        client, n
    )
    with IPFSDataLoader(client, batch_size=4, seed=7) as loader:
        assert loader.load_dataset(root)["success"]
        orders = []
        for epoch in range(3):
            assert loader.epoch == epoch
            batches = list(loader)
            assert len(batches) == len(loader) == 6
            assert all(len(b) == 4 for b in batches[:-1]) and len(batches[-1]) == 3
            got = ids(batches)
            assert sorted(got) == list(range(n)), f"epoch {epoch}"
            orders.append(got)
        assert len({tuple(o) for o in orders}) == 3  # a new order each epoch
        # seeded: epoch e of seed 7 is the same in a fresh loader
        assert orders[1] == loader.epoch_order(1)
    with IPFSDataLoader(client, batch_size=4, seed=7) as again:
        again.load_dataset(root)
        assert ids(list(again)) == orders[0]


def test_sharded_reads_all_shards_in_shard_runs(client):
    root = sharded(client, 12, 4)
    with IPFSDataLoader(client, batch_size=12, seed=1) as loader:
        loader.load_dataset(root)
        (batch,) = list(loader)
        got = [s["id"] for s in batch]
        assert sorted(got) == list(range(12))
        # each shard's samples come together (a shard is fetched once per epoch)
        assert [{i // 4 for i in got[k : k + 4]} for k in (0, 4, 8)] == [{got[k] // 4} for k in (0, 4, 8)]


def test_no_shuffle_keeps_dataset_order(client):
    with IPFSDataLoader(client, batch_size=3, shuffle=False) as loader:
        loader.load_embedded_dataset([sample(i) for i in range(7)])
        assert ids(list(loader)) == list(range(7))
        assert ids(list(loader)) == list(range(7))


def test_load_embedded_dataset_result(client):
    with IPFSDataLoader(client, batch_size=2, drop_last=True) as loader:
        result = loader.load_embedded_dataset([sample(i) for i in range(5)])
        assert result == {
            "success": True,
            "operation": "load_embedded_dataset",
            "timestamp": result["timestamp"],
            "total_samples": 5,
            "layout": "embedded",
            "batches": 2,
        }
        assert [len(b) for b in loader] == [2, 2]
        bad = loader.load_embedded_dataset("nope")
        assert bad["success"] is False and bad["error_type"] == "TypeError"


def test_next_api_of_ipfs_kit(client):
    with IPFSDataLoader(client, batch_size=2, shuffle=False) as loader:
        loader.load_embedded_dataset([sample(i) for i in range(3)])
        assert [s["id"] for s in next(loader)] == [0, 1]
        assert [s["id"] for s in next(loader)] == [2]
        with pytest.raises(StopIteration):
            next(loader)
        assert [s["id"] for s in next(loader)] == [0, 1]  # the next epoch


# -- failures, slowness, reuse ------------------------------------------------------------------


def test_unreadable_samples_are_skipped_counted_and_logged(client, caplog):
    good = [add_json(client, sample(i)) for i in range(6)]
    missing = str(CID.compute(json.dumps(sample(99)).encode()))
    root = add_json(client, {"samples": good[:3] + [missing] + good[3:]})
    with IPFSDataLoader(client, batch_size=4, fetch_workers=3) as loader:
        loader.load_dataset(root)
        with caplog.at_level(logging.WARNING, logger="torch_ipfs.loader"):
            batches = list(loader)
        assert sorted(ids(batches)) == list(range(6))
        assert [len(b) for b in batches] == [4, 2]  # only the last batch is short
        assert "skipping sample 3" in caplog.text and missing in caplog.text
        perf = loader.get_performance_metrics()
        assert perf["skipped_samples"] == 1
        assert perf["skipped_by_error"] == {"BlockNotFoundError": 1}
        assert perf["samples_loaded"] == 6 and perf["epochs_completed"] == 1
        list(loader)
        assert loader.get_performance_metrics()["skipped_samples"] == 2


def test_retries_then_on_error_raise(client):
    missing = str(CID.compute(b"{}"))
    root = add_json(client, {"samples": [add_json(client, sample(0)), missing]})
    with IPFSDataLoader(client, batch_size=1, retries=2, shuffle=False) as loader:
        loader.load_dataset(root)
        assert ids(list(loader)) == [0]
        perf = loader.get_performance_metrics()
        assert perf["retries"] == 2 and perf["skipped_samples"] == 1
    with IPFSDataLoader(client, batch_size=1, on_error="raise", shuffle=False) as loader:
        loader.load_dataset(root)
        it = iter(loader)
        assert ids([next(it)]) == [0]
        with pytest.raises(FileNotFoundError):
            next(it)


def test_slow_source_never_shortens_an_epoch(client):
    # Each batch takes longer than the consumer's internal poll interval (0.5 s) and
    # longer than ipfs_kit's 10 s-get would matter for: the epoch still comes back whole.
    n = 6
    root = cidlist(client, n)
    source = SlowSource(client.store, 0.0)
    slow = Client(sources=[source])
    with IPFSDataLoader(slow, batch_size=3, prefetch=1, fetch_workers=1) as loader:
        assert loader.load_dataset(root)["success"]
        source.delay = 0.3
        for _ in range(2):
            batches = list(loader)
            assert sorted(ids(batches)) == list(range(n))
            assert len(batches) == 2
        perf = loader.get_performance_metrics()
        assert perf["batch_wait_ms"]["max"] > 500  # the consumer really waited past its poll
        assert perf["skipped_samples"] == 0 and perf["epochs_completed"] == 2


def test_clear_then_new_dataset_never_mixes(client):
    a = embedded(client, 40)
    b = add_json(client, {"data": [{"id": 1000 + i} for i in range(9)]})
    with IPFSDataLoader(client, batch_size=2, prefetch=3) as loader:
        loader.load_dataset(a)
        it = iter(loader)
        next(it)  # the producer is mid-epoch with full queue
        time.sleep(0.05)
        loader.clear()
        assert loader.total_samples == 0 and list(loader) == []
        loader.load_dataset(b)
        for _ in range(2):
            assert sorted(ids(list(loader))) == [1000 + i for i in range(9)]
        # also without clear(): load_dataset stops the old producer itself
        it = iter(loader)
        next(it)
        loader.load_dataset(a)
        assert sorted(ids(list(loader))) == list(range(40))


def test_abandoned_epoch_then_full_epoch(client):
    with IPFSDataLoader(client, batch_size=2) as loader:
        loader.load_embedded_dataset([sample(i) for i in range(10)])
        for _batch in loader:
            break
        assert loader.epoch == 1
        assert sorted(ids(list(loader))) == list(range(10))
        assert loader.epoch == 2


def _loader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("IPFSDataLoader")]


def test_close_leaves_no_thread_or_file(client):
    root = cidlist(client, 30)
    fds_before = len(os.listdir("/proc/self/fd"))
    loader = IPFSDataLoader(client, batch_size=2, prefetch=2, fetch_workers=4)
    loader.load_dataset(root)
    it = iter(loader)
    next(it)
    assert _loader_threads()
    loader.close()
    assert _loader_threads() == []
    assert len(os.listdir("/proc/self/fd")) <= fds_before
    with IPFSDataLoader(client) as loader2:
        loader2.load_dataset(root)
        assert _loader_threads()
    assert _loader_threads() == []


def test_rejects_bad_options():
    with pytest.raises(ValueError, match="on_error"):
        IPFSDataLoader(on_error="ignore")
    with pytest.raises(ValueError, match="batch_size"):
        IPFSDataLoader(batch_size=0)
    with pytest.raises(ValueError, match="prefetch"):
        IPFSDataLoader(prefetch=0)


def test_get_data_loader_and_default_client(client):
    root = embedded(client, 5)  # the default client reads the same TORCH_IPFS_HOME
    metrics = MetricsCollector()
    loader = get_data_loader(batch_size=5, shuffle=False, metrics=metrics)
    try:
        assert loader.metrics is metrics and loader.ipfs is None
        loader.load_dataset(root)
        assert ids(list(loader)) == list(range(5))
        assert metrics.counter("loader.samples") == 5
    finally:
        loader.close()


# -- metrics ------------------------------------------------------------------------------------


class _RecordingSource(BlockSource):
    """Passes blocks through from ``inner``, recording each CID asked for."""

    name = "recording"

    def __init__(self, inner: BlockSource) -> None:
        self.inner = inner
        self.fetched: list[CID] = []

    def _get_raw(self, cid: CID) -> bytes:
        self.fetched.append(cid)
        return self.inner.get(cid)


def test_performance_metrics_with_instrumented_source(client):
    root = cidlist(client, 8)
    metrics = MetricsCollector()
    recorded = _RecordingSource(client.store)  # what really crossed the instrumented source
    instrumented = Client(sources=[InstrumentedSource(recorded, metrics, label="local")])
    with IPFSDataLoader(instrumented, batch_size=4, metrics=metrics) as loader:
        loader.load_dataset(root)
        list(loader)
        perf = loader.get_performance_metrics()
    assert perf["success"] is True
    assert perf["samples_loaded"] == 8 and perf["batches_loaded"] == 2
    assert perf["samples_per_second"] > 0
    assert perf["sample_read_ms"]["count"] == 8 and perf["decode_ms"]["count"] == 8
    assert perf["queue_occupancy_mean"] is not None
    blocks = metrics.counter("source.blocks[local]")
    assert blocks >= 9  # the manifest's block(s) and one per sample
    assert blocks == len(recorded.fetched)
    assert metrics.counter("source.bytes[local]") == sum(len(client.store.get(c)) for c in recorded.fetched)
    assert len(metrics.durations("source.fetch")) == blocks == len(metrics.durations("source.verify"))


def test_cache_hits_and_misses_are_read_from_the_cache(client, tmp_path):
    from torch_ipfs.sources.cache import CachedSource

    root = cidlist(client, 6)
    cached = Client(sources=[CachedSource(client.store, tmp_path / "cache", max_bytes=1 << 20)])
    with IPFSDataLoader(cached, batch_size=3) as loader:
        loader.load_dataset(root)
        list(loader)
        first = loader.get_performance_metrics()["cache"]
        loader.load_dataset(root)  # a fresh layout: no file objects kept from the first pass
        list(loader)
        second = loader.get_performance_metrics()["cache"]
    assert first["misses"] >= 6 and first["hits"] == 0
    assert second["hits"] - first["hits"] >= 6 and second["misses"] == first["misses"]
    assert 0 < second["hit_rate"] < 1


# -- PyTorch ------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_workers", [0, 2])
def test_to_pytorch_each_sample_once_per_epoch(client, num_workers):
    n = 21
    root = cidlist(client, n)
    with IPFSDataLoader(client, batch_size=4, seed=3) as loader:
        loader.load_dataset(root)
        dl = loader.to_pytorch(num_workers=num_workers)
        epochs = []
        for _ in range(2):
            got = []
            for features, labels in dl:
                assert features.dtype == torch.float32 and features.shape[1:] == (3,)
                assert labels.dtype == torch.int64
                assert torch.equal(labels, (features[:, 0].long()) % 3)
                got += features[:, 0].long().tolist()
            assert sorted(got) == list(range(n))
            epochs.append(got)
        assert epochs[0] != epochs[1]
        assert epochs[0] == loader.epoch_order(0)  # the loader's seeded order


def test_to_pytorch_leaves_an_unreadable_sample_out_counted_and_logged(client, caplog):
    good = [add_json(client, sample(i)) for i in range(6)]
    missing = str(CID.compute(json.dumps(sample(99)).encode()))
    root = add_json(client, {"samples": good[:3] + [missing] + good[3:]})
    with IPFSDataLoader(client, batch_size=4, shuffle=False) as loader:
        loader.load_dataset(root)
        dl = loader.to_pytorch()
        with caplog.at_level(logging.WARNING, logger="torch_ipfs.loader"):
            got = [f[:, 0].long().tolist() for f, _ in dl]
        assert got == [[0, 1, 2], [3, 4, 5]]  # the batch holding it is one short
        assert "skipping sample 3 of" in caplog.text and missing in caplog.text
        perf = loader.get_performance_metrics()
        assert perf["skipped_samples"] == 1 and perf["skipped_by_error"] == {"BlockNotFoundError": 1}


def test_to_pytorch_stops_the_batch_producer(client):
    """A DataLoader reads by index: no producer thread reads the same samples meanwhile."""
    with IPFSDataLoader(client, batch_size=4, prefetch=2) as loader:
        loader.load_dataset(cidlist(client, 40))
        assert _loader_threads()  # load_dataset gives the first epoch a head start
        dl = loader.to_pytorch()
        assert _loader_threads() == []
        assert sum(len(labels) for _, labels in dl) == 40


def test_to_pytorch_dataset_with_distributed_sampler(client):
    root = embedded(client, 10)
    with IPFSDataLoader(client) as loader:
        loader.load_dataset(root)
        ds = loader.to_pytorch_dataset()
        assert len(ds) == 10
        seen = Counter()
        for rank in range(3):
            sampler = DistributedSampler(ds, num_replicas=3, rank=rank, shuffle=True, seed=0)
            for i in sampler:
                x, y = ds[i]
                seen[int(x[0])] += 1
        assert set(seen) == set(range(10)) and sum(seen.values()) == 12  # padded to 3 x 4
        with pytest.raises(ValueError, match="features="):
            loader.load_embedded_dataset([{"a": 1}])
            loader.to_pytorch_dataset()
        x = IPFSDataLoader(client)
        x.load_embedded_dataset([{"a": [1, 2], "b": 5}])
        assert [t.tolist() for t in x.to_pytorch_dataset(features="a", labels="b")[0]] == [[1, 2], 5]
        x.close()


# -- NumPy / JAX --------------------------------------------------------------------------------


def test_numpy_batches(client):
    with IPFSDataLoader(client, batch_size=4, shuffle=False) as loader:
        loader.load_embedded_dataset([dict(sample(i), name=f"s{i}") for i in range(6)])
        batches = loader.to_numpy()
        assert len(batches) == 2
        for _ in range(2):
            out = list(batches)
            assert out[0]["features"].shape == (4, 3) and out[0]["features"].dtype == np.float64
            assert out[1]["labels"].tolist() == [4 % 3, 5 % 3]
            assert out[0]["name"].tolist() == ["s0", "s1", "s2", "s3"]
        (only,) = list(loader.iter_numpy(keys=["id"]))[:1]
        assert set(only) == {"id"}


def test_to_tensorflow_without_tensorflow_gives_the_documented_error(client):
    pytest.importorskip("torch")  # the main env: tensorflow is not installed here
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorflow is installed; tests/test_tensorflow.py covers it")
    with IPFSDataLoader(client) as loader:
        loader.load_embedded_dataset([sample(0)])
        result = loader.to_tensorflow()
    assert result["success"] is False
    assert "pip install tensorflow" in result["error"]
    assert result["error_type"] in ("ImportError", "ModuleNotFoundError")


# -- multimodal and helpers ---------------------------------------------------------------------


def wav(seed: int, rate: int = 8000, frames: int = 80) -> bytes:
    wave = np.random.default_rng(seed).integers(-3000, 3000, (frames, 1), dtype=np.int16)
    buf = io.BytesIO()
    soundfile.write(buf, wave, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_multimodal_samples_and_helpers(client):
    images = [png(i) for i in range(3)]
    image_cids = [str(client.add(b)) for b in images]
    audio_cid = str(client.add(wav(1)))
    manifest = {
        "name": "mm",
        "samples": [
            {
                "id": f"s{i}",
                "image_cid": image_cids[i],
                "text": f"caption {i}",
                "tabular_features": [i, i],
                "label": i,
            }
            for i in range(3)
        ],
    }
    root = add_json(client, manifest)
    with IPFSDataLoader(client, batch_size=3, shuffle=False) as loader:
        assert loader.load_dataset(root)["layout"] == "multimodal"
        (batch,) = list(loader)
        assert batch == manifest["samples"]  # ipfs_kit's samples, CIDs as they are
        image = loader.fetch_image(batch[1]["image_cid"])
        assert image.size == (5, 4) and image.tobytes() == Image.open(io.BytesIO(images[1])).tobytes()
        tensor = loader.fetch_image(batch[1]["image_cid"], transform_to_tensor=True)
        assert tensor.shape == (3, 4, 5) and tensor.dtype == torch.float32 and float(tensor.max()) <= 1.0
        flipped = loader.fetch_image(batch[1]["image_cid"], image_transforms=lambda im: im.size)
        assert flipped == (5, 4)
        assert loader.process_audio(audio_cid) == wav(1)
        wave = loader.process_audio(audio_cid, sample_rate=4000, transform_to_tensor=True)
        assert wave.shape == (1, 40)
        assert loader.get_performance_metrics()["summary"]["operations"]["loader.fetch_image"]["count"] == 3
    with IPFSDataLoader(client, batch_size=3, shuffle=False, fetch_media=True) as loader:
        loader.load_dataset(root)
        (batch,) = list(loader)
        assert [s["image"].tobytes() for s in batch] == [Image.open(io.BytesIO(b)).tobytes() for b in images]
        assert [s["label"] for s in batch] == [0, 1, 2]


def test_helper_functions(client):
    cid = client.add(png(5))
    assert fetch_image(cid).size == (5, 4)
    assert fetch_image(str(cid), client=client).mode == "RGB"
    wave = process_audio(client.add(wav(2)), transform_to_tensor=True)
    assert wave.shape == (1, 80) and wave.dtype == torch.float32
    with pytest.raises(ValueError, match="transform_to_tensor"):
        process_audio(cid, sample_rate=16000)
    assert process_text("hello world") == "hello world"
    assert process_text("hello world", max_length=5) == "hello"
    assert process_text("a b c d", tokenizer=str.split, max_length=2) == ["a", "b"]

    class HFLike:
        def encode(self, text):  # marks a Hugging Face-style tokenizer
            return list(text)

        def __call__(self, text, **kwargs):
            return {"text": text, **kwargs}

    assert process_text("hi", tokenizer=HFLike(), max_length=8) == {
        "text": "hi",
        "return_tensors": "pt",
        "max_length": 8,
        "truncation": True,
    }
    with pytest.raises(TypeError):
        process_text(b"bytes")

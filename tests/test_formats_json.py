"""The JSON layouts: CID list, embedded, sharded JSON, multimodal."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasetcases import DatasetCase, image_key, png_bytes, wav_bytes

from torch_ipfs.datasets import IPFSDataset
from torch_ipfs.errors import ManifestError


def _json_file(client, value) -> str:
    return str(client.add(json.dumps(value).encode()))


class TestCIDList(DatasetCase):
    """JSON objects and raw files (a PNG, a .npy) listed by CID."""

    def make(self, client, tmp_path):
        import io

        buf = io.BytesIO()
        np.save(buf, np.arange(4, dtype=np.int16))
        cids = [_json_file(client, {"x": i, "y": [i, i]}) for i in range(5)]
        cids += [str(client.add(png_bytes(7))), str(client.add(buf.getvalue()))]
        root = _json_file(client, {"name": "mixed", "version": "1", "samples": cids})
        expected = [("dict", ((("x", i), ("y", (i, i))))) for i in range(5)]
        expected += [("image", image_key(_png(7))), ("array", (0, 1, 2, 3))]
        return root, expected

    def canon(self, sample):
        if isinstance(sample, dict):
            return "dict", tuple(
                sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in sample.items())
            )
        if isinstance(sample, np.ndarray):
            return "array", tuple(sample.tolist())
        return "image", image_key(sample)


class TestEmbedded(DatasetCase):
    def make(self, client, tmp_path):
        data = [{"features": [i, i + 1], "label": i % 2} for i in range(11)]
        root = _json_file(client, {"name": "emb", "data": data})
        return f"ipfs://{root}", [((i, i + 1), i % 2) for i in range(11)]

    def canon(self, sample):
        return tuple(sample["features"]), sample["label"]


class TestShardedJSON(DatasetCase):
    def make(self, client, tmp_path):
        shards, n = [], 0
        for shard_id, count in enumerate([4, 4, 2]):
            samples = [{"id": n + j, "text": f"t{n + j}"} for j in range(count)]
            shards.append(_json_file(client, {"shard_id": shard_id, "samples": samples}))
            n += count
        root = _json_file(client, {"shards": shards, "samples_per_shard": 4, "total_samples": 10})
        return root, [(i, f"t{i}") for i in range(10)]

    def canon(self, sample):
        return sample["id"], sample["text"]


class TestMultimodal(DatasetCase):
    def make(self, client, tmp_path):
        samples = [
            {
                "id": i,
                "image_cid": str(client.add(png_bytes(i))),
                "audio_cid": str(client.add(wav_bytes(i))),
                "text": f"caption {i}",
                "features": [i / 2, 1.0],
                "label": i % 3,
            }
            for i in range(6)
        ]
        root = _json_file(client, {"name": "mm", "classes": ["a", "b", "c"], "samples": samples})
        expected = []
        for i in range(6):
            rate, frames = 8000, 64
            expected.append((image_key(_png(i)), rate, (2, frames), f"caption {i}", (i / 2, 1.0), i % 3))
        return root, expected

    def canon(self, sample):
        wave, rate = sample["audio"]
        return (image_key(sample["image"]), rate, tuple(wave.shape), sample["text"],
                tuple(sample["features"]), sample["label"])  # fmt: skip


def _png(seed):
    import io

    from PIL import Image

    return Image.open(io.BytesIO(png_bytes(seed)))


def test_multimodal_audio_values_and_resampling(tmp_path):
    import io

    import soundfile

    from torch_ipfs.client import Client

    client = Client(home=tmp_path / "h", api="", gateways=[])
    wav = wav_bytes(3)
    root = _json_file(client, {"samples": [{"audio_cid": str(client.add(wav)), "label": 1}]})
    wave, rate = IPFSDataset(root, client=client)[0]["audio"]
    expected, _ = soundfile.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    assert rate == 8000 and np.array_equal(wave.numpy(), expected.T)
    wave16, rate16 = IPFSDataset(root, client=client, sample_rate=16000)[0]["audio"]
    assert rate16 == 16000 and wave16.shape == (2, 128)


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"samples": ["not-a-cid"]}, r"samples\[0\]"),
        ({"samples": [1, 2]}, "unknown dataset layout"),
        ({"shards": ["x"], "samples_per_shard": 2, "total_samples": 3}, r"shards\[0\]"),
        ({"shards": [], "samples_per_shard": 2, "total_samples": 3}, "cannot hold total_samples=3"),
        ({"data": "nope"}, "unknown dataset layout"),
        ({"samples": [{"image_cid": 5}]}, "must be a CID string"),
        ([1, 2], "unknown dataset layout"),
    ],
)
def test_malformed_json_manifests(tmp_path, manifest, message):
    from torch_ipfs.client import Client

    client = Client(home=tmp_path / "h", api="", gateways=[])
    root = _json_file(client, manifest)
    with pytest.raises(ManifestError, match=message) as info:
        ds = IPFSDataset(root, client=client)
        ds[0]
    assert root in str(info.value)


def test_sharded_json_shard_contents_are_checked(tmp_path):
    from torch_ipfs.client import Client

    client = Client(home=tmp_path / "h", api="", gateways=[])
    wrong_id = _json_file(client, {"shard_id": 5, "samples": [{"a": 1}]})
    root = _json_file(client, {"shards": [wrong_id], "samples_per_shard": 1, "total_samples": 1})
    with pytest.raises(ManifestError, match="shard_id is 5"):
        IPFSDataset(root, client=client)[0]

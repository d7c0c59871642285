"""Model registry: weights by CID (safetensors), versioned manifests, a content-addressed index."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from torch_ipfs.cid import CID
from torch_ipfs.client import Client
from torch_ipfs.dagpb import decode_node
from torch_ipfs.errors import IntegrityError
from torch_ipfs.registry import ModelRegistry, ModelVersion
from torch_ipfs.sources.base import BlockSource
from torch_ipfs.sources.local import multihash_key


def tiny_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def big_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Linear(300, 300)  # 360 KB of weights: more than one 256 KiB chunk


def assert_same_weights(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.fixture
def client():
    with Client() as c:
        yield c


def test_round_trip_versions_and_manifest(client):
    registry = ModelRegistry(client)
    assert registry.root is None and registry.list() == []
    m1, m2 = tiny_model(1), tiny_model(2)
    dataset = str(client.add(b"a dataset"))
    v1 = registry.register("tiny", m1, dataset_cid=dataset, metrics={"acc": 0.5})
    root1 = registry.root
    v2 = registry.register("tiny", m2, metrics={"acc": 0.75}, metadata={"note": "more epochs"})
    assert registry.root != root1
    assert (v1.version, v1.parent, v2.version, v2.parent) == ("1", None, "2", "1")
    assert v1.framework == "pytorch" and v1.dataset_cid == dataset and v2.metrics == {"acc": 0.75}
    assert v1.tensors["0.weight"] == {"dtype": "float32", "shape": [8, 4]}

    assert_same_weights(registry.load("tiny", "1"), m1.state_dict())
    assert_same_weights(registry.load("tiny"), m2.state_dict())  # latest
    fresh = tiny_model(99)
    assert registry.load("tiny", "1", model=fresh) is fresh
    assert_same_weights(fresh.state_dict(), m1.state_dict())
    assert [v.version for v in registry.list("tiny")] == ["1", "2"]
    assert registry.get("tiny", "2") == v2 and registry.get("tiny") == v2
    assert registry.names() == ["tiny"]

    # weights are a safetensors file: no pickle anywhere
    weights = client.cat(v1.weights_cid)
    header_len = int.from_bytes(weights[:8], "little")
    header = json.loads(weights[8 : 8 + header_len])
    assert header["0.weight"]["dtype"] == "F32" and header["0.weight"]["shape"] == [8, 4]
    # the manifest and the index are content-addressed JSON
    manifest = json.loads(client.cat(v2.manifest_cid))
    assert manifest["weights"] == v2.weights_cid and manifest["parent"] == "1"
    index = json.loads(client.cat(registry.root))
    assert index["models"]["tiny"][1] == {"version": "2", "manifest": v2.manifest_cid}
    assert index["previous"] == root1
    assert registry.history() == [registry.root, root1]


def test_pointer_file_finds_the_registry_and_cid_opens_it(client):
    registry = ModelRegistry(client)
    registry.register("a", {"w": torch.arange(6.0).reshape(2, 3)})
    pointer = Path(client.store.root) / "registry" / "ROOT"
    assert pointer.read_text().strip() == registry.root
    assert not list(pointer.parent.glob("*.part"))
    again = ModelRegistry(client)  # a new process would find it the same way
    assert again.get("a").version == "1"
    pinned = ModelRegistry(client, root=registry.root)
    registry.register("a", {"w": torch.zeros(2, 3)})
    assert [v.version for v in pinned.list("a")] == ["1"]  # a CID is immutable
    assert [v.version for v in again.list("a")] == ["1", "2"]
    with pytest.raises(PermissionError):
        pinned.register("b", {"w": torch.zeros(1)})


def test_numpy_weights_and_explicit_versions(client):
    registry = ModelRegistry(client)
    arrays = {"w": np.arange(12, dtype=np.float64).reshape(3, 4), "b": np.array([1, 2], dtype=np.int32)}
    v = registry.register("np", arrays, version="2024.1", parent=None)
    assert v.framework == "numpy" and v.version == "2024.1"
    loaded = registry.load("np", "2024.1")
    assert set(loaded) == {"w", "b"}
    np.testing.assert_array_equal(loaded["w"], arrays["w"])
    assert loaded["b"].dtype == np.int32
    with pytest.raises(ValueError, match="already has"):
        registry.register("np", arrays, version="2024.1")
    with pytest.raises(ValueError, match="parent"):
        registry.register("np", arrays, parent="7")
    with pytest.raises(KeyError, match="versions: 2024.1"):
        registry.get("np", "9")
    with pytest.raises(KeyError):
        registry.get("missing")
    with pytest.raises(TypeError):
        registry.register("bad", [1, 2, 3])


class TamperingSource(BlockSource):
    """Serves the blocks of ``inner`` but flips a byte of one of them."""

    def __init__(self, inner: BlockSource, victim: CID) -> None:
        self.inner, self.victim, self.name = inner, victim, "tampering source"

    def _get_raw(self, cid: CID) -> bytes:
        data = self.inner._get_raw(cid)
        if cid.multihash == self.victim.multihash:
            data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
        return data


def leaves(client: Client, cid: str) -> list[CID]:
    node = decode_node(client.block_get(cid))
    return [link.cid for link in node.links]


def test_tampered_weight_block_is_rejected(client):
    registry = ModelRegistry(client)
    model = big_model(3)
    v = registry.register("big", model)
    blocks = leaves(client, v.weights_cid)
    assert len(blocks) == 2
    tampered = Client(sources=[TamperingSource(client.store, blocks[1])])
    reader = ModelRegistry(tampered, root=registry.root)
    assert reader.get("big") == v  # manifest and index blocks are intact
    with pytest.raises(IntegrityError) as info:
        reader.load("big")
    assert str(blocks[1]) in str(info.value)
    assert_same_weights(registry.load("big"), model.state_dict())  # the honest source


def test_corrupted_block_file_in_the_store_is_rejected(client):
    registry = ModelRegistry(client)
    v = registry.register("big", big_model(4))
    victim = leaves(client, v.weights_cid)[0]
    (path,) = [p for p in Path(client.store.root).rglob(multihash_key(victim.multihash) + "*") if p.is_file()]
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        ModelRegistry(Client()).load("big")


def test_model_version_rejects_foreign_manifests():
    from torch_ipfs.errors import ManifestError

    with pytest.raises(ManifestError):
        ModelVersion.from_manifest({"format": "other"}, "x")
    with pytest.raises(ManifestError, match="safetensors"):
        ModelVersion.from_manifest({"format": "torch_ipfs.model/1", "weights_format": "pickle"}, "x")


def test_a_hostile_manifest_cid_is_a_manifest_error(client):
    """load_model(cid) reads a document anyone can publish: nested past the JSON
    decoder's stack or not JSON at all, it is refused, typed, never a RecursionError."""
    from torch_ipfs.errors import ManifestError

    registry = ModelRegistry(client)
    nested = client.add(b"[" * 200_000)
    with pytest.raises(ManifestError, match=f"model manifest {nested}: JSON nested too deeply"):
        registry.load_model(nested)
    with pytest.raises(ManifestError, match="not valid JSON"):
        registry.load_model(client.add(b"\xff not json"))

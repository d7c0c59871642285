"""Programs in the style of ipfs_kit's IPFSDataLoader and AI/ML guides run on torch_ipfs
with only their imports changed (torch_ipfs.compat.ipfs_kit), on the embedded store.
Datasets are written exactly in the JSON shapes those guides show."""

from __future__ import annotations

import json
import logging
import re

import pytest
import torch
from datasetcases import png_bytes

import torch_ipfs
from torch_ipfs.compat.ipfs_kit import AIMLMetricsCollector, ModelRegistry, create_visualization, ipfs_kit


def add_json(value) -> str:
    return str(torch_ipfs.add(json.dumps(value).encode()))


def sample(i: int) -> dict:
    return {"features": [0.1 * i, 0.2, 0.3], "labels": i % 2}


def sharded_dataset(n: int = 10, per_shard: int = 4, first_id: int = 1) -> tuple[str, list[str]]:
    """The guide's sharded layout: shard ids from 1, inclusive start/end indices."""
    shards = []
    for k, start in enumerate(range(0, n, per_shard)):
        stop = min(n, start + per_shard)
        shards.append(
            add_json(
                {
                    "shard_id": first_id + k,
                    "sample_start_idx": start,
                    "sample_end_idx": stop - 1,
                    "samples": [sample(i) for i in range(start, stop)],
                }
            )
        )
    root = add_json(
        {
            "name": "sharded_dataset",
            "description": "Large dataset split into multiple shards",
            "version": "1.0.0",
            "created_at": 1648720000,
            "shard_count": len(shards),
            "samples_per_shard": per_shard,
            "total_samples": n,
            "shards": shards,
        }
    )
    return root, shards


def test_basic_usage(caplog):
    root = add_json(
        {
            "name": "example_embedded_dataset",
            "description": "...",
            "version": "1.0.0",
            "created_at": 1648720000,
            "data": [sample(i) for i in range(70)],
        }
    )
    kit = ipfs_kit(metadata={"enable_ai_ml": True})
    loader = kit.get_data_loader(batch_size=32, shuffle=True, prefetch=2)
    result = loader.load_dataset(root)
    assert result["success"] and loader.total_samples == 70
    seen = []
    for batch in loader:
        for s in batch:
            features = s["features"]
            labels = s["labels"]
            seen.append((features[0], labels))
    loader.close()
    assert sorted(seen) == sorted((s["features"][0], s["labels"]) for s in map(sample, range(70)))


def test_cid_referenced_samples():
    cids = [add_json(sample(i)) for i in range(5)]
    root = add_json(
        {"name": "example_dataset", "version": "1.0.0", "created_at": 1648720000, "samples": cids}
    )
    with ipfs_kit().get_data_loader(batch_size=2, shuffle=False) as loader:
        assert loader.load_dataset(root)["success"]
        assert [s["labels"] for b in loader for s in b] == [0, 1, 0, 1, 0]


def test_sharded_layout_as_the_guide_writes_it_delivers_every_sample(caplog):
    root, _ = sharded_dataset()
    loader = ipfs_kit().get_data_loader(batch_size=3, shuffle=False)
    result = loader.load_dataset(root)
    assert result["success"] and result["total_samples"] == 10
    with caplog.at_level(logging.WARNING):
        got = [s["features"][0] for b in loader for s in b]
    assert got == [sample(i)["features"][0] for i in range(10)]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert loader.get_performance_metrics()["skipped_samples"] == 0
    loader.close()


@pytest.mark.parametrize(
    "bad, reason",
    [
        ({"shard_id": 3}, r"shard_id is 3.*listed as shard 1 \(the first shard is numbered 1\)"),
        ({"sample_start_idx": 5}, r"sample_start_idx is 5.*holds samples 4\.\.7"),
        ({"samples": [sample(0)]}, r"holds 1 samples, the root says 4"),
    ],
)
def test_an_inconsistent_sharded_manifest_fails_load_dataset(bad, reason):
    """Checked up front: a later shard read lazily still fails the epoch by name."""
    good_root, shards = sharded_dataset()
    doc = json.loads(torch_ipfs.cat(shards[1]))
    doc.update(bad)
    shards[1] = add_json(doc)
    root = add_json({**json.loads(torch_ipfs.cat(good_root)), "shards": shards})
    # the first shard is checked by load_dataset; the others as they are read
    with ipfs_kit().get_data_loader(batch_size=4, shuffle=False, on_error="raise") as loader:
        assert loader.load_dataset(root)["success"]
        with pytest.raises(torch_ipfs.ManifestError, match=reason):
            list(loader)
    doc0 = json.loads(torch_ipfs.cat(shards[0]))
    doc0.update({"shard_id": 7})
    root = add_json({**json.loads(torch_ipfs.cat(good_root)), "shards": [add_json(doc0)] + shards[1:]})
    with ipfs_kit().get_data_loader() as loader:
        result = loader.load_dataset(root)
        assert result["success"] is False and result["error_type"] == "ManifestError"
        assert "shard_id is 7; the first shard is numbered 0 or 1" in result["error"]


def test_shard_count_must_match():
    root, shards = sharded_dataset()
    bad = add_json({**json.loads(torch_ipfs.cat(root)), "shard_count": 10})
    with ipfs_kit().get_data_loader() as loader:
        result = loader.load_dataset(bad)
        assert not result["success"] and "shard_count is 10, but 3 shards are listed" in result["error"]


def test_sequential_shard_processing():
    root, _ = sharded_dataset()
    dataset_metadata = json.loads(torch_ipfs.cat(root))
    loader = ipfs_kit().get_data_loader(batch_size=3, shuffle=False)
    got = []
    for shard_cid in dataset_metadata["shards"]:
        assert loader.load_dataset(shard_cid)["success"]
        for batch in loader:
            got += [s["features"][0] for s in batch]
        loader.clear()
    loader.close()
    assert got == [sample(i)["features"][0] for i in range(10)]


def multimodal_dataset(n: int = 4) -> str:
    return add_json(
        {
            "name": "multi_modal_dataset",
            "version": "1.0.0",
            "created_at": 1648720000,
            "samples": [
                {
                    "id": f"sample{i:03d}",
                    "image_cid": str(torch_ipfs.add(png_bytes(i, size=8))),
                    "text": f"Sample text description for image {i}",
                    "tabular_features": [0.1 * i, 0.2, 0.3],
                    "label": i % 2,
                }
                for i in range(n)
            ],
        }
    )


def test_multimodal_processing_loop():
    def my_tokenizer(text):
        return text.split()

    loader = ipfs_kit().get_data_loader(batch_size=2, shuffle=False)
    loader.load_dataset(multimodal_dataset())
    n = 0
    for batch in loader:
        for s in batch:
            image_tensor = loader.fetch_image(s["image_cid"], transform_to_tensor=True)
            text_tokens = loader.process_text(s["text"], tokenizer=my_tokenizer)
            features = torch.tensor(s["tabular_features"])
            assert image_tensor.shape == (3, 8, 8) and text_tokens[:2] == ["Sample", "text"]
            assert features.shape == (3,)
            n += 1
    loader.close()
    assert n == 4


def test_to_pytorch_on_a_multimodal_dataset_works_by_default():
    loader = ipfs_kit().get_data_loader(batch_size=2, shuffle=False)
    loader.load_dataset(multimodal_dataset())
    pytorch_loader = loader.to_pytorch()
    batches = list(pytorch_loader)
    assert [tuple(x.shape) for x, _ in batches] == [(2, 3, 8, 8), (2, 3, 8, 8)]
    assert [y.tolist() for _, y in batches] == [[0, 1], [0, 1]]
    tab = list(loader.to_pytorch(features="tabular_features"))
    assert tab[0][0].shape == (2, 3)
    loader.close()


def test_to_pytorch_without_a_feature_entry_fails_at_once_with_the_fix():
    root = add_json({"data": [{"a": [1.0], "b": 2}]})
    with ipfs_kit().get_data_loader() as loader:
        loader.load_dataset(root)
        with pytest.raises(ValueError, match=re.escape("loader.to_pytorch(features='a')")):
            loader.to_pytorch()


def test_pytorch_training_loop():
    root = add_json({"data": [sample(i) for i in range(12)]})
    loader = ipfs_kit().get_data_loader(batch_size=4)
    loader.load_dataset(root)
    pytorch_loader = loader.to_pytorch()
    model = torch.nn.Linear(3, 2)
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    steps = 0
    for _epoch in range(2):
        for features, labels in pytorch_loader:
            outputs = model(features.float())
            loss = criterion(outputs, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
    loader.close()
    assert steps == 6


def test_performance_visualization(tmp_path):
    root = add_json({"data": [sample(i) for i in range(40)]})
    metrics = AIMLMetricsCollector()
    kit = ipfs_kit()
    loader = kit.get_data_loader(batch_size=32, shuffle=True, prefetch=2, metrics=metrics)
    loader.load_dataset(root)
    for _batch_idx, _batch in enumerate(loader):
        pass
    viz = create_visualization(metrics, interactive=True)
    drawn = viz.plot_dataset_load_times(figsize=(10, 6), show_plot=True)
    assert len(drawn["load_ms"]) == 1 and len(drawn["batch_wait_ms"]) == 3  # 2 batches + the end
    out = viz.plot_comprehensive_dashboard(output_file=tmp_path / "dataloader_performance.html")
    page = out.read_text()
    assert root in page and "data:image/png;base64," in page
    assert re.search(r"<th>samples loaded</th><td>40</td>", page)
    loader.close()


def test_metrics_and_visualization_integration(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    metrics = AIMLMetricsCollector()
    for epoch in range(3):
        with metrics.track_training_epoch("model_1", epoch=epoch, num_samples=1000):
            metrics.record_metric(f"model_1/epoch/{epoch}/train_loss", 1.5 - 0.5 * epoch)
            metrics.record_metric(f"model_1/epoch/{epoch}/val_loss", 1.8 - 0.4 * epoch)
    op = metrics.start_operation("inference")
    metrics.end_operation(op, metadata={"batch": 8})
    viz = create_visualization(metrics)
    drawn = viz.plot_training_metrics("model_1")
    assert drawn == {"train_loss": [(0, 1.5), (1, 1.0), (2, 0.5)], "val_loss": [(0, 1.8), (1, 1.4), (2, 1.0)]}
    viz.generate_html_report("training_report.html")
    assert "Training metrics" in (tmp_path / "training_report.html").read_text()
    summary = metrics.get_summary()
    assert summary["operations"]["model_1/train_epoch"]["count"] == 3
    assert metrics.get_metrics()["operations"]["inference"][0]["batch"] == 8
    df = viz.get_metrics_dataframe(model_id="model_1")
    assert list(df["train_loss"]) == [1.5, 1.0, 0.5]


def test_complete_training_workflow(tmp_path):
    model_registry = ModelRegistry()
    metrics = AIMLMetricsCollector()
    viz_interactive = create_visualization(metrics, interactive=True)
    viz_static = create_visualization(metrics, interactive=False)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    with metrics.track_training_epoch("resnet50", epoch=0, num_samples=10):
        metrics.record_metric("resnet50/epoch/0/train_loss", 0.7)
    model_cid = model_registry.store_model(
        model=model,
        model_type="resnet50",
        metadata={"metrics_summary": metrics.get_summary(), "dataset_cid": "QmDatasetCID-not-a-cid"},
    )
    viz_interactive.plot_training_metrics(show_plot=True)
    viz_interactive.plot_worker_utilization(show_plot=True)
    viz_interactive.plot_comprehensive_dashboard(show_plot=True)
    report_path = tmp_path / "training_report.html"
    viz_static.generate_html_report(report_path)
    exported = viz_static.export_visualizations(
        export_dir=tmp_path / "training_results", formats=["png", "svg", "html", "json"]
    )
    assert report_path.exists()
    assert {k: len(v) for k, v in exported.items()} == {"png": 4, "svg": 4, "html": 1, "json": 2}
    assert all((tmp_path / "training_results" / p).exists() for paths in exported.values() for p in paths)
    loaded, metadata = model_registry.load_model(model_cid)
    assert set(loaded) == set(model.state_dict())
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
    assert metadata["model_type"] == "resnet50" and metadata["framework"] == "pytorch"
    assert metadata["dataset_cid"] == "QmDatasetCID-not-a-cid"
    fresh = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    back, _ = model_registry.load_model(model_cid, model=fresh)
    assert back is fresh and torch.equal(fresh[0].weight, model[0].weight)


def test_store_model_keeps_nothing_executable(tmp_path):
    """The weights are a safetensors file: its JSON header and raw tensors, no pickle."""
    registry = ModelRegistry()
    cid = registry.store_model(model=torch.nn.Linear(2, 1), model_type="lin", framework="pytorch")
    manifest = json.loads(torch_ipfs.cat(cid))
    assert manifest["weights_format"] == "safetensors"
    weights = torch_ipfs.cat(manifest["weights"])
    assert b"\x80\x04" not in weights[:16] and weights[8:9] == b"{"


def test_seeded_train_validation_split():
    root = add_json({"data": [sample(i) for i in range(10)]})
    loader = ipfs_kit().get_data_loader(batch_size=3, shuffle=True)
    loader.load_dataset(root)
    train, val = loader.split(train_ratio=0.8, seed=42)
    assert (train.total_samples, val.total_samples) == (8, 2)
    t = [s["features"][0] for b in train for s in b]
    v = [s["features"][0] for b in val for s in b]
    assert sorted(t + v) == sorted(sample(i)["features"][0] for i in range(10))
    again_t, again_v = loader.split(train_ratio=0.8, seed=42)
    assert sorted(s["features"][0] for b in again_v for s in b) == sorted(v)
    other_t, other_v = loader.split(train_ratio=0.8, seed=7)
    assert sorted(s["features"][0] for b in other_v for s in b) != sorted(v)
    assert len(list(train.to_numpy())) == 3  # Artifex-style batches of NumPy arrays
    for x in (train, val, again_t, again_v, other_t, other_v, loader):
        x.close()


def test_creating_and_chunking_datasets_with_kit_ipfs():
    """The guide's create_reference_dataset and process_large_dataset, as written
    (kit.ipfs.dag_put / dag_get), on the embedded store."""
    import time

    import numpy as np

    kit = ipfs_kit()

    def create_reference_dataset(num_samples=100):
        sample_cids = []
        for _i in range(num_samples):
            s = {"features": np.random.rand(10).tolist(), "labels": int(np.random.randint(0, 2))}
            result = kit.ipfs.dag_put(s)
            if result["success"]:
                sample_cids.append(result["cid"])
        dataset = {
            "name": "random_dataset",
            "description": "Randomly generated dataset for testing",
            "version": "1.0.0",
            "created_at": time.time(),
            "samples": sample_cids,
        }
        result = kit.ipfs.dag_put(dataset)
        return result["cid"] if result["success"] else None

    def process_large_dataset(dataset_cid, chunk_size=1000):
        kit = ipfs_kit()
        loader = kit.get_data_loader(batch_size=32)
        result = kit.ipfs.dag_get(dataset_cid)
        assert result["success"]
        metadata = result["object"]
        total_samples = len(metadata.get("samples", []))
        seen = []
        for chunk_start in range(0, total_samples, chunk_size):
            chunk_end = min(chunk_start + chunk_size, total_samples)
            chunk_dataset = {
                "name": metadata.get("name", "unknown") + f"_chunk_{chunk_start}",
                "samples": metadata["samples"][chunk_start:chunk_end],
            }
            chunk_result = kit.ipfs.dag_put(chunk_dataset)
            assert chunk_result["success"]
            loader.load_dataset(chunk_result["cid"])
            for batch in loader:
                seen += [len(s["features"]) for s in batch]
        loader.close()
        return seen

    dataset_cid = create_reference_dataset(num_samples=25)
    assert dataset_cid and kit.ipfs.pin_add(dataset_cid)["success"]
    assert process_large_dataset(dataset_cid, chunk_size=10) == [10] * 25
    missing = kit.ipfs.dag_get("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")
    assert missing["success"] is False and missing["error_type"] == "BlockNotFoundError"


@pytest.mark.parametrize("fetch_workers", [1, 4])
def test_an_inconsistent_later_shard_is_fetched_once(fetch_workers):
    """Skipping its samples (on_error="skip") does not fetch the bad shard per sample,
    also with several threads reading its samples at once."""
    from torch_ipfs.metrics import MetricsCollector, instrument_client

    good_root, shards = sharded_dataset()
    doc = json.loads(torch_ipfs.cat(shards[1]))
    doc["shard_id"] = 9
    shards[1] = add_json(doc)
    root = add_json({**json.loads(torch_ipfs.cat(good_root)), "shards": shards})
    client = torch_ipfs.Client()
    metrics = MetricsCollector()
    instrument_client(client, metrics)
    blocks = f"source.blocks[{client.source.sources[0].label}]"
    # Counted from before the load: load_dataset starts the first epoch's producer,
    # which may read any part of the epoch before the loop below asks for a batch.
    before = metrics.counter(blocks)
    with ipfs_kit(client).get_data_loader(batch_size=4, shuffle=False, fetch_workers=fetch_workers) as loader:
        assert loader.load_dataset(root)["success"]
        got = [s["features"][0] for b in loader for s in b]
        fetched = metrics.counter(blocks) - before
        assert len(got) == 6 and loader.get_performance_metrics()["skipped_samples"] == 4
        # the root twice (its type, then its bytes) and shard 0 at load; then shard 1
        # once (refused) and shard 2 once
        assert fetched == 5

"""to_tensorflow() trains a tiny Keras model (run by the ``tf`` tox env, which installs
TensorFlow; the main environment has no TensorFlow and skips this file)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

if os.environ.get("TORCH_IPFS_REQUIRE_TF"):  # the tf tox env: a missing TensorFlow is a failure
    import tensorflow as tf
else:
    tf = pytest.importorskip("tensorflow")

from torch_ipfs.client import Client
from torch_ipfs.loader import IPFSDataLoader


def test_to_tensorflow_trains_a_keras_model():
    rng = np.random.default_rng(0)
    n = 64
    x = rng.normal(size=(n, 4))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    with Client() as client:
        cids = [
            str(client.add(json.dumps({"features": x[i].tolist(), "labels": int(y[i])}).encode()))
            for i in range(n)
        ]
        root = str(client.add(json.dumps({"name": "tf", "samples": cids}).encode()))
        with IPFSDataLoader(client, batch_size=16, seed=1) as loader:
            assert loader.load_dataset(root)["success"]
            dataset = loader.to_tensorflow()
            assert isinstance(dataset, tf.data.Dataset)
            features_spec, labels_spec = dataset.element_spec
            assert features_spec.dtype == tf.float32 and features_spec.shape.as_list() == [None, 4]
            assert labels_spec.dtype == tf.int64 and labels_spec.shape.as_list() == [None]

            # one pass over the dataset = one complete loader epoch
            seen = sorted(float(v) for f, _ in dataset for v in f[:, 0].numpy())
            assert seen == sorted(np.float32(x[:, 0]).tolist())

            tf.keras.utils.set_random_seed(0)
            model = tf.keras.Sequential(
                [
                    tf.keras.Input(shape=(4,)),
                    tf.keras.layers.Dense(8, activation="relu"),
                    tf.keras.layers.Dense(2),
                ]
            )
            model.compile(
                optimizer=tf.keras.optimizers.Adam(0.05),
                loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
            )
            history = model.fit(dataset, epochs=8, verbose=0)
            losses = history.history["loss"]
            assert len(losses) == 8 and losses[-1] < losses[0]
            assert history.history["accuracy"][-1] >= 0.8
            perf = loader.get_performance_metrics()
            assert perf["epochs_completed"] == 9 and perf["samples_loaded"] == 9 * n


def test_to_tensorflow_dict_elements_without_feature_key():
    with IPFSDataLoader(batch_size=3, shuffle=False) as loader:
        loader.load_embedded_dataset([{"a": [i, i], "b": float(i)} for i in range(5)])
        dataset = loader.to_tensorflow()
        batches = list(dataset.as_numpy_iterator())
        assert [b["a"].shape for b in batches] == [(3, 2), (2, 2)]
        assert batches[0]["b"].dtype == np.float32 and batches[1]["b"].tolist() == [3.0, 4.0]

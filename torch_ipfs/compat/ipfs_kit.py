"""ipfs_kit's AI/ML names (``ipfs_kit_py.ipfs_kit``, ``.ai_ml_metrics``,
``.ai_ml_visualization``, ``.ai_ml_integration``) over torch_ipfs.

=========================  ===========================================================
ipfs_kit                   torch_ipfs
=========================  ===========================================================
``ipfs_kit(...)``          :class:`Kit`: ``kit.get_data_loader(...)`` on a client
``IPFSDataLoader``         :class:`torch_ipfs.loader.IPFSDataLoader` (the same class)
``AIMLMetricsCollector``   :class:`AIMLMetricsCollector`: the native collector plus the
                           ``track_*`` context managers of ipfs_kit's guides
``create_visualization``   :func:`torch_ipfs.report.create_visualization`
``ModelRegistry``          :class:`torch_ipfs.registry.ModelRegistry` (``store_model`` /
                           ``load_model``: safetensors, nothing unpickled)
=========================  ===========================================================

Not taken over: the pubsub master/worker ``DistributedTraining`` (multi-node training
is torchrun/DDP) and anything that pickles data from the network.
"""

from __future__ import annotations

from typing import Any

from torch_ipfs.loader import IPFSDataLoader, get_data_loader
from torch_ipfs.metrics import MetricsCollector, _Tracked
from torch_ipfs.registry import ModelRegistry
from torch_ipfs.report import Visualization, create_visualization

__all__ = [
    "AIMLMetricsCollector",
    "IPFSDataLoader",
    "Kit",
    "ModelRegistry",
    "Visualization",
    "create_visualization",
    "get_data_loader",
    "ipfs_kit",
]


class AIMLMetricsCollector(MetricsCollector):
    """ipfs_kit's collector: :class:`~torch_ipfs.metrics.MetricsCollector` (which has its
    ``start_operation`` / ``end_operation(op, metadata=...)`` / ``record_metric(name,
    value, metadata=...)`` / ``get_metrics`` / ``get_summary``) plus its context managers.

    Each ``track_*`` times its ``with`` body as one operation (failed if it raises) named
    ``<id>/<what>``, with the arguments as the event's metadata; the dict it yields is
    added to that metadata. Training metrics are recorded, as ipfs_kit's guide does, as
    ``record_metric("<model>/epoch/<n>/<name>", value)``; the visualisation plots them.
    """

    def track_training_epoch(self, model_id: str, epoch: int, num_samples: int | None = None) -> _Tracked:
        return self.track(f"{model_id}/train_epoch", model=model_id, epoch=epoch, num_samples=num_samples)

    def track_inference(self, model_id: str, batch_size: int | None = None) -> _Tracked:
        return self.track(f"{model_id}/inference", model=model_id, batch_size=batch_size)

    def track_dataset_load(self, dataset_id: str, format: str | None = None) -> _Tracked:  # noqa: A002
        return self.track(f"{dataset_id}/dataset_load", dataset=dataset_id, format=format)

    def track_model_load(self, model_id: str, framework: str | None = None) -> _Tracked:
        return self.track(f"{model_id}/model_load", model=model_id, framework=framework)


class Kit:
    """What ``ipfs_kit(...)`` gives an ML program: data loaders on one client.

    ``client``: a :class:`~torch_ipfs.client.Client` (default: the process's default
    client: the embedded store plus any ``TORCH_IPFS_API`` / ``TORCH_IPFS_GATEWAYS``).
    ipfs_kit's ``role``, ``metadata`` and other options are accepted and kept; they
    change nothing here (there are no master/worker roles).
    """

    def __init__(self, client: Any = None, **options: Any) -> None:
        self.client = client
        self.options = options

    def get_data_loader(
        self,
        batch_size: int = 32,
        shuffle: bool = True,
        prefetch: int = 2,
        metrics: MetricsCollector | None = None,
        **options: Any,
    ) -> IPFSDataLoader:
        return IPFSDataLoader(self.client, batch_size, shuffle, prefetch, metrics, **options)


def ipfs_kit(client: Any = None, **options: Any) -> Kit:
    """ipfs_kit's entry point (``kit = ipfs_kit(metadata={"enable_ai_ml": True})``)."""
    return Kit(client, **options)

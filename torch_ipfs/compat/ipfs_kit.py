"""ipfs_kit's AI/ML names (``ipfs_kit_py.ipfs_kit``, ``.ai_ml_metrics``,
``.ai_ml_visualization``, ``.ai_ml_integration``) over torch_ipfs.

=========================  ===========================================================
ipfs_kit                   torch_ipfs
=========================  ===========================================================
``ipfs_kit(...)``          :class:`Kit`: ``kit.get_data_loader(...)`` on a client;
                           ``kit.ipfs.dag_put`` / ``dag_get`` / ``pin_add`` / ``add`` /
                           ``cat`` as result dicts (:class:`KitIPFS`)
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

import json
from collections.abc import Callable
from typing import Any

from torch_ipfs.errors import IPFSError
from torch_ipfs.formats.base import ClientHandle
from torch_ipfs.loader import IPFSDataLoader, get_data_loader
from torch_ipfs.loader.reading import result_dict
from torch_ipfs.metrics import MetricsCollector, _Tracked
from torch_ipfs.registry import ModelRegistry
from torch_ipfs.report import Visualization, create_visualization

__all__ = [
    "AIMLMetricsCollector",
    "IPFSDataLoader",
    "Kit",
    "KitIPFS",
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


_ERRORS = (IPFSError, OSError, ValueError, TypeError)


def _result(operation: str, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """ipfs_kit's result dict of ``operation``: ``call()``'s fields, or the error."""
    try:
        return result_dict(operation, success=True, **call())
    except _ERRORS as e:
        return result_dict(operation, error=str(e), error_type=type(e).__name__)


class KitIPFS:
    """``kit.ipfs``: the content calls ipfs_kit's dataset guides make, as its result dicts.

    ``dag_put(obj)`` stores ``obj`` as a canonical JSON file (sorted keys, compact) and
    returns its CID: the CID ``ipfs add`` gives that file, which every torch_ipfs reader
    (and ``load_dataset``) takes. It is not ``ipfs dag put``'s dag-cbor CID: torch_ipfs
    datasets are UnixFS files. ``dag_get(cid)`` parses such a JSON file back.
    """

    def __init__(self, client: Any = None) -> None:
        self._handle = ClientHandle(client)

    @property
    def client(self) -> Any:
        return self._handle.get()

    def dag_put(self, obj: Any) -> dict[str, Any]:
        def put() -> dict[str, Any]:
            data = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
            return {"cid": str(self.client.add(data))}

        return _result("dag_put", put)

    def dag_get(self, cid: Any) -> dict[str, Any]:
        return _result("dag_get", lambda: {"cid": str(cid), "object": json.loads(self.client.cat(cid))})

    def pin_add(self, cid: Any) -> dict[str, Any]:
        def pin() -> dict[str, Any]:
            resolved = self.client.resolve(cid)
            self.client.store.pin(resolved)
            return {"cid": str(resolved), "pins": [str(resolved)]}

        return _result("pin_add", pin)

    def add(self, data: Any) -> dict[str, Any]:
        return _result("add", lambda: {"cid": str(self.client.add(data))})

    def cat(self, cid: Any) -> dict[str, Any]:
        return _result("cat", lambda: {"cid": str(cid), "data": self.client.cat(cid)})


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
        self.ipfs = KitIPFS(client)

    def get_data_loader(
        self,
        batch_size: int = 32,
        shuffle: bool = True,
        prefetch: int = 2,
        metrics: MetricsCollector | None = None,
        **options: Any,
    ) -> IPFSDataLoader:
        return get_data_loader(self.client, batch_size, shuffle, prefetch, metrics, **options)


def ipfs_kit(client: Any = None, **options: Any) -> Kit:
    """ipfs_kit's entry point (``kit = ipfs_kit(metadata={"enable_ai_ml": True})``)."""
    return Kit(client, **options)

"""torch_ipfs: PyTorch datasets over IPFS.

Everything public is listed in ``__all__``. Names are imported lazily on first use, so
``import torch_ipfs`` (and the ``torch-ipfs`` CLI) stays fast and does not load torch
until a dataset class is touched.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it
_EXPORTS: dict[str, str] = {
    # content layer
    "CID": "torch_ipfs.cid",
    "IPFSPath": "torch_ipfs.cid",
    "parse_address": "torch_ipfs.cid",
    "ImportOptions": "torch_ipfs.unixfs.importer",
    "UnixFSFile": "torch_ipfs.unixfs.reader",
    # sources
    "BlockSource": "torch_ipfs.sources.base",
    "BlockStore": "torch_ipfs.sources.base",
    "MemoryStore": "torch_ipfs.sources.base",
    "LocalStore": "torch_ipfs.sources.local",
    "CachedSource": "torch_ipfs.sources.cache",
    "KuboSource": "torch_ipfs.sources.kubo",
    "GatewaySource": "torch_ipfs.sources.gateway",
    "SourceChain": "torch_ipfs.sources.chain",
    "Client": "torch_ipfs.client",
    "default_client": "torch_ipfs.client",
    # module-level operations
    "add": "torch_ipfs.api",
    "cat": "torch_ipfs.api",
    "open": "torch_ipfs.api",
    "ls": "torch_ipfs.api",
    "stat": "torch_ipfs.api",
    "get": "torch_ipfs.api",
    "export_car": "torch_ipfs.api",
    "import_car": "torch_ipfs.api",
    # datasets
    "IPFSDataset": "torch_ipfs.datasets",
    "IPFSIterableDataset": "torch_ipfs.datasets",
    "IPFSObject": "torch_ipfs.datasets",
    "RemoteFileType": "torch_ipfs.datasets",
    "ShuffleDataset": "torch_ipfs.shuffle",
    "ShardedIterableDataset": "torch_ipfs.sharding",
    "ShardAwareSampler": "torch_ipfs.sampler",
    # exporter, and datasets composed by CID
    "export": "torch_ipfs.exporter",
    "concat": "torch_ipfs.compose",
    "subset": "torch_ipfs.compose",
    "mix": "torch_ipfs.compose",
    "import_from_ipfs": "torch_ipfs.exporter",
    "IPFSDatasetExporter": "torch_ipfs.exporter",
    # batch loader, metrics, model registry
    "IPFSDataLoader": "torch_ipfs.loader",
    "get_data_loader": "torch_ipfs.loader",
    "fetch_image": "torch_ipfs.loader",
    "process_text": "torch_ipfs.loader",
    "process_audio": "torch_ipfs.loader",
    "MetricsCollector": "torch_ipfs.metrics",
    "InstrumentedSource": "torch_ipfs.metrics",
    "ModelRegistry": "torch_ipfs.registry",
    # errors
    "IPFSError": "torch_ipfs.errors",
    "InvalidCIDError": "torch_ipfs.errors",
    "BlockNotFoundError": "torch_ipfs.errors",
    "IntegrityError": "torch_ipfs.errors",
    "FormatError": "torch_ipfs.errors",
    "ManifestError": "torch_ipfs.errors",
    "SourceError": "torch_ipfs.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'torch_ipfs' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


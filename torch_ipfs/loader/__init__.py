"""The batch loader API of ipfs_kit (``IPFSDataLoader``), working, plus framework adapters.

::

    loader = IPFSDataLoader(batch_size=32, shuffle=True, prefetch=2)
    result = loader.load_dataset("bafy...")          # {"success": True, "total_samples": ...}
    for epoch in range(3):
        for batch in loader:                          # a list of sample dicts
            ...
    loader.close()

What differs from ipfs_kit's implementation (the API is the same):

- every epoch is a fresh, complete pass over every sample, in a seeded order that
  changes per epoch (``seed``, ``epoch``); the consumer blocks on the prefetch queue,
  so a slow network makes batches late, never an epoch short;
- one background producer thread per epoch fills a queue of at most ``prefetch``
  batches, reading samples with ``fetch_workers`` threads (bounded window, in order);
- a sample that cannot be read is skipped with a logged warning (as ipfs_kit documents)
  and counted: ``get_performance_metrics()["skipped_samples"]``; ``on_error="raise"``
  raises instead. Skips make the last batch of an epoch shorter, never other batches;
- ``clear()`` and ``close()`` stop and join the producer (and its fetch threads);
- every layout torch_ipfs reads works (see :mod:`torch_ipfs.formats.detect`): CID-list,
  embedded, multimodal, sharded JSON (all shards), tar shards, zip, folders.

Samples are dicts: a JSON-object sample as it is; a sample of named fields (tar shards,
folders) as ``{field: decoded value}``; a CID-list entry that is not JSON as
``{<extension>: value}`` (``{"png": <PIL image>}``). Multimodal samples are the manifest's
entries as they are (``sample["image_cid"]``; fetch with :meth:`IPFSDataLoader.fetch_image`),
or with ``fetch_media=True`` the media fetched and decoded into ``sample["image"]``, ...

Features and labels for the framework adapters (:meth:`IPFSDataLoader.to_pytorch`,
:meth:`~IPFSDataLoader.to_tensorflow`) are the sample entries named by ``features=`` /
``labels=``, or by default the first present of :data:`FEATURE_KEYS` / :data:`LABEL_KEYS`.

The package, one job per module:

- :mod:`~torch_ipfs.loader.batching`: ``IPFSDataLoader`` (epochs, prefetch, split, metrics);
- :mod:`~torch_ipfs.loader.reading`: one sample as a dict (decode, retries, errors);
- :mod:`~torch_ipfs.loader.torch_adapter`, :mod:`~torch_ipfs.loader.tf_adapter`,
  :mod:`~torch_ipfs.loader.numpy_adapter`: the framework adapters (NumPy batches serve JAX);
- :mod:`~torch_ipfs.loader.media`: ``fetch_image`` / ``process_text`` / ``process_audio``.

torch is imported only by the adapter that needs it, so the loader and
:meth:`~IPFSDataLoader.to_tensorflow` work in an environment without torch.
"""

from __future__ import annotations

from torch_ipfs.loader.batching import IPFSDataLoader, get_data_loader
from torch_ipfs.loader.media import fetch_image, process_audio, process_text
from torch_ipfs.loader.numpy_adapter import NumpyBatches, stack_batch
from torch_ipfs.loader.reading import FEATURE_KEYS, LABEL_KEYS
from torch_ipfs.loader.tf_adapter import TF_INSTALL_HINT

__all__ = [
    "FEATURE_KEYS",
    "LABEL_KEYS",
    "TF_INSTALL_HINT",
    "IPFSDataLoader",
    "NumpyBatches",
    "SampleDataset",
    "fetch_image",
    "get_data_loader",
    "process_audio",
    "process_text",
    "stack_batch",
]


def __getattr__(name: str) -> object:
    # the PyTorch adapter's names, without importing its module (and torch) up front
    if name in ("SampleDataset", "EpochSampler", "collate_pairs"):
        from torch_ipfs.loader import torch_adapter

        return getattr(torch_adapter, name)
    raise AttributeError(f"module 'torch_ipfs.loader' has no attribute {name!r}")

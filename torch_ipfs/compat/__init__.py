"""The names of the systems torch_ipfs replaces, each a thin mapping onto the native API.

Programs written against those systems run with only their import lines changed:

=====================================  ====================================================
module                                 names (what they map to)
=====================================  ====================================================
:mod:`torch_ipfs.compat.ipfs_dataset`  ``IPFSObject``, ``RemoteFileType``, ``IPFSDataset``,
                                       ``IPFSIterableDataset`` (native datasets with
                                       ``items="files"`` and the positional
                                       ``(ipfs_objs, ipfs_api_address[, shuffle_urls])``),
                                       ``ShuffleDataset``, ``IPFSDatasetExporter``
:mod:`torch_ipfs.compat.ipfs_kit`      ``ipfs_kit`` (``kit.get_data_loader``),
                                       ``IPFSDataLoader``, ``AIMLMetricsCollector``,
                                       ``create_visualization``, ``ModelRegistry``
=====================================  ====================================================

docs/compat.md maps every documented call of those systems to torch_ipfs.
"""

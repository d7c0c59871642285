"""The ``ipfs-dataset`` package's names (``ipfs_dataset.types``, ``.ipfs_dataset``,
``.exporter``) over torch_ipfs.

Its datasets hand out ``(file_name, file_bytes)`` per file (a zip or tar member, a folder
file, a plain file), and its README subclasses decode those themselves; the classes here
are the native :class:`torch_ipfs.datasets.IPFSDataset` / ``IPFSIterableDataset`` with
``items="files"`` and that package's positional arguments. Everything else (verified
blocks, exactly-once splitting, ``on_error``, ``client=``) is the native behaviour.
"""

from __future__ import annotations

from typing import Any

from torch_ipfs import datasets
from torch_ipfs.exporter import IPFSDatasetExporter
from torch_ipfs.formats.detect import IPFSObject, RemoteFileType
from torch_ipfs.shuffle import ShuffleDataset

__all__ = [
    "IPFSDataset",
    "IPFSDatasetExporter",
    "IPFSIterableDataset",
    "IPFSObject",
    "RemoteFileType",
    "ShuffleDataset",
]


def _options(ipfs_api_address: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """``ipfs_api_address`` (a Kubo API multiaddr or URL) becomes the client's Kubo source;
    ``None`` keeps the default sources (embedded store, environment)."""
    options.setdefault("items", "files")
    if ipfs_api_address is not None and options.get("client") is None:
        from torch_ipfs.client import Client

        options["client"] = Client(api=ipfs_api_address)
    return options


class IPFSDataset(datasets.IPFSDataset):
    """``IPFSDataset(ipfs_objs, ipfs_api_address)``: ``ds[i]`` is ``(file_name, file_bytes)``.

    ``ipfs_objs`` is an :class:`IPFSObject`, a list of them, or any native root; keyword
    options are the native ones (``items="samples"`` decodes instead).
    """

    def __init__(self, ipfs_objs: Any, ipfs_api_address: str | None = None, **options: Any) -> None:
        super().__init__(ipfs_objs, **_options(ipfs_api_address, options))


class IPFSIterableDataset(datasets.IPFSIterableDataset):
    """``IPFSIterableDataset(ipfs_objs, ipfs_api_address, shuffle_urls)``: iterating gives
    ``(file_name, file_bytes)`` per file; ``shuffle_urls`` permutes the objects (the
    shards) per epoch, never the files inside them (wrap in :class:`ShuffleDataset`)."""

    def __init__(
        self, ipfs_objs: Any, ipfs_api_address: str | None = None, shuffle_urls: bool = False, **options: Any
    ) -> None:
        options.setdefault("shuffle", shuffle_urls)
        super().__init__(ipfs_objs, **_options(ipfs_api_address, options))

    # The README's subclasses wrap a second instance and never call this __init__: such
    # a wrapper has no length (TypeError lets list()/DataLoader go on without one), no
    # epoch and no resumable state of its own.

    def _initialised(self) -> bool:
        return "split" in self.__dict__

    def __len__(self) -> int:
        if not self._initialised():
            raise TypeError(f"{type(self).__name__} did not call IPFSIterableDataset.__init__: no length")
        return super().__len__()

    def set_epoch(self, epoch: int) -> None:
        if self._initialised():
            super().set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() if self._initialised() else {}

"""Module-level shortcuts over the process-wide :func:`~torch_ipfs.client.default_client`.

``torch_ipfs.add(path)``, ``torch_ipfs.cat(cid)`` and friends behave like the matching
``Client`` methods on a client built from the environment (embedded store, plus any
``TORCH_IPFS_API`` / ``TORCH_IPFS_GATEWAYS`` sources).
"""

from __future__ import annotations

import os
from typing import BinaryIO

from torch_ipfs.cid import CID, IPFSPath
from torch_ipfs.client import default_client

__all__ = ["add", "cat", "export_car", "get", "import_car", "ls", "open", "stat"]

Address = str | CID | IPFSPath


def add(
    target: str | os.PathLike[str] | bytes | BinaryIO, *, recursive: bool | None = None, **options: object
) -> CID:
    """Import a file, directory, bytes or stream into the embedded store and pin it; return
    the root CID (the CID ``ipfs add`` gives for the same input and options).

    ``recursive`` is ``ipfs add -r``: directories are added whole without it too, and
    ``recursive=False`` refuses a directory as Kubo does without ``-r``. ``options`` are
    :class:`~torch_ipfs.unixfs.importer.ImportOptions` fields and ``pin``/``only_hash``/``wrap``.
    """
    if recursive is False and isinstance(target, (str, os.PathLike)) and os.path.isdir(target):
        raise IsADirectoryError(
            f"{os.fspath(target)} is a directory: add it with recursive=True (ipfs add -r)"
        )
    return default_client().add(target, **options)


def cat(address: Address, offset: int = 0, length: int | None = None) -> bytes:
    """The verified bytes of a file, or of ``length`` bytes from ``offset``."""
    return default_client().cat(address, offset, length)


def open(address: Address) -> BinaryIO:  # noqa: A001 - mirrors the builtin on purpose
    """A seekable read-only file object; reads fetch only the blocks they need."""
    return default_client().open(address)


def ls(address: Address) -> list:
    """The entries of a UnixFS directory."""
    return default_client().ls(address)


def stat(address: Address):
    """Type, size and block count of a node."""
    return default_client().stat(address)


def get(address: Address, target: str | os.PathLike[str]) -> None:
    """Write a file or directory tree to disk, like ``ipfs get``."""
    default_client().get(address, target)


def export_car(address: Address, out: BinaryIO | str | os.PathLike[str]) -> int:
    """Write the DAG under ``address`` as a CARv1; return the bytes written."""
    return default_client().export_car(address, out)


def import_car(car: BinaryIO | str | os.PathLike[str] | bytes, *, pin: bool = True) -> list[CID]:
    """Import a CAR into the embedded store (every block verified); return its roots."""
    return default_client().import_car(car, pin=pin)

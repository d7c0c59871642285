"""A read-only fsspec filesystem for ``ipfs://`` URLs, every byte verified.

``fsspec.open("ipfs://<cid>/train/shard-000000.tar")`` (and pandas, Hugging Face
``datasets``, anything built on fsspec) reads through the same resolution order as the
rest of torch_ipfs (embedded store, cache, Kubo RPC, trustless gateways; see
:class:`~torch_ipfs.client.Client`). Unlike ``ipfsspec``, which trusts the gateway for
file bytes, each block is hashed against its CID before a byte of it is returned.

Paths are ``ipfs://CID/a/b``, ``/ipfs/CID/a/b`` or ``CID/a/b``; inside the filesystem
they are kept as ``CID/a/b`` (the CID exactly as given, so globs and listings line up).
The filesystem is registered under the ``ipfs`` protocol by the package's
``fsspec.specs`` entry point; without installation metadata (a source checkout on
``sys.path``) register it by hand::

    import fsspec
    fsspec.register_implementation("ipfs", "torch_ipfs.fs.IPFSFileSystem")

Everything here is immutable (a CID names fixed bytes), so directory listings are
cached for the life of the filesystem object without any invalidation question.
"""

from __future__ import annotations

import os
from typing import Any

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from torch_ipfs.cid import CID, DAG_PB, RAW, IPFSPath
from torch_ipfs.dagpb import DataType
from torch_ipfs.errors import NotADirectoryError, UnixFSFormatError  # noqa: A004 - ours subclasses the builtin

__all__ = ["IPFSFile", "IPFSFileSystem", "register_webdataset", "webdataset_gopen"]

#: Read-ahead window of files opened through fsspec: four default-size UnixFS chunks.
DEFAULT_BLOCK_SIZE = 1024 * 1024


def _describe(cid: CID, block: bytes) -> tuple[str, int, str]:
    """(fsspec type, size, UnixFS type) of a verified block: ``file`` with the file's
    length, ``directory`` with size 0, ``other`` for symlinks and non-UnixFS nodes."""
    from torch_ipfs.unixfs.walk import decode_file_node, is_directory_kind, is_file_kind, node_kind

    if cid.codec == RAW:
        return "file", len(block), "raw"
    if cid.codec != DAG_PB:
        return "other", len(block), cid.codec_name
    kind = node_kind(cid, block)
    if kind is None:
        raise UnixFSFormatError(f"{cid}: dag-pb node without UnixFS Data")
    if is_file_kind(kind):
        return "file", decode_file_node(cid, block).size, "file"
    if is_directory_kind(kind):
        return "directory", 0, "directory" if kind == DataType.Directory else "hamt-sharded-directory"
    return "other", 0, kind.name.lower()


class IPFSFileSystem(AbstractFileSystem):
    """Read-only access to UnixFS DAGs by CID, through torch_ipfs's verified sources.

    Args:
        home, api, gateways, cache_bytes: passed to :class:`~torch_ipfs.client.Client`
            (each defaults to its environment variable). With none given, the process-wide
            :func:`~torch_ipfs.client.default_client` is used.
        client: use this client instead (it is not pickled along with the filesystem;
            prefer the keyword options when the filesystem goes to DataLoader workers).

    Info dicts carry ``name``, ``size`` (file length; 0 for directories), ``type``
    (``file``/``directory``/``other``), ``cid`` and ``unixfs_type``.
    """

    protocol = "ipfs"
    root_marker = ""

    def __init__(
        self,
        *,
        home: str | os.PathLike[str] | None = None,
        api: str | None = None,
        gateways: list[str] | str | None = None,
        cache_bytes: int | None = None,
        client: Any = None,
        **storage_options: Any,
    ) -> None:
        super().__init__(**storage_options)
        self._client_options = {
            k: v
            for k, v in {"home": home, "api": api, "gateways": gateways, "cache_bytes": cache_bytes}.items()
            if v is not None
        }
        self._given_client = client
        self._own_client: tuple[int, Any] | None = None

    # -- the client and its sources ----------------------------------------------------

    @property
    def client(self):
        """The :class:`~torch_ipfs.client.Client` reads go through (re-created after a fork)."""
        if self._given_client is not None:
            return self._given_client
        from torch_ipfs.client import Client, default_client

        if not self._client_options:
            return default_client()
        pid = os.getpid()
        if self._own_client is None or self._own_client[0] != pid:
            self._own_client = (pid, Client(**self._client_options))
        return self._own_client[1]

    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        # the CID / IPFSPath objects add() and export() return are addresses too
        path = str(path if isinstance(path, (CID, IPFSPath)) else os.fspath(path)).strip()
        for prefix in ("ipfs://", "ipfs::", "/ipfs/"):
            if path.startswith(prefix):
                path = path[len(prefix):]
                break
        return path.strip("/")

    def unstrip_protocol(self, name: str) -> str:
        return name if name.startswith("ipfs://") else f"ipfs://{name}"

    def _resolve(self, path: str) -> CID:
        return self.client.resolve(self._strip_protocol(path))

    def _info_of(self, name: str, cid: CID, block: bytes) -> dict[str, Any]:
        kind, size, unixfs_type = _describe(cid, block)
        return {"name": name, "size": size, "type": kind, "cid": str(cid), "unixfs_type": unixfs_type}

    # -- the fsspec core -------------------------------------------------------------------

    def ls(self, path, detail: bool = True, **kwargs):
        """List a directory (a file lists as itself, as fsspec expects)."""
        path = self._strip_protocol(path)
        try:
            entries = self.dircache[path]
        except KeyError:
            entry = self._cached_entry(path)
            entries = [entry] if entry is not None and entry["type"] != "directory" else self._list(path)
        return entries if detail else [e["name"] for e in entries]

    def _cached_entry(self, path: str) -> dict[str, Any] | None:
        """The info of ``path`` from a cached listing of its parent (None if not cached);
        raises FileNotFoundError when the parent is cached and has no such entry."""
        if "/" not in path:
            return None
        try:
            listing = self.dircache[self._parent(path)]
        except KeyError:
            return None
        for entry in listing:
            if entry["name"] == path:
                return entry
        raise FileNotFoundError(f"ipfs://{path}: no such file or directory")

    def _list(self, path: str) -> list[dict[str, Any]]:
        from torch_ipfs.unixfs.reader import ls

        source = self.client.source
        cid = self._resolve(path)
        try:
            children = ls(source, cid, resolve_types=False)
        except NotADirectoryError:
            return [self._info_of(path, cid, source.get(cid))]
        # One batch for the children's root blocks: their types and file sizes.
        wanted = list(dict.fromkeys(entry.cid for entry in children))
        blocks = dict(source.get_many(wanted))
        entries = [self._info_of(f"{path}/{entry.name}", entry.cid, blocks[entry.cid]) for entry in children]
        self.dircache[path] = entries
        return entries

    def info(self, path, **kwargs) -> dict[str, Any]:
        """``name``, ``size``, ``type``, ``cid`` and ``unixfs_type`` of the node at ``path``."""
        path = self._strip_protocol(path)
        entry = self._cached_entry(path)  # a listing of the parent may already know
        if entry is not None:
            return entry
        cid = self._resolve(path)
        return self._info_of(path, cid, self.client.source.get(cid))

    def exists(self, path, **kwargs) -> bool:
        """False for a missing path or a CID no source has; other errors (a bad CID,
        bytes that fail verification) are raised, not hidden."""
        try:
            self.info(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        return True

    def ukey(self, path) -> str:
        """The CID: a key that changes exactly when the content does."""
        return str(self._resolve(path))

    def cat_file(self, path, start: int | None = None, end: int | None = None, **kwargs) -> bytes:
        """The bytes of a file, or of ``[start, end)`` (negative values count from the end,
        like slices); only the blocks covering the range are fetched."""
        from torch_ipfs.unixfs.reader import UnixFSFile

        f = UnixFSFile(self.client.source, self._resolve(path))
        lo = 0 if start is None else (max(0, f.size + start) if start < 0 else start)
        hi = f.size if end is None else (max(0, f.size + end) if end < 0 else min(end, f.size))
        return f.read_range(lo, max(0, hi - lo))

    def _open(
        self,
        path,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict | None = None,
        **kwargs,
    ) -> IPFSFile:
        if mode != "rb":
            raise NotImplementedError(
                f"ipfs:// is read-only (mode {mode!r}); add content with torch_ipfs.add or `torch-ipfs add`"
            )
        from torch_ipfs.unixfs.reader import UnixFSFile

        path = self._strip_protocol(path)
        file = UnixFSFile(self.client.source, self._resolve(path))
        return IPFSFile(
            self,
            path,
            file,
            block_size=block_size or DEFAULT_BLOCK_SIZE,
            cache_type=kwargs.pop("cache_type", "readahead"),
            cache_options=cache_options,
            **kwargs,
        )


class IPFSFile(AbstractBufferedFile):
    """A read-only fsspec file over a :class:`~torch_ipfs.unixfs.reader.UnixFSFile`:
    each cache miss is one verified ``read_range``."""

    def __init__(self, fs: IPFSFileSystem, path: str, file, **kwargs: Any) -> None:
        self.unixfs = file
        super().__init__(fs, path, mode="rb", size=file.size, **kwargs)

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self.unixfs.read_range(start, max(0, end - start))


def webdataset_gopen(url: str, mode: str = "rb", bufsize: int = 8192, **kwargs: Any):
    """A ``webdataset`` opener for ``ipfs://`` shard URLs (see :func:`register_webdataset`)."""
    if mode != "rb":
        raise NotImplementedError(f"ipfs:// is read-only (mode {mode!r})")
    return IPFSFileSystem().open(url, "rb")


def register_webdataset() -> None:
    """Let ``webdataset`` open ``ipfs://`` URLs through this filesystem.

    webdataset (1.x) does not go through fsspec: it opens shard URLs with its own
    ``gopen`` dispatch table (``pipe:``, ``http``, ...). This adds ``ipfs`` to it::

        torch_ipfs.fs.register_webdataset()
        ds = webdataset.WebDataset("ipfs://CID/shard-{000000..000009}.tar")
    """
    import importlib

    # ``webdataset.gopen`` the attribute is the function; the module is in sys.modules
    gopen_module = importlib.import_module("webdataset.gopen")
    gopen_module.gopen_schemes["ipfs"] = webdataset_gopen

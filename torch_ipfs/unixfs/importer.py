"""The UnixFS importer: files, byte strings, folders and in-memory trees into DAGs whose
CIDs are the ones Kubo's ``ipfs add`` prints.

Entry points (boxo's ``importer.go`` role): :func:`import_file`, :func:`import_bytes`,
:func:`import_path` (``ipfs add [-r] [-w]``) and :func:`import_tree` (a directory DAG
from in-memory paths). The layout policy lives in :mod:`.builder`, chunking in
:mod:`.chunker`, HAMT sharding in :mod:`.hamt`. How each choice mirrors Kubo is written
down in ``docs/importer.md``.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import BinaryIO

from torch_ipfs import multihash
from torch_ipfs.cid import CID
from torch_ipfs.dagpb import PBLink
from torch_ipfs.errors import IPFSError
from torch_ipfs.sources.base import BlockStore
from torch_ipfs.unixfs import hamt
from torch_ipfs.unixfs.builder import Built, DagWriter, balanced_layout
from torch_ipfs.unixfs.chunker import DEFAULT_CHUNKER, get_chunker

__all__ = [
    "AddedEntry",
    "ImportOptions",
    "UnsupportedFileError",
    "import_bytes",
    "import_directory_entries",
    "import_file",
    "import_path",
    "import_tree",
]

TreeEntry = bytes | bytearray | memoryview | BinaryIO | None


class UnsupportedFileError(IPFSError, ValueError):
    """A path that UnixFS cannot represent (a FIFO, socket or device), or a bad tree path."""


@dataclass(frozen=True)
class ImportOptions:
    """How to build DAGs. The defaults are Kubo's ``ipfs add`` defaults (CIDv0).

    - ``cid_version``: 0 (Kubo's default) or 1.
    - ``raw_leaves``: store file chunks as raw blocks. ``None`` = Kubo's rule: on for
      CIDv1, off for CIDv0.
    - ``chunker``: a chunker spec string (``"size-262144"``, ``"size-N"``).
    - ``max_links``: children per file node in the balanced layout (174).
    - ``hidden``: include names starting with ``.`` when importing a folder.
    - ``hamt_threshold``: shard a directory when its estimated size (sum of name length
      + binary CID length over its entries) is over this many bytes; 0 disables sharding.
    - ``hamt_threshold_inclusive``: ``True`` shards at ``>=`` (Kubo before 0.40, e.g. the
      v0.22 oracle); ``False`` at ``>`` (Kubo 0.40 and later).
    - ``hash``: multihash function name (``"sha2-256"``; others need CIDv1).
    """

    cid_version: int = 0
    raw_leaves: bool | None = None
    chunker: str = DEFAULT_CHUNKER
    max_links: int = 174
    hidden: bool = False
    hamt_threshold: int = 262144
    hamt_threshold_inclusive: bool = False
    hash: str = "sha2-256"

    def __post_init__(self) -> None:
        if self.cid_version not in (0, 1):
            raise ValueError(f"cid_version must be 0 or 1, got {self.cid_version!r}")
        if self.max_links < 2:
            raise ValueError(f"max_links must be at least 2, got {self.max_links}")
        if self.hamt_threshold < 0:
            raise ValueError(f"hamt_threshold must be >= 0, got {self.hamt_threshold}")
        get_chunker(self.chunker)  # validate the spec early, with the list of valid ones
        self.hash_code  # noqa: B018 - validates the hash name

    @property
    def use_raw_leaves(self) -> bool:
        """Whether file chunks become raw blocks (Kubo: ``--raw-leaves`` or CIDv1)."""
        return self.cid_version == 1 if self.raw_leaves is None else self.raw_leaves

    @property
    def hash_code(self) -> int:
        names = multihash.hash_names()
        try:
            return names[self.hash]
        except KeyError:
            raise ValueError(f"unknown hash {self.hash!r}; valid: {', '.join(sorted(names))}") from None

    def writer(self, store: BlockStore) -> DagWriter:
        """A :class:`DagWriter` for ``store`` with these CID choices."""
        return DagWriter(
            store, cid_version=self.cid_version, raw_leaves=self.use_raw_leaves, hash_code=self.hash_code
        )

    def shards(self, estimated_size: int) -> bool:
        """Whether a directory of this estimated size is HAMT-sharded."""
        if self.hamt_threshold <= 0:
            return False
        if self.hamt_threshold_inclusive:
            return estimated_size >= self.hamt_threshold
        return estimated_size > self.hamt_threshold


@dataclass(frozen=True)
class AddedEntry:
    """One line of ``ipfs add`` output: ``name`` (relative, ``dir/sub/file``), ``cid`` and
    ``size`` (the cumulative DAG size, Kubo's JSON ``Size``)."""

    name: str
    cid: CID
    size: int
    #: File bytes for a file, ``None`` for directories and symlinks.
    filesize: int | None = None
    is_dir: bool = False


_DEFAULT = ImportOptions()


# -- files ----------------------------------------------------------------------------------


def _file_node(stream: BinaryIO, writer: DagWriter, options: ImportOptions) -> Built:
    return balanced_layout(get_chunker(options.chunker).chunks(stream), writer, options.max_links)


def import_file(
    stream: BinaryIO, store: BlockStore, options: ImportOptions = _DEFAULT, *, name: str = ""
) -> AddedEntry:
    """Import a binary stream as one UnixFS file, reading it chunk by chunk.

    Memory stays bounded by about two chunks plus ``depth * max_links`` small link
    records, whatever the stream's length.
    """
    built = _file_node(stream, options.writer(store), options)
    return AddedEntry(name, built.cid, built.tsize, built.filesize)


def import_bytes(
    data: bytes | bytearray | memoryview,
    store: BlockStore,
    options: ImportOptions = _DEFAULT,
    *,
    name: str = "",
) -> AddedEntry:
    """Import ``data`` as one UnixFS file."""
    return import_file(io.BytesIO(data), store, options, name=name)


# -- folders on disk ------------------------------------------------------------------------


def import_path(
    path: str | os.PathLike[str], store: BlockStore, options: ImportOptions = _DEFAULT, *, wrap: bool = False
) -> Iterator[AddedEntry]:
    """Import a file or folder like ``ipfs add -r [-w] PATH``, yielding what it prints.

    Files are yielded as they are added (depth first, names sorted bytewise), then the
    directories after all files, children before parents, as Kubo does; names are
    relative (``top/sub/file``). The last entry is the root (with ``wrap=True`` a
    wrapping directory named ``""``). Hidden names are skipped unless
    ``options.hidden``; symlinks become UnixFS symlinks (never followed).
    """
    path = os.fspath(path)
    top = os.path.basename(os.path.normpath(path))
    writer = options.writer(store)
    dirs: list[AddedEntry] = []
    built = yield from _import_any(path, top, writer, options, dirs)
    yield from dirs
    if wrap:
        root = _directory(writer, options, [(top, built)])
        yield AddedEntry("", root.cid, root.tsize, None, True)


def _import_any(
    path: str, name: str, writer: DagWriter, options: ImportOptions, dirs: list[AddedEntry]
) -> Generator[AddedEntry, None, Built]:
    """Import one path; yields file entries, appends directory entries to ``dirs`` in
    post-order, returns the node built (a generator's return value)."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        built = writer.symlink(os.readlink(path))
        yield AddedEntry(name, built.cid, built.tsize)
        return built
    if stat.S_ISREG(st.st_mode):
        with open(path, "rb", buffering=0) as f:
            built = _file_node(f, writer, options)  # type: ignore[arg-type]
        yield AddedEntry(name, built.cid, built.tsize, built.filesize)
        return built
    if stat.S_ISDIR(st.st_mode):
        with os.scandir(path) as it:
            names = [e.name for e in it if options.hidden or not e.name.startswith(".")]
        names.sort(key=os.fsencode)  # Go's os.ReadDir order: bytewise
        children = []
        for child in names:
            child_path = os.path.join(path, child)
            child_built = yield from _import_any(child_path, f"{name}/{child}", writer, options, dirs)
            children.append((child, child_built))
        built = _directory(writer, options, children)
        dirs.append(AddedEntry(name, built.cid, built.tsize, None, True))
        return built
    kind = stat.filemode(st.st_mode)
    raise UnsupportedFileError(f"{path}: UnixFS cannot hold this kind of file (mode {kind})")


def _directory(writer: DagWriter, options: ImportOptions, children: list[tuple[str, Built]]) -> Built:
    """A directory node: plain, or HAMT-sharded when its estimated size calls for it."""
    estimate = sum(len(os.fsencode(name)) + len(child.cid.to_bytes()) for name, child in children)
    if not options.shards(estimate):
        return writer.directory(children)

    def store_node(links: list[PBLink], data: bytes) -> tuple[CID, int]:
        built = writer.put_node(links, data)
        return built.cid, built.tsize

    cid, tsize = hamt.build_shard([(n, c.cid, c.tsize) for n, c in children], store_node)
    return Built(cid, tsize)


# -- in-memory trees ------------------------------------------------------------------------


def import_tree(
    entries: Mapping[str, TreeEntry], store: BlockStore, options: ImportOptions = _DEFAULT
) -> CID:
    """Build a directory DAG from in-memory paths and return its root CID.

    ``entries`` maps relative paths (``"a/b.txt"``) to file contents (bytes or a binary
    stream) or ``None`` for an (empty) directory; parent directories are implied. Every
    entry given is included (``options.hidden`` only filters folders read from disk).
    The result equals ``ipfs add -r --hidden`` of the same tree on disk.
    """
    root: dict[str, object] = {}
    for raw_path, content in entries.items():
        parts = _split_tree_path(raw_path)
        node = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            existing = node.get(part)
            if last and content is not None:
                if existing is not None:
                    raise UnsupportedFileError(f"tree path {raw_path!r} given twice")
                node[part] = content
            else:
                if existing is None:
                    existing = node[part] = {}
                elif not isinstance(existing, dict):
                    raise UnsupportedFileError(f"tree path {raw_path!r} runs through the file {part!r}")
                node = existing
    return _build_tree(root, options.writer(store), options).cid


#: The name the exporter and earlier notes use for :func:`import_tree`.
import_directory_entries = import_tree


def _split_tree_path(path: str) -> list[str]:
    parts = [p for p in path.replace("\\", "/").split("/") if p]
    if not parts or any(p in (".", "..") for p in parts) or path.startswith("/"):
        raise UnsupportedFileError(f"bad tree path {path!r}: use relative paths without '.' or '..'")
    return parts


def _build_tree(node: dict[str, object], writer: DagWriter, options: ImportOptions) -> Built:
    children = []
    for name, value in node.items():
        if isinstance(value, dict):
            built = _build_tree(value, writer, options)
        elif isinstance(value, (bytes, bytearray, memoryview)):
            built = _file_node(io.BytesIO(value), writer, options)
        else:
            built = _file_node(value, writer, options)  # type: ignore[arg-type]
        children.append((name, built))
    return _directory(writer, options, children)

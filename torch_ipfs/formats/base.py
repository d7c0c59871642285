"""What every dataset layout is: samples in shards, read by index or by span.

A :class:`Layout` knows where the samples of one dataset live and hands them out as
:class:`RawSample` objects (named fields of undecoded bytes, or of JSON values for the
JSON layouts). Decoding and transforms happen above it, in :mod:`torch_ipfs.datasets`.

Two ways in, one for each kind of dataset:

- map-style: :meth:`Layout.read_sample` reads one sample, fetching only its bytes;
- iterable: :meth:`Layout.iter_span` streams samples ``[start, stop)`` of one shard.

A subclass implements :meth:`Layout.shard_sizes` and at least one of the two readers;
the base class derives the other. Layouts are picklable (for DataLoader workers started
with ``spawn``) and fork-safe: they hold a :class:`ClientHandle`, never an open client
of another process, and drop their cached file objects when pickled.
"""

from __future__ import annotations

import abc
import bisect
import os
import re
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from torch_ipfs import config
from torch_ipfs.cid import CID, IPFSPath
from torch_ipfs.errors import ManifestError, SampleTooLargeError

__all__ = [
    "ClientHandle",
    "Layout",
    "ListLayout",
    "RawSample",
    "SampleSchema",
    "check_member_name",
    "check_sample_size",
    "child",
    "extension_of",
    "json_sample",
    "sniff_extension",
    "split_key",
]


@dataclass
class RawSample:
    """One sample before decoding.

    ``fields`` maps field names (WebDataset style: the part of the file name after the
    key, e.g. ``"png"``, ``"seg.png"``) to bytes, or to JSON values for JSON layouts.
    ``structure`` overrides the layout's :attr:`SampleSchema.structure` for this sample
    (the CID-list layout mixes JSON objects and raw files); ``keys`` renames fields in
    dict samples (``"mask.png"`` -> ``"mask"``), on top of the schema's ``keys``.
    """

    key: str
    fields: dict[str, Any]
    structure: str | None = None
    keys: dict[str, str] = field(default_factory=dict)


@dataclass
class SampleSchema:
    """How decoded fields become the sample a user gets.

    - ``structure``: ``"tuple"`` (fields in ``types`` order, e.g. ``(image, target)``),
      ``"single"`` (the one field's value), ``"dict"`` (field -> value).
    - ``types``: field -> declared type (``image``, ``int``, ``tensor``, ``ndarray``,
      ``audio``, ``text``, ``json``, ``bytes``); guides decoding, overrides the extension.
    - ``keys``: for dicts, field -> the key the user's sample had (``"label.cls"`` -> ``"label"``).
    - ``label_field``: the field ``target_transform`` applies to.
    - ``classes``: class names (torchvision's ``classes``), when known.
    - ``with_key``: dict samples carry ``"__key__"`` (as WebDataset does) — on for foreign
      archives, off for datasets written by :mod:`torch_ipfs.export` (they round-trip exactly).
    """

    structure: str = "dict"
    types: dict[str, str] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    label_field: str | None = None
    classes: list[str] | None = None
    with_key: bool = True


# -- names inside archives -----------------------------------------------------------------

_DRIVE = re.compile(r"^[A-Za-z]:")


def check_member_name(name: str, where: str) -> str:
    """Return ``name`` normalised (no leading ``./``); refuse names that could escape a
    directory if extracted: absolute paths, ``..`` components, drive letters, NULs."""
    if not name or "\x00" in name:
        raise ManifestError(f"{where}: empty or NUL-containing member name {name!r}")
    unified = name.replace("\\", "/")
    if unified.startswith("/") or _DRIVE.match(unified):
        raise ManifestError(f"{where}: refusing absolute member name {name!r}")
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ManifestError(f"{where}: refusing path traversal in member name {name!r}")
    if not parts:
        raise ManifestError(f"{where}: member name {name!r} names no file")
    return "/".join(parts)


def split_key(name: str) -> tuple[str, str] | None:
    """WebDataset's rule: the key is the path up to the first dot of the basename, the
    field is the rest (``"a/b.seg.png"`` -> ``("a/b", "seg.png")``); ``None`` when the
    basename has no dot (such files belong to no sample)."""
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot <= slash + 1 or dot == len(name) - 1:
        return None
    return name[:dot], name[dot + 1 :]


# -- the per-sample byte limit ---------------------------------------------------------------


def check_sample_size(size: int, what: str, limit: int | None = None) -> None:
    """Raise :class:`~torch_ipfs.errors.SampleTooLargeError` if a sample of ``size``
    bytes (declared, or read so far) is over ``limit`` (default:
    :func:`torch_ipfs.config.max_sample_bytes`: 256 MiB, or
    ``$TORCH_IPFS_MAX_SAMPLE_BYTES``). Every layout calls it with the declared size
    before reading a sample, and streaming reads as bytes arrive, so a hostile "file"
    of 2^50 bytes costs nothing."""
    if limit is None:
        limit = config.max_sample_bytes()
    if size > limit:
        raise SampleTooLargeError(what, size, limit)


def bounded_chunks(chunks: Iterator[bytes], declared: int, what: str) -> Iterator[bytes]:
    """``chunks`` checked against the limit before the first and as they arrive."""
    limit = config.max_sample_bytes()
    check_sample_size(declared, what, limit)
    total = 0
    for chunk in chunks:
        total += len(chunk)
        check_sample_size(total, what, limit)
        yield chunk


# -- clients across processes --------------------------------------------------------------


class ClientHandle:
    """The client a layout reads through, valid in whichever process uses it.

    ``None`` means :func:`torch_ipfs.client.default_client` (itself re-created after a
    fork); a given :class:`~torch_ipfs.client.Client` knows how to cross a fork
    (:meth:`~torch_ipfs.client.Client.for_this_process`) and a pickle by itself.
    """

    def __init__(self, client: Any = None) -> None:
        self._given = client

    def get(self) -> Any:
        if self._given is None:
            from torch_ipfs.client import default_client

            return default_client()
        return self._given.for_this_process()


# -- layouts -------------------------------------------------------------------------------


class Layout(abc.ABC):
    """Samples of one dataset, grouped in shards (tar files, zip archives, JSON shards,
    or fixed-size runs of a list). Subclasses set :attr:`name` and :attr:`schema`."""

    #: The layout's name, as :func:`torch_ipfs.formats.detect.open_layout` accepts it.
    name: str = "layout"
    #: Shard size used by list-like layouts that have no shards of their own, so the
    #: iterable splitter can still hand different runs to different workers.
    virtual_shard_size = 1024

    def __init__(self, client: ClientHandle, where: str) -> None:
        self.client_handle = client
        #: the address this layout was opened from (for messages and ``repr``)
        self.where = where
        self.schema = SampleSchema()
        self._files: OrderedDict[tuple[int, str, str | None], Any] = OrderedDict()
        self._starts: list[int] | None = None
        self._total = 0

    # -- what subclasses provide ----------------------------------------------------------

    @abc.abstractmethod
    def shard_sizes(self) -> list[int]:
        """Number of samples in each shard, in order."""

    def read_sample(self, index: int) -> RawSample:
        """Sample ``index`` (0-based over the whole dataset), reading only its bytes."""
        shard, offset = self.locate(index)
        for sample in self.iter_span(shard, offset, offset + 1):
            return sample
        raise ManifestError(f"{self.where}: shard {shard} ended before its sample {offset}")

    def iter_span(self, shard: int, start: int, stop: int) -> Iterator[RawSample]:
        """Samples ``start .. stop-1`` of shard ``shard``, in order, streaming."""
        base = self.shard_starts()[shard]
        for offset in range(start, stop):
            yield self.read_sample(base + offset)

    def iter_span_values(
        self, shard: int, start: int, stop: int, fields: tuple[str, ...] | None
    ) -> Iterator[RawSample | tuple[Any, ...]]:
        """:meth:`iter_span`, except that a layout may hand a sample whose field names
        are exactly ``fields`` as the tuple of those fields' undecoded values, in that
        order (the sharded-tar layout slices them out of its chunks). Default: the
        :class:`RawSample` s of :meth:`iter_span`."""
        return iter(self.iter_span(shard, start, stop))

    def prefetch_span(self, shard: int, start: int, stop: int) -> Future[int] | None:
        """Have the client fetch the bytes of samples ``start .. stop-1`` of ``shard``
        into its cache in the background (:meth:`~torch_ipfs.client.Client.prefetch`), so
        a streaming reader finds them there; the future of that job, or None. Layouts
        whose shards are byte ranges of files implement it; the default does nothing."""
        return None

    # -- derived -------------------------------------------------------------------------

    def __len__(self) -> int:
        self.shard_starts()
        return self._total

    def shard_starts(self) -> list[int]:
        """Global index of each shard's first sample (computed once: every read uses it)."""
        if self._starts is None:
            starts, total = [], 0
            for size in self.shard_sizes():
                starts.append(total)
                total += size
            self._starts, self._total = starts, total
        return self._starts

    def locate(self, index: int) -> tuple[int, int]:
        """``(shard, offset in shard)`` of global sample ``index`` (negative counts from the end)."""
        starts = self.shard_starts()
        index = self._check_index(index, self._total)
        # bisect_right lands on the last shard starting at or before index: never an empty one
        shard = bisect.bisect_right(starts, index) - 1
        return shard, index - starts[shard]

    @staticmethod
    def _check_index(index: int, n: int) -> int:
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"sample index {index} out of range for {n} samples")
        return index

    def describe(self) -> list[str]:
        """Lines for the dataset's ``repr``."""
        return [f"Layout: {self.name}", f"Root: {self.where}"]

    # -- content access ------------------------------------------------------------------

    @property
    def client(self) -> Any:
        return self.client_handle.get()

    def file(self, ref: IPFSPath | CID | str) -> Any:
        """A cached :class:`~torch_ipfs.unixfs.reader.UnixFSFile` (per process, a few at once)."""
        path = ref if isinstance(ref, IPFSPath) else IPFSPath(CID.decode(ref))
        key = (os.getpid(), str(path), path.gateway)  # paths are resolved once per process
        f = self._files.get(key)
        if f is None:
            if path.path:
                path = IPFSPath(self.client.resolve(path), "", path.gateway)
            f = self.client.file(path)
            self._files[key] = f
            while len(self._files) > 8:
                self._files.popitem(last=False)
        else:
            self._files.move_to_end(key)
        return f

    def cat(self, ref: IPFSPath | CID | str) -> bytes:
        """A whole (small) file: a sample, or a manifest or JSON shard holding samples;
        one over the per-sample byte limit is a
        :class:`~torch_ipfs.errors.SampleTooLargeError` before any of it is fetched
        (:func:`check_sample_size`)."""
        f = self.file(ref)
        check_sample_size(f.size, f"{self.where}: {ref}")
        return f.read_range(0, f.size)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_files"] = OrderedDict()  # file objects hold sources of this process
        return state


def child(ref: IPFSPath, cid: CID) -> IPFSPath:
    """A CID found under ``ref``, fetched from the same gateway if ``ref`` came from one."""
    return IPFSPath(cid, "", ref.gateway)


class ListLayout(Layout):
    """A layout whose samples are a list with random access (JSON lists, files of a
    folder): shards are runs of :attr:`Layout.virtual_shard_size` samples, so workers and
    ranks can still be handed different runs. Subclasses implement :meth:`count` and
    :meth:`read_item`."""

    @abc.abstractmethod
    def count(self) -> int:
        """Number of samples."""

    @abc.abstractmethod
    def read_item(self, i: int) -> RawSample:
        """Sample ``i`` of the list, ``0 <= i < count()`` (already checked)."""

    def read_sample(self, index: int) -> RawSample:
        return self.read_item(self._check_index(index, self.count()))

    def shard_sizes(self) -> list[int]:
        n, size = self.count(), self.virtual_shard_size
        return [min(size, n - start) for start in range(0, n, size)] or [0]

    def __len__(self) -> int:
        return self.count()


def json_sample(value: Any, key: str) -> RawSample:
    """A sample given as JSON: an object becomes a dict sample (its keys are the fields),
    anything else a single value."""
    if isinstance(value, dict):
        return RawSample(key, dict(value), "dict")
    return RawSample(key, {"json": value}, "single")


_MAGIC: list[tuple[int, bytes, str]] = [
    (0, b"\x89PNG\r\n\x1a\n", "png"),
    (0, b"\xff\xd8\xff", "jpg"),
    (0, b"GIF8", "gif"),
    (0, b"BM", "bmp"),
    (8, b"WEBP", "webp"),
    (8, b"WAVE", "wav"),
    (0, b"fLaC", "flac"),
    (0, b"OggS", "ogg"),
    (0, b"\x93NUMPY", "npy"),
    (0, b"ID3", "mp3"),
]


def sniff_extension(data: bytes, default: str = "bin") -> str:
    """A field extension for bytes that came without a name, from their magic number."""
    for offset, magic, ext in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            return ext
    return default


def extension_of(name: str) -> str | None:
    """The extension of a file name (``"a/b.tar.gz"`` -> ``"gz"``), lowercase, or None."""
    base = name.rsplit("/", 1)[-1]
    if "." not in base.strip("."):
        return None
    return base.rsplit(".", 1)[-1].lower()

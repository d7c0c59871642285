"""Which layout a dataset root is in, and the compatibility inputs of ``ipfs-dataset``.

A root (``"ipfs://<cid>"``, a CID, ``/ipfs/...`` or a gateway URL) is looked at once:

- a directory with ``manifest.json``: the manifest says (``format`` for tar shards, else
  its shape: ``data`` -> embedded, ``shards`` + ``samples_per_shard`` -> sharded JSON,
  ``samples`` of objects with ``*_cid`` -> multimodal, ``samples`` of CIDs -> CID list);
- a directory with ``metadata.txt``: a folder of sample files;
- a directory of ``.tar`` files (foreign WebDataset shards) or of ``.zip`` archives;
- a file: a JSON manifest (by shape, as above), a tar or a zip archive (by magic number).

Anything else raises :class:`ManifestError` saying what was looked for. ``layout=``
skips detection (``"tarshards"``, ``"zip"``, ``"folder"``, ``"plain"``, ``"cidlist"``,
``"embedded"``, ``"multimodal"``, ``"shardedjson"``).

The earlier ``ipfs-dataset`` package took lists of ``IPFSObject(url, RemoteFileType.X)``;
those work too, one layout per object, concatenated.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch_ipfs.cid import CID, DAG_PB, IPFSPath, parse_address
from torch_ipfs.errors import InvalidCIDError, ManifestError
from torch_ipfs.formats.base import ClientHandle, Layout, RawSample, SampleSchema, child, extension_of
from torch_ipfs.formats.manifest import MAX_MANIFEST_BYTES, load_json

if TYPE_CHECKING:
    from torch_ipfs.carverify import Scope

__all__ = ["LAYOUTS", "ConcatLayout", "IPFSObject", "RemoteFileType", "open_layout"]

MANIFEST = "manifest.json"
METADATA = "metadata.txt"
#: Bytes of the index directory an open over a gateway fetches in its first round trip
#: (the first shards' indexes, for the workers that start right after).
WARM_INDEX_BYTES = 4 * 1024 * 1024
LAYOUTS = ("tarshards", "zip", "folder", "plain", "cidlist", "embedded", "multimodal", "shardedjson")


class RemoteFileType(enum.Enum):
    """What an :class:`IPFSObject` points at (the ``ipfs-dataset`` package's names)."""

    TAR = "tar"
    ZIP = "zip"
    FOLDER = "folder"
    PLAIN = "plain"
    PLAIN_STREAM = "plain_stream"


@dataclass(frozen=True)
class IPFSObject:
    """One input of a dataset: an address (string or :class:`~torch_ipfs.cid.CID`) and
    what kind of object it is (``filetype``, the ``ipfs-dataset`` package's attribute)."""

    url: str | CID | IPFSPath
    filetype: RemoteFileType = RemoteFileType.PLAIN

    def __post_init__(self) -> None:
        if not isinstance(self.filetype, RemoteFileType):
            valid = ", ".join(t.name for t in RemoteFileType)
            raise ValueError(f"IPFSObject type must be a RemoteFileType ({valid}), got {self.filetype!r}")

    @property
    def type(self) -> RemoteFileType:
        """The same as :attr:`filetype`."""
        return self.filetype


# -- entry point ---------------------------------------------------------------------------


def open_layout(root: Any, client: ClientHandle, *, layout: str | None = None) -> Layout:
    """The :class:`Layout` of ``root`` (an address, an :class:`IPFSObject`, or a list of them)."""
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    if isinstance(root, IPFSObject):
        return _open_object(root, client)
    if isinstance(root, (list, tuple)):
        if not root:
            raise ValueError("an empty list of dataset inputs")
        parts = [open_layout(r, client, layout=layout) for r in root]
        return parts[0] if len(parts) == 1 else ConcatLayout(client, parts)
    if not isinstance(root, (str, CID, IPFSPath)):
        raise TypeError(f"a dataset root is an address string, CID or IPFSObject, not {type(root).__name__}")
    address = _parse_root(root)
    return _Detector(client, address).open(layout)


def _parse_root(root: str | CID | IPFSPath) -> IPFSPath:
    """``parse_address``, with the fix named when the root is a local path."""
    if isinstance(root, str) and _looks_local(root):
        raise InvalidCIDError(
            root,
            "this is a local path, not an IPFS address: import it first with "
            f"`torch-ipfs add -r {root}` (or torch_ipfs.add(path)), or export a torchvision "
            "dataset with torch_ipfs.export(dataset), then pass the CID it prints "
            "as 'ipfs://<cid>'",
        )
    return parse_address(root)


def _looks_local(text: str) -> bool:
    text = text.strip()
    if not text or text.startswith(("ipfs://", "/ipfs/", "http://", "https://", "ipns://", "/ipns/")):
        return False
    return text.startswith(("./", "../", "~", "/", ".")) or os.path.exists(text)


def _open_object(obj: IPFSObject, client: ClientHandle) -> Layout:
    kind = {
        RemoteFileType.TAR: "tarshards",
        RemoteFileType.ZIP: "zip",
        RemoteFileType.FOLDER: "folder",
        RemoteFileType.PLAIN: "plain",
        RemoteFileType.PLAIN_STREAM: "plain",
    }[obj.filetype]
    detector = _Detector(client, _parse_root(obj.url))
    if obj.filetype is RemoteFileType.PLAIN_STREAM:
        return detector.plain(streaming=True)
    return detector.open(kind)


def _check_manifest_size(size: int, where: str) -> None:
    if size > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{where}: manifest is {size} bytes, over {MAX_MANIFEST_BYTES}")


class _Detector:
    def __init__(self, client: ClientHandle, address: IPFSPath) -> None:
        self.client = client
        self.address = address
        self.where = str(address) if not address.gateway else f"{address.gateway}{address}"
        self.root = IPFSPath(client.get().resolve(address), "", address.gateway)

    def _stat_type(self) -> str:
        return self.client.get().stat(self.root).type

    def _entries(self, *, types: bool = True) -> dict[str, Any]:
        return {e.name: e for e in self.client.get().ls(self.root, resolve_types=types)}

    def _warm_manifest(self) -> None:
        """Over a gateway, fetch ``manifest.json`` and a v2 root's shard table with one
        CAR request each, all at once (each also carries the root directory's block):
        detection and the layout's open then read them from the verified cache, one
        round trip in all instead of one per block. In the same round trip goes the index
        directory (its first :data:`WARM_INDEX_BYTES`), by the exporter's name: the first
        shards' indexes, which the open's warm-up would otherwise fetch in a second round
        trip that a DataLoader's fork waits for. A root that has none of these costs those
        parallel requests (each answered 404), nothing else. The manifest's and the
        table's bytes are capped like a manifest's."""
        # imported here: tarshards pulls in numpy, which the CLI's start-up must not
        from torch_ipfs.formats.tarshards import INDEX_DIR, TABLE_NAME

        more: list[tuple[str, Scope, int | None]] = [(INDEX_DIR, "all", WARM_INDEX_BYTES)]
        paths = [MANIFEST, TABLE_NAME]
        self.client.get().warm_paths(self.root.cid, paths, max_bytes=MAX_MANIFEST_BYTES, more=more)

    def _cat(self, ref: IPFSPath) -> bytes:
        f = self.client.get().file(ref)
        _check_manifest_size(f.size, str(ref))  # before a byte of a hostile 2^50-byte "manifest"
        return f.read_range(0, f.size)

    def open(self, layout: str | None) -> Layout:
        wants_manifest = layout in (None, "tarshards", "cidlist", "embedded", "multimodal", "shardedjson")
        if wants_manifest and not self.root.gateway and self.root.cid.codec == DAG_PB:
            self._warm_manifest()  # (a pasted gateway URL is read from that host, uncached)
        is_dir = self._stat_type() == "dir"
        if layout == "plain":
            return self.plain(streaming=False)
        if is_dir:
            # The names first (the directory's own blocks): a manifest needs nothing else,
            # so the children are fetched for their types only when there is none.
            names = self._entries(types=False)
            if MANIFEST in names and wants_manifest:
                ref = child(self.root, names[MANIFEST].cid)
                where = f"{self.where}/{MANIFEST} ({names[MANIFEST].cid})"
                return self.from_manifest(load_json(self._cat(ref), where), where, layout)
            entries = self._entries()
            if layout in (None, "folder") and (METADATA in entries or layout == "folder"):
                from torch_ipfs.formats.folder import FolderLayout

                return FolderLayout.open(self.client, self.root, self.where, entries)
            files = sorted(n for n, e in entries.items() if e.type == "file")
            tars = [n for n in files if extension_of(n) == "tar"]
            zips = [n for n in files if extension_of(n) == "zip"]
            if layout in (None, "tarshards") and tars and (layout or len(tars) == len(files)):
                return self._tars([(n, entries[n].cid) for n in tars])
            if layout in (None, "zip") and zips and (layout or len(zips) == len(files)):
                return self._zips([(n, entries[n].cid) for n in zips])
            raise ManifestError(
                f"{self.where}: unknown dataset layout: a directory needs {MANIFEST}, {METADATA}, "
                f"or only .tar / only .zip files (found {', '.join(sorted(entries)[:8]) or 'nothing'})"
            )
        if layout == "folder":
            raise ManifestError(f"{self.where}: the folder layout needs a directory, this is a file")
        root_file = self.client.get().file(self.root)
        head = root_file.read_range(0, 512)
        name = self.address.path.rsplit("/", 1)[-1] or str(self.root.cid)
        if layout == "tarshards" or (layout is None and _is_tar(head)):
            return self._tars([(name, self.root.cid)])
        if layout == "zip" or (layout is None and head[:4] in (b"PK\x03\x04", b"PK\x05\x06")):
            return self._zips([(name, self.root.cid)])
        if head.lstrip()[:1] == b"{":
            _check_manifest_size(root_file.size, self.where)
            manifest = root_file.read_range(0, root_file.size)
            return self.from_manifest(load_json(manifest, self.where), self.where, layout)
        raise ManifestError(
            f"{self.where}: unknown dataset layout: not a JSON manifest, tar or zip archive; "
            "for a single file use IPFSObject(url, RemoteFileType.PLAIN) or layout='plain'"
        )

    def from_manifest(self, manifest: Any, where: str, layout: str | None) -> Layout:
        from torch_ipfs.formats import cidlist, embedded, multimodal, shardedjson, tarshards

        if not isinstance(manifest, dict):
            raise ManifestError(f"{where}: a manifest must be a JSON object, got {type(manifest).__name__}")
        kind = layout or _manifest_kind(manifest)
        if kind is None:
            fmt = manifest.get("format")
            hint = f"unknown format {fmt!r}" if fmt is not None else f"keys {sorted(manifest)[:8]}"
            raise ManifestError(
                f"{where}: unknown dataset layout ({hint}); expected a torch_ipfs.tarshards manifest, "
                "'data' (embedded), 'samples' (CID list or multimodal) or 'shards' + 'samples_per_shard'"
            )
        if kind == "tarshards":
            if not tarshards.is_tarshards_manifest(manifest):
                raise ManifestError(
                    f"{where}: not a {tarshards.FORMAT} manifest (format={manifest.get('format')!r})"
                )
            return tarshards.TarShardsLayout.from_manifest(self.client, self.root, manifest, where)
        if kind == "embedded":
            return embedded.EmbeddedLayout.from_manifest(self.client, manifest, where)
        if kind == "shardedjson":
            return shardedjson.open_shardedjson(self.client, self.root, manifest, where)
        if kind == "multimodal":
            return multimodal.MultimodalLayout.from_manifest(self.client, self.root, manifest, where)
        if kind == "cidlist":
            return cidlist.CIDListLayout.from_manifest(self.client, self.root, manifest, where)
        raise ManifestError(f"{where}: layout {kind!r} has no manifest form")

    def _tars(self, files: list[tuple[str, CID]]) -> Layout:
        from torch_ipfs.formats.tarshards import TarShardsLayout, shard_from_cid

        shards = [shard_from_cid(cid, self.root, name) for name, cid in files]
        return TarShardsLayout(self.client, self.where, shards)

    def _zips(self, files: list[tuple[str, CID]]) -> Layout:
        from torch_ipfs.formats.ziparchive import ZipLayout

        return ZipLayout(self.client, self.where, [(name, child(self.root, cid)) for name, cid in files])

    def plain(self, *, streaming: bool) -> Layout:
        from torch_ipfs.formats.plain import PlainLayout

        name = self.address.path.rsplit("/", 1)[-1]
        return PlainLayout(self.client, self.where, [(name, self.root)], streaming=streaming)


def _is_tar(head: bytes) -> bool:
    return len(head) >= 263 and head[257:262] == b"ustar"


def _manifest_kind(manifest: dict[str, Any]) -> str | None:
    from torch_ipfs.formats import cidlist, embedded, multimodal, shardedjson, tarshards

    if "format" in manifest:
        return "tarshards" if tarshards.is_tarshards_manifest(manifest) else None
    if embedded.is_embedded_manifest(manifest):
        return "embedded"
    if shardedjson.is_shardedjson_manifest(manifest):
        return "shardedjson"
    if multimodal.is_multimodal_manifest(manifest):
        return "multimodal"
    if cidlist.is_cidlist_manifest(manifest):
        return "cidlist"
    return None


# -- several inputs ------------------------------------------------------------------------


class ConcatLayout(Layout):
    """Several layouts read as one: their shards one after another."""

    name = "concat"

    def __init__(self, client: ClientHandle, parts: Sequence[Layout]) -> None:
        super().__init__(client, " + ".join(p.where for p in parts))
        self.parts = list(parts)
        schemas = {repr(p.schema) for p in parts}
        self.schema = parts[0].schema if len(schemas) == 1 else SampleSchema()
        self._shard_map: list[tuple[int, int]] | None = None

    def _map(self) -> list[tuple[int, int]]:
        if self._shard_map is None:
            self._shard_map = [
                (p, s) for p, part in enumerate(self.parts) for s in range(len(part.shard_sizes()))
            ]
        return self._shard_map

    def shard_sizes(self) -> list[int]:
        return [size for part in self.parts for size in part.shard_sizes()]

    def read_sample(self, index: int) -> RawSample:
        shard, offset = self.locate(index)
        p, s = self._map()[shard]
        part = self.parts[p]
        return self._own(part, part.read_sample(part.shard_starts()[s] + offset))

    def iter_span(self, shard: int, start: int, stop: int) -> Iterator[RawSample]:
        p, s = self._map()[shard]
        for raw in self.parts[p].iter_span(s, start, stop):
            yield self._own(self.parts[p], raw)

    def prefetch_span(self, shard: int, start: int, stop: int) -> Future[int] | None:
        p, s = self._map()[shard]
        return self.parts[p].prefetch_span(s, start, stop)

    def _own(self, part: Layout, raw: RawSample) -> RawSample:
        """Keep each part's own sample structure when the parts differ."""
        if raw.structure is None and part.schema is not self.schema:
            raw.structure = part.schema.structure
        return raw

    def describe(self) -> list[str]:
        return [f"Layout: {' + '.join(p.name for p in self.parts)}", f"Root: {self.where}"]

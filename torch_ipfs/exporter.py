"""The exporter: any map-style dataset -> reproducible tar shards -> one root CID.

::

    cid = torch_ipfs.export(torchvision.datasets.MNIST(...))
    ds = torch_ipfs.IPFSDataset(f"ipfs://{cid}")     # the same (image, target) pairs

The root is a UnixFS directory in the sharded-tar layout of
:mod:`torch_ipfs.formats.tarshards`, manifest v2 (``manifest.json``, ``shard-table.bin``,
``index/shard-NNNNNN.idx``, ``shards/shard-NNNNNN.tar``), each sample a WebDataset-style
group of files encoded by :mod:`torch_ipfs.encoders`.

How it stays reproducible and bounded:

- Samples are read in index order and encoded deterministically; the tar writer fixes
  mtime/uid/gid/names/order, so the same dataset and options give byte-identical shards
  and the same root CID on every run and every machine (with the same zlib/libjpeg).
- One shard at a time: samples stream into a spooled temporary file (in memory up to
  ``_SPOOL_BYTES``, then on disk), which is chunked into the store as soon as the shard
  is complete, and its index file right after it. Only the shards' CIDs and counts stay in
  memory (manifest v2; v1 keeps every shard's index for its JSON); the final directory
  links the stored shards and indexes by CID, so nothing is read or written twice.
- The DAG is built with Kubo's ``ipfs add`` defaults (:class:`ImportOptions`), so
  ``ipfs add -r`` of the exported folder on disk gives the same root CID.

Destinations: the embedded store (default; pinned), a :class:`~torch_ipfs.client.Client`,
any :class:`~torch_ipfs.sources.base.BlockStore`, a Kubo node (``"kubo:<api>"``: the DAG
is sent with ``dag/import`` and pinned), or a CAR file (``"car:<path>"``) for a pinning
service or ``ipfs dag import``.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch_ipfs.cid import CID
from torch_ipfs.encoders import EncodedSample, EncodeError, EncoderOptions, sample_fields
from torch_ipfs.errors import IPFSError
from torch_ipfs.formats import tar, tarshards
from torch_ipfs.formats.detect import MANIFEST
from torch_ipfs.formats.shardindex import encode_index
from torch_ipfs.formats.shardtable import ShardFile, encode_table
from torch_ipfs.formats.tarshards import SHARDS_DIR
from torch_ipfs.sources.base import BlockStore
from torch_ipfs.sources.local import LocalStore
from torch_ipfs.sources.writebehind import WriteBehind
from torch_ipfs.unixfs import hamt
from torch_ipfs.unixfs.builder import Built, DagWriter
from torch_ipfs.unixfs.importer import ImportOptions, import_bytes, import_file

__all__ = [
    "DatasetSpecError",
    "ExportResult",
    "IPFSDatasetExporter",
    "dataset_from_spec",
    "export",
    "export_dataset",
    "import_from_ipfs",
]

log = logging.getLogger(__name__)

#: A shard is kept in memory up to this size while it is written, then spills to disk.
_SPOOL_BYTES = 64 * 1024 * 1024
#: Default shard size limit when neither ``samples_per_shard`` nor ``shard_bytes`` is given.
DEFAULT_SHARD_BYTES = 256 * 1024 * 1024
#: The two zero blocks that end a tar archive.
_TAR_END = 2 * tar.BLOCK



@dataclass(frozen=True)
class ExportResult:
    """What an export produced: the root CID and per-shard facts (for logs and tests)."""

    cid: CID
    total_samples: int
    shard_cids: list[CID]
    shard_samples: list[int]
    shard_bytes: list[int]
    manifest: dict[str, Any] = field(repr=False)

    @property
    def url(self) -> str:
        return f"ipfs://{self.cid}"


# -- dataset iteration -------------------------------------------------------------------


def _dataset_length(dataset: Any) -> int:
    try:
        return len(dataset)
    except TypeError:
        raise TypeError(
            f"export() needs a map-style dataset with __len__ and __getitem__; "
            f"{type(dataset).__name__} has no len()"
        ) from None


@dataclass
class _FieldSchema:
    """The fields of the first sample; every later sample must have the same ones."""

    types: dict[str, str]
    structure: str
    keys: dict[str, str]

    def check(self, index: int, sample: EncodedSample) -> None:
        if sample.types != self.types or sample.structure != self.structure:
            raise EncodeError(
                f"sample {index} has fields {sample.types} ({sample.structure}), but sample 0 had "
                f"{self.types} ({self.structure}); every sample must have the same fields and types"
            )


def _tar_size(key: str, sample: EncodedSample) -> int:
    """Bytes a sample takes in a tar shard (every member, headers included)."""
    return sum(tar.member_size(f"{key}.{name}", len(v)) for name, v in sample.fields.items())


def _label_field(schema: _FieldSchema) -> str | None:
    """The class-label field: the only ``int`` field, or the one named like a target."""
    ints = [name for name, kind in schema.types.items() if kind == "int"]
    if len(ints) == 1:
        return ints[0]
    for name in ints:
        if name.split(".")[0] in ("cls", "label", "target", "class"):
            return name
    return None


# -- shards ------------------------------------------------------------------------------


class _ShardPlanner:
    """Pulls encoded samples from the dataset and cuts them into shards by count or bytes."""

    def __init__(
        self,
        dataset: Any,
        encoder: EncoderOptions,
        samples_per_shard: int | None,
        shard_bytes: int | None,
        on_sample: Callable[[], None],
    ) -> None:
        self.dataset = dataset
        self.encoder = encoder
        self.length = _dataset_length(dataset)
        self.samples_per_shard = samples_per_shard
        self.shard_bytes = shard_bytes
        self.on_sample = on_sample
        self.next_index = 0
        self.schema: _FieldSchema | None = None
        self.label_values: dict[int, int] = {}
        self._pending: EncodedSample | None = None

    def _encode(self, index: int) -> EncodedSample:
        try:
            sample = self.dataset[index]
        except IndexError:
            raise IPFSError(f"dataset raised IndexError at index {index} < len() = {self.length}") from None
        encoded = sample_fields(sample, self.encoder)
        if self.schema is None:
            self.schema = _FieldSchema(dict(encoded.types), encoded.structure, dict(encoded.keys))
        else:
            self.schema.check(index, encoded)
        label = _label_field(self.schema)
        if label is not None:
            value = int(encoded.fields[label])
            self.label_values[value] = self.label_values.get(value, 0) + 1
        return encoded

    def more(self) -> bool:
        return self._pending is not None or self.next_index < self.length

    def shard(self) -> Iterator[tuple[int, EncodedSample]]:
        """The samples of the next shard, as (dataset index, encoded sample), lazily."""
        count = size = 0
        while self.more():
            if self.samples_per_shard is not None and count >= self.samples_per_shard:
                return
            if self._pending is None:
                self._pending = self._encode(self.next_index)
            sample = self._pending
            sample_size = _tar_size(sample_key(self.next_index), sample)
            if self.shard_bytes is not None and count and size + sample_size + _TAR_END > self.shard_bytes:
                return  # the sample opens the next shard (a lone oversized sample gets its own)
            self._pending = None
            index = self.next_index
            self.next_index += 1
            count += 1
            size += sample_size
            self.on_sample()
            yield index, sample


def sample_key(index: int) -> str:
    """The tar member key of dataset index ``index`` (sorts in index order)."""
    return f"{index:09d}"


# -- the DAG -----------------------------------------------------------------------------


def directory_node(writer: DagWriter, options: ImportOptions, children: list[tuple[str, Built]]) -> Built:
    """A directory over already-stored children: plain, or HAMT-sharded past Kubo's threshold
    (the same rule as the importer, so the root equals ``ipfs add -r`` of the folder)."""
    estimate = sum(len(os.fsencode(name)) + len(child.cid.to_bytes()) for name, child in children)
    if not options.shards(estimate):
        return writer.directory(children)

    def store_node(links, data):
        built = writer.put_node(links, data)
        return built.cid, built.tsize

    cid, tsize = hamt.build_shard([(n, c.cid, c.tsize) for n, c in children], store_node)
    return Built(cid, tsize)


def _write_dag(dataset: Any, store: BlockStore, **build: Any) -> ExportResult:
    """Build the export in ``store``; every block is in it when this returns."""
    if not isinstance(store, LocalStore):
        return _build_dag(dataset, store, **build)
    # A file per block, and making a file can cost more than hashing its block: the
    # files are made on other threads while the next shard is built (WriteBehind).
    with WriteBehind(store) as deferred:
        return _build_dag(dataset, deferred, **build)


def _build_dag(
    dataset: Any,
    store: BlockStore,
    *,
    encoder: EncoderOptions,
    import_options: ImportOptions,
    samples_per_shard: int | None,
    shard_bytes: int | None,
    name: str | None,
    description: str | None,
    parent: str | CID | None,
    progress: bool,
    manifest_version: int = 2,
) -> ExportResult:
    writer = import_options.writer(store)
    length = _dataset_length(dataset)
    with ExitStack() as stack:
        advance = stack.enter_context(_progress_bar(length, progress, name or type(dataset).__name__))
        planner = _ShardPlanner(dataset, encoder, samples_per_shard, shard_bytes, advance)
        shards: list[tuple[str, Built]] = []
        shard_infos: list[dict[str, Any]] = []
        indexes: list[tuple[str, Built]] = []
        files: list[ShardFile] = []
        while planner.more() or not shards:
            shard_name = tarshards.shard_name(len(shards))
            with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
                members = ((sample_key(i), s.fields) for i, s in planner.shard())
                index = tarshards.write_tar_shard(members, spool)  # type: ignore[arg-type]
                spool.seek(0)
                added = import_file(spool, store, import_options, name=shard_name)  # type: ignore[arg-type]
            built = Built(added.cid, added.size, added.filesize)
            shards.append((shard_name, built))
            info = {"name": shard_name, "cid": added.cid, "bytes": added.filesize, "samples": len(index)}
            if manifest_version == 1:  # v2 keeps no per-sample index in memory: it is stored
                info["index"] = index
            shard_infos.append(info)
            if manifest_version == 2:
                index_bytes = encode_index(index.keys, index.offsets)
                index_added = import_bytes(index_bytes, store, import_options)
                indexes.append((tarshards.index_name(len(indexes)), _built(index_added)))
                files.append(ShardFile(added.cid, index_added.cid, added.filesize or 0, len(index),
                                       len(index_bytes), hashlib.sha256(index_bytes).digest()))  # fmt: skip
            log.info("shard %s: %s (%d bytes)", shard_name, added.cid, added.filesize)
            if not planner.more():
                break
        schema = planner.schema or _FieldSchema({}, "single", {})
        classes = _class_names(dataset)
        described = dict(
            name=name,
            description=description,
            parent=str(CID.decode(parent)) if isinstance(parent, str) else (str(parent) if parent else None),
            fields=schema.types,
            structure=schema.structure,
            keys=schema.keys or None,
            label_field=_label_field(schema),
            classes=classes,
            class_counts={str(k): v for k, v in sorted(planner.label_values.items())} or None,
        )
        entries: list[tuple[str, Built]] = []
        if manifest_version == 2:
            table = encode_table(files, [(i, 0, f.samples) for i, f in enumerate(files)])
            table_added = import_bytes(table, store, import_options, name=tarshards.TABLE_NAME)
            manifest = tarshards.build_manifest_v2(
                table_added.cid, table, planner.next_index, len(files), **described
            )
            entries += [
                (tarshards.INDEX_DIR, directory_node(writer, import_options, indexes)),
                (tarshards.TABLE_NAME, _built(table_added)),
            ]
        else:
            manifest = tarshards.build_manifest(shard_infos, **described)
        manifest_bytes = tarshards.encode_manifest(manifest)
    manifest_added = import_bytes(manifest_bytes, store, import_options, name=MANIFEST)
    entries += [
        (MANIFEST, _built(manifest_added)),
        (SHARDS_DIR, directory_node(writer, import_options, shards)),
    ]
    root = directory_node(writer, import_options, sorted(entries))
    return ExportResult(
        cid=root.cid,
        total_samples=planner.next_index,
        shard_cids=[b.cid for _, b in shards],
        shard_samples=[info["samples"] for info in shard_infos],
        shard_bytes=[info["bytes"] for info in shard_infos],
        manifest=manifest,
    )


def _built(added: Any) -> Built:
    return Built(added.cid, added.size, added.filesize)


def _class_names(dataset: Any) -> list[str] | None:
    """``dataset.classes`` (torchvision's attribute), looking through Subset-like wrappers."""
    seen = 0
    while dataset is not None and seen < 8:
        classes = getattr(dataset, "classes", None)
        if classes is not None:
            try:
                return [str(c) for c in classes]
            except TypeError:
                return None
        dataset = getattr(dataset, "dataset", None)
        seen += 1
    return None


@contextmanager
def _progress_bar(total: int, enabled: bool, desc: str) -> Iterator[Callable[[], None]]:
    """A callback advancing a tqdm bar on stderr when asked for; a no-op otherwise."""
    if not enabled:
        yield lambda: None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=f"export {desc}", unit="sample", mininterval=0.5)
    try:
        yield lambda: bar.update(1)
    finally:
        bar.close()


# -- destinations ------------------------------------------------------------------------


def _resolve_destination(destination: Any, client: Any) -> tuple[str, Any]:
    """``("store", BlockStore-owner)``, ``("kubo", api)`` or ``("car", path)``."""
    from torch_ipfs.client import Client

    if destination is None or destination == "store":
        return "client", client if client is not None else _default_client()
    if isinstance(destination, Client):
        return "client", destination
    if isinstance(destination, BlockStore):
        return "blockstore", destination
    if isinstance(destination, (str, os.PathLike)):
        text = os.fspath(destination)
        if text.startswith("kubo:"):
            api = text[len("kubo:") :]
            if not api:
                raise ValueError("destination 'kubo:' needs an RPC address: kubo:/ip4/127.0.0.1/tcp/5001")
            return "kubo", api
        if text.startswith("car:"):
            path = text[len("car:") :]
            if not path:
                raise ValueError("destination 'car:' needs a file path, e.g. car:dataset.car")
            return "car", Path(path)
    raise ValueError(
        f"unknown export destination {destination!r}; valid: 'store', a Client, a BlockStore, "
        "'kubo:<rpc address>', 'car:<path>'"
    )


def check_destination(kind: str, target: Any) -> None:
    """Fail before encoding anything when the destination cannot take the result: a Kubo
    API that does not answer, a CAR file whose directory does not exist."""
    if kind == "kubo":
        from torch_ipfs.errors import IPFSError, SourceError
        from torch_ipfs.sources.kubo import KuboSource

        try:
            kubo = KuboSource(target)
            try:
                kubo.version()
            finally:
                kubo.close()
        except (IPFSError, OSError, ValueError) as e:
            raise SourceError(
                f"cannot export to Kubo at {target}: {e} (nothing was encoded; start the daemon or "
                "fix the address)",
                source=str(target),
            ) from e
    elif kind == "car" and not Path(target).parent.is_dir():
        raise FileNotFoundError(f"cannot write {target}: directory {Path(target).parent} does not exist")


def _default_client():
    from torch_ipfs.client import default_client

    return default_client()


def export_dataset(
    dataset: Any,
    *,
    samples_per_shard: int | None = None,
    shard_bytes: int | None = None,
    image_format: str = "png",
    jpeg_quality: int = 95,
    audio_format: str = "wav",
    name: str | None = None,
    description: str | None = None,
    parent: str | CID | None = None,
    destination: Any = "store",
    progress: bool = True,
    client: Any = None,
    import_options: ImportOptions | None = None,
    manifest_version: int = 2,
) -> ExportResult:
    """Like :func:`export` (which documents the options), returning an :class:`ExportResult`
    with the per-shard facts."""
    if manifest_version not in (1, 2):
        raise ValueError(f"manifest_version must be 1 or 2, got {manifest_version!r}")
    if samples_per_shard is not None and samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    if shard_bytes is not None and shard_bytes < tar.BLOCK * 4:
        raise ValueError(f"shard_bytes must be at least {tar.BLOCK * 4}, got {shard_bytes}")
    if samples_per_shard is None and shard_bytes is None:
        shard_bytes = DEFAULT_SHARD_BYTES
    encoder = EncoderOptions(image_format=image_format, jpeg_quality=jpeg_quality, audio_format=audio_format)
    options = import_options or ImportOptions()
    kind, target = _resolve_destination(destination, client)
    check_destination(kind, target)
    build = dict(
        encoder=encoder,
        import_options=options,
        samples_per_shard=samples_per_shard,
        shard_bytes=shard_bytes,
        name=name,
        description=description,
        parent=parent,
        progress=progress,
        manifest_version=manifest_version,
    )
    if kind == "blockstore":
        return _write_dag(dataset, target, **build)  # type: ignore[arg-type]
    if kind == "client":
        store = target.store
        with store.writer():  # holds off a concurrent gc until the root is pinned
            result = _write_dag(dataset, store, **build)  # type: ignore[arg-type]
            store.pin(result.cid, check=False)
        return result
    # Kubo and CAR: build in a scratch store (bounded memory), then ship the DAG in DFS order.
    from torch_ipfs.car import export_car

    with tempfile.TemporaryDirectory(prefix="torch-ipfs-export-") as scratch:
        store = LocalStore(Path(scratch) / "store")
        result = _write_dag(dataset, store, **build)  # type: ignore[arg-type]
        if kind == "car":
            _write_car_file(store, result.cid, target, export_car)
        else:
            from torch_ipfs.sources.kubo import KuboSource

            car_path = Path(scratch) / "export.car"
            _write_car_file(store, result.cid, car_path, export_car)
            kubo = KuboSource(target)
            try:
                with open(car_path, "rb") as fh:
                    roots = kubo.dag_import(fh, pin_roots=True)
                if result.cid not in roots:
                    kubo.pin_add(result.cid)
            finally:
                kubo.close()
        store.close()
    return result


def _write_car_file(store: BlockStore, root: CID, path: Path, export_car: Callable[..., int]) -> None:
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        export_car(store, root, fh)
    os.replace(tmp, path)


def export(dataset: Any, **options: Any) -> CID:
    """Pack a map-style dataset into reproducible tar shards and return the root CID.

    The options are keyword-only and are :func:`export_dataset`'s (one signature serves
    both, so the two cannot drift apart).

    Args:
        dataset: anything with ``__len__`` and ``__getitem__`` returning (image, target)
            pairs, tensors, arrays, dicts of fields, :class:`~torch_ipfs.encoders.Audio`,
            text... (see :mod:`torch_ipfs.encoders`; pickle is never used).
        samples_per_shard: cut a shard every N samples.
        shard_bytes: cut a shard before it would exceed this many tar bytes. With neither
            given, shards are cut at 256 MiB. Both may be given (whichever comes first).
        image_format: ``"png"`` (lossless, default) or ``"jpeg"`` (with ``jpeg_quality``).
        audio_format: ``"wav"`` (lossless, default) or ``"flac"``.
        name, description: recorded in the manifest.
        parent: CID of the dataset this one was derived from (provenance, in the manifest).
        destination: ``"store"`` (the embedded store of ``client`` or the default client;
            the root is pinned), a :class:`~torch_ipfs.client.Client`, a
            :class:`~torch_ipfs.sources.base.BlockStore`, ``"kubo:<rpc address>"`` (sent with
            ``dag/import`` and pinned on that node) or ``"car:<path>"`` (a CARv1 file).
        progress: show a tqdm progress bar on stderr.
        client: the client whose store ``"store"`` means (default: from the environment).
        import_options: CID choices (default: Kubo's ``ipfs add`` defaults, CIDv0).
        manifest_version: ``2`` (default: a binary shard table and one binary index per
            shard, opened in time and memory proportional to the shards) or ``1`` (every
            sample's key and offset inline in ``manifest.json``); see docs/layouts.md.

    The same dataset with the same options gives the same CID, whatever the destination.
    Raises :class:`~torch_ipfs.encoders.EncodeError` for a sample that cannot be encoded.
    """
    return export_dataset(dataset, **options).cid


def import_from_ipfs(address: str | CID, *, client: Any = None, **dataset_options: Any):
    """The dataset at ``address`` (``"ipfs://<cid>"``, a CID, a gateway URL) as a map-style
    :class:`~torch_ipfs.datasets.IPFSDataset` whose samples equal the exported originals."""
    from torch_ipfs.datasets import IPFSDataset

    if client is not None:
        dataset_options["client"] = client
    return IPFSDataset(str(address), **dataset_options)


class IPFSDatasetExporter:
    """The exporter under the name users of the earlier ``ipfs-dataset`` package know::

        cid = IPFSDatasetExporter("/ip4/127.0.0.1/tcp/5001").export_to_ipfs(dataset)
        ds = IPFSDatasetExporter("/ip4/127.0.0.1/tcp/5001").import_from_ipfs(f"ipfs://{cid}")

    ``ipfs_api_address`` given: shards go to that Kubo node (pinned) and reads use it;
    ``None``: the embedded store. Other keyword arguments are :func:`export`'s. Unlike
    that package, samples are never pickled.
    """

    def __init__(
        self, ipfs_api_address: str | None = None, shard_bytes: int = DEFAULT_SHARD_BYTES, **options: Any
    ) -> None:
        self.ipfs_api_address = ipfs_api_address
        self.options = {"shard_bytes": shard_bytes, **options}

    def _client(self):
        if self.ipfs_api_address is None:
            return self.options.get("client") or _default_client()
        from torch_ipfs.client import Client

        return Client(api=self.ipfs_api_address)

    def export_to_ipfs(self, dataset: Any) -> str:
        """Export ``dataset``; return its root CID as a string."""
        options = dict(self.options)
        if self.ipfs_api_address is not None:
            options.setdefault("destination", f"kubo:{self.ipfs_api_address}")
        return str(export(dataset, **options))

    def import_from_ipfs(self, address: str | CID, **dataset_options: Any):
        """A map-style dataset over ``address`` (``ipfs://<cid>``)."""
        return import_from_ipfs(address, client=self._client(), **dataset_options)



# -- datasets named on a command line -------------------------------------------------------


class DatasetSpecError(IPFSError, ValueError):
    """A dataset named on the command line that cannot be found or built."""


def _literal(text: str) -> Any:
    """``"3"`` -> 3, ``"False"`` -> False, ``"(3, 32, 32)"`` -> a tuple; anything else stays a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def dataset_from_spec(
    spec: str, *, root: str | None = None, kwargs: dict[str, str] | None = None
) -> Any:
    """Build the dataset a user named (``torch-ipfs export SPEC``):

    - an existing directory: a ``torchvision.datasets.ImageFolder`` over it
      (``root/<class>/<image>``; classes in sorted order, as torchvision does);
    - ``module:callable``: the module is imported and the callable called with ``kwargs``;
    - a ``torchvision.datasets`` class name (``CIFAR10``, ``MNIST``, ``FakeData``...):
      built with ``root`` (when given) and ``kwargs``; nothing is downloaded unless
      ``download=True`` is passed.

    ``kwargs`` values are strings parsed as Python literals where they are one.
    """
    params = {k: _literal(v) for k, v in (kwargs or {}).items()}
    if os.path.isdir(spec):
        return _torchvision().datasets.ImageFolder(spec, **params)
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise DatasetSpecError(f"cannot import {module_name!r} for dataset {spec!r}: {e}") from None
        factory: Any = module
        for part in attr.split("."):
            factory = getattr(factory, part, None)
            if factory is None:
                raise DatasetSpecError(f"{module_name!r} has no attribute {attr!r} (dataset {spec!r})")
        if not callable(factory):
            raise DatasetSpecError(f"{spec!r} is not callable")
        return factory(**params)
    datasets = _torchvision().datasets
    cls = getattr(datasets, spec, None)
    if not isinstance(cls, type):
        raise DatasetSpecError(
            f"{spec!r} is not a directory, a module:callable or a torchvision.datasets class"
        )
    if root is not None:
        params.setdefault("root", root)
    if "download" in _init_params(cls):
        params.setdefault("download", False)  # never fetch from the internet unless asked
    return cls(**params)


def _init_params(cls: type) -> set[str]:
    import inspect

    try:
        return set(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        return set()


def _torchvision():
    try:
        import torchvision
    except ImportError:
        raise DatasetSpecError("this needs torchvision: pip install 'torch-ipfs[vision]'") from None
    return torchvision

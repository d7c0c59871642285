"""The datasets users touch: ``DataLoader(IPFSDataset("ipfs://<cid>"))``.

- :class:`IPFSDataset` is map-style (``len``, ``ds[i]``): each item reads only that
  sample's bytes (a byte range of a tar shard, one zip member, one file). It works with
  ``DistributedSampler``, ``random_split`` and shuffling DataLoaders.
- :class:`IPFSIterableDataset` streams shards in order with bounded memory, split across
  DDP ranks and DataLoader workers exactly once per epoch by
  :class:`torch_ipfs.sharding.ShardedIterableDataset`.

Both take a root whose layout is detected (see :mod:`torch_ipfs.formats.detect` and
docs/layouts.md), or a list of :class:`~torch_ipfs.formats.detect.IPFSObject` as the
``ipfs-dataset`` package had them, and return samples the way torchvision does:

- a dataset exported from ``(image, target)`` pairs gives ``(image, target)`` back, the
  image a PIL image (``transform`` receives it, as in torchvision), ``target`` an int
  (``target_transform`` receives it);
- ``fields=("png", "cls")`` picks fields into a tuple (for WebDataset tars made elsewhere);
- otherwise a sample is a dict of its fields (``transform`` receives the dict).

``items="files"`` gives each sample as ``(file_name, file_bytes)`` instead, undecoded: the
item the ``ipfs-dataset`` package handed out (its classes in
:mod:`torch_ipfs.compat.ipfs_dataset` set it; one file per sample, as in a zip or tar of
images, or a plain file).

Errors in one sample follow ``on_error``: ``"raise"`` (default), ``"warn"`` or
``"skip"``; every skipped sample is logged and counted in :attr:`skipped` (per process:
each DataLoader worker counts its own).
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from typing import Any

import torch.utils.data

from torch_ipfs.decoders import Decoder, PickleRefusedError
from torch_ipfs.errors import IPFSError, SampleError
from torch_ipfs.formats.base import ClientHandle, Layout, RawSample, SampleSchema
from torch_ipfs.formats.detect import IPFSObject, RemoteFileType, open_layout
from torch_ipfs.sharding import SKIPPED, SampleSpan, ShardedIterableDataset, StreamMix
from torch_ipfs.unixfs.shareddigests import share_with_forked_children

__all__ = ["IPFSDataset", "IPFSIterableDataset", "IPFSObject", "RemoteFileType", "SampleError"]

log = logging.getLogger(__name__)

_ON_ERROR = ("raise", "warn", "skip")
_ITEMS = ("samples", "files")


def _check_option(name: str, value: str, valid: Sequence[str]) -> str:
    if value not in valid:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, valid))}; got {value!r}")
    return value


class _SampleReader:
    """What both dataset kinds share: the layout, decoding, assembly, transforms, errors."""

    _repr_indent = 4
    #: True for map-style datasets: the open also warms the first shards' root nodes
    _random_access = False

    def __init__(
        self,
        root: Any,
        *positional: Any,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        decode: Any = "auto",
        fields: Sequence[str] | None = None,
        client: Any = None,
        on_error: str = "raise",
        allow_pickle: bool = False,
        sample_rate: int | None = None,
        layout: str | None = None,
        items: str = "samples",
    ) -> None:
        if positional:
            raise TypeError(
                f"{type(self).__name__} takes one positional argument (the root); "
                f"{type(self).__name__}(ipfs_objs, ipfs_api_address[, shuffle_urls]) is the ipfs-dataset "
                "package's signature: import it from torch_ipfs.compat.ipfs_dataset, or pass "
                "client=torch_ipfs.Client(api=ipfs_api_address)"
            )
        self.root = root
        self.items = _check_option("items", items, _ITEMS)
        self.transform = transform
        self.target_transform = target_transform
        self.on_error = _check_option("on_error", on_error, _ON_ERROR)
        self.fields = tuple(fields) if fields is not None else None
        if isinstance(fields, str):
            raise TypeError(f"fields must be a sequence of field names, e.g. ({fields!r},), not a string")
        self.decoder = Decoder(decode, allow_pickle=allow_pickle, sample_rate=sample_rate)
        self.layout: Layout = open_layout(root, ClientHandle(client), layout=layout)
        warm_roots = getattr(self.layout, "warm_first_roots", None)
        if self._random_access and warm_roots is not None:
            warm_roots()  # random reads need the shards' root nodes; a stream brings its own
        if self._random_access and torch.utils.data.get_worker_info() is None:
            # the workers a DataLoader forks from here share the leaves' spot-check digests
            share_with_forked_children()
        #: samples skipped (``on_error="skip"``/``"warn"``) in this process
        self.skipped = 0

    # -- public helpers (for subclasses overriding __getitem__) ---------------------------

    @property
    def schema(self) -> SampleSchema:
        return self.layout.schema

    @property
    def classes(self) -> list[str] | None:
        """Class names, when the dataset declares them (torchvision's attribute)."""
        return self.schema.classes

    @property
    def class_to_idx(self) -> dict[str, int] | None:
        return {c: i for i, c in enumerate(self.classes)} if self.classes is not None else None

    def shard_sizes(self) -> list[int]:
        """Samples in each shard, in order (for shard-aware samplers). For manifest v2
        this comes from the shard table alone: no shard's index is fetched."""
        return self.layout.shard_sizes()

    def read_raw(self, index: int) -> RawSample:
        """Sample ``index`` as undecoded fields (reads only its bytes)."""
        return self.layout.read_sample(index)

    def read_file(self, index: int) -> tuple[str, bytes]:
        """Sample ``index`` as ``(file_name, file_bytes)``, undecoded (see :func:`file_of`)."""
        return file_of(self.read_raw(index))

    def make_item(self, raw: RawSample) -> Any:
        """What ``ds[i]`` and iteration hand out for a raw sample: decoded (``items=
        "samples"``) or ``(file_name, file_bytes)`` (``items="files"``). The one place the
        two item kinds part."""
        return file_of(raw) if self.items == "files" else self.decode_sample(raw)

    def _decode_values(
        self, values: tuple[Any, ...], names: Sequence[str], declared: Sequence[str | None], where: Any
    ) -> tuple[Any, ...]:
        decode = self.decoder.decode_field
        return tuple([decode(f, v, t, where) for f, v, t in zip(names, values, declared)])

    def _label_pos(self, names: Sequence[str]) -> int:
        """Where the schema's label field is among ``names`` (-1: not there)."""
        label = self.schema.label_field
        return list(names).index(label) if label is not None and label in names else -1

    def _where_of(self, key: Any) -> str:
        """Sample ``key``, named as decode errors name it."""
        return f"{self.layout.where}: sample {key!r}"

    def decode_sample(self, raw: RawSample) -> Any:
        """Decode, assemble and transform a raw sample into what ``__getitem__`` returns."""
        schema = self.schema
        types = schema.types
        fields = raw.fields
        if (
            self.fields is None
            and types
            and (raw.structure or schema.structure) == "tuple"
            and len(fields) == len(types)
        ):
            # The common case (an exported (image, label) dataset): exactly the declared
            # fields, decoded straight into the tuple, no intermediate dict.
            try:
                values = [fields[f] for f in types]
            except KeyError:
                pass  # a field is missing: the general path below names it
            else:
                where = self._where_of(raw.key)
                decode = self.decoder.decode_field
                out = tuple([decode(f, v, t, where) for (f, t), v in zip(types.items(), values)])
                if self.transform is None and self.target_transform is None:
                    return out
                return self._apply(out, label_pos=self._label_pos(list(types)))
        decoded = self.decoder.decode_fields(raw.fields, schema.types, self._where_of(raw.key))
        if self.fields is not None:
            return self._apply(tuple(_pick(decoded, f, raw.key) for f in self.fields), label_pos=-1)
        structure = raw.structure or schema.structure
        if structure == "tuple":
            names = [f for f in schema.types if f in decoded] if schema.types else list(decoded)
            if schema.types and len(names) != len(schema.types):
                missing = [f for f in schema.types if f not in decoded]
                raise SampleError(f"sample {raw.key!r} lacks fields {missing}", key=raw.key)
            return self._apply(tuple(decoded[f] for f in names), label_pos=self._label_pos(names))
        if structure == "single":
            if len(decoded) != 1:
                raise SampleError(
                    f"sample {raw.key!r} has fields {sorted(decoded)}, expected one", key=raw.key
                )
            value = next(iter(decoded.values()))
            return self.transform(value) if self.transform is not None else value
        sample = {raw.keys.get(f) or schema.keys.get(f, f): v for f, v in decoded.items()}
        label_key = schema.label_field
        if label_key is not None:
            label_key = raw.keys.get(label_key) or schema.keys.get(label_key, label_key)
        if self.target_transform is not None and label_key in sample:
            sample[label_key] = self.target_transform(sample[label_key])
        if schema.with_key:
            sample["__key__"] = raw.key
        return self.transform(sample) if self.transform is not None else sample

    def _apply(self, values: tuple[Any, ...], label_pos: int) -> tuple[Any, ...]:
        out = list(values)
        if self.transform is not None and out:
            out[0] = self.transform(out[0])
        if self.target_transform is not None and len(out) >= 2:
            out[label_pos] = self.target_transform(out[label_pos])
        return tuple(out)

    def _failed(self, error: Exception, what: str) -> None:
        """Raise, or count and report a skipped sample, as ``on_error`` says."""
        if self.on_error == "raise" or isinstance(error, PickleRefusedError):
            raise error
        self.skipped += 1
        message = f"skipping {what} of {self.layout.where}: {type(error).__name__}: {error}"
        log.warning("%s (%d skipped so far in this process)", message, self.skipped)
        if self.on_error == "warn":
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    # -- repr, torchvision style ---------------------------------------------------------

    def extra_repr(self) -> str:
        lines = [line for line in self.layout.describe() if not line.startswith("Root:")]
        return "\n".join(lines + [f"Decode: {self.decoder!r}"])

    def __repr__(self) -> str:
        head = "Dataset " + self.__class__.__name__
        body = [f"Number of datapoints: {len(self.layout)}", f"Root location: {_describe_root(self.root)}"]
        body += self.extra_repr().splitlines()
        for name in ("transform", "target_transform"):
            value = getattr(self, name)
            if value is not None:
                lines = repr(value).splitlines()
                body += [f"{name.replace('_', ' ').capitalize()}: {lines[0]}"] + lines[1:]
        return "\n".join([head] + [" " * self._repr_indent + line for line in body])


def file_of(raw: RawSample) -> tuple[str, bytes]:
    """``(file_name, file_bytes)`` of a sample that is one file: a zip or tar member
    (its name rebuilt from key and extension), a folder file or a plain file. Non-file
    fields (a folder's ``metadata.txt`` label) are left out; a sample grouping several
    files (``a.png`` + ``a.txt``) raises :class:`SampleError` naming them."""
    blobs = [(f, v) for f, v in raw.fields.items() if isinstance(v, (bytes, bytearray, memoryview))]
    if len(blobs) != 1:
        names = sorted(f for f, _ in blobs)
        what = f"files {names}" if blobs else f"no file, only fields {sorted(raw.fields)}"
        raise SampleError(
            f"sample {raw.key!r} has {what}; items='files' hands out one file per sample "
            "(use items='samples' for grouped or JSON samples)",
            key=raw.key,
        )
    name, data = blobs[0]
    stem = raw.key.rsplit("/", 1)[-1]
    file_name = raw.key if raw.key.endswith("." + name) or "." in stem else f"{raw.key}.{name}"
    return file_name, bytes(data)


def _pick(decoded: dict[str, Any], wanted: str, key: str) -> Any:
    """A field by name, by extension (``"png"`` matches ``"seg.png"``) or by alternatives
    (``"png;jpg"``, WebDataset's spelling)."""
    for name in wanted.split(";"):
        if name in decoded:
            return decoded[name]
        for field, value in decoded.items():
            if field.rsplit(".", 1)[-1] == name:
                return value
    raise SampleError(f"sample {key!r} has no field {wanted!r} (it has {sorted(decoded)})", key=key)


#: :meth:`IPFSDataset.__getitems__` reads about this many bytes of samples before it
#: decodes them (a bound on what one batch holds undecoded, whatever the sample size).
READ_ROUND_BYTES = 4 * 1024 * 1024


class IPFSDataset(_SampleReader, torch.utils.data.Dataset):
    """A map-style dataset over IPFS content.

    Args:
        root: ``"ipfs://<cid>"``, a CID, ``/ipfs/<cid>/path``, a gateway URL, an
            :class:`IPFSObject` or a list of them.
        transform: applied to the sample (the image of an ``(image, target)`` pair, the
            dict of a dict sample), as in torchvision.
        target_transform: applied to the target (label field).
        decode: how fields are decoded; see :class:`torch_ipfs.decoders.Decoder`.
        fields: return ``tuple(sample[f] for f in fields)`` (by field name or extension).
        client: a :class:`~torch_ipfs.client.Client`; default: the process's default
            client, created lazily in each DataLoader worker.
        on_error: ``"raise"`` (default), ``"warn"`` or ``"skip"``: a sample that fails is
            replaced by the next readable one (map-style datasets cannot shrink) and counted.
        allow_pickle: decode ``.pth``/``.pickle`` fields (runs code from the data).
        sample_rate: resample audio fields to this rate.
        layout: skip detection and read the root as this layout.

    Subclasses may override ``__getitem__``; :meth:`read_raw` and :meth:`decode_sample`
    are the two steps of the default one. A DataLoader fetches its batches through
    :meth:`__getitems__`, which calls an overridden ``__getitem__`` for each index.
    """

    _random_access = True

    def __len__(self) -> int:
        return len(self.layout)

    def __getitem__(self, index: int) -> Any:
        return self._item(index, self._read_short(index))

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        """``[self[i] for i in indices]``: what a DataLoader's batched fetch asks for.

        The samples' bytes are read first, then decoded, in rounds of about
        :data:`READ_ROUND_BYTES`: each phase then runs with its own code and data warm in
        the CPU caches, where alternating per sample let the decoder evict the read path
        (a shuffled raw read took 13 us alone and 21 us between PNG decodes). A subclass
        that overrides ``__getitem__`` gets its own, sample by sample."""
        if type(self).__getitem__ is not IPFSDataset.__getitem__:
            return [self[i] for i in indices]
        out: list[Any] = []
        pending: list[tuple[Any, tuple[str, tuple[bytes, ...]] | None]] = []
        held = 0
        for index in indices:
            read = self._read_short(index)
            pending.append((index, read))
            held += sum(map(len, read[1])) if read is not None else 0
            if held >= READ_ROUND_BYTES:
                out.extend(self._finish_round(pending))
                pending, held = [], 0
        out.extend(self._finish_round(pending))
        return out

    def _finish_round(self, pending: list[tuple[Any, tuple[str, tuple[bytes, ...]] | None]]) -> list[Any]:
        return [self._item(index, read) for index, read in pending]

    def _item(self, index: Any, read: tuple[str, tuple[bytes, ...]] | None) -> Any:
        """``ds[index]`` from what :meth:`_read_short` read of it: finished on the short
        path, or (None, or an error finishing it) read again the general way."""
        item = None if read is None else self._finish_short(*read)
        return self._read_general(index) if item is None else item

    def _read_short(self, index: Any) -> tuple[str, tuple[bytes, ...]] | None:
        """``(key, the declared fields' bytes)`` of sample ``index`` by the short path (a
        tuple-shaped sample of a sharded-tar root: the layout's ``read_plain``), or None
        when it does not take it or the read failed: the general path then reads it
        strictly and reports as ``on_error`` says."""
        lean = self.__dict__.get("_lean")
        if lean is None:
            lean = self._lean = self._lean_plan()
        if not lean or type(index) is not int or self.decoder is not lean[2]:
            return None
        try:
            got = self.layout.read_plain(index)  # type: ignore[attr-defined]
        except (IPFSError, OSError, ValueError):
            return None
        if got is None or len(got[1]) != len(lean[0]):
            return None
        try:
            return got[0], tuple([got[1][f] for f in lean[0]])
        except KeyError:
            return None

    def _finish_short(self, key: str, values: tuple[bytes, ...]) -> Any:
        """The item of a sample :meth:`_read_short` read: the declared fields decoded
        straight into the tuple, transformed; exactly what ``make_item(read_raw(i))``
        gives. None on an error of a decoder or a transform (the general path then reads
        the sample again and reports as ``on_error`` says)."""
        names, raw, _, declared, label_pos = self._lean  # type: ignore[misc]  # set by _read_short
        try:
            item: tuple[Any, ...] = values
            if not raw:  # the sample is named only if a field fails (an error message)
                item = self._decode_values(values, names, declared, functools.partial(self._where_of, key))
            if self.transform is None and self.target_transform is None:
                return item
            return self._apply(item, label_pos)
        except (KeyError, IPFSError, OSError, ValueError):
            return None

    def _read_general(self, index: int) -> Any:
        """``ds[index]`` the general way: read strictly, decode, transform; a sample that
        fails is raised, or replaced by the next readable one, as ``on_error`` says."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        index %= n
        for attempt in range(n):
            i = (index + attempt) % n
            try:
                return self.make_item(self.read_raw(i))
            except (IPFSError, OSError, ValueError) as e:
                self._failed(e, f"sample {i}")
        raise SampleError(f"{self.layout.where}: no sample could be read (all {n} failed)", index=index)

    def _lean_plan(self) -> tuple[tuple[str, ...], bool, Decoder, tuple[str, ...], int] | tuple[()]:
        """``(field names, all raw, decoder, their declared types, label position)`` when
        ``ds[i]`` may take the short path:
        a layout with ``read_plain``, tuple samples of declared fields, items as samples,
        and this class's own read_raw/make_item/decode_sample (a subclass overriding one
        gets exactly its own). ``()`` otherwise."""
        cls, schema = type(self), self.schema
        if (
            getattr(self.layout, "read_plain", None) is None
            or self.items != "samples"
            or self.fields is not None
            or schema.structure != "tuple"
            or not schema.types
            or cls.read_raw is not _SampleReader.read_raw
            or cls.make_item is not _SampleReader.make_item
            or cls.decode_sample is not _SampleReader.decode_sample
        ):
            return ()
        names = tuple(schema.types)
        raw = all(self.decoder._spec_of(f)[1] == "raw" for f in names)
        return names, raw, self.decoder, tuple(schema.types.values()), self._label_pos(names)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_lean", None)  # remade on first use (it holds the decoder it checked)
        return state


class IPFSIterableDataset(_SampleReader, ShardedIterableDataset):
    """A streaming dataset over IPFS content (see :class:`IPFSDataset` for the arguments).

    Each DataLoader worker of each DDP rank streams its own runs of samples (contiguous
    byte ranges of the shards), planned by :class:`~torch_ipfs.sharding.SplitIterator`:
    every sample exactly once per epoch across ranks and workers, the same count on every
    rank. Memory stays bounded: one sample's fields plus the reader's prefetch window.

    Extra args:
        shuffle: permute the shard order per epoch and rotate the start, with
            ``DistributedSampler``'s meaning (same order on every rank for ``(seed, epoch)``;
            call :meth:`set_epoch` each epoch). Samples inside a run keep their order; wrap
            the dataset in a shuffle buffer for sample-level mixing.
        seed: seed of that order.
        drop_last: drop the tail so every rank gets ``floor(N / W)`` samples, instead of
            padding to ``ceil(N / W)`` by repeating samples from the start of the order.

    With ``on_error="skip"``/``"warn"`` a sample that fails is dropped (counted in
    :attr:`skipped`); the rank then yields fewer than ``len(dataset)`` samples.
    """

    def __init__(
        self,
        root: Any,
        *positional: Any,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        **options: Any,
    ) -> None:
        _SampleReader.__init__(self, root, *positional, **options)
        ShardedIterableDataset.__init__(self, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self._prefetching: tuple[int, SampleSpan, Future[int]] | None = None

    @property
    def shuffle(self) -> bool:
        return self.split.shuffle

    @property
    def seed(self) -> int:
        return self.split.seed

    @property
    def drop_last(self) -> bool:
        return self.split.drop_last

    def stream_mix(self) -> StreamMix | None:
        """The weighted streams of a mixed root (:func:`torch_ipfs.compose.mix`), else None."""
        streams = getattr(self.layout, "streams", None)
        if not streams:
            return None
        return StreamMix(tuple(streams), getattr(self.layout, "epoch_samples", None))

    def prefetch_span(self, span: SampleSpan) -> None:
        """Fetch the next span's blocks into the cache while this one streams (remote
        sources only: a no-op on the embedded store)."""
        future = self.layout.prefetch_span(span.shard, span.start, span.stop)
        self._prefetching = (os.getpid(), span, future) if future is not None else None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_prefetching"] = None  # a future of this process's prefetch thread
        return state

    def _wait_for_prefetch(self, span: SampleSpan) -> None:
        # Reading a span whose prefetch is still running would fetch its blocks twice:
        # wait for it instead (it started earlier). Its failure is the read's to raise.
        pending, self._prefetching = self._prefetching, None
        if pending is not None and pending[0] == os.getpid() and pending[1] == span:
            wait_futures([pending[2]])

    def read_span(self, span: SampleSpan) -> Iterator[Any]:
        """Decoded samples of one span; :data:`~torch_ipfs.sharding.SKIPPED` in place of
        each sample that failed under ``on_error="skip"``/``"warn"``."""
        self._wait_for_prefetch(span)
        fields, label_pos, declared = self._raw_tuple()
        if fields is None:
            raw_iter: Iterator[Any] = self.layout.iter_span(span.shard, span.start, span.stop)
        else:
            raw_iter = self.layout.iter_span_values(span.shard, span.start, span.stop, fields)
        plain = self.transform is None and self.target_transform is None
        position = span.start
        stop = span.stop
        try:
            for raw in raw_iter:
                if type(raw) is tuple:  # the item's fields' bytes (see _raw_tuple)
                    if plain and declared is None:
                        sample = raw
                    else:
                        try:
                            if declared is not None:  # the sample's name made on error only
                                where = functools.partial(self._where_at, span, position)
                                raw = self._decode_values(raw, fields or (), declared, where)
                            sample = raw if plain else self._apply(raw, label_pos)
                        except (IPFSError, OSError, ValueError) as e:
                            self._failed(e, f"sample {self._key_at(span, position)!r} (shard {span.shard})")
                            sample = SKIPPED
                else:
                    try:
                        sample = self.make_item(raw)
                    except (IPFSError, OSError, ValueError) as e:
                        self._failed(e, f"sample {raw.key!r} (shard {span.shard})")
                        sample = SKIPPED
                position += 1
                yield sample
                if position >= stop:
                    return
        except (IPFSError, OSError, ValueError) as e:
            # The stream itself broke (or on_error="raise" re-raised a sample's error:
            # _failed raises it again): the rest of this span cannot be read.
            rest = stop - position
            self._failed(e, f"shard {span.shard} samples {position}..{stop - 1}")
            self.skipped += rest - 1
            for _ in range(rest):
                yield SKIPPED
        # a stream that ended early: the base class reports the short span

    def _raw_tuple(self) -> tuple[tuple[str, ...] | None, int, tuple[str | None, ...] | None]:
        """``(fields, label position, declared types)`` when every item is the tuple of
        those fields (a tuple-shaped dataset, or ``fields=``): the layout may then hand
        each sample over as the tuple of their bytes, decoded here field by field
        (declared types None: every field is ``"raw"``, the tuple is the item).
        ``(None, -1, None)`` otherwise."""
        found = self.__dict__.get("_raw_tuple_of")
        if found is None:
            found = (None, -1, None)
            schema = self.schema
            if self.items == "samples":
                if self.fields is not None:
                    found = (self.fields, -1, None)
                elif schema.types and schema.structure == "tuple":
                    names = tuple(schema.types)
                    found = (names, self._label_pos(names), None)
            picked = found[0]
            if picked is not None and not all(map(self.decoder.is_raw, picked)):
                found = (picked, found[1], tuple(schema.types.get(f) for f in picked))
            self.__dict__["_raw_tuple_of"] = found
        return found  # type: ignore[no-any-return]

    def _key_at(self, span: SampleSpan, position: int) -> Any:
        """The key of the sample at ``position`` of ``span`` (its position when the
        layout has no keys), for messages."""
        sample_key = getattr(self.layout, "sample_key", None)
        if sample_key is None:
            return position
        return sample_key(self.layout.shard_starts()[span.shard] + position)

    def _where_at(self, span: SampleSpan, position: int) -> str:
        """The sample at ``position`` of ``span``, named as decode errors name it."""
        return self._where_of(self._key_at(span, position))

    def extra_repr(self) -> str:
        return (
            super().extra_repr()
            + f"\nShuffle: {self.shuffle} (seed {self.seed}), drop_last: {self.drop_last}"
        )


def _describe_root(root: Any) -> str:
    """The root as the user gave it: an address, or a count of ``IPFSObject`` inputs."""
    if isinstance(root, (list, tuple)):
        return f"{len(root)} objects"
    return str(root)

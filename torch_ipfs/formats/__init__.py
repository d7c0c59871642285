"""Dataset layouts: one module per layout, plus the shared pieces.

- :mod:`.base`: :class:`Layout` (samples in shards, read by index or by span),
  :class:`RawSample`, :class:`SampleSchema`, member-name checks.
- :mod:`.detect`: :func:`open_layout` (detection), :class:`IPFSObject`, :class:`RemoteFileType`.
- :mod:`.tar` (tar reading/writing) and :mod:`.tarshards` (the sharded-tar layout the
  exporter writes), with the binary files of its manifest v2: :mod:`.shardtable` (which
  runs of which shards) and :mod:`.shardindex` (one shard's offsets and keys).
- :mod:`.ziparchive`, :mod:`.folder`, :mod:`.plain`, :mod:`.cidlist`, :mod:`.embedded`,
  :mod:`.multimodal`, :mod:`.shardedjson`; :mod:`.manifest` (JSON checks).

Exact manifest schemas: ``docs/layouts.md``.
"""

from torch_ipfs.formats.base import Layout, RawSample, SampleSchema
from torch_ipfs.formats.detect import LAYOUTS, IPFSObject, RemoteFileType, open_layout

__all__ = ["LAYOUTS", "IPFSObject", "Layout", "RawSample", "RemoteFileType", "SampleSchema", "open_layout"]

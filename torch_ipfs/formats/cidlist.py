"""The CID-list layout: a manifest naming one CID per sample.

``{"name": ..., "version": ..., "samples": ["<cid>", "<cid>", ...]}`` -- each CID is a
file holding either a JSON object (a dict sample) or raw bytes (one value, decoded by
the file's magic number: PNG/JPEG/... images, WAV/FLAC audio, ``.npy`` arrays, else bytes).
"""

from __future__ import annotations

from typing import Any

from torch_ipfs.cid import IPFSPath
from torch_ipfs.formats.base import (
    ClientHandle,
    ListLayout,
    RawSample,
    SampleSchema,
    json_sample,
    sniff_extension,
)
from torch_ipfs.formats.manifest import field, load_json, parse_ref

__all__ = ["CIDListLayout", "is_cidlist_manifest", "sample_from_bytes"]


def is_cidlist_manifest(obj: Any) -> bool:
    samples = obj.get("samples") if isinstance(obj, dict) else None
    return isinstance(samples, list) and bool(samples) and all(isinstance(s, str) for s in samples)


def sample_from_bytes(data: bytes, key: str, where: str) -> RawSample:
    """A sample file: a JSON object if it is one, else one value named by its magic number."""
    head = data[:64].lstrip()
    if head[:1] in (b"{", b"["):
        return json_sample(load_json(data, where), key)
    return RawSample(key, {sniff_extension(data): data}, "single")


class CIDListLayout(ListLayout):
    """One file per sample, listed by CID (or ``ipfs://`` address) in the manifest."""

    name = "cidlist"

    def __init__(
        self, client: ClientHandle, where: str, refs: list[IPFSPath], meta: dict[str, Any] | None = None
    ):
        super().__init__(client, where)
        self.refs = refs
        self.meta = meta or {}
        self.schema = SampleSchema(structure="dict", with_key=False)

    @classmethod
    def from_manifest(cls, client: ClientHandle, root: IPFSPath, manifest: Any, where: str) -> CIDListLayout:
        samples = field(manifest, "samples", list, where)
        refs = [parse_ref(value, f"{where}: samples[{i}]", root.gateway) for i, value in enumerate(samples)]
        meta = {k: manifest[k] for k in ("name", "version") if k in manifest}
        return cls(client, where, refs, meta)

    def count(self) -> int:
        return len(self.refs)

    def read_item(self, i: int) -> RawSample:
        ref = self.refs[i]
        return sample_from_bytes(self.cat(ref), str(ref.cid), f"{self.where}: samples[{i}] ({ref})")

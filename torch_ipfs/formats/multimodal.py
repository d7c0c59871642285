"""The multimodal layout: samples that link their media by CID.

``{"name": ..., "version": ..., "classes": [...]?, "samples": [{"id": ..., "image_cid":
"<cid>", "audio_cid": "<cid>", "text": "...", "features": [...], "label": 3}, ...]}``

Every ``<name>_cid`` entry is fetched (verified, by range-free whole-file read) and
becomes the field ``<name>`` -- named ``<name>.<ext>`` when ``<name>`` is not itself an
extension, with ``ext`` from the file's magic number -- so ``image_cid`` decodes as an
image and ``audio_cid`` as a waveform. The sample dict keeps the name without ``_cid``
(``sample["image"]``, ``sample["audio"]``); every other entry is passed through.
"""

from __future__ import annotations

from typing import Any

from torch_ipfs.cid import IPFSPath
from torch_ipfs.decoders import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS
from torch_ipfs.errors import ManifestError
from torch_ipfs.formats.base import ClientHandle, ListLayout, RawSample, SampleSchema, sniff_extension
from torch_ipfs.formats.manifest import field, parse_ref

__all__ = ["MultimodalLayout", "is_multimodal_manifest"]

_SUFFIX = "_cid"


def is_multimodal_manifest(obj: Any) -> bool:
    samples = obj.get("samples") if isinstance(obj, dict) else None
    return (
        isinstance(samples, list)
        and bool(samples)
        and isinstance(samples[0], dict)
        and any(k.endswith(_SUFFIX) for k in samples[0])
    )


class MultimodalLayout(ListLayout):
    """Samples whose ``*_cid`` entries link media files (see the module docstring)."""

    name = "multimodal"

    def __init__(self, client: ClientHandle, where: str, samples: list[dict[str, Any]], root: IPFSPath,
                 meta: dict[str, Any] | None = None):  # fmt: skip
        super().__init__(client, where)
        self.samples = samples
        self.root = root
        self.meta = meta or {}
        label = next((k for k in ("label", "labels", "target") if samples and k in samples[0]), None)
        classes = self.meta.get("classes")
        self.schema = SampleSchema(
            structure="dict",
            with_key=False,
            label_field=label,
            classes=[str(c) for c in classes] if isinstance(classes, list) else None,
        )

    @classmethod
    def from_manifest(
        cls, client: ClientHandle, root: IPFSPath, manifest: Any, where: str
    ) -> MultimodalLayout:
        samples = field(manifest, "samples", list, where)
        for i, s in enumerate(samples):
            if not isinstance(s, dict):
                raise ManifestError(f"{where}: samples[{i}] must be an object, got {type(s).__name__}")
        meta = {k: manifest[k] for k in ("name", "version", "classes", "modalities") if k in manifest}
        return cls(client, where, samples, root, meta)

    def count(self) -> int:
        return len(self.samples)

    def read_item(self, i: int) -> RawSample:
        entry = self.samples[i]
        where = f"{self.where}: samples[{i}]"
        fields: dict[str, Any] = {}
        keys: dict[str, str] = {}
        for name, value in entry.items():
            if not name.endswith(_SUFFIX) or value is None:
                fields[name] = value
                continue
            stem = name[: -len(_SUFFIX)]
            data = self.cat(parse_ref(value, f"{where}: {name!r}", self.root.gateway))
            known = stem in IMAGE_EXTENSIONS or stem in AUDIO_EXTENSIONS
            fname = stem if known else f"{stem}.{sniff_extension(data)}"
            fields[fname] = data
            keys[fname] = stem
        return RawSample(str(entry.get("id", i)), fields, "dict", keys)

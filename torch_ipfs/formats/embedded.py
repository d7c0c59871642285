"""The embedded layout: every sample inside the manifest itself.

``{"name": ..., "version": ..., "data": [{...}, {...}, ...]}`` -- each element of
``data`` is one sample (an object becomes a dict sample; anything else a single value).
"""

from __future__ import annotations

from typing import Any

from torch_ipfs.formats.base import ClientHandle, ListLayout, RawSample, SampleSchema, json_sample
from torch_ipfs.formats.manifest import field

__all__ = ["EmbeddedLayout", "is_embedded_manifest"]


def is_embedded_manifest(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("data"), list)


class EmbeddedLayout(ListLayout):
    """Samples stored in the manifest's ``data`` list (or given as a Python list)."""

    name = "embedded"

    def __init__(
        self, client: ClientHandle, where: str, samples: list[Any], meta: dict[str, Any] | None = None
    ):
        super().__init__(client, where)
        self.samples = samples
        self.meta = meta or {}
        self.schema = SampleSchema(structure="dict", with_key=False, label_field=_label_of(samples))

    @classmethod
    def from_manifest(cls, client: ClientHandle, manifest: Any, where: str) -> EmbeddedLayout:
        data = field(manifest, "data", list, where)
        meta = {k: manifest[k] for k in ("name", "version") if k in manifest}
        return cls(client, where, data, meta)

    def count(self) -> int:
        return len(self.samples)

    def read_item(self, i: int) -> RawSample:
        return json_sample(self.samples[i], str(i))


def _label_of(samples: list[Any]) -> str | None:
    first = samples[0] if samples else None
    if isinstance(first, dict):
        for name in ("label", "labels", "target", "cls"):
            if name in first:
                return name
    return None

"""Loading and checking JSON manifests: every problem is a :class:`ManifestError` that
names the manifest (CID or path) and the offending field."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from torch_ipfs.cid import CID, IPFSPath, parse_address
from torch_ipfs.errors import InvalidCIDError, ManifestError

__all__ = [
    "MAX_MANIFEST_BYTES",
    "encode_json",
    "finite_json",
    "field",
    "load_json",
    "parse_cid",
    "parse_ref",
]

#: Manifests larger than this are refused before parsing (a list of a few million CIDs).
MAX_MANIFEST_BYTES = 512 * 1024 * 1024


def load_json(data: bytes, where: str) -> Any:
    """Parse JSON bytes (UTF-8), or raise :class:`ManifestError` saying where and why."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{where}: manifest is {len(data)} bytes, over {MAX_MANIFEST_BYTES}")
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"{where}: not valid JSON ({e})") from None
    except RecursionError as e:  # "[[[[..." nested deeper than the decoder's stack
        raise ManifestError(f"{where}: JSON nested too deeply") from e


def encode_json(value: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no spaces, UTF-8 (the same value, the same CID)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def finite_json(value: Any) -> Any:
    """``value`` as JSON can hold it: NaN and infinite floats as ``None``, tuples as
    lists, keys as strings. For our own values (metadata, metrics summaries): it recurses,
    so never give it a structure read from the network."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


_TYPES: dict[type | tuple[type, ...], str] = {
    str: "a string",
    int: "an integer",
    list: "a list",
    dict: "an object",
}


def field(obj: Any, name: str, kind: type | tuple[type, ...], where: str, *, required: bool = True) -> Any:
    """``obj[name]`` checked to be of ``kind`` (``bool`` never counts as ``int``)."""
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if name not in obj or obj[name] is None:
        if required:
            raise ManifestError(f"{where}: missing field {name!r}")
        return None
    value: Any = obj[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        what = _TYPES.get(kind, getattr(kind, "__name__", str(kind)))
        raise ManifestError(f"{where}: field {name!r} must be {what}, got {type(value).__name__}")
    if kind is int and isinstance(value, int) and value < 0:
        raise ManifestError(f"{where}: field {name!r} must be >= 0, got {value}")
    return value


def parse_cid(value: Any, where: str) -> CID:
    """A CID string from a manifest, or :class:`ManifestError`."""
    if not isinstance(value, str):
        raise ManifestError(f"{where}: expected a CID string, got {type(value).__name__}")
    try:
        return CID.decode(value)
    except InvalidCIDError as e:
        raise ManifestError(f"{where}: {e}") from None


def parse_ref(value: Any, where: str, gateway: str | None) -> IPFSPath:
    """A CID or address string (``<cid>``, ``ipfs://<cid>/path``, a gateway URL) that a
    manifest links to, fetched through ``gateway`` (the manifest's own) unless it names
    one; or :class:`ManifestError` naming ``where``."""
    if not isinstance(value, str):
        raise ManifestError(f"{where} must be a CID string, got {type(value).__name__}")
    try:
        ref = parse_address(value)
    except InvalidCIDError as e:
        raise ManifestError(f"{where}: {e}") from None
    return IPFSPath(ref.cid, ref.path, ref.gateway or gateway)

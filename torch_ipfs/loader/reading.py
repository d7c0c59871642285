"""Reading one sample of a loader's dataset as a dict: decoding, retries, timing and
the error policy; the feature/label keys the framework adapters pick."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from torch_ipfs.decoders import Decoder, PickleRefusedError
from torch_ipfs.errors import IPFSError
from torch_ipfs.formats.base import Layout, RawSample
from torch_ipfs.metrics import MetricsCollector

__all__ = ["FEATURE_KEYS", "LABEL_KEYS"]

log = logging.getLogger("torch_ipfs.loader")

#: Sample keys tried, in order, for the features of ``(features, labels)`` pairs.
FEATURE_KEYS = ("features", "feature", "x", "inputs", "input", "image", "data")
#: Sample keys tried, in order, for the labels.
LABEL_KEYS = ("labels", "label", "targets", "target", "y", "cls")

ON_ERROR = ("skip", "raise")
#: Errors that make one sample unreadable (the rest of the epoch goes on).
SAMPLE_ERRORS = (IPFSError, OSError, ValueError)


def result_dict(operation: str, **fields: Any) -> dict[str, Any]:
    """An ipfs_kit-style result dict."""
    return {"success": False, "operation": operation, "timestamp": time.time(), **fields}


class Failed:
    """A sample that could not be read (kept in the stream so order is preserved)."""

    __slots__ = ("error", "index")

    def __init__(self, index: int, error: BaseException) -> None:
        self.index, self.error = index, error


class SampleReader:
    """Reads sample ``i`` of a layout as a dict, with retries, timing and error policy.

    Picklable (for DataLoader workers); the metrics collector stays in its process.
    """

    def __init__(
        self,
        layout: Layout,
        *,
        decode: Any,
        fetch_media: bool,
        on_error: str,
        retries: int,
        sample_rate: int | None,
        metrics: MetricsCollector | None,
        indices: Sequence[int] | None = None,
    ) -> None:
        self.layout = layout
        #: the layout's samples this reader's index ``i`` reads (a split), or all of them
        self.indices = list(indices) if indices is not None else None
        self.decoder = Decoder(decode, sample_rate=sample_rate)
        self.on_error = on_error
        self.retries = retries
        self.metrics = metrics
        # Multimodal manifests: hand out the entries themselves (ipfs_kit's samples,
        # media fetched on demand by fetch_image/process_audio) unless asked to fetch.
        entries = getattr(layout, "samples", None)
        self._entries = entries if layout.name == "multimodal" and not fetch_media else None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["metrics"] = None
        return state

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.layout)

    def read(self, index: int) -> dict[str, Any] | Failed:
        """The sample dict, or :class:`Failed` (``on_error="skip"``) after the retries."""
        if self.indices is not None:
            index = self.indices[index]
        if self._entries is not None:
            return dict(self._entries[index])
        m = self.metrics
        for attempt in range(self.retries + 1):
            try:
                if m is None:
                    return self._to_dict(self.layout.read_sample(index))
                with m.track("loader.read"):
                    raw = self.layout.read_sample(index)
                with m.track("loader.decode"):
                    return self._to_dict(raw)
            except PickleRefusedError:
                raise
            except SAMPLE_ERRORS as e:
                if self.on_error == "raise":
                    raise
                if attempt < self.retries:
                    if m is not None:
                        m.increment("loader.retries")
                    time.sleep(min(0.05 * 2**attempt, 1.0))
                    continue
                return Failed(index, e)
        raise AssertionError("unreachable")  # pragma: no cover

    def record_skip(self, failed: Failed) -> None:
        """Count (in this process's metrics, if any) and log a sample left out."""
        e, m = failed.error, self.metrics
        so_far = ""
        if m is not None:
            m.increment("loader.skipped")
            m.increment(f"loader.skipped[{type(e).__name__}]")
            so_far = f" ({m.counter('loader.skipped')} skipped so far)"
        log.warning(
            "skipping sample %d of %s: %s: %s%s", failed.index, self.layout.where, type(e).__name__, e, so_far
        )

    def _to_dict(self, raw: RawSample) -> dict[str, Any]:
        schema = self.layout.schema
        decoded = self.decoder.decode_fields(raw.fields, schema.types, f"{self.layout.where}: {raw.key!r}")
        return {raw.keys.get(f) or schema.keys.get(f, f): v for f, v in decoded.items()}


def pick_keys(
    sample: dict[str, Any], features: str | None, labels: str | None, *, required: bool = True
) -> tuple[Any, str | None]:
    """The feature and label keys: as given, else the first of the defaults present."""
    if not isinstance(sample, dict):
        raise TypeError(f"samples are {type(sample).__name__}, not dicts")
    fkey = features if features is not None else next((k for k in FEATURE_KEYS if k in sample), None)
    if fkey is None:
        if required:
            raise ValueError(
                f"no feature entry in the samples (keys: {sorted(sample)}): pass features=<key>, "
                f"e.g. loader.to_pytorch(features={sorted(sample)[0]!r}) "
                f"(defaults tried: {', '.join(FEATURE_KEYS)})"
            )
        return None, None
    if fkey not in sample:
        raise KeyError(f"samples have no entry {fkey!r} (keys: {sorted(sample)})")
    if labels == "":
        return fkey, None
    lkey = labels if labels is not None else next((k for k in LABEL_KEYS if k in sample), None)
    if lkey is not None and lkey not in sample:
        raise KeyError(f"samples have no entry {lkey!r} (keys: {sorted(sample)})")
    return fkey, lkey


def is_pil(value: Any) -> bool:
    """A PIL image, without importing PIL."""
    return type(value).__module__.startswith("PIL.") and hasattr(value, "getbands")

"""The NumPy adapter (JAX takes its arrays as they are; Artifex-style batch dicts):
batches as ``{key: stacked array}``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from torch_ipfs.loader.reading import is_pil

if TYPE_CHECKING:
    from torch_ipfs.loader.batching import IPFSDataLoader

__all__ = ["NumpyBatches", "array_or_none", "as_array", "iter_numpy", "stack_batch"]


def as_array(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.ndarray):
        return value
    if is_pil(value):
        return np.asarray(value)
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor, without importing torch
        return value.detach().cpu().numpy()
    if isinstance(value, tuple) and len(value) == 2 and hasattr(value[0], "numpy"):
        return as_array(value[0])  # decoded audio
    return np.asarray(value)


def array_or_none(value: Any) -> Any:
    try:
        a = as_array(value)
    except (TypeError, ValueError):
        return None
    return a if a.dtype.kind in "biufU" else None


def stack_batch(batch: list[dict[str, Any]], keys: tuple[str, ...] | None = None) -> dict[str, Any]:
    """``{key: np.stack([sample[key] ...])}`` for a batch of sample dicts; entries that do
    not stack (ragged, mixed) become 1-D object arrays."""
    import numpy as np

    if keys is None:
        keys = tuple(batch[0]) if batch else ()
    out = {}
    for k in keys:
        values = [as_array(s[k]) for s in batch]
        try:
            out[k] = np.stack(values)
        except ValueError:
            arr = np.empty(len(values), dtype=object)
            arr[:] = values
            out[k] = arr
    return out


class NumpyBatches:
    """What :meth:`IPFSDataLoader.to_numpy` returns: one epoch per ``iter()``."""

    def __init__(self, loader: IPFSDataLoader, keys: tuple[str, ...] | None) -> None:
        self.loader, self.keys = loader, keys

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.loader.iter_numpy(self.keys)


def iter_numpy(loader: IPFSDataLoader, keys: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
    """One epoch of batches as ``{key: numpy array}`` (stacked along a new first axis;
    entries that do not stack become object arrays). JAX takes these directly."""
    wanted = tuple(keys) if keys is not None else None
    epoch = iter(loader)
    try:
        for batch in epoch:
            yield stack_batch(batch, wanted)
    finally:
        if hasattr(epoch, "close"):
            epoch.close()

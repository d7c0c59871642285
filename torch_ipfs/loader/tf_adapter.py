"""The TensorFlow adapter: a ``tf.data.Dataset`` whose every pass runs one loader epoch.
TensorFlow is imported only here, and torch not at all (it runs without torch)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from torch_ipfs.loader.numpy_adapter import array_or_none, as_array
from torch_ipfs.loader.reading import pick_keys, result_dict

if TYPE_CHECKING:
    from torch_ipfs.loader.batching import IPFSDataLoader

__all__ = ["TF_INSTALL_HINT", "tensorflow_dataset"]

TF_INSTALL_HINT = "TensorFlow is not available. Please install with 'pip install tensorflow'"


def _for_tf(a: Any) -> Any:
    import numpy as np

    return a.astype(np.float32) if a.dtype == np.float64 else a


def tensorflow_dataset(loader: IPFSDataLoader, features: str | None = None, labels: str | None = None) -> Any:
    """A ``tf.data.Dataset`` of ``(features, labels)`` batches (or of dicts, when the
    samples have no feature entry), element types and shapes taken from the first
    sample. Each pass over it runs one loader epoch. Float64 values become float32.

    Returns ipfs_kit's error result ``{"success": False, "error": "TensorFlow is not
    available. Please install with 'pip install tensorflow'", ...}`` without TensorFlow.
    """
    try:
        import tensorflow as tf
    except ImportError as e:
        return result_dict("to_tensorflow", error=TF_INSTALL_HINT, error_type=type(e).__name__)
    if loader._reader is None:
        return result_dict(
            "to_tensorflow",
            error="no dataset loaded: call load_dataset() first",
            error_type="RuntimeError",
        )
    first = loader._first_sample()
    fkey, lkey = pick_keys(first, features, labels, required=False)
    keys: tuple[str, ...]
    if fkey is not None:
        keys = (fkey, lkey) if lkey else (fkey,)
    else:
        keys = tuple(k for k, v in first.items() if array_or_none(v) is not None)
    specs = {}
    for k in keys:
        a = _for_tf(as_array(first[k]))
        specs[k] = tf.TensorSpec(shape=a.shape, dtype=tf.as_dtype(a.dtype), name=k)

    def element(sample: dict[str, Any]) -> Any:
        if fkey is None:
            return {k: _for_tf(as_array(sample[k])) for k in keys}
        if lkey:
            return _for_tf(as_array(sample[fkey])), _for_tf(as_array(sample[lkey]))
        return _for_tf(as_array(sample[fkey]))

    def generator() -> Iterator[Any]:
        epoch = iter(loader)
        try:
            for batch in epoch:
                for sample in batch:
                    yield element(sample)
        finally:
            if hasattr(epoch, "close"):
                epoch.close()

    if fkey is None:
        signature: Any = specs
    elif lkey:
        signature = (specs[fkey], specs[lkey])
    else:
        signature = specs[fkey]
    dataset = tf.data.Dataset.from_generator(generator, output_signature=signature)
    return dataset.batch(loader.batch_size, drop_remainder=loader.drop_last).prefetch(tf.data.AUTOTUNE)

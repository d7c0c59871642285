"""Sample encoders: turn the samples a dataset returns into named, typed byte fields.

The exporter (:mod:`torch_ipfs.exporter`) writes each sample as a group of files in a tar
shard, WebDataset style: ``<key>.<field>``, where the extension at the end of the field
name tells a reader how to decode it. Every encoding here is deterministic (the same
value gives the same bytes on every run: no timestamps, no host metadata) and none uses
pickle.

======================  ==========  ===========  ============================================
value                   field type  extension    bytes
======================  ==========  ===========  ============================================
``PIL.Image.Image``     image       ``.png``     lossless PNG, fixed zlib level, no metadata
                                    ``.jpg``     JPEG, opt-in, fixed quality/subsampling
``int`` / numpy int     int         ``.cls``     ASCII decimal (WebDataset's label file)
``torch.Tensor``        tensor      ``.npy``     ``numpy.save`` format, ``allow_pickle=False``
``numpy.ndarray``       ndarray     ``.npy``     same
:class:`Audio`          audio       ``.wav``     PCM / IEEE-float WAV written by hand (lossless)
                                    ``.flac``    FLAC via soundfile (opt-in, integer PCM)
``str``                 text        ``.txt``     UTF-8
``float`` / ``bool``,   json        ``.json``    canonical JSON (sorted keys, no spaces)
``dict`` / ``list``
``bytes``               bytes       ``.bin``     as given (or the field's own extension)
======================  ==========  ===========  ============================================

How a whole sample maps to fields (:func:`sample_fields`):

- a tuple or list ``(image, target)`` -> ``{"png": ..., "cls": ...}``; when two elements
  would share an extension, every field is numbered instead: ``"0.npy", "1.npy"``;
- a dict -> one field per key: ``{"image": img, "label": 3}`` -> ``"image.png"``,
  ``"label.cls"`` (a key that already is, or ends in, the extension is kept:
  ``{"png": img}`` -> ``"png"``); a ``bytes`` value keeps its key as the field name;
- anything else is a single field named by its extension.

The ``structure`` returned alongside (``"tuple"``, ``"dict"`` or ``"single"``) and the
field order let a reader rebuild the sample exactly as the dataset returned it.
"""

from __future__ import annotations

import io
import json
import numbers
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from torch_ipfs.errors import IPFSError

__all__ = [
    "FIELD_TYPES",
    "Audio",
    "EncodeError",
    "EncodedSample",
    "EncoderOptions",
    "encode_value",
    "sample_fields",
]

#: Field type -> extensions a reader decodes it from.
FIELD_TYPES: dict[str, tuple[str, ...]] = {
    "image": ("png", "jpg"),
    "int": ("cls",),
    "tensor": ("npy",),
    "ndarray": ("npy",),
    "audio": ("wav", "flac"),
    "text": ("txt",),
    "json": ("json",),
    "bytes": ("bin",),
}

_IMAGE_FORMATS = ("png", "jpeg", "jpg")
_AUDIO_FORMATS = ("wav", "flac")


class EncodeError(IPFSError, ValueError):
    """A sample value that cannot be written losslessly and without pickle (say which and why)."""


@dataclass(frozen=True)
class Audio:
    """A waveform and its sample rate, as torchaudio returns them.

    ``waveform`` is a tensor or array shaped ``(channels, frames)`` (torchaudio's
    convention) or ``(frames,)`` for mono.
    """

    waveform: Any
    sample_rate: int


@dataclass(frozen=True)
class EncoderOptions:
    """Choices that change the bytes written (and so the CIDs).

    - ``image_format``: ``"png"`` (lossless, default) or ``"jpeg"`` (lossy, opt-in).
    - ``jpeg_quality``: 1..100, used when ``image_format="jpeg"``.
    - ``audio_format``: ``"wav"`` (lossless for int16/int32/float32/float64, default) or
      ``"flac"`` (integer PCM only: int16 stays lossless, floats are quantised to 24 bits).
    - ``png_compress_level``: zlib level 0..9 for PNG (pixels are identical at any level).
    """

    image_format: str = "png"
    jpeg_quality: int = 95
    audio_format: str = "wav"
    png_compress_level: int = 6

    def __post_init__(self) -> None:
        if self.image_format.lower() not in _IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of png, jpeg; got {self.image_format!r}")
        if not 1 <= int(self.jpeg_quality) <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality!r}")
        if self.audio_format.lower() not in _AUDIO_FORMATS:
            raise ValueError(f"audio_format must be one of wav, flac; got {self.audio_format!r}")
        if not 0 <= int(self.png_compress_level) <= 9:
            raise ValueError(f"png_compress_level must be in 0..9, got {self.png_compress_level!r}")


@dataclass(frozen=True)
class EncodedSample:
    """One sample as fields: ``fields`` maps field name (ends in the extension) to bytes,
    ``types`` maps field name to field type, in the sample's own order."""

    fields: dict[str, bytes]
    types: dict[str, str]
    structure: str  # "tuple", "dict" or "single"
    #: For ``structure == "dict"``: field name -> the dataset's key.
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(len(v) for v in self.fields.values())


_DEFAULT_OPTIONS = EncoderOptions()


# -- single values -----------------------------------------------------------------------


def encode_value(value: Any, options: EncoderOptions = _DEFAULT_OPTIONS) -> tuple[str, str, bytes]:
    """Encode one value; return ``(field_type, extension, bytes)``.

    Raises :class:`EncodeError` for values that would need pickle or lose data silently.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytes", "bin", bytes(value)
    if isinstance(value, Audio):
        return _encode_audio(value, options)
    if isinstance(value, bool):  # before int: bool is an int subclass, but not a class label
        return "json", "json", _json_bytes(value)
    if isinstance(value, (numbers.Integral, np.integer)):
        return "int", "cls", str(int(value)).encode("ascii")
    if isinstance(value, str):
        return "text", "txt", value.encode("utf-8")
    if _is_pil_image(value):
        return _encode_image(value, options)
    if isinstance(value, np.ndarray):
        return "ndarray", "npy", _npy_bytes(value)
    if isinstance(value, np.generic):
        return "ndarray", "npy", _npy_bytes(np.asarray(value))
    if _is_tensor(value):
        return "tensor", "npy", _npy_bytes(_tensor_to_numpy(value))
    if isinstance(value, (float, dict, list, tuple)) or value is None:
        return "json", "json", _json_bytes(value)
    raise EncodeError(
        f"cannot encode a {type(value).__module__}.{type(value).__qualname__} without pickle; "
        "convert it to an image, tensor, array, number, string, bytes or JSON-able value"
    )


def _is_pil_image(value: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return False
    return isinstance(value, Image.Image)


def _is_tensor(value: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(value, torch.Tensor)


def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return None
    return torch


def _tensor_to_numpy(tensor: Any) -> np.ndarray:
    torch = _torch()
    t = tensor.detach().cpu()
    if t.dtype == torch.bfloat16:
        raise EncodeError("bfloat16 tensors have no .npy dtype; convert with .float() first")
    if t.is_sparse or t.is_quantized:
        raise EncodeError(f"cannot write a {t.layout} / quantized tensor as .npy; use .to_dense()")
    return t.resolve_conj().resolve_neg().numpy()


def _npy_bytes(array: np.ndarray) -> bytes:
    if array.dtype.hasobject:
        raise EncodeError(f"object arrays need pickle; refusing dtype {array.dtype}")
    buf = io.BytesIO()
    # Format version 1.0 pinned so the header bytes do not depend on numpy's choice.
    np.lib.format.write_array(buf, np.ascontiguousarray(array), version=(1, 0), allow_pickle=False)
    return buf.getvalue()


def _json_bytes(value: Any) -> bytes:
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError) as e:
        raise EncodeError(f"value is not JSON-able ({e}); convert nested tensors/arrays first") from None
    return text.encode("utf-8")


def _encode_image(image: Any, options: EncoderOptions) -> tuple[str, str, bytes]:
    buf = io.BytesIO()
    fmt = options.image_format.lower()
    try:
        if fmt == "png":
            # Only pixel data (and a palette's transparency, which is pixel data): no ICC,
            # EXIF, text or time chunks, so the bytes depend on the pixels alone.
            params: dict[str, Any] = {"compress_level": options.png_compress_level, "optimize": False}
            if "transparency" in image.info:
                params["transparency"] = image.info["transparency"]
            _strip_info(image).save(buf, format="PNG", **params)
            return "image", "png", buf.getvalue()
        if image.mode not in ("RGB", "L", "CMYK"):
            raise EncodeError(f"JPEG cannot hold mode {image.mode!r} images; convert('RGB') or use png")
        _strip_info(image).save(
            buf, format="JPEG", quality=int(options.jpeg_quality), subsampling=0, optimize=False
        )
        return "image", "jpg", buf.getvalue()
    except (OSError, KeyError) as e:  # PIL: "cannot write mode F as PNG"
        raise EncodeError(f"cannot write a mode {image.mode!r} image as {fmt}: {e}") from None


def _strip_info(image: Any) -> Any:
    """The same pixels with an empty ``info`` dict (PIL copies ICC/EXIF from it on save)."""
    if not image.info:
        return image
    clean = image.copy()
    clean.info = {}
    return clean


def _encode_audio(audio: Audio, options: EncoderOptions) -> tuple[str, str, bytes]:
    rate = int(audio.sample_rate)
    if rate <= 0:
        raise EncodeError(f"sample_rate must be positive, got {audio.sample_rate!r}")
    wave = audio.waveform
    wave = _tensor_to_numpy(wave) if _is_tensor(wave) else np.asarray(wave)
    if wave.ndim == 1:
        wave = wave[None, :]
    if wave.ndim != 2:
        raise EncodeError(f"audio waveform must be (channels, frames) or (frames,), got shape {wave.shape}")
    frames = np.ascontiguousarray(wave.T)  # interleaved: frame-major
    if options.audio_format.lower() == "wav":
        return "audio", "wav", _wav_bytes(frames, rate)
    return "audio", "flac", _flac_bytes(frames, rate)


_WAV_CODES = {  # dtype -> (format tag, bits): 1 = PCM, 3 = IEEE float
    np.dtype("uint8"): (1, 8),
    np.dtype("<i2"): (1, 16),
    np.dtype("<i4"): (1, 32),
    np.dtype("<f4"): (3, 32),
    np.dtype("<f8"): (3, 64),
}


def _wav_bytes(frames: np.ndarray, rate: int) -> bytes:
    """A canonical RIFF/WAVE file. Written by hand because libsndfile puts the current
    time into the PEAK chunk of float WAVs, which would change the CID on every run."""
    dtype = frames.dtype.newbyteorder("<") if frames.dtype.byteorder == ">" else frames.dtype
    if dtype not in _WAV_CODES:
        raise EncodeError(f"WAV holds uint8/int16/int32/float32/float64 samples, not {frames.dtype}")
    tag, bits = _WAV_CODES[dtype]
    channels = frames.shape[1]
    block_align = channels * bits // 8
    data = frames.astype(dtype.newbyteorder("<"), copy=False).tobytes()
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block_align, block_align, bits)
    chunks = [b"fmt ", struct.pack("<I", len(fmt)), fmt]
    if tag == 3:  # non-PCM WAVs carry a fact chunk (frame count)
        chunks += [b"fact", struct.pack("<II", 4, frames.shape[0])]
    chunks += [b"data", struct.pack("<I", len(data)), data]
    if len(data) % 2:
        chunks.append(b"\x00")  # RIFF chunks are word-aligned
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _flac_bytes(frames: np.ndarray, rate: int) -> bytes:
    try:
        import soundfile
    except ImportError:
        raise EncodeError("FLAC needs the soundfile package: pip install 'torch-ipfs[audio]'") from None
    if frames.dtype == np.int16:
        subtype = "PCM_16"
    elif frames.dtype in (np.int32, np.float32, np.float64):
        subtype = "PCM_24"
    else:
        raise EncodeError(f"FLAC holds int16/int32/float samples, not {frames.dtype}")
    buf = io.BytesIO()
    soundfile.write(buf, frames, rate, format="FLAC", subtype=subtype)
    return buf.getvalue()


# -- whole samples -----------------------------------------------------------------------


def sample_fields(sample: Any, options: EncoderOptions = _DEFAULT_OPTIONS) -> EncodedSample:
    """Encode one dataset sample into named fields (see the module docstring for the rules)."""
    if isinstance(sample, Mapping):
        fields: dict[str, bytes] = {}
        types: dict[str, str] = {}
        keys: dict[str, str] = {}
        for key, value in sample.items():
            if not isinstance(key, str) or not key or "/" in key or key.startswith("."):
                raise EncodeError(f"dict sample keys must be non-empty names without '/', got {key!r}")
            kind, ext, data = encode_value(value, options)
            if kind == "bytes":
                name = key  # raw bytes: the key says what they are (e.g. "jpg", "meta.json")
            elif key == ext or key.endswith("." + ext):
                name = key
            else:
                name = f"{key}.{ext}"
            if name in fields:
                raise EncodeError(f"two keys of a dict sample map to the same field {name!r}")
            fields[name], types[name], keys[name] = data, kind, key
        if not fields:
            raise EncodeError("empty dict sample")
        return EncodedSample(fields, types, "dict", keys)
    if isinstance(sample, (tuple, list)):
        encoded = [encode_value(v, options) for v in sample]
        if not encoded:
            raise EncodeError("empty tuple sample")
        exts = [ext for _, ext, _ in encoded]
        numbered = len(set(exts)) != len(exts)
        fields, types = {}, {}
        for i, (kind, ext, data) in enumerate(encoded):
            name = f"{i}.{ext}" if numbered else ext
            fields[name], types[name] = data, kind
        return EncodedSample(fields, types, "tuple")
    kind, ext, data = encode_value(sample, options)
    return EncodedSample({ext: data}, {ext: kind}, "single")

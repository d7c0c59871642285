"""Field decoders: the bytes of a sample's fields -> Python, NumPy and torch values.

A field is decoded by, in order: a per-field or per-extension override the user gave,
the type the manifest declares for it (``image``, ``int``, ``tensor``, ...), then its
extension (the part of the field name after the last dot, WebDataset style):

================================  ====================================================
extension                         value
================================  ====================================================
png jpg jpeg bmp gif tif webp ..  ``PIL.Image.Image`` (fully loaded); with
                                  ``decode="tensor"`` a ``uint8`` tensor ``[C, H, W]``
                                  (what ``torchvision``'s ``pil_to_tensor`` gives:
                                  exact pixel values, no scaling; torchvision itself
                                  is not needed, nor its ~2 s import)
wav flac ogg mp3                  ``(waveform, sample_rate)``: float tensor
                                  ``[channels, frames]`` (float64 for 64-bit files),
                                  resampled with torchaudio when ``sample_rate`` is set
txt text                          ``str`` (UTF-8)
json                              the JSON value
cls cls2 class idx index id ..    ``int``
npy                               ``numpy.ndarray`` (``allow_pickle=False``); a tensor
                                  when the manifest says ``tensor`` or ``decode="tensor"``
npz                               ``dict`` of arrays (``allow_pickle=False``)
safetensors                       ``dict`` of tensors
pth pt pickle pkl                 only with ``allow_pickle=True`` (unpickling runs code:
                                  never done to network data unless asked); otherwise
                                  :class:`PickleRefusedError`
anything else                     the raw ``bytes``
================================  ====================================================

Why PIL by default: torchvision datasets hand their ``transform`` a PIL image, so
transforms written for them (``ToTensor()``, ``RandomCrop``, ...) work unchanged.
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Callable, Mapping
from typing import Any

from torch_ipfs.errors import FormatError

__all__ = [
    "AUDIO_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "DecodeError",
    "Decoder",
    "PickleRefusedError",
    "decode_audio",
    "decode_image",
    "decode_npy",
]

IMAGE_EXTENSIONS = frozenset(
    [
        "png",
        "jpg",
        "jpeg",
        "jpe",
        "jfif",
        "bmp",
        "gif",
        "tif",
        "tiff",
        "webp",
        "ppm",
        "pgm",
        "pbm",
        "pnm",
        "image",
        "img",
    ]
)
AUDIO_EXTENSIONS = frozenset(["wav", "flac", "ogg", "oga", "opus", "mp3", "audio"])
TEXT_EXTENSIONS = frozenset(["txt", "text", "transcript", "caption"])
JSON_EXTENSIONS = frozenset(("json", "jsn"))
INT_EXTENSIONS = frozenset(["cls", "cls2", "class", "count", "index", "inx", "idx", "id", "label", "target"])
PICKLE_EXTENSIONS = frozenset(("pth", "pt", "pickle", "pkl"))

_MODES = ("auto", "pil", "tensor", "raw")


class DecodeError(FormatError):
    """A field's bytes could not be decoded as what its extension or type says."""


class PickleRefusedError(DecodeError):
    """A pickled field met ``allow_pickle=False`` (the default)."""


# -- single decoders -----------------------------------------------------------------------


def decode_image(data: bytes, *, as_tensor: bool = False) -> Any:
    """A loaded PIL image, or its ``uint8`` ``[C, H, W]`` tensor."""
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()  # decode now: errors belong to this sample, and no file stays open
    return _pil_to_tensor(image) if as_tensor else image


def _pil_to_tensor(image: Any) -> Any:
    """A PIL image as a tensor ``[C, H, W]`` of its own pixel values and dtype: the
    values, dtype and shape ``torchvision.transforms.functional.pil_to_tensor`` gives
    (a ``permute`` view of an ``[H, W, C]`` copy), without importing torchvision."""
    import numpy as np
    import torch

    pixels = torch.as_tensor(np.array(image, copy=True))
    return pixels.view(image.size[1], image.size[0], len(image.getbands())).permute((2, 0, 1))


def decode_audio(data: bytes, *, sample_rate: int | None = None) -> tuple[Any, int]:
    """``(waveform [channels, frames] float tensor, sample_rate)``, optionally resampled."""
    import soundfile
    import torch

    with soundfile.SoundFile(io.BytesIO(data)) as f:
        dtype = "float64" if f.subtype == "DOUBLE" else "float32"
        frames = f.read(dtype=dtype, always_2d=True)
        rate = f.samplerate
    wave = torch.from_numpy(frames.T.copy())
    if sample_rate is not None and sample_rate != rate:
        import torchaudio.functional

        wave = torchaudio.functional.resample(wave, rate, sample_rate)
        rate = sample_rate
    return wave, rate


def decode_npy(data: bytes, *, as_tensor: bool = False) -> Any:
    """An array from ``.npy`` bytes, never unpickling object arrays."""
    import numpy as np

    array = np.load(io.BytesIO(data), allow_pickle=False)
    if not as_tensor:
        return array
    import torch

    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def _decode_npz(data: bytes) -> dict[str, Any]:
    import numpy as np

    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def _decode_safetensors(data: bytes) -> dict[str, Any]:
    from safetensors.torch import load

    return load(data)


def _decode_int(data: bytes) -> int:
    return int(data.decode("ascii").strip())


def _decode_pickle(data: bytes, ext: str) -> Any:
    if ext in ("pth", "pt"):
        import torch

        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    return pickle.loads(data)  # only reached with allow_pickle=True, the caller's decision


# -- the decoder ---------------------------------------------------------------------------

Spec = str | None | Callable[[str, bytes], Any] | Mapping[str, Any]


class Decoder:
    """Decodes the fields of raw samples.

    Args:
        decode: ``"auto"`` (the table in the module docstring; images as PIL),
            ``"tensor"`` (images, arrays and audio as tensors), ``"pil"`` (= ``"auto"``),
            ``None`` / ``"raw"`` (bytes as they are), a callable ``fn(field, data)``
            applied to every bytes field, or a dict mapping field names or extensions to
            any of these (fields not in it are decoded ``"auto"``).
        allow_pickle: allow ``.pth``/``.pt``/``.pickle``/``.pkl`` fields (runs code from the
            data: only for data you trust).
        sample_rate: resample audio to this rate (torchaudio).
    """

    def __init__(self, decode: Spec = "auto", *, allow_pickle: bool = False, sample_rate: int | None = None):
        self.overrides: dict[str, Any] = {}
        if isinstance(decode, Mapping):
            self.overrides = {str(k): self._check(v) for k, v in decode.items()}
            decode = "auto"
        self.default = self._check(decode)
        self.allow_pickle = allow_pickle
        self.sample_rate = sample_rate

    @staticmethod
    def _check(spec: Any) -> Any:
        if spec is None or spec is False:
            return "raw"
        if callable(spec):
            return spec
        if spec not in _MODES:
            valid = ", ".join(map(repr, _MODES))
            raise ValueError(f"decode must be one of {valid}, None, a callable or a dict; got {spec!r}")
        return "auto" if spec == "pil" else spec

    def __repr__(self) -> str:
        default = (
            self.default if isinstance(self.default, str) else getattr(self.default, "__name__", "callable")
        )
        extra = f", overrides={sorted(self.overrides)}" if self.overrides else ""
        return f"Decoder({default!r}{extra}, allow_pickle={self.allow_pickle})"

    def decode_fields(
        self, fields: Mapping[str, Any], types: Mapping[str, str], where: str
    ) -> dict[str, Any]:
        """Decode every field of one sample; non-bytes values (JSON layouts) pass through."""
        return {
            name: self.decode_field(name, value, types.get(name), where) for name, value in fields.items()
        }

    def is_raw(self, name: str) -> bool:
        """Whether field ``name``'s bytes are handed out as they are (``"raw"``)."""
        return bool(self._spec_of(name)[1] == "raw")

    def _spec_of(self, name: str) -> tuple[str, Any]:
        """``(extension, spec)`` of a field name (looked up once per name)."""
        cache = self.__dict__.setdefault("_specs", {})
        found = cache.get(name)
        if found is None:
            ext = name.rsplit(".", 1)[-1].lower()
            found = (ext, self.overrides.get(name, self.overrides.get(ext, self.default)))
            if len(cache) < 1024:  # field names come from the data: bound the table
                cache[name] = found
        return found

    def decode_field(
        self, name: str, value: Any, declared: str | None, where: str | Callable[[], str]
    ) -> Any:
        """One field's value; ``where`` (or ``where()``, made only for an error) names
        the sample in a :class:`DecodeError`."""
        if not isinstance(value, (bytes, bytearray, memoryview)):
            return value
        ext, spec = self._spec_of(name)
        if spec == "raw":
            return bytes(value)
        try:
            if callable(spec):
                return spec(name, bytes(value))
            return self._auto(bytes(value), ext, declared, tensors=spec == "tensor")
        except PickleRefusedError:
            raise
        except Exception as e:
            kind = declared or ext
            if callable(where):
                where = where()
            raise DecodeError(
                f"{where}: cannot decode field {name!r} as {kind}: {type(e).__name__}: {e}"
            ) from e

    def _auto(self, data: bytes, ext: str, declared: str | None, *, tensors: bool) -> Any:
        kind = declared or _kind_of(ext)
        if kind == "bytes":
            return data
        if kind == "image":
            return decode_image(data, as_tensor=tensors)
        if kind == "int":
            return _decode_int(data)
        if kind == "tensor":
            return decode_npy(data, as_tensor=True)
        if kind == "ndarray" or (kind is None and ext == "npy"):
            return decode_npy(data, as_tensor=tensors)
        if kind == "audio":
            return decode_audio(data, sample_rate=self.sample_rate)
        if kind == "text":
            return data.decode("utf-8")
        if kind == "json":
            return json.loads(data)
        if ext == "npz":
            return _decode_npz(data)
        if ext == "safetensors":
            return _decode_safetensors(data)
        if ext in PICKLE_EXTENSIONS:
            if not self.allow_pickle:
                raise PickleRefusedError(
                    f"refusing to unpickle a .{ext} field: unpickling runs arbitrary code from the data. "
                    "Pass allow_pickle=True only for data you trust, or store tensors as .npy/.safetensors"
                )
            return _decode_pickle(data, ext)
        return data


def _kind_of(ext: str) -> str | None:
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in AUDIO_EXTENSIONS:
        return "audio"
    if ext in TEXT_EXTENSIONS:
        return "text"
    if ext in JSON_EXTENSIONS:
        return "json"
    if ext in INT_EXTENSIONS:
        return "int"
    return None

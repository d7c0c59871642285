"""ipfs_kit's media helpers: an image, a text, an audio file of a multimodal sample."""

from __future__ import annotations

from typing import Any

__all__ = ["fetch_image", "process_audio", "process_text"]


def _client(client: Any) -> Any:
    if client is not None:
        return client
    from torch_ipfs.client import default_client

    return default_client()


def fetch_image(
    image_cid: Any, transform_to_tensor: bool = False, image_transforms: Any = None, *, client: Any = None
) -> Any:
    """The image at ``image_cid`` (CID or address), every block verified.

    Returns a loaded ``PIL.Image``; ``image_transforms(image)`` when transforms are given
    (e.g. a torchvision ``Compose``); else with ``transform_to_tensor`` a float tensor
    ``[C, H, W]`` in ``[0, 1]`` (torchvision's ``ToTensor``).
    """
    from torch_ipfs.decoders import decode_image

    image = decode_image(_client(client).cat(image_cid))
    if image_transforms is not None:
        return image_transforms(image)
    if transform_to_tensor:
        from torchvision.transforms.functional import to_tensor

        return to_tensor(image)
    return image


def process_text(text: str, tokenizer: Any = None, max_length: int | None = None) -> Any:
    """Text, optionally tokenized.

    - no tokenizer: the text, cut to ``max_length`` characters when given;
    - a Hugging Face tokenizer (has ``encode``): ``tokenizer(text, return_tensors="pt",
      truncation=..., max_length=...)`` as ipfs_kit calls it;
    - any other callable: ``tokenizer(text)``, cut to ``max_length`` tokens when given.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if tokenizer is None:
        return text if max_length is None else text[:max_length]
    if hasattr(tokenizer, "encode") and callable(tokenizer):
        kwargs: dict[str, Any] = {"return_tensors": "pt"}
        if max_length is not None:
            kwargs.update(max_length=max_length, truncation=True)
        return tokenizer(text, **kwargs)
    tokens = tokenizer(text)
    return tokens[:max_length] if max_length is not None else tokens


def process_audio(
    audio_cid: Any, sample_rate: int | None = None, transform_to_tensor: bool = False, *, client: Any = None
) -> Any:
    """The audio file at ``audio_cid``, every block verified.

    With ``transform_to_tensor``: the waveform, a float tensor ``[channels, frames]``
    decoded with soundfile and resampled to ``sample_rate`` with
    ``torchaudio.functional.resample`` when given. Without: the file's bytes (ipfs_kit's
    behaviour); ``sample_rate`` then needs decoding and raises ``ValueError``.
    """
    if not transform_to_tensor:
        if sample_rate is not None:
            raise ValueError("resampling needs decoding: pass transform_to_tensor=True with sample_rate")
        return _client(client).cat(audio_cid)
    from torch_ipfs.decoders import decode_audio

    waveform, _rate = decode_audio(_client(client).cat(audio_cid), sample_rate=sample_rate)
    return waveform

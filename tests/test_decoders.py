"""Image fields as tensors: torchvision's pixel values, without importing torchvision."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from torch_ipfs.decoders import decode_image


def _encoded(mode: str, fmt: str) -> bytes:
    rng = np.random.default_rng(5)
    if mode == "1":
        image = Image.fromarray(rng.integers(0, 2, (7, 5), dtype=np.uint8) * 255).convert("1")
    elif mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, (7, 5), dtype=np.uint16))
    elif mode == "P":
        image = Image.fromarray(rng.integers(0, 255, (7, 5, 3), dtype=np.uint8)).convert("P")
    else:
        image = Image.fromarray(rng.integers(0, 255, (7, 5, 4), dtype=np.uint8)).convert(mode)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("RGB", "PNG"), ("RGBA", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("1", "PNG"),
     ("I;16", "PNG"), ("RGB", "JPEG"), ("L", "JPEG"), ("CMYK", "TIFF")],
)  # fmt: skip
def test_tensor_decode_gives_what_torchvision_gives(mode, fmt):
    data = _encoded(mode, fmt)
    got = decode_image(data, as_tensor=True)
    want = pil_to_tensor(Image.open(io.BytesIO(data)))
    bands = len(Image.open(io.BytesIO(data)).getbands())
    assert got.dtype == want.dtype and got.shape == want.shape == (bands, 7, 5)
    assert torch.equal(got, want)


def test_tensor_decode_does_not_import_torchvision():
    png = _encoded("RGB", "PNG")
    code = (
        "import sys; from torch_ipfs.decoders import decode_image; "
        f"t = decode_image({png!r}, as_tensor=True); "
        "assert tuple(t.shape) == (3, 7, 5), t.shape; "
        "assert 'torchvision' not in sys.modules; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr

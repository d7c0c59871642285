"""The exporter and the sample encoders: deterministic bytes, round trips through real
stores and datasets, destinations (store, CAR, Kubo stand-in), and the CLI."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image
from standins.kubo_rpc import KuboStandIn

from torch_ipfs.cid import CID
from torch_ipfs.client import Client
from torch_ipfs.encoders import Audio, EncodeError, EncoderOptions, encode_value, sample_fields
from torch_ipfs.exporter import IPFSDatasetExporter, export, export_dataset, import_from_ipfs
from torch_ipfs.sources.base import MemoryStore, NullStore
from torch_ipfs.unixfs.reader import ls

# -- datasets ------------------------------------------------------------------------------


class ImagePairs:
    """torchvision-style (PIL image, int) pairs with ``classes``, seeded pixels."""

    classes = ["cat", "dog", "emu"]

    def __init__(self, n: int = 40, mode: str = "RGB", size: int = 12) -> None:
        self.n, self.mode, self.size = n, mode, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if i >= self.n:
            raise IndexError(i)
        rng = np.random.default_rng(i)
        channels = {"RGB": 3, "RGBA": 4, "L": 1}[self.mode]
        pixels = rng.integers(0, 256, (self.size, self.size, channels), dtype=np.uint8)
        image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode=self.mode)
        return image, i % 3


class TensorPairs:
    def __init__(self, n: int = 30) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(i)
        return torch.randn(3, 5, generator=g), torch.arange(i, i + 4, dtype=torch.int64)


class DictSamples:
    def __len__(self) -> int:
        return 25

    def __getitem__(self, i: int):
        return {
            "features": np.linspace(0, i, 7, dtype=np.float32),
            "label": i % 4,
            "caption": f"sample nº {i}",
            "meta": {"id": i, "tags": ["a", "b"][: i % 3]},
        }


class AudioClips:
    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(i)
        wave = torch.rand(2, 400 + 37 * i, generator=g) * 2 - 1
        return Audio(wave, 16000), i % 2


# -- encoders ------------------------------------------------------------------------------


def test_png_is_lossless_and_has_no_metadata():
    image, _ = ImagePairs(1, "RGBA")[0]
    image.info["icc_profile"] = b"fake profile"
    image.info["dpi"] = (300, 300)
    kind, ext, data = encode_value(image)
    assert (kind, ext) == ("image", "png")
    back = Image.open(io.BytesIO(data))
    assert back.mode == "RGBA" and np.array_equal(np.asarray(back), np.asarray(image))
    chunks = _png_chunk_types(data)
    assert chunks == ["IHDR", "IDAT", "IEND"]
    assert encode_value(image)[2] == data  # deterministic


def _png_chunk_types(data: bytes) -> list[str]:
    pos, types = 8, []
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        types.append(data[pos + 4 : pos + 8].decode())
        pos += 12 + length
    return [t for i, t in enumerate(types) if t != "IDAT" or types[i - 1] != "IDAT"]


def test_jpeg_is_opt_in_with_quality():
    image, _ = ImagePairs(1)[0]
    kind, ext, low = encode_value(image, EncoderOptions(image_format="jpeg", jpeg_quality=20))
    _, _, high = encode_value(image, EncoderOptions(image_format="jpeg", jpeg_quality=95))
    assert (kind, ext) == ("image", "jpg") and len(low) < len(high)
    assert Image.open(io.BytesIO(low)).format == "JPEG"
    with pytest.raises(EncodeError, match="RGBA"):
        encode_value(ImagePairs(1, "RGBA")[0][0], EncoderOptions(image_format="jpeg"))
    with pytest.raises(ValueError, match="jpeg_quality"):
        EncoderOptions(jpeg_quality=0)


def test_scalars_text_and_arrays():
    assert encode_value(7) == ("int", "cls", b"7")
    assert encode_value(np.int64(-3)) == ("int", "cls", b"-3")
    assert encode_value("héllo") == ("text", "txt", "héllo".encode())
    assert encode_value(True) == ("json", "json", b"true")
    assert encode_value({"b": 1, "a": [1.5]}) == ("json", "json", b'{"a":[1.5],"b":1}')
    assert encode_value(b"\x00\x01") == ("bytes", "bin", b"\x00\x01")
    t = torch.arange(12, dtype=torch.float64).reshape(3, 4).t()  # non-contiguous
    kind, ext, data = encode_value(t)
    assert (kind, ext) == ("tensor", "npy")
    assert np.array_equal(np.load(io.BytesIO(data), allow_pickle=False), t.numpy())
    arr = np.arange(5, dtype=">i4")
    kind, _, data = encode_value(arr)
    assert kind == "ndarray" and np.array_equal(np.load(io.BytesIO(data), allow_pickle=False), arr)


def test_never_pickles():
    with pytest.raises(EncodeError, match="pickle"):
        encode_value(np.array([object()], dtype=object))
    with pytest.raises(EncodeError, match="pickle"):
        encode_value(object())
    with pytest.raises(EncodeError, match="bfloat16"):
        encode_value(torch.zeros(2, dtype=torch.bfloat16))
    with pytest.raises(EncodeError, match="JSON"):
        encode_value({"t": torch.zeros(1)})


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.int32, np.uint8])
def test_wav_is_lossless_and_deterministic(dtype):
    rng = np.random.default_rng(1)
    if np.issubdtype(dtype, np.floating):
        wave = (rng.random((2, 301)) * 2 - 1).astype(dtype)
    else:
        info = np.iinfo(dtype)
        wave = rng.integers(info.min, info.max, (2, 301), dtype=dtype)
    kind, ext, data = encode_value(Audio(wave, 22050))
    assert (kind, ext) == ("audio", "wav")
    assert encode_value(Audio(wave, 22050))[2] == data
    read_dtype = {np.uint8: "int16"}.get(dtype, np.dtype(dtype).name)
    back, rate = soundfile.read(io.BytesIO(data), dtype=read_dtype, always_2d=True)
    assert rate == 22050 and back.shape == (301, 2)
    if dtype is np.uint8:  # soundfile maps unsigned 8-bit onto signed 16-bit
        assert np.array_equal(back, (wave.T.astype(np.int16) - 128) << 8)
    else:
        assert np.array_equal(back, wave.T)


def test_flac_int16_is_lossless():
    wave = np.random.default_rng(2).integers(-32768, 32767, 500, dtype=np.int16)
    kind, ext, data = encode_value(Audio(torch.from_numpy(wave), 8000), EncoderOptions(audio_format="flac"))
    assert (kind, ext) == ("audio", "flac")
    back, rate = soundfile.read(io.BytesIO(data), dtype="int16")
    assert rate == 8000 and np.array_equal(back, wave)


def test_sample_field_names():
    image, label = ImagePairs(1)[0]
    s = sample_fields((image, label))
    assert list(s.fields) == ["png", "cls"] and s.structure == "tuple"
    s = sample_fields((torch.zeros(2), torch.ones(2), 3))
    assert list(s.fields) == ["0.npy", "1.npy", "2.cls"]
    assert s.types == {"0.npy": "tensor", "1.npy": "tensor", "2.cls": "int"}
    s = sample_fields({"png": image, "label": 4, "jpg": b"raw", "x.npy": np.zeros(1)})
    assert list(s.fields) == ["png", "label.cls", "jpg", "x.npy"]
    assert s.keys == {"png": "png", "label.cls": "label", "jpg": "jpg", "x.npy": "x.npy"}
    assert sample_fields("text").fields == {"txt": b"text"}
    with pytest.raises(EncodeError, match="same field"):
        sample_fields({"a": 1, "a.cls": 2})
    with pytest.raises(EncodeError, match="keys"):
        sample_fields({"a/b": 1})


# -- export: layout, determinism, splitting ------------------------------------------------


def _tar_members(store, cid: CID) -> list[tarfile.TarInfo]:
    from torch_ipfs.unixfs.reader import UnixFSFile

    data = UnixFSFile(store, cid).read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getmembers()


def test_layout_and_manifest():
    store = MemoryStore()
    result = export_dataset(
        ImagePairs(40), samples_per_shard=16, destination=store, progress=False, name="pairs", parent=None
    )
    assert result.total_samples == 40 and result.shard_samples == [16, 16, 8]
    root = {e.name: e for e in ls(store, result.cid)}
    assert set(root) == {"manifest.json", "shard-table.bin", "index", "shards"}
    assert [e.name for e in ls(store, root["index"].cid)] == [f"shard-00000{i}.idx" for i in range(3)]
    shards = [e.name for e in ls(store, root["shards"].cid)]
    assert shards == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    members = _tar_members(store, result.shard_cids[2])
    names = [m.name for m in members[:4]]
    assert names == ["000000032.png", "000000032.cls", "000000033.png", "000000033.cls"]
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
    manifest = result.manifest
    from torch_ipfs.unixfs.reader import UnixFSFile

    assert json.loads(UnixFSFile(store, root["manifest.json"].cid).read()) == json.loads(
        json.dumps(manifest, default=str)
    )
    text = json.dumps(manifest, default=str)
    assert '"cat"' in text and '"emu"' in text  # class names kept


def test_same_cid_on_reexport_and_across_destinations(tmp_path):
    a = export(ImagePairs(30), samples_per_shard=7, destination=MemoryStore(), progress=False)
    b = export(ImagePairs(30), samples_per_shard=7, destination=NullStore(), progress=False)
    c = export(ImagePairs(30), samples_per_shard=7, client=Client(home=tmp_path / "h"), progress=False)
    assert a == b == c
    assert export(ImagePairs(30), samples_per_shard=8, destination=NullStore(), progress=False) != a
    assert export(ImagePairs(30), samples_per_shard=7, description="x", destination=NullStore(),
                  progress=False) != a  # fmt: skip


def test_root_equals_ipfs_add_of_the_exported_folder(tmp_path):
    """The directory linking stored shards is byte-identical to `ipfs add -r` of the folder."""
    client = Client(home=tmp_path / "home", api="", gateways=[])
    cid = export(ImagePairs(20), samples_per_shard=6, client=client, progress=False)
    client.get(cid, tmp_path / "out")
    assert client.add(tmp_path / "out") == cid
    assert cid in client.store.pins()


def test_shard_bytes_splitting():
    result = export_dataset(ImagePairs(40, size=16), shard_bytes=12 * 1024, destination=MemoryStore(),
                            progress=False)  # fmt: skip
    assert sum(result.shard_samples) == 40 and len(result.shard_samples) > 2
    assert all(n <= 12 * 1024 for n in result.shard_bytes[:-1])
    both = export_dataset(ImagePairs(40, size=16), shard_bytes=12 * 1024, samples_per_shard=3,
                          destination=MemoryStore(), progress=False)  # fmt: skip
    assert max(both.shard_samples) == 3


def test_shard_bytes_holds_with_long_field_names():
    """Member names over 100 bytes take a GNU long-name record; the planner counts it."""
    field = "f" * 120 + ".bin"
    samples = [{field: bytes([i]) * 700} for i in range(30)]
    result = export_dataset(samples, shard_bytes=8 * 1024, destination=MemoryStore(), progress=False)
    assert sum(result.shard_samples) == 30 and len(result.shard_samples) > 2
    assert all(n <= 8 * 1024 for n in result.shard_bytes)


def test_inconsistent_samples_are_refused():
    class Mixed:
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return (torch.zeros(1), 1) if i < 2 else ("text", 1)

    with pytest.raises(EncodeError, match="sample 2"):
        export(Mixed(), destination=MemoryStore(), progress=False)
    with pytest.raises(TypeError, match="map-style"):
        export(iter([1, 2]), destination=MemoryStore(), progress=False)
    with pytest.raises(ValueError, match="destination"):
        export(ImagePairs(2), destination="s3://bucket", progress=False)


# -- round trips through the dataset reader -------------------------------------------------


def test_image_round_trip(tmp_path):
    client = Client(home=tmp_path / "h", api="", gateways=[])
    original = ImagePairs(25, "RGBA")
    cid = export(original, samples_per_shard=10, client=client, progress=False)
    back = import_from_ipfs(f"ipfs://{cid}", client=client)
    assert len(back) == 25
    for i in (0, 9, 10, 24):
        (img_a, y_a), (img_b, y_b) = original[i], back[i]
        assert y_b == y_a
        assert img_b.mode == img_a.mode and np.array_equal(np.asarray(img_b), np.asarray(img_a))


def test_tensor_round_trip(tmp_path):
    client = Client(home=tmp_path / "h", api="", gateways=[])
    original = TensorPairs()
    cid = export(original, samples_per_shard=8, client=client, progress=False)
    back = import_from_ipfs(cid, client=client)
    assert len(back) == len(original)
    for i in range(len(original)):
        (xa, ya), (xb, yb) = original[i], back[i]
        assert isinstance(xb, torch.Tensor) and torch.equal(xa, xb) and torch.equal(ya, yb)


def test_dict_round_trip(tmp_path):
    client = Client(home=tmp_path / "h", api="", gateways=[])
    original = DictSamples()
    cid = export(original, samples_per_shard=10, client=client, progress=False)
    back = import_from_ipfs(cid, client=client)
    for i in (0, 13, 24):
        a, b = original[i], back[i]
        assert set(b) == set(a)
        assert np.array_equal(b["features"], a["features"]) and b["features"].dtype == np.float32
        assert b["label"] == a["label"] and b["caption"] == a["caption"] and b["meta"] == a["meta"]


def test_audio_round_trip(tmp_path):
    client = Client(home=tmp_path / "h", api="", gateways=[])
    original = AudioClips()
    cid = export(original, samples_per_shard=5, client=client, progress=False)
    back = import_from_ipfs(cid, client=client)
    for i in range(len(original)):
        (audio, label), (decoded, label_b) = original[i], back[i]
        wave, rate = decoded
        assert label_b == label and rate == 16000
        assert torch.equal(torch.as_tensor(wave), audio.waveform)


# -- destinations --------------------------------------------------------------------------


def test_car_destination_reimports_with_the_same_root(tmp_path):
    car = tmp_path / "ds.car"
    cid = export(ImagePairs(20), samples_per_shard=6, destination=f"car:{car}", progress=False)
    assert cid == export(ImagePairs(20), samples_per_shard=6, destination=NullStore(), progress=False)
    fresh = Client(home=tmp_path / "fresh", api="", gateways=[])
    assert fresh.import_car(car) == [cid]
    back = import_from_ipfs(cid, client=fresh)
    img, label = back[19]
    assert label == ImagePairs(20)[19][1]
    assert np.array_equal(np.asarray(img), np.asarray(ImagePairs(20)[19][0]))


def test_kubo_destination_adds_and_pins(tmp_path):
    with KuboStandIn() as kubo:
        cid = export(ImagePairs(12), samples_per_shard=5, destination=f"kubo:{kubo.api}", progress=False)
        assert kubo.pins.get(cid) == "recursive" or kubo.pins.get(cid.to_v1()) == "recursive"
        reader = Client(home=tmp_path / "empty", api=kubo.api, gateways=[])
        back = IPFSDatasetExporter(kubo.api).import_from_ipfs(f"ipfs://{cid}")
        assert len(back) == 12 and back[11][1] == ImagePairs(12)[11][1]
        assert reader.cat(f"{cid}/manifest.json")


def test_exporter_compat_names(tmp_path):
    client = Client(home=tmp_path / "h", api="", gateways=[])
    exporter = IPFSDatasetExporter(shard_bytes=16 * 1024, client=client, progress=False)
    cid = exporter.export_to_ipfs(TensorPairs(10))
    assert isinstance(cid, str) and CID.decode(cid)
    back = exporter.import_from_ipfs(f"ipfs://{cid}")
    assert torch.equal(back[3][0], TensorPairs(10)[3][0])


# -- CLI -----------------------------------------------------------------------------------


def test_cli_export_image_folder(tmp_path, capsys):
    from torch_ipfs.cli import main

    folder = tmp_path / "folder"
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for i in range(3):
            ImagePairs(6)[i][0].save(folder / label / f"{i}.png")
    assert main(["export", str(folder), "--samples-per-shard", "4", "-Q"]) == 0
    cid = capsys.readouterr().out.strip()
    back = import_from_ipfs(cid)
    assert len(back) == 6 and [back[i][1] for i in range(6)] == [0, 0, 0, 1, 1, 1]


def test_cli_export_callable_and_car(tmp_path, capsys, monkeypatch):
    from torch_ipfs.cli import main

    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "mydata.py").write_text(
        "import torch\n\n\ndef build(n='5'):\n"
        "    return [(torch.full((2,), float(i)), i) for i in range(int(n))]\n"
    )
    car = tmp_path / "x.car"
    assert main(["export", "mydata:build", "--arg", "n=7", "--car", str(car), "-Q"]) == 0
    cid = CID.decode(capsys.readouterr().out.strip())
    assert Client(home=tmp_path / "fresh", api="", gateways=[]).import_car(car) == [cid]
    assert main(["export", "no_such_module_xyz:build"]) == 1
    assert "no_such_module_xyz" in capsys.readouterr().err

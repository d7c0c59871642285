"""The fast tar walker (:func:`torch_ipfs.formats.tar.samples_of`) gives exactly what the
strict one gives (:func:`group_samples` of :func:`iter_members`), for every archive and
every way of cutting it into chunks, including the ones it hands to the strict walker
(pax and long-name records, prefixes, odd names, bad checksums, truncation)."""

from __future__ import annotations

import io
import tarfile

import pytest

from torch_ipfs.errors import ManifestError, SampleTooLargeError
from torch_ipfs.formats import tar


def _archive(members: list[tuple[str, bytes]], fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _strict(data: bytes, size: int) -> list[tuple[str, dict[str, bytes]]] | str:
    try:
        return [(s.key, s.fields) for s in tar.group_samples(tar.iter_members(_chunks(data, size), "t"), "t")]
    except ManifestError as e:
        return f"{type(e).__name__}: {e}"


def _fast(data: bytes, size: int) -> list[tuple[str, dict[str, bytes]]] | str:
    try:
        return [(s.key, s.fields) for s in tar.samples_of(_chunks(data, size), "t")]
    except ManifestError as e:
        return f"{type(e).__name__}: {e}"


PLAIN = [(f"{i:06d}.{ext}", bytes([i % 251]) * (i * 37 % 1500)) for i in range(40) for ext in ("cls", "png")]
CHUNK_SIZES = [1, 100, 511, 512, 513, 4096, 1 << 20]


@pytest.mark.parametrize("size", CHUNK_SIZES)
@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_plain_archives_give_the_same_samples(size: int, fmt: int) -> None:
    data = _archive(PLAIN, fmt)
    fast = _fast(data, size)
    assert fast == _strict(data, size)
    assert len(fast) == 40 and fast[3] == ("000003", {"cls": b"\x03" * 111, "png": b"\x03" * 111})


LONG = "d/" + "x" * 150 + "/000001.png"
ODD = [
    [("a.cls", b"1"), (LONG, b"long")],  # long name: pax or GNU record
    [("a.cls", b"1"), ("./b.png", b"2")],  # a name that needs normalising
    [("a.cls", b"1"), ("noext", b"z"), ("b.png", b"2")],  # belongs to no sample
    [("a.cls", b"1"), ("../evil.png", b"x")],  # refused
    [("a.cls", b"1"), ("a.cls", b"2")],  # the same field twice
    [("dir/" * 30 + "k.png", b"p")],  # a ustar prefix field
]


@pytest.mark.parametrize("size", [1, 512, 700, 1 << 20])
@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("members", ODD, ids=range(len(ODD)))
def test_odd_archives_give_the_same_samples_or_errors(members, fmt: int, size: int) -> None:
    try:
        data = _archive(members, fmt)
    except ValueError:
        pytest.skip("tarfile cannot write this name in this format")
    assert _fast(data, size) == _strict(data, size)


@pytest.mark.parametrize("where", [5, 148, 300, 512 + 1024 + 7])
def test_a_corrupt_header_fails_the_same_way(where: int) -> None:
    data = bytearray(_archive(PLAIN[:6]))
    data[512 * 4 + where] ^= 0x55  # inside the third member's header (or its data)
    for size in (512, 1 << 20):
        assert _fast(bytes(data), size) == _strict(bytes(data), size)


def test_a_checksum_written_differently_is_still_accepted() -> None:
    data = bytearray(_archive(PLAIN[:4]))
    stored = int(bytes(data[148:154]), 8)
    data[148:156] = b"%07o\0" % stored  # 7 digits and a NUL: valid, not the usual form
    assert _fast(bytes(data), 4096) == _strict(bytes(data), 4096)
    assert len(_fast(bytes(data), 4096)) == 2  # type: ignore[arg-type]


@pytest.mark.parametrize("cut", [100, 512, 1000, 2048 + 3])
def test_truncated_archives_fail_the_same_way(cut: int) -> None:
    data = _archive(PLAIN[:6])[: 512 * 6 + cut]
    fast = _fast(data, 512)
    assert fast == _strict(data, 512)


def test_a_huge_declared_member_is_refused_before_its_bytes(monkeypatch) -> None:
    monkeypatch.setenv("TORCH_IPFS_MAX_SAMPLE_BYTES", "1000")
    data = _archive([("a.cls", b"1"), ("a.png", b"x" * 5000)])
    with pytest.raises(SampleTooLargeError):
        list(tar.samples_of(_chunks(data, 512), "t"))


def test_a_large_member_is_joined_once_not_per_chunk() -> None:
    big = bytes(range(256)) * 8192  # 2 MiB
    data = _archive([("a.cls", b"1"), ("a.bin", big), ("b.cls", b"2")])
    assert (
        _fast(data, 4096) == _strict(data, 4096) == [("a", {"cls": b"1", "bin": big}), ("b", {"cls": b"2"})]
    )


def test_plain_members_take_the_fast_path(monkeypatch) -> None:
    """Only the end-of-archive blocks reach the strict walker, no member does."""
    strict_members = []
    real = tar.iter_members

    def counting(chunks, where, start=0):
        for member, data in real(chunks, where, start):
            strict_members.append(member.name)
            yield member, data

    monkeypatch.setattr(tar, "iter_members", counting)
    assert len(list(tar.samples_of(_chunks(_archive(PLAIN), 4096), "t"))) == 40
    assert strict_members == []
    list(tar.samples_of(_chunks(_archive([("a.cls", b"1"), (LONG, b"l")], tarfile.PAX_FORMAT), 4096), "t"))
    assert strict_members == [LONG]  # from the pax record on, the strict walker reads

"""The plain-header parser of map-style reads (torch_ipfs.formats.tarsample) against the
strict tar walker: on ordinary samples both give the same fields; on every mutation of
a sample's headers the parser either gives what the strict walker gives or declines
(None), so the strict walker decides (its result or its typed error)."""

from __future__ import annotations

import io
import tarfile

import pytest

from torch_ipfs.errors import ManifestError
from torch_ipfs.formats import tar
from torch_ipfs.formats.tarsample import key_is_plain, plain_fields


def _sample(key: str, fields: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    index = tar.write_tar_shard([(key, fields)], out)
    return out.getvalue()[: index.offsets[1]]


def _strict(buf: bytes, key: str) -> dict[str, bytes] | Exception:
    """What the strict walker makes of ``buf`` as sample ``key`` (read_sample's check)."""
    try:
        samples = list(tar.group_samples(tar.iter_members([buf], "t"), "t"))
    except (ManifestError, ValueError) as e:
        return e
    if len(samples) != 1 or samples[0].key != key:
        return ManifestError(f"found {[s.key for s in samples]}")
    return samples[0].fields


@pytest.mark.parametrize(
    "key, fields",
    [
        ("000123", {"png": b"\x89PNG" + b"x" * 2357, "cls": b"7"}),
        ("a/b/c", {"seg.png": b"", "json": b"{}"}),
        ("ключ", {"txt": "данные".encode()}),
        ("k", {"bin": b"\0" * 511, "b2": b"\xff" * 512, "b3": bytes(range(256)) * 2 + b"!"}),
    ],
)
def test_plain_samples_read_as_the_strict_walker_reads_them(key, fields):
    buf = _sample(key, fields)
    assert key_is_plain(key)
    got = plain_fields(buf, key)
    assert got == fields == _strict(buf, key)
    assert list(got) == list(fields)  # member order kept


def test_headers_written_by_tarfile_itself_are_taken():
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in [("s1.png", b"abc"), ("s1.cls", b"3")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    buf = out.getvalue()[: 4 * 512]
    assert plain_fields(buf, "s1") == {"png": b"abc", "cls": b"3"} == _strict(buf, "s1")


def _set(buf: bytes, pos: int, value: bytes) -> bytes:
    return buf[:pos] + value + buf[pos + len(value) :]


def _fix_checksum(buf: bytes, head: int) -> bytes:
    block = bytearray(buf[head : head + 512])
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return buf[:head] + bytes(block) + buf[head + 512 :]


GOOD = _sample("000007", {"png": b"p" * 700, "cls": b"1"})
SECOND = 512 + 1024  # the second header


@pytest.mark.parametrize(
    "what, pos, value, fix",
    [
        ("wrong checksum", 153, b"0", False),
        ("checksum in another form", 148, b"", False),
        ("signed checksum only", 148, b"777777", False),
        ("base-256 size", 124, b"\x80", True),
        ("size with a space", 124, b" 0000001274", True),
        ("size too long for the sample", 124, b"00000099999", True),
        ("octal digit 8 in the size", 130, b"8", True),
        ("a directory", 156, b"5", True),
        ("a hard link", 156, b"1", True),
        ("a GNU long name record", 156, b"L", True),
        ("a pax header", 156, b"x", True),
        ("another key", 0, b"000008", True),
        ("no extension", 6, b"\0", True),
        ("an absolute name", 0, b"/00007", True),
        ("a ustar prefix", 257, b"ustar\x0000", True),
        ("all zero", 0, b"\0" * 512, False),
        ("a name that is not UTF-8", 7, b"\xff", True),
        ("a field with a slash", 7, b"p/g", True),
    ],
)
def test_unusual_headers_are_left_to_the_strict_walker(what, pos, value, fix):
    for head in (0, SECOND):
        buf = _set(GOOD, head + pos, value)
        if what == "a ustar prefix":
            buf = _set(buf, head + 345, b"dir")
        if fix:
            buf = _fix_checksum(buf, head)
        if what == "checksum in another form":  # right, but "%07o\0" (tarfile reads it too)
            total = sum(buf[head : head + 148]) + 256 + sum(buf[head + 156 : head + 512])
            buf = _set(buf, head + 148, b"%07o\0" % total)
            assert _strict(buf, "000007") == plain_fields(GOOD, "000007")
        assert plain_fields(buf, "000007") is None, (what, head)
    assert plain_fields(GOOD, "000007") == _strict(GOOD, "000007")  # the unmutated sample is taken


def test_bytes_left_over_or_cut_off_are_declined():
    assert plain_fields(GOOD + b"\0" * 512, "000007") is None
    assert plain_fields(GOOD[:-1], "000007") is None
    assert plain_fields(GOOD[:-512], "000007") is None
    assert plain_fields(b"", "000007") is None


def test_random_mutations_never_give_other_bytes_than_the_strict_walker(rng):
    """Whatever the header bytes, an accepted sample is exactly the strict walker's."""
    base = _sample("00042", {"jpg": bytes(rng.randrange(256) for _ in range(1500)), "cls": b"12"})
    heads = [0, 512 + 1536]
    accepted = declined = 0
    for _ in range(3000):
        buf = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            head = rng.choice(heads)
            value = rng.choice([0, 32, 46, 47, 48, 55, 56, 0x80, 0xFF, rng.randrange(256)])
            buf[head + rng.randrange(512)] = value
        if rng.random() < 0.8:  # mostly with a checksum that matches, or only checksums fail
            for head in heads:
                buf = bytearray(_fix_checksum(bytes(buf), head))
        got = plain_fields(bytes(buf), "00042")
        if got is None:
            declined += 1
            continue
        accepted += 1
        assert got == _strict(bytes(buf), "00042")
    assert accepted > 100 and declined > 100  # both branches were exercised


NOT_PLAIN = ["", "a.b", "x/.y", "/abs", "./k", "a//b", "c:k", "a\\b", "dir/", "x/..", "n\0"]


@pytest.mark.parametrize("key", NOT_PLAIN)
def test_keys_that_do_not_split_back_are_not_plain(key):
    assert not key_is_plain(key)


def test_plain_keys():
    assert all(key_is_plain(k) for k in ["000001", "a/b/c", "ключ", "x-y_z"])

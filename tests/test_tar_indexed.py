"""The indexed slicer (:func:`torch_ipfs.formats.tar.iter_indexed`) gives exactly what
walking the same bytes strictly gives (:func:`group_samples` of :func:`iter_members`,
each sample's key checked against the index), for every archive, index, span, chunking
and output shape, including archives and indexes built to be hostile or odd: then it
hands over to the strict walker, which raises the same typed errors."""

from __future__ import annotations

import io
import random
import tarfile
from typing import Any

import numpy as np
import pytest

from torch_ipfs.errors import ManifestError, SampleTooLargeError
from torch_ipfs.formats import tar
from torch_ipfs.formats.base import RawSample
from torch_ipfs.formats.shardindex import PackedIndex, encode_index

FIELDS = ("png", "cls")


def _samples(n: int, first: int = 0, width: int = 6) -> list[tuple[str, dict[str, bytes]]]:
    """Samples like an exported (image, label) dataset, sizes varied across blocks."""
    return [
        (f"{first + i:0{width}d}", {"png": bytes([i % 251]) * (i * 397 % 3000), "cls": str(i % 10).encode()})
        for i in range(n)
    ]


def _ours(samples: list[tuple[str, dict[str, bytes]]]) -> tuple[bytes, tar.ShardIndex]:
    out = io.BytesIO()
    index = tar.write_tar_shard(samples, out)
    return out.getvalue(), index


def _tarfile(members: list[tuple[str, bytes]], fmt: int = tarfile.GNU_FORMAT, mtime: int = 0) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for i, (name, data) in enumerate(members):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = mtime + i  # as webdataset's writer: a time per member
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _members(samples: list[tuple[str, dict[str, bytes]]]) -> list[tuple[str, bytes]]:
    return [(f"{key}.{f}", data) for key, fields in samples for f, data in fields.items()]


def _packed(index: tar.ShardIndex) -> PackedIndex:
    return PackedIndex(encode_index(index.keys, index.offsets), "idx")


def _chunks(data: bytes, start: int, stop: int, size: int) -> list[bytes]:
    part = data[start:stop]
    return [part[i : i + size] for i in range(0, len(part), size)]


def _shape(sample: RawSample, fields: tuple[str, ...] | None) -> Any:
    if fields is not None and len(fields) == len(sample.fields) and all(f in sample.fields for f in fields):
        return tuple(sample.fields[f] for f in fields)
    return sample


def _outcome(gen: Any) -> list[Any] | str:
    try:
        return [s if isinstance(s, tuple) else (s.key, s.fields) for s in gen]
    except (ManifestError, SampleTooLargeError) as e:
        return f"{type(e).__name__}: {e}"


def _strict(data: bytes, index: Any, start: int, stop: int, size: int, fields: Any, limit: int | None = None):
    """The reference: the strict walker over the span's bytes, keys checked as the layout did."""
    offset, stop_at = int(index.offsets[start]), int(index.offsets[stop])
    stop_at = min(stop_at, len(data))
    where = "w"

    def gen() -> Any:
        count = 0
        chunks = _chunks(data, offset, stop_at, size)
        if limit is None:
            grouped = tar.group_samples(tar.iter_members(chunks, where, offset), where)
        else:  # samples_of: the strict walk's results (test_tar_fastpath), its limit error named per sample
            grouped = tar.samples_of(chunks, where, offset, limit)
        for sample in grouped:
            want = index.keys[start + count] if count < stop - start else None
            if sample.key != want:
                raise ManifestError(f"{where}: index expects sample {want!r}, the shard has {sample.key!r}")
            count += 1
            yield _shape(sample, fields)
        if count != stop - start:
            raise ManifestError(f"{where}: expected {stop - start} samples from {start}, read {count}")

    return _outcome(gen())


def _fast(data: bytes, index: Any, start: int, stop: int, size: int, fields: Any, limit: int | None = None):
    offset, stop_at = int(index.offsets[start]), int(index.offsets[stop])
    return _outcome(
        tar.iter_indexed(_chunks(data, offset, stop_at, size), "w", index, start, stop, fields, limit)
    )


def _same(
    data: bytes, index: Any, start: int = 0, stop: int | None = None, sizes=None, fields=FIELDS, limit=None
):
    stop = len(index.keys) if stop is None else stop
    results = []
    for size in sizes or (1, 511, 512, 4096, 70_000, 1 << 20, 1 << 30):
        fast = _fast(data, index, start, stop, size, fields, limit)
        assert fast == _strict(data, index, start, stop, size, fields, limit), f"chunks of {size}"
        results.append(fast)
    return results[0]


# -- plain archives: every writer, index kind, span, chunking and output shape ------------


@pytest.mark.parametrize("packed", [False, True], ids=["ShardIndex", "PackedIndex"])
@pytest.mark.parametrize("fields", [FIELDS, ("cls", "png"), ("png",), None], ids=str)
def test_exported_shards_give_the_strict_samples(packed: bool, fields: Any) -> None:
    samples = _samples(700)
    data, index = _ours(samples)
    idx = _packed(index) if packed else index
    if packed:
        assert idx.decimal_keys == (0, 6)  # the bulk (numeric) key check is the one used
    got = _same(data, idx, fields=fields)
    assert len(got) == 700
    if fields == ("cls", "png"):
        assert got[5] == (b"5", bytes([5]) * (5 * 397 % 3000))
    elif fields is None or fields == ("png",):
        assert got[5] == ("000005", samples[5][1])


@pytest.mark.parametrize("span", [(0, 1), (3, 4), (0, 13), (13, 700), (250, 520), (699, 700)])
def test_any_span_gives_the_strict_samples(span: tuple[int, int]) -> None:
    data, index = _ours(_samples(700))
    got = _same(data, _packed(index), *span, sizes=(512, 4096, 1 << 18))
    assert len(got) == span[1] - span[0]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tarfile_and_webdataset_style_archives_give_the_strict_samples(fmt: int) -> None:
    samples = _samples(300)
    data = _tarfile(_members(samples), fmt, mtime=1_700_000_000)
    index = tar.scan_index(lambda o, n: data[o : o + n], len(data), "w")
    assert index.keys == [k for k, _ in samples]
    assert len(_same(data, index)) == 300
    assert len(_same(data, _packed(index))) == 300


def test_stored_keys_of_any_shape_give_the_strict_samples() -> None:
    samples = [(f"dir/{name}", fields) for name, (_, fields) in zip(
        [f"k{i}-é" for i in range(200)], _samples(200))]  # fmt: skip
    data, index = _ours(samples)
    assert _packed(index).decimal_keys is None
    got = _same(data, _packed(index))
    assert got[7] == (samples[7][1]["png"], samples[7][1]["cls"])


def test_keys_that_grow_a_digit_give_the_strict_samples() -> None:
    data, index = _ours(_samples(300, first=850, width=1))  # 850 .. 1149: 3 then 4 digits
    idx = _packed(index)
    assert idx.decimal_keys == (850, 3)
    assert len(_same(data, idx)) == 300


def test_samples_with_varying_fields_give_the_strict_samples() -> None:
    samples = _samples(200)
    for i in range(0, 200, 7):
        samples[i][1]["json"] = b"{}"  # every 7th sample has a third field
    samples[50] = (samples[50][0], {"cls": b"1"})
    data, index = _ours(samples)
    got = _same(data, _packed(index))
    assert got[0] == ("000000", samples[0][1]) and got[1] == (samples[1][1]["png"], samples[1][1]["cls"])
    assert got[50] == ("000050", {"cls": b"1"})


def test_large_samples_give_the_strict_samples() -> None:
    samples = [(f"{i:04d}", {"jpg": bytes([i]) * (40_000 + i * 999), "cls": b"3"}) for i in range(60)]
    data, index = _ours(samples)
    assert len(_same(data, _packed(index), fields=("jpg", "cls"))) == 60


def test_plain_samples_take_the_fast_path(monkeypatch) -> None:
    """No member of a plain archive reaches the strict walker."""
    walked: list[int] = []
    real = tar.iter_members

    def counting(chunks, where, start=0):
        walked.append(start)
        return real(chunks, where, start)

    monkeypatch.setattr(tar, "iter_members", counting)
    data, index = _ours(_samples(700))
    assert len(_fast(data, _packed(index), 0, 700, 1 << 18, FIELDS)) == 700
    assert walked == []


# -- hostile and odd archives: the strict walker decides ---------------------------------


def _header_at(data: bytes, index: tar.ShardIndex, sample: int, member: int = 0) -> int:
    pos = index.offsets[sample]
    for _ in range(member):
        size = int(data[pos + 124 : pos + 135], 8)
        pos += 512 + -(-size // 512) * 512
    return pos


def _rechecksum(data: bytearray, pos: int) -> None:
    head = data[pos : pos + 512]
    head[148:156] = b" " * 8
    data[pos + 148 : pos + 156] = b"%06o\0 " % sum(head)


EDITS = {
    "bad checksum": lambda d, p: d.__setitem__(slice(p + 148, p + 149), b"7"),
    "checksum 7 digits": lambda d, p: d.__setitem__(
        slice(p + 148, p + 156), b"%07o\0" % int(bytes(d[p + 148 : p + 154]), 8)
    ),
    "name not the key": lambda d, p: (d.__setitem__(slice(p, p + 6), b"999999"), _rechecksum(d, p)),
    "name with ./": lambda d, p: (
        d.__setitem__(slice(p, p + 100), (b"./" + bytes(d[p : p + 98]))),
        _rechecksum(d, p),
    ),
    "traversal": lambda d, p: (d.__setitem__(slice(p, p + 13), b"../000004.png"), _rechecksum(d, p)),
    "symlink type": lambda d, p: (d.__setitem__(slice(p + 156, p + 157), b"2"), _rechecksum(d, p)),
    "directory type": lambda d, p: (d.__setitem__(slice(p + 156, p + 157), b"5"), _rechecksum(d, p)),
    "unknown type": lambda d, p: (d.__setitem__(slice(p + 156, p + 157), b"Z"), _rechecksum(d, p)),
    "pax type": lambda d, p: (d.__setitem__(slice(p + 156, p + 157), b"x"), _rechecksum(d, p)),
    "size base-256": lambda d, p: (
        d.__setitem__(
            slice(p + 124, p + 136), b"\x80" + int(bytes(d[p + 124 : p + 135]), 8).to_bytes(11, "big")
        ),
        _rechecksum(d, p),
    ),
    "size grown": lambda d, p: (
        d.__setitem__(slice(p + 124, p + 136), b"%011o\0" % (int(bytes(d[p + 124 : p + 135]), 8) + 600)),
        _rechecksum(d, p),
    ),
    "size huge": lambda d, p: (d.__setitem__(slice(p + 124, p + 136), b"77777777777\0"), _rechecksum(d, p)),
    "size not octal": lambda d, p: (d.__setitem__(slice(p + 124, p + 125), b"9"), _rechecksum(d, p)),
    "size space-padded": lambda d, p: (
        d.__setitem__(slice(p + 124, p + 136), b"%11o " % int(bytes(d[p + 124 : p + 135]), 8)),
        _rechecksum(d, p),
    ),
    "ustar prefix": lambda d, p: (
        d.__setitem__(slice(p + 257, p + 263), b"ustar\0"),
        d.__setitem__(slice(p + 345, p + 348), b"sub"),
        _rechecksum(d, p),
    ),
    "zero block": lambda d, p: d.__setitem__(slice(p, p + 512), bytes(512)),
    "field twice": lambda d, p: None,  # set up in the test (needs the next header)
}


@pytest.mark.parametrize("member", [0, 1])
@pytest.mark.parametrize("sample", [0, 1, 137, 699])
@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_odd_header_anywhere_gives_the_strict_result(edit: str, sample: int, member: int) -> None:
    data, index = _ours(_samples(700))
    raw = bytearray(data)
    pos = _header_at(data, index, sample, member)
    if edit == "field twice":
        other = _header_at(data, index, sample, 1 - member)
        raw[pos + 7 : pos + 10] = raw[other + 7 : other + 10]  # "png" <-> "cls": both the same
        _rechecksum(raw, pos)
    else:
        EDITS[edit](raw, pos)
    got = _same(bytes(raw), _packed(index), sizes=(512, 4096, 1 << 18))
    if edit in ("checksum 7 digits", "size space-padded"):
        assert isinstance(got, list) and len(got) == 700  # odd but valid: the strict walker reads it
    elif edit in MUST_FAIL and not (edit == "zero block" and (sample, member) == (699, 1)):  # a valid end
        assert isinstance(got, str) and got.startswith(("ManifestError", "SampleTooLargeError")), got


MUST_FAIL = {"bad checksum", "name not the key", "traversal", "unknown type", "zero block", "size not octal",
             "size huge", "field twice"}  # fmt: skip


@pytest.mark.parametrize("shift", [-512, 512, 1024])
def test_an_index_whose_offsets_are_off_gives_the_strict_result(shift: int) -> None:
    data, index = _ours(_samples(300))
    offsets = list(index.offsets)
    offsets[150] += shift  # the tar itself is fine; the index says another boundary
    bad = tar.ShardIndex(index.keys, offsets)
    assert _same(data, bad, sizes=(512, 1 << 18)) == _same(data, _packed(bad), sizes=(512, 1 << 18))


def test_an_index_with_wrong_or_repeated_keys_gives_the_strict_error() -> None:
    data, index = _ours(_samples(300))
    keys = list(index.keys)
    keys[100] = "nope"
    assert "expects sample 'nope'" in _same(data, tar.ShardIndex(keys, index.offsets))
    samples = _samples(300)
    samples[101] = (samples[100][0], {"jpg": b"x"})  # a key twice in a row, other field names
    data, index = _ours_unchecked(samples)
    result = _same(data, index)
    assert isinstance(result, str) and "ManifestError" in result


def _ours_unchecked(samples: list[tuple[str, dict[str, bytes]]]) -> tuple[bytes, tar.ShardIndex]:
    """Like write_tar_shard, without its duplicate-key check (a hostile writer)."""
    out = io.BytesIO()
    keys, offsets = [], []
    for key, fields in samples:
        keys.append(key)
        offsets.append(out.tell())
        tar.write_tar_shard([(key, fields)], out)
        out.seek(out.tell() - 1024)  # drop its end-of-archive blocks
        out.truncate()
    offsets.append(out.tell())
    out.write(bytes(1024))
    return out.getvalue(), tar.ShardIndex(keys, offsets)


def test_truncated_bytes_give_the_strict_result() -> None:
    data, index = _ours(_samples(300))
    for cut in (100, 512, 5000, 200_000):
        short = data[: index.offsets[-1] - cut]  # the file ends before the index says
        fast = _outcome(tar.iter_indexed(_chunks(short, 0, len(short), 4096), "w", index, 0, 300, FIELDS))
        strict = _strict(short, index, 0, 300, 4096, FIELDS)
        assert fast == strict
        if cut > 512:
            assert isinstance(fast, str) and fast.startswith("ManifestError"), fast


def test_a_sample_over_the_limit_is_refused_like_the_strict_walker() -> None:
    samples = _samples(100)
    samples[40] = (samples[40][0], {"png": b"p" * 50_000, "cls": b"1"})
    data, index = _ours(samples)
    got = _same(data, _packed(index), limit=20_000, sizes=(4096, 1 << 20))
    assert got.startswith(SampleTooLargeError.__name__)
    assert len(_same(data, _packed(index), limit=60_000, sizes=(4096,))) == 100


def test_random_header_damage_gives_the_strict_result() -> None:
    """Seeded fuzzing: bytes of headers and the index replaced at random."""
    data, index = _ours(_samples(120))
    heads = [_header_at(data, index, s, m) for s in range(120) for m in (0, 1)]
    rng = random.Random(11)
    outcomes = set()
    for _ in range(150):
        raw = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            pos = rng.choice(heads) + rng.randrange(512)
            raw[pos] = rng.randrange(256)
        if rng.random() < 0.5:
            _rechecksum(raw, rng.choice(heads))  # damage that keeps a valid checksum
        got = _same(bytes(raw), _packed(index), sizes=(777, 1 << 16))
        outcomes.add(isinstance(got, list))
    assert outcomes == {True, False}  # both kinds of result were met


def test_the_fast_path_keeps_its_numeric_checks_exact() -> None:
    """The lane sums and the numeric key check against a plain Python reference."""
    data, index = _ours(_samples(400))
    blocks = np.frombuffer(data, dtype=np.uint8)[: len(data) // 512 * 512].reshape(-1, 512)
    rows = blocks[[p // 512 for p in index.offsets[:-1]]]
    assert tar._checksums_ok(rows)
    bad = rows.copy()
    bad[3, 20] ^= 1
    assert not tar._checksums_ok(bad)
    high = rows.copy()
    high[:, 300:420] = 255  # sums far over 2^16: the lanes must not overflow
    for r in high:
        r[148:156] = np.frombuffer(b"%06o\0 " % (int(r.sum()) - int(r[148:156].sum()) + 256), dtype=np.uint8)
    assert tar._checksums_ok(high)


def test_the_first_samples_come_after_the_first_chunk() -> None:
    # small samples are sliced out of ~1 MiB windows, but the first window is the first
    # chunk alone: the reader's first samples go out while the next blocks still arrive
    data, index = _ours(_samples(2000))
    chunks = _chunks(data, 0, int(index.offsets[-1]), 256 * 1024)
    pulled = []

    def feed():
        for chunk in chunks:
            pulled.append(len(chunk))
            yield chunk

    gen = tar.iter_indexed(feed(), "w", index, 0, len(index.keys), FIELDS)
    first = next(gen)
    assert len(pulled) == 1 and len(chunks) > 8
    assert first == tuple(_samples(1)[0][1][f] for f in FIELDS)
    rest = list(gen)
    assert len(pulled) == len(chunks) and len(rest) == 1999
    assert [first, *rest] == _strict(data, index, 0, len(index.keys), 256 * 1024, FIELDS)

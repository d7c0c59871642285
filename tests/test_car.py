"""CAR v1 write/read, v2 read, import/export (the verifier: tests/test_carverify.py)."""

from __future__ import annotations

import io
import os
import struct

import pytest

from torch_ipfs import multihash
from torch_ipfs.car import CARV2_PRAGMA, CarReader, encode_header, export_car, import_car, write_car
from torch_ipfs.cid import CID, RAW
from torch_ipfs.dag import walk_dfs
from torch_ipfs.errors import (
    BlockNotFoundError,
    BlockTooLargeError,
    CARFormatError,
    IntegrityError,
)
from torch_ipfs.sources.base import MemoryStore
from torch_ipfs.unixfs.importer import ImportOptions, import_bytes
from torch_ipfs.unixfs.reader import UnixFSFile
from torch_ipfs.varint import encode_varint

# carv1-basic.car from the CAR spec's fixtures (ipld/specs, also in ipld/js-car's tests):
# two dag-cbor roots, 8 blocks (raw, dag-pb v0, dag-cbor), written by go-car.
CARV1_BASIC = bytes.fromhex(
    "63a265726f6f747382d82a58250001711220f88bc853804cf294fe417e4fa83028689fcdb1b1592c5102e1474dbc20"
    "0fab8bd82a5825000171122069ea0740f9807a28f4d932c62e7c1c83be055e55072c90266ab3e79df63a365b677665"
    "7273696f6e01280155122061be55a8e2f6b4e172338bddf184d6dbee29c98853e0a0485ecee7f27b9af0b461616161"
    "280155122081cc5b17018674b401b42f35ba07bb79e211239c23bffe658da1577e3e646877626262622801551220b6"
    "fbd675f98e2abd22d4ed29fdc83150fedc48597e92dd1a7a24381d44a2745163636363511220e7dc486e97e6ebe5cd"
    "abab3e392bdad128b6e09acc94bb4e2aa2af7b986d24d0122d0a240155122061be55a8e2f6b4e172338bddf184d6db"
    "ee29c98853e0a0485ecee7f27b9af0b4120363617418048001122079a982de3c9907953d4d323cee1d0fb1ed8f45f8"
    "ef02870c0cb9e09246bd530a122d0a240155122081cc5b17018674b401b42f35ba07bb79e211239c23bffe658da157"
    "7e3e6468771203646f671804122d0a221220e7dc486e97e6ebe5cdabab3e392bdad128b6e09acc94bb4e2aa2af7b98"
    "6d24d01205666972737418338301122002acecc5de2438ea4126a3010ecb1f8a599c8eff22fff1a1dcffe999b27fd3"
    "de122e0a2401551220b6fbd675f98e2abd22d4ed29fdc83150fedc48597e92dd1a7a24381d44a27451120462656172"
    "1804122f0a22122079a982de3c9907953d4d323cee1d0fb1ed8f45f8ef02870c0cb9e09246bd530a12067365636f6e"
    "641895015b01711220f88bc853804cf294fe417e4fa83028689fcdb1b1592c5102e1474dbc200fab8ba2646c696e6b"
    "d82a582300122002acecc5de2438ea4126a3010ecb1f8a599c8eff22fff1a1dcffe999b27fd3de646e616d6564626c"
    "6970360171122069ea0740f9807a28f4d932c62e7c1c83be055e55072c90266ab3e79df63a365ba2646c696e6bf664"
    "6e616d65656c696d626f"
)
BASIC_ROOTS = [
    "bafyreihyrpefhacm6kkp4ql6j6udakdit7g3dmkzfriqfykhjw6cad5lrm",
    "bafyreidj5idub6mapiupjwjsyyxhyhedxycv4vihfsicm2vt46o7morwlm",
]
BASIC_BLOCKS = [
    "bafkreidbxzk2ryxwwtqxem4l3xyyjvw35yu4tcct4cqeqxwo47zhxgxqwq",
    "bafkreiebzrnroamgos2adnbpgw5apo3z4iishhbdx77gldnbk57d4zdio4",
    "bafkreifw7plhl6mofk6sfvhnfh64qmkq73oeqwl6sloru6rehaoujituke",
    "QmdwjhxpxzcMsR3qUuj7vUL8pbA7MgR3GAxWi2GLHjsKCT",
    "QmWXZxVQ9yZfhQxLD35eDR8LiMRsYtHxYqTFCBbJoiJVys",
    "QmNX6Tffavsya4xgBi2VJQnSuqy9GsxongxZZ9uZBqp16d",
    "bafyreihyrpefhacm6kkp4ql6j6udakdit7g3dmkzfriqfykhjw6cad5lrm",
    "bafyreidj5idub6mapiupjwjsyyxhyhedxycv4vihfsicm2vt46o7morwlm",
]


def _section_ends(car: bytes) -> set[int]:
    """Byte offsets where a CARv1 header or section ends (valid places to stop)."""
    from torch_ipfs.varint import decode_varint

    ends = set()
    pos = 0
    while pos < len(car):
        n, pos = decode_varint(car, pos)
        pos += n
        ends.add(pos)
    return ends


# -- the spec fixture ------------------------------------------------------------------


def test_reads_the_spec_fixture() -> None:
    reader = CarReader(io.BytesIO(CARV1_BASIC))
    assert reader.version == 1
    assert [str(r) for r in reader.roots] == BASIC_ROOTS
    assert [str(cid) for cid, _ in reader] == BASIC_BLOCKS


def test_rewrites_the_spec_fixture_byte_for_byte() -> None:
    reader = CarReader(io.BytesIO(CARV1_BASIC))
    blocks = list(reader)
    out = io.BytesIO()
    assert write_car(out, reader.roots, blocks) == len(CARV1_BASIC)
    assert out.getvalue() == CARV1_BASIC
    header = encode_header(reader.roots)
    assert CARV1_BASIC[0] == len(header) == 0x63 and CARV1_BASIC[1:100] == header


def test_header_bytes_for_one_v0_root() -> None:
    cid = CID.decode("QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn")
    expected = (
        b"\xa2" + b"\x65roots" + b"\x81" + b"\xd8\x2a" + b"\x58\x23" + b"\x00" + cid.multihash
        + b"\x67version" + b"\x01"
    )
    assert encode_header([cid]) == expected


def test_reads_from_an_iterator_of_chunks() -> None:
    chunks = (CARV1_BASIC[i:i + 7] for i in range(0, len(CARV1_BASIC), 7))
    assert [str(c) for c, _ in CarReader(chunks)] == BASIC_BLOCKS


def _prefixed(header: bytes) -> bytes:
    return encode_varint(len(header)) + header


# -- malformed input -------------------------------------------------------------------


def test_truncation_anywhere_inside_a_section_is_an_error() -> None:
    ends = _section_ends(CARV1_BASIC)
    for cut in range(1, len(CARV1_BASIC)):
        stream = io.BytesIO(CARV1_BASIC[:cut])
        if cut in ends:
            assert len(list(CarReader(stream))) == sorted(ends).index(cut)
            continue
        with pytest.raises(CARFormatError, match="byte"):
            list(CarReader(stream))


def test_tampered_block_is_an_integrity_error() -> None:
    car = bytearray(CARV1_BASIC)
    car[100 + 1 + 36 + 2] ^= 0x01  # inside the first block's bytes (after varint + CID)
    store = MemoryStore()
    with pytest.raises(IntegrityError) as e:
        import_car(io.BytesIO(bytes(car)), store)
    assert str(e.value.cid) == BASIC_BLOCKS[0]
    assert store.blocks == {}


def test_oversized_block_is_refused() -> None:
    big = b"\0" * (2 * 1024 * 1024 + 1)
    cid = CID.compute(big, RAW)
    out = io.BytesIO()
    write_car(out, [cid], [(cid, big)])
    with pytest.raises(BlockTooLargeError):
        list(CarReader(io.BytesIO(out.getvalue())))
    ok = b"\1" * (2 * 1024 * 1024)
    out = io.BytesIO()
    write_car(out, [CID.compute(ok, RAW)], [(CID.compute(ok, RAW), ok)])
    assert len(list(CarReader(io.BytesIO(out.getvalue())))) == 1


@pytest.mark.parametrize(
    "car, match",
    [
        (b"", "empty"),
        (b"\x01\x01", "not a map"),
        (encode_varint(3) + b"\xa1\x61x", "truncated"),
        (b"\x0a\xa1\x67version\x03", "version 3"),
        (_prefixed(b"\xa2\x65roots\x80\x67version\x01" + b"\x00"), "trailing"),
        (_prefixed(b"\xa1\x65roots\x80"), "version None"),
        (b"\x80\x00", "non-minimal"),
        (CARV1_BASIC[:100] + b"\x00", "empty CAR section"),
        (CARV1_BASIC[:100] + b"\x05\x01\x55\x12\x20\x00", "bad CID"),
        (_prefixed(b"\xa2\x65roots\x81\x41\x00\x67version\x01"), "roots"),
        (_prefixed(b"\xa2\x65roots\x81\xd8\x2a\x42\x01\x00\x67version\x01"), "0x00"),
    ],
)
def test_malformed_cars(car: bytes, match: str) -> None:
    with pytest.raises(CARFormatError, match=match):
        list(CarReader(io.BytesIO(car)))


# -- CARv2 -----------------------------------------------------------------------------


def _v2(
    inner: bytes, padding: int = 5, trailer: bytes = b"INDEX-IGNORED", data_size: int | None = None
) -> bytes:
    data_offset = 11 + 40 + padding
    size = len(inner) if data_size is None else data_size
    header = struct.pack("<16sQQQ", b"\0" * 16, data_offset, size, data_offset + len(inner))
    return CARV2_PRAGMA + header + b"\0" * padding + inner + trailer


def test_carv2_is_read_through_its_data_section() -> None:
    reader = CarReader(io.BytesIO(_v2(CARV1_BASIC)))
    assert reader.version == 2 and reader.data_offset == 56 and reader.data_size == len(CARV1_BASIC)
    assert [str(r) for r in reader.roots] == BASIC_ROOTS
    assert [str(c) for c, _ in reader] == BASIC_BLOCKS
    chunks = iter([_v2(CARV1_BASIC, padding=0)])
    assert len(list(CarReader(chunks))) == 8


def test_carv2_data_size_is_respected() -> None:
    ends = sorted(_section_ends(CARV1_BASIC))
    reader = CarReader(io.BytesIO(_v2(CARV1_BASIC, data_size=ends[3])))
    assert len(list(reader)) == 3
    with pytest.raises(CARFormatError, match="data size"):
        list(CarReader(io.BytesIO(_v2(CARV1_BASIC, data_size=ends[3] + 2))))
    with pytest.raises(CARFormatError, match="truncated"):
        list(CarReader(io.BytesIO(_v2(CARV1_BASIC, trailer=b"")[:-3])))
    bad = bytearray(_v2(CARV1_BASIC))
    bad[11 + 16:11 + 24] = struct.pack("<Q", 20)  # data offset inside the header
    with pytest.raises(CARFormatError, match="offset"):
        CarReader(io.BytesIO(bytes(bad)))


# -- export / import -------------------------------------------------------------------


def _multilevel(store: MemoryStore, data: bytes, **opts) -> CID:
    options = ImportOptions(chunker="size-64", max_links=4, **opts)
    return import_bytes(data, store, options).cid


def test_export_import_round_trip() -> None:
    src = MemoryStore()
    data = os.urandom(64 * 50 + 3)
    root = _multilevel(src, data)
    out = io.BytesIO()
    n = export_car(src, root, out)
    car = out.getvalue()
    assert n == len(car)
    reader = CarReader(io.BytesIO(car))
    assert reader.roots == [root]
    assert [c for c, _ in reader] == [c for c, _ in walk_dfs(src, root)]
    dst = MemoryStore()
    assert import_car(io.BytesIO(car), dst) == [root]
    assert dst.blocks == src.blocks
    assert UnixFSFile(dst, root).read() == data


def test_export_writes_each_block_once() -> None:
    src = MemoryStore()
    root = _multilevel(src, bytes(64 * 40))  # all leaves identical
    car = io.BytesIO()
    export_car(src, root, car)
    cids = [c for c, _ in CarReader(io.BytesIO(car.getvalue()))]
    assert len(cids) == len(set(cids)) == len(src.blocks)


def test_partial_car_imports_what_is_there() -> None:
    src = MemoryStore()
    data = os.urandom(64 * 8)
    root = import_bytes(data, src, ImportOptions(cid_version=1, chunker="size-64")).cid
    blocks = list(walk_dfs(src, root))
    missing = blocks[4][0]
    out = io.BytesIO()
    write_car(out, [root], [b for b in blocks if b[0] != missing])
    dst = MemoryStore()
    assert import_car(io.BytesIO(out.getvalue()), dst) == [root]
    f = UnixFSFile(dst, root)
    assert f.read_range(0, 64 * 3) == data[:64 * 3]
    with pytest.raises(BlockNotFoundError) as e:
        f.read_range(64 * 2, 200)
    assert e.value.cid == missing


def test_a_block_cut_short_is_named_in_the_error() -> None:
    # a block longer than a section's first read, cut 3 bytes short: the error names it
    block = bytes(range(256)) * 4
    cid = CID(1, RAW, multihash.digest(block))
    out = io.BytesIO()
    write_car(out, [cid], [(cid, block)])
    with pytest.raises(CARFormatError, match=f"truncated at byte 1118: block {cid} needs 804 bytes, got 801"):
        list(CarReader(io.BytesIO(out.getvalue()[:-3])))

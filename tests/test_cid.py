"""CIDs and addresses, checked against published values (ipfs-facts.md, the CID spec)."""

import random

import pytest
from multiformats import multibase

from torch_ipfs import cid as cid_module
from torch_ipfs.cid import CID, DAG_PB, RAW, parse_address
from torch_ipfs.errors import IntegrityError, InvalidCIDError

HELLO_V0 = "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"
HELLO_RAW_V1 = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
EMPTY_DIR = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"


def test_v0_parses_and_prints_back():
    cid = CID.decode(HELLO_V0)
    assert (cid.version, cid.codec, cid.hash_code) == (0, DAG_PB, 0x12)
    assert str(cid) == HELLO_V0
    assert cid.to_bytes() == cid.multihash and len(cid.multihash) == 34


def test_raw_v1_of_hello_world_matches_published_cid():
    assert str(CID.compute(b"hello world")) == HELLO_RAW_V1


def test_v0_to_v1_and_back():
    v0 = CID.decode(EMPTY_DIR)
    v1 = v0.to_v1()
    # The CID spec's own example pair for the empty directory.
    assert str(v1) == "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"
    assert v1.to_v0() == v0 and v1 != v0 and v1.multihash == v0.multihash


@pytest.mark.parametrize("base,prefix", [("base32", "b"), ("base58btc", "z"), ("base36", "k"),
                                         ("base16", "f"), ("base64url", "u")])
def test_every_multibase_round_trips(base, prefix):
    cid = CID.decode(HELLO_RAW_V1)
    text = cid.encode(base)
    assert text[0] == prefix
    assert CID.decode(text) == cid


def test_own_base58btc_and_base32_text_equal_multiformats():
    # CID text is encoded here (fast); multiformats is the reference it must match,
    # including leading zero bytes (base58btc writes each as "1").
    rng = random.Random(7)
    raws = [bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 70))) for _ in range(300)]
    raws += [bytes(k) + b"\x01\xff" for k in range(5)] + [bytes(3), b""]
    for raw in raws:
        assert "z" + cid_module._base58btc(raw) == multibase.encode(raw, "base58btc"), raw
        assert cid_module._base32(raw) == multibase.encode(raw, "base32"), raw
    for n in range(200):
        cid = CID.compute(rng.randbytes(n), codec=rng.choice([RAW, DAG_PB]))
        assert str(cid) == multibase.encode(cid.to_bytes(), "base32")
        assert cid.encode("base58btc") == multibase.encode(cid.to_bytes(), "base58btc")
        v0 = CID(0, DAG_PB, cid.multihash)
        assert str(v0) == multibase.encode(v0.multihash, "base58btc")[1:]
        assert CID.decode(str(v0)) == v0 and CID.decode(str(cid)) == cid


def test_binary_round_trip():
    cid = CID.decode(HELLO_RAW_V1)
    assert cid.to_bytes()[:2] == bytes([0x01, RAW])
    assert CID.decode(cid.to_bytes()) == cid


def test_identity_cid_carries_its_data():
    cid = CID.identity(b"")
    assert str(cid) == "bafkqaaa" and cid.is_identity and cid.digest == b""


@pytest.mark.parametrize(
    "text,reason",
    [
        ("", "empty"),
        ("Qm" + "0" * 44, "base58"),  # '0' is not in the base58 alphabet
        (multibase.encode(b"\x01\x55\x12\x20" + bytes(31), "base32"), "declares 32 digest bytes, has 31"),
        ("zQmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD", "v0 is bare"),
        ("not a cid", "multibase"),
    ],
)
def test_malformed_cids_raise_a_value_error_naming_the_input(text, reason):
    with pytest.raises(InvalidCIDError) as exc:
        CID.decode(text)
    assert isinstance(exc.value, ValueError)
    assert repr(text) in str(exc.value)
    assert reason in str(exc.value)


def test_v0_has_no_other_base():
    with pytest.raises(InvalidCIDError, match="to_v1"):
        CID.decode(HELLO_V0).encode("base32")


def test_verify_detects_a_flipped_byte():
    cid = CID.compute(b"hello world")
    cid.verify(b"hello world")
    with pytest.raises(IntegrityError, match=str(cid)):
        cid.verify(b"hello worle", source="somewhere")


@pytest.mark.parametrize(
    "address,path,gateway",
    [
        (HELLO_V0, "", None),
        (f"{HELLO_V0}/a/b.txt", "a/b.txt", None),
        (f"ipfs://{HELLO_V0}/a", "a", None),
        (f"/ipfs/{HELLO_V0}/a/", "a", None),
        (f"http://127.0.0.1:8080/ipfs/{HELLO_V0}/x%20y?format=raw", "x y", "http://127.0.0.1:8080"),
        (f"https://{HELLO_RAW_V1}.ipfs.gw.example/p/q", "p/q", "https://gw.example"),
        (f"http://{HELLO_RAW_V1}.ipfs.localhost:8080/", "", "http://localhost:8080"),
    ],
)
def test_addresses_users_paste(address, path, gateway):
    parsed = parse_address(address)
    assert parsed.path == path and parsed.gateway == gateway
    assert parsed.cid in (CID.decode(HELLO_V0), CID.decode(HELLO_RAW_V1))


@pytest.mark.parametrize(
    "address",
    ["ipfs://nope/x", f"/ipfs/{HELLO_V0}/../etc", "https://127.0.0.1/notipfs/x", "/ipns/example.org"],
)
def test_bad_addresses_raise(address):
    with pytest.raises(InvalidCIDError, match="invalid CID or IPFS address"):
        parse_address(address)

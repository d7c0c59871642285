"""Content identifiers (CIDv0/CIDv1) and the IPFS addresses users paste.

Multibase text encoding is delegated to the ``multiformats`` package (the maintained
Python implementation of the multiformats tables); the binary CID layout is small
enough to handle here, which keeps :class:`CID` hashable, immutable and cheap, as it
sits on every block read.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote, urlsplit

from multiformats import multibase

from torch_ipfs import multihash
from torch_ipfs.errors import IntegrityError, InvalidCIDError
from torch_ipfs.varint import decode_varint, encode_varint

__all__ = [
    "CID",
    "CODECS",
    "DAG_CBOR",
    "DAG_JSON",
    "DAG_PB",
    "IPFSPath",
    "RAW",
    "parse_address",
    "verify_block",
]

IDENTITY_CODEC = 0x00
RAW = 0x55
DAG_PB = 0x70
DAG_CBOR = 0x71
DAG_JSON = 0x0129
CAR_CODEC = 0x0202
LIBP2P_KEY = 0x72

#: Codec names as multicodec spells them.
CODECS: dict[str, int] = {
    "identity": IDENTITY_CODEC,
    "raw": RAW,
    "dag-pb": DAG_PB,
    "dag-cbor": DAG_CBOR,
    "dag-json": DAG_JSON,
    "car": CAR_CODEC,
    "libp2p-key": LIBP2P_KEY,
}
_CODEC_NAMES = {v: k for k, v in CODECS.items()}

#: Multibase names accepted by :meth:`CID.encode`.
BASES = ("base32", "base58btc", "base36", "base16", "base64url", "base32upper")

#: Entries in each memo cache below (text <-> CID): enough for the working set of a
#: read, and with digests capped (multihash) at most a few MiB, whatever callers send.
_MEMO_SIZE = 8192
#: The longest text a CID can have: base16 of a 1 + 9 + 9 + 9 + 128-byte binary CID.
MAX_CID_TEXT = 1 + 2 * (1 + 9 + 9 + 9 + 128)

_SHA2_256 = multihash.SHA2_256  # the module name is shadowed by CID.multihash in the class

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _base58btc(raw: bytes) -> str:
    """base58btc without the multibase prefix: what ``multibase.encode(raw, "base58btc")[1:]``
    gives, about 30x faster (that one costs ~200 us, and every block request names its
    CID in text)."""
    n = int.from_bytes(raw, "big")
    digits: list[str] = []
    while n:
        n, r = divmod(n, 58)
        digits.append(_B58_ALPHABET[r])
    zeros = len(raw) - len(raw.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(digits))


def _base32(raw: bytes) -> str:
    """Multibase base32 (``b`` + RFC 4648 lower case, unpadded), from the C codec."""
    return "b" + base64.b32encode(raw).decode("ascii").rstrip("=").lower()


@dataclass(frozen=True, slots=True)
class CID:
    """A content identifier: ``version``, ``codec`` and the ``multihash`` of the content.

    Build one with :meth:`CID.decode` (text or bytes), :meth:`CID.compute` (from data),
    or directly. ``str(cid)`` gives the canonical text: base58btc for v0, base32 for v1.
    Equality is exact (a v0 and its v1 form are different CIDs for the same content;
    compare ``.multihash`` to ask "same bytes?").
    """

    version: int
    codec: int
    multihash: bytes

    def __post_init__(self) -> None:
        if self.version == 0:
            if self.codec != DAG_PB:
                raise InvalidCIDError(self.multihash.hex(), "CIDv0 is always dag-pb")
            if self.multihash[:2] != b"\x12\x20" or len(self.multihash) != 34:
                raise InvalidCIDError(self.multihash, "CIDv0 must be a sha2-256 multihash")
        elif self.version != 1:
            raise InvalidCIDError(self.version, "only CID versions 0 and 1 exist")

    # -- construction -------------------------------------------------------------

    @classmethod
    def decode(cls, value: str | bytes | CID) -> CID:
        """Parse a CID from text (any multibase, or a bare ``Qm…`` v0) or binary form."""
        if isinstance(value, CID):
            return value
        if isinstance(value, (bytes, bytearray, memoryview)):
            return _decode_bytes(bytes(value))
        if isinstance(value, str):
            if len(value) > MAX_CID_TEXT:  # refused before it can reach the memo cache
                raise InvalidCIDError(value[:64] + "...", f"longer than {MAX_CID_TEXT} characters")
            return _decode_text(value)
        raise InvalidCIDError(value, f"expected str or bytes, got {type(value).__name__}")

    @classmethod
    def compute(
        cls,
        data: bytes | memoryview,
        codec: int = RAW,
        *,
        version: int = 1,
        hash_code: int = _SHA2_256,
    ) -> CID:
        """The CID of a block of ``data`` encoded with ``codec``."""
        return cls(version, codec, multihash.digest(data, hash_code))

    @classmethod
    def identity(cls, data: bytes, codec: int = RAW) -> CID:
        """An identity CID: the data is inlined in the CID itself."""
        return cls(1, codec, multihash.digest(data, multihash.IDENTITY))

    # -- views ----------------------------------------------------------------------

    @property
    def hash_code(self) -> int:
        """The multihash function code (0x12 for sha2-256)."""
        return decode_varint(self.multihash, 0)[0]

    @property
    def digest(self) -> bytes:
        """The raw digest (for identity CIDs: the inlined data)."""
        return multihash.decode(self.multihash)[1]

    @property
    def is_identity(self) -> bool:
        return self.multihash[0] == multihash.IDENTITY

    @property
    def codec_name(self) -> str:
        return _CODEC_NAMES.get(self.codec, f"0x{self.codec:x}")

    def __bytes__(self) -> bytes:
        return _to_bytes(self)

    def to_bytes(self) -> bytes:
        """Binary form: the bare multihash for v0, ``0x01 codec multihash`` for v1."""
        return _to_bytes(self)

    def encode(self, base: str | None = None) -> str:
        """Text form. v0 is always base58btc; v1 defaults to base32 (``b…``)."""
        if self.version == 0:
            if base not in (None, "base58btc"):
                raise InvalidCIDError(self, f"CIDv0 has no {base} form; convert with to_v1() first")
            return _base58btc(self.multihash)
        if base is None or base == "base32":
            return _base32(_to_bytes(self))
        if base == "base58btc":
            return "z" + _base58btc(_to_bytes(self))
        return multibase.encode(_to_bytes(self), base)

    def __str__(self) -> str:
        return _to_text(self)

    def __repr__(self) -> str:
        return f"CID({_to_text(self)!r})"

    def to_v1(self) -> CID:
        """The same content as CIDv1 (keeps the multihash, codec dag-pb for a v0)."""
        return self if self.version == 1 else CID(1, self.codec, self.multihash)

    def to_v0(self) -> CID:
        """The CIDv0 form; only dag-pb + sha2-256 CIDs have one."""
        if self.version == 0:
            return self
        if self.codec != DAG_PB or self.multihash[:2] != b"\x12\x20":
            raise InvalidCIDError(self, "only dag-pb sha2-256 CIDs have a v0 form")
        return CID(0, DAG_PB, self.multihash)

    def verify(self, data: bytes | memoryview, source: str = "") -> None:
        """Raise :class:`IntegrityError` unless ``data`` hashes to this CID."""
        verify_block(self, data, source)


@lru_cache(maxsize=_MEMO_SIZE)
def _to_bytes(cid: CID) -> bytes:
    if cid.version == 0:
        return cid.multihash
    return b"\x01" + encode_varint(cid.codec) + cid.multihash


@lru_cache(maxsize=_MEMO_SIZE)
def _to_text(cid: CID) -> str:
    return cid.encode()


@lru_cache(maxsize=_MEMO_SIZE)
def _decode_text(text: str) -> CID:
    if not text:
        raise InvalidCIDError(text, "empty string")
    if len(text) == 46 and text.startswith("Qm"):
        if any(c not in _B58_ALPHABET for c in text):
            raise InvalidCIDError(text, "not base58btc")
        raw = multibase.decode("z" + text)
        return _decode_bytes(raw, text)
    try:
        raw = multibase.decode(text)
    except Exception as e:  # multiformats raises several types; one boundary translates them
        raise InvalidCIDError(text, f"not a multibase string ({e})") from None
    if raw[:1] == b"\x12":
        raise InvalidCIDError(text, "a multibase-encoded CIDv0 is not valid; v0 is bare base58btc")
    return _decode_bytes(raw, text)


def _decode_bytes(raw: bytes, original: object = None) -> CID:
    shown = original if original is not None else raw
    if len(raw) == 34 and raw[:2] == b"\x12\x20":
        return CID(0, DAG_PB, raw)
    try:
        version, pos = decode_varint(raw, 0)
        if version != 1:
            raise InvalidCIDError(shown, f"unsupported CID version {version}")
        codec, pos = decode_varint(raw, pos)
    except ValueError as e:
        raise InvalidCIDError(shown, str(e)) from None
    mh = raw[pos:]
    try:
        multihash.decode(mh)
    except InvalidCIDError as e:
        raise InvalidCIDError(shown, e.reason) from None
    return CID(1, codec, mh)


def verify_block(cid: CID, data: bytes | memoryview, source: str = "") -> None:
    """Raise :class:`IntegrityError` unless ``data`` hashes to ``cid``.

    This is the one check every block from every source passes before it is used.
    """
    code = cid.hash_code
    if not multihash.is_supported(code):
        raise IntegrityError(cid, source, f"cannot verify hash function 0x{code:x}")
    if multihash.digest(data, code) != cid.multihash:
        raise IntegrityError(cid, source, "content hash does not match")


# -- addresses -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IPFSPath:
    """A parsed address: the root ``cid``, a ``path`` below it (no leading slash, may be
    empty) and, for gateway URLs, the ``gateway`` base URL it was pasted from."""

    cid: CID
    path: str = ""
    gateway: str | None = None

    def __str__(self) -> str:
        return f"/ipfs/{self.cid}" + (f"/{self.path}" if self.path else "")

    @property
    def segments(self) -> list[str]:
        return [s for s in self.path.split("/") if s]


_SUBDOMAIN = re.compile(r"^(?P<cid>[a-z0-9]+)\.ipfs\.(?P<host>.+)$")


def parse_address(address: str | CID | IPFSPath) -> IPFSPath:
    """Parse anything a user may paste: a bare CID, ``CID/path``, ``ipfs://CID/path``,
    ``/ipfs/CID/path``, a path-gateway URL ``https://host/ipfs/CID/path`` or a
    subdomain-gateway URL ``https://CID.ipfs.host/path``.

    Raises :class:`InvalidCIDError` naming the input when it is none of these.
    """
    if isinstance(address, IPFSPath):
        return address
    if isinstance(address, CID):
        return IPFSPath(address)
    if not isinstance(address, str):
        raise InvalidCIDError(address, f"expected an address string, got {type(address).__name__}")
    text = address.strip()
    gateway = None
    if text.startswith("ipfs://"):
        rest = text[len("ipfs://"):]
    elif text.startswith(("http://", "https://")):
        try:  # urllib raises plain ValueError for a bad port or an unclosed IPv6 bracket
            url = urlsplit(text)
            host = url.hostname or ""
            port = f":{url.port}" if url.port else ""
        except ValueError as e:
            raise InvalidCIDError(address, f"not a valid URL ({e})") from e
        m = _SUBDOMAIN.match(host)
        if m:
            rest = m.group("cid") + url.path
            gateway = f"{url.scheme}://{m.group('host')}{port}"
        elif url.path.startswith("/ipfs/"):
            rest = url.path[len("/ipfs/"):]
            gateway = f"{url.scheme}://{url.netloc}"
        else:
            raise InvalidCIDError(address, "a gateway URL needs /ipfs/<cid> or a <cid>.ipfs.<host> name")
    elif text.startswith("/ipfs/"):
        rest = text[len("/ipfs/"):]
    elif text.startswith(("/ipns/", "ipns://")):
        raise InvalidCIDError(address, "IPNS names are not supported; resolve them to /ipfs/<cid> first")
    else:
        rest = text
    root, _, path = rest.partition("/")
    root = root.split("?")[0].split("#")[0]
    path = unquote(path.split("?")[0].split("#")[0]).strip("/")
    try:
        cid = CID.decode(root)
    except InvalidCIDError as e:
        raise InvalidCIDError(address, e.reason) from None
    if any(seg in (".", "..") for seg in path.split("/")):
        raise InvalidCIDError(address, "'.' and '..' are not allowed in IPFS paths")
    return IPFSPath(cid, path, gateway)

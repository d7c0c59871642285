"""Multihash: self-describing digests (`<varint code><varint length><digest>`).

Hashing uses :mod:`hashlib` (C, SHA extensions where the CPU has them); the table
below is the small set of functions IPFS data is actually made with.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from torch_ipfs.errors import CIDFormatError, InvalidCIDError
from torch_ipfs.varint import decode_varint, encode_varint

__all__ = ["IDENTITY", "SHA2_256", "decode", "digest", "encode", "hash_names"]

IDENTITY = 0x00
SHA2_256 = 0x12
SHA2_512 = 0x13
SHA3_256 = 0x16
BLAKE2B_256 = 0xB220

#: Identity "digests" longer than this are refused (the multihash spec's limit).
MAX_IDENTITY_LENGTH = 128

#: Digest lengths of the functions we verify: any other length cannot be a real digest
#: (checked at parse time, so a CID with a 4 KiB "sha2-256" digest never gets further).
DIGEST_LENGTHS = {SHA2_256: 32, SHA2_512: 64, SHA3_256: 32, BLAKE2B_256: 32}
#: Longest digest accepted for hash functions not in the table (none real is longer
#: than 64 bytes; a CID stays a small key).
MAX_DIGEST_LENGTH = 128

_FUNCTIONS: dict[int, tuple[str, Callable[[Any], bytes]]] = {
    IDENTITY: ("identity", bytes),
    SHA2_256: ("sha2-256", lambda b: hashlib.sha256(b).digest()),
    SHA2_512: ("sha2-512", lambda b: hashlib.sha512(b).digest()),
    SHA3_256: ("sha3-256", lambda b: hashlib.sha3_256(b).digest()),
    BLAKE2B_256: ("blake2b-256", lambda b: hashlib.blake2b(b, digest_size=32).digest()),
}


def hash_names() -> dict[str, int]:
    """Map of supported hash function names (``"sha2-256"``) to multihash codes."""
    return {name: code for code, (name, _) in _FUNCTIONS.items()}


def encode(code: int, raw_digest: bytes) -> bytes:
    """Wrap a digest as a multihash."""
    return encode_varint(code) + encode_varint(len(raw_digest)) + raw_digest


def digest(data: bytes | memoryview, code: int = SHA2_256) -> bytes:
    """Hash ``data`` with the function ``code`` and return the multihash."""
    try:
        fn = _FUNCTIONS[code][1]
    except KeyError:
        raise CIDFormatError(f"unsupported multihash function 0x{code:x}") from None
    if code == IDENTITY and len(data) > MAX_IDENTITY_LENGTH:
        raise CIDFormatError(f"identity multihash over {MAX_IDENTITY_LENGTH} bytes ({len(data)})")
    return encode(code, fn(data))


def decode(mh: bytes) -> tuple[int, bytes]:
    """Split a multihash into ``(code, digest)``, checking the declared length."""
    try:
        code, pos = decode_varint(mh, 0)
        length, pos = decode_varint(mh, pos)
    except ValueError as e:
        raise InvalidCIDError(mh, f"bad multihash: {e}") from None
    if len(mh) - pos != length:
        raise InvalidCIDError(mh, f"multihash declares {length} digest bytes, has {len(mh) - pos}")
    if code == IDENTITY and length > MAX_IDENTITY_LENGTH:
        raise InvalidCIDError(mh, f"identity multihash over {MAX_IDENTITY_LENGTH} bytes")
    expected = DIGEST_LENGTHS.get(code)
    if expected is not None and length != expected:
        raise InvalidCIDError(
            mh, f"a {_FUNCTIONS[code][0]} digest is {expected} bytes, this multihash declares {length}"
        )
    if expected is None and code != IDENTITY and length > MAX_DIGEST_LENGTH:
        raise InvalidCIDError(mh, f"multihash digest of {length} bytes, over {MAX_DIGEST_LENGTH}")
    return code, mh[pos:]


def is_supported(code: int) -> bool:
    """True if blocks hashed with ``code`` can be verified here."""
    return code in _FUNCTIONS

"""One sample's tar members, parsed with as little Python as possible (map-style ``ds[i]``).

A random read slices one sample's bytes (``offsets[i] .. offsets[i + 1]`` of the shard
index) out of a verified leaf: 1-3 plain headers, each followed by its data. This module
takes exactly the headers the exporter (and webdataset's ShardWriter, tarfile, GNU tar
for short names) writes: a regular file, an octal size, a name that is already normal
and reads ``<key>.<field>``, the checksum in tarfile's ``%06o\\0 `` form and right.
Anything else (pax or long-name records, links, a ustar prefix, base-256 numbers, a
name to normalise, another key, a wrong or unusual checksum, bytes left over) returns
None, and the caller reads the sample with the strict walker of
:mod:`torch_ipfs.formats.tar`, which then gives the same sample or its typed error.
So this is a shortcut, never a second opinion: what it accepts, the strict walker
accepts with the same result (``tests/test_tarsample.py`` checks both on hostile and
ordinary samples).

The checksum (the sum of the header's 512 bytes, its own field counted as spaces) comes
from ``zlib.adler32`` of each 256-byte half: the low 16 bits are 1 + the byte sum modulo
65521, and 256 bytes sum to at most 65,280, so each half is exact.
"""

from __future__ import annotations

import re
import zlib

__all__ = ["key_is_plain", "plain_fields"]

BLOCK = 512
#: One plain header, checked in one C call: a name (up to its first NUL, at least one
#: byte), the size as tarfile writes it ("%011o\0"), the checksum ("%06o\0 "), a regular
#: typeflag ('0', NUL, '7'), and no ustar prefix extending the name. Groups: name, size,
#: checksum digits.
_HEADER = re.compile(
    rb"(?s)(?=([^\x00]{1,100}))"  # the name, without moving
    rb".{124}([0-7]{11})\x00"  # mode, uid, gid; the size
    rb".{12}([0-7]{6}\x00 )[0\x007]"  # mtime; the checksum; the typeflag
    rb".{100}(?:ustar\x00.{82}\x00|(?!ustar\x00).{89})"  # linkname; magic, no prefix
)


def _header_sum(buf: bytes, pos: int, chk: bytes) -> int:
    """Sum of the 512 bytes at ``pos`` with the checksum field (``chk``) counted as 8
    spaces: two Adler-32 halves, each exact (256 bytes sum to at most 65,280 < 65,521)."""
    a = zlib.adler32(buf[pos : pos + 256]) & 0xFFFF
    b = zlib.adler32(buf[pos + 256 : pos + BLOCK]) & 0xFFFF
    return a + b - 2 - sum(chk) + 256


def plain_fields(buf: bytes | memoryview, key: str) -> dict[str, bytes] | None:
    """The fields of the sample whose members fill ``buf`` exactly (each header, its
    data, the data's padding to 512 bytes), when every member is plain and named
    ``<key>.<field>``; None for anything else (the strict walker decides). ``key`` must
    be a key the strict walker could produce for such a name: the caller checks that
    with :func:`key_is_plain`. ``buf`` may be a view into a leaf: each field's bytes are
    copied once, out of it."""
    n = len(buf)
    prefix = (key + ".").encode("utf-8")
    lp = len(key) + 1  # in characters: where the field starts in the decoded name
    fields: dict[str, bytes] = {}
    pos = 0
    match = _HEADER.match
    adler32 = zlib.adler32
    try:
        while pos < n:
            head = bytes(buf[pos : pos + BLOCK])
            m = match(head)
            if m is None or len(head) < BLOCK:
                return None
            raw, size_d, chk = m.groups()
            # the checksum, inlined (see _header_sum): two exact Adler-32 halves
            total = (adler32(head[:256]) & 0xFFFF) + (adler32(head[256:]) & 0xFFFF)
            if int(chk[:6], 8) != total + 254 - sum(chk) or not raw.startswith(prefix):
                return None
            field = raw.decode("utf-8")[lp:]
            if not field or "/" in field or "\\" in field or field in fields:
                return None  # the strict walker normalises, splits or refuses such names
            data_at = pos + BLOCK
            size = int(size_d, 8)
            pos = data_at + (size + BLOCK - 1) // BLOCK * BLOCK
            if pos > n:
                return None
            fields[field] = bytes(buf[data_at : data_at + size])
    except UnicodeDecodeError:  # a name not UTF-8 (the strict walker reads it as Latin-1)
        return None
    return fields if fields else None


def key_is_plain(key: str) -> bool:
    """Whether ``<key>.<field>`` splits back into ``key`` (WebDataset's rule: the key
    ends at the first dot of the basename) and needs no normalising."""
    base = key[key.rfind("/") + 1 :]
    return bool(
        base
        and "." not in base
        and key[0] not in "/."
        and "\\" not in key
        and "//" not in key
        and "/." not in key
        and key[1:2] != ":"
        and "\x00" not in key
    )

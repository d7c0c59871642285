"""The torch_ipfs exception tree.

Every error raised on purpose by torch_ipfs derives from :class:`IPFSError`, and the
ones that mean what a built-in exception means also derive from it, so callers can
catch either::

    IPFSError
    ├── InvalidCIDError(ValueError)        a CID or address that does not parse
    ├── BlockNotFoundError(FileNotFoundError)
    │                                       no source could deliver a block
    ├── IntegrityError                      bytes that do not hash to their CID
    ├── BlockTooLargeError                  a block over the 2 MiB cap
    ├── FormatError(ValueError)             bytes that hash right but decode wrong
    │   ├── CIDFormatError                  (reserved for multicodec tables)
    │   ├── UnixFSFormatError               dag-pb / UnixFS that breaks the spec
    │   ├── CARFormatError                  a CAR stream that breaks the spec
    │   ├── ManifestError                   a dataset manifest or archive we refuse
    │   └── UnsafePathError                 an entry ``get`` refuses to write (``.path``)
    ├── PathNotFoundError(FileNotFoundError)a path segment missing in a directory
    ├── NotAFileError / NotADirectoryError  the node is of the other kind
    ├── SourceError                         a source failed (``.source``, ``.cid``)
    │   ├── SourceUnavailableError          cannot connect / 5xx / refused
    │   ├── SourceTimeoutError(TimeoutError)no bytes for too long
    │   └── KuboError                       an error reported by Kubo's RPC (``.code``)
    ├── StoreError                          the local store cannot do what was asked
    └── SampleError                         a dataset sample that cannot be read/decoded
        └── SampleTooLargeError             over the per-sample byte limit

Messages name the CID, path or URL involved and, where there is one, what to do.
This module imports nothing from torch_ipfs.

Every error crosses process boundaries intact, however its constructor is shaped:
``pickle`` restores the message and attributes without calling ``__init__``
(:meth:`IPFSError.__reduce__`), and a DataLoader worker's re-raise, which calls
``type(e)(message=text)``, builds an error carrying exactly that text
(:class:`_ErrorType`).
"""

from __future__ import annotations

__all__ = [
    "BlockNotFoundError",
    "BlockTooLargeError",
    "CARFormatError",
    "FormatError",
    "IPFSError",
    "IntegrityError",
    "InvalidCIDError",
    "KuboError",
    "ManifestError",
    "NotADirectoryError",
    "NotAFileError",
    "PathNotFoundError",
    "SourceError",
    "SourceTimeoutError",
    "SourceUnavailableError",
    "StoreError",
    "SampleError",
    "SampleTooLargeError",
    "UnixFSFormatError",
    "UnsafePathError",
]

import builtins
from typing import Any


def _restore(cls: type[IPFSError], args: tuple[Any, ...], state: dict[str, Any]) -> IPFSError:
    """Rebuild an error from its ``args`` and attributes, bypassing ``__init__`` (whose
    parameters are rarely the message)."""
    err = cls.__new__(cls)
    BaseException.__init__(err, *args)
    err.__dict__.update(state)
    return err


class _ErrorType(type):
    """Metaclass of :class:`IPFSError`: ``SomeError(message="text")`` and nothing else is
    how torch's DataLoader re-raises a worker's exception (it does so for any class with
    a ``message`` attribute); it yields an error whose ``str()`` is ``text``, whatever
    arguments the class's own constructor takes."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if not args and len(kwargs) == 1 and isinstance(kwargs.get("message"), str):
            return _restore(cls, (kwargs["message"],), {})  # type: ignore[arg-type]
        return super().__call__(*args, **kwargs)


class _Message:
    """``error.message``: its text. On the class it is this (truthy) object, which is what
    makes torch's re-raise use ``message=``; a subclass may still set ``self.message``
    (no ``__set__``: an instance value wins)."""

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        return self if obj is None else str(obj)


class IPFSError(Exception, metaclass=_ErrorType):
    """Root of every error torch_ipfs raises on purpose."""

    #: Defaults for errors rebuilt from a message alone (see :class:`_ErrorType`).
    cid: object = None
    source: str = ""
    message = _Message()

    def __str__(self) -> str:
        # OSError subclasses would format (errno, strerror); ours always carry one message
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()

    def __reduce__(self) -> Any:
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class InvalidCIDError(IPFSError, ValueError):
    """A CID, multihash or IPFS address that does not parse."""

    def __init__(self, value: object, reason: str) -> None:
        self.value = value
        self.reason = reason
        super().__init__(f"invalid CID or IPFS address {value!r}: {reason}")


class BlockNotFoundError(IPFSError, FileNotFoundError):
    """No source could deliver a block. ``tried`` lists the sources asked."""

    tried: list[str] = []

    def __init__(self, cid: object, tried: list[str] | tuple[str, ...] = (), hint: str = "") -> None:
        self.cid = cid
        self.tried = list(tried)
        msg = f"block {cid} not found"
        if self.tried:
            msg += " (tried: " + ", ".join(self.tried) + ")"
        if hint:
            msg += f"; {hint}"
        super().__init__(msg)

    def __str__(self) -> str:  # FileNotFoundError would format (errno, strerror)
        return self.args[0]


class IntegrityError(IPFSError):
    """Bytes that do not hash to the CID they were fetched for."""

    def __init__(self, cid: object, source: str = "", detail: str = "") -> None:
        self.cid = cid
        self.source = source
        msg = f"block {cid} failed verification"
        if source:
            msg += f" (from {source})"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)


class BlockTooLargeError(IPFSError):
    """A block over the size cap (2 MiB, as IPFS gateways and Bitswap use)."""

    def __init__(self, cid: object, size: int, limit: int, source: str = "") -> None:
        self.cid, self.size, self.limit, self.source = cid, size, limit, source
        where = f" from {source}" if source else ""
        super().__init__(f"block {cid}{where} is {size} bytes, over the {limit}-byte cap")


class FormatError(IPFSError, ValueError):
    """Bytes that are authentic (hash right) but do not decode as the format says."""


class CIDFormatError(FormatError):
    """A multicodec or multihash we cannot handle."""


class UnixFSFormatError(FormatError):
    """A dag-pb or UnixFS node that breaks the spec."""


class CARFormatError(FormatError):
    """A CAR stream that breaks the spec, is truncated, or is out of the expected order."""


class ManifestError(FormatError):
    """A dataset manifest, index or archive that is malformed or refused (e.g. path traversal)."""


class PathNotFoundError(IPFSError, FileNotFoundError):
    """A path segment that is not in the directory it was looked up in."""

    def __init__(self, path: str, missing: str) -> None:
        self.path, self.missing = path, missing
        super().__init__(f"{path}: no entry named {missing!r}")

    def __str__(self) -> str:
        return self.args[0]


class NotAFileError(IPFSError, builtins.IsADirectoryError):
    """A file operation on a node that is not a UnixFS file."""

    def __str__(self) -> str:
        return self.args[0]


class NotADirectoryError(IPFSError, builtins.NotADirectoryError):  # noqa: A001
    """A directory operation on a node that is not a UnixFS directory."""

    def __str__(self) -> str:
        return self.args[0]


class SourceError(IPFSError):
    """A block source failed. ``source`` names it (URL or name), ``cid`` is what was asked."""

    def __init__(self, message: str, *, source: str = "", cid: object = None) -> None:
        self.source, self.cid = source, cid
        super().__init__(message)


class SourceUnavailableError(SourceError):
    """The source could not be reached or refused to answer (connection error, 5xx, 403)."""


class SourceTimeoutError(SourceError, TimeoutError):
    """The source sent nothing for longer than the configured timeout."""


class KuboError(SourceError):
    """An error reported by a Kubo RPC endpoint (its ``Message``/``Code`` JSON or a stream trailer)."""

    code: int | None = None

    def __init__(
        self, message: str, *, source: str = "", cid: object = None, code: int | None = None
    ) -> None:
        self.code = code
        super().__init__(message, source=source, cid=cid)


class StoreError(IPFSError):
    """The local block store cannot do what was asked (bad repo, lock, disk)."""


class UnsafePathError(UnixFSFormatError):
    """An entry ``get`` refuses to write: a name that could escape the target (empty,
    ``.``/``..``, ``/`` or NUL inside), a duplicate name in one directory, a symlink when
    symlinks were not asked for, or a path that already exists as a symlink. ``path`` is
    where it would have gone."""

    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"refusing to write {path!r}: {reason}")


class SampleError(IPFSError):
    """A sample that could not be read or decoded (``.index`` / ``.key`` say which, when
    known). Raised by the datasets (:mod:`torch_ipfs.datasets`)."""

    def __init__(self, message: str, *, index: int | None = None, key: str | None = None) -> None:
        self.index, self.key = index, key
        super().__init__(message)


class SampleTooLargeError(SampleError):
    """A sample larger than the per-sample byte limit (``TORCH_IPFS_MAX_SAMPLE_BYTES``,
    default 256 MiB), by its declared size or while it was read. ``sample`` names it,
    ``size`` is what it declared or reached, ``limit`` the limit."""

    def __init__(self, sample: str, size: int, limit: int) -> None:
        self.sample, self.size, self.limit = sample, size, limit
        super().__init__(
            f"{sample} is {size}+ bytes, over the {limit}-byte per-sample limit "
            f"(raise it with TORCH_IPFS_MAX_SAMPLE_BYTES)"
        )

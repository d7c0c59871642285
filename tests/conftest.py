"""Suite-wide fixtures and the network guard.

The guard makes any connection to a non-loopback address fail the test that made it
(these machines may only talk to loopback; the product must never contact a public
gateway unless configured to). It is installed at import time, so DataLoader workers
forked by a test inherit it.
"""

from __future__ import annotations

import ipaddress
import os
import socket

import pytest

_violations: list[str] = []


def _is_loopback(host: object) -> bool:
    if not isinstance(host, str):
        return False
    if host in ("localhost", "localhost.localdomain", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False  # a DNS name other than localhost: resolving it is traffic already


def _check(address: object, what: str) -> None:
    if isinstance(address, tuple) and address and not _is_loopback(address[0]):
        msg = f"network guard: {what} to non-loopback address {address!r}"
        _violations.append(msg)
        raise ConnectionRefusedError(msg)


_orig_connect = socket.socket.connect
_orig_connect_ex = socket.socket.connect_ex
_orig_sendto = socket.socket.sendto
_orig_getaddrinfo = socket.getaddrinfo


def _guarded_connect(self: socket.socket, address: object) -> None:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _check(address, "connect")
    return _orig_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _check(address, "connect_ex")
    return _orig_connect_ex(self, address)


def _guarded_sendto(self: socket.socket, data: bytes, *args: object) -> int:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _check(args[-1], "sendto")
    return _orig_sendto(self, data, *args)


def _guarded_getaddrinfo(host: object, *args: object, **kwargs: object) -> list:
    if host is not None and not _is_loopback(host.decode() if isinstance(host, bytes) else host):
        msg = f"network guard: name lookup of non-loopback host {host!r}"
        _violations.append(msg)
        raise socket.gaierror(msg)
    return _orig_getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
socket.socket.sendto = _guarded_sendto  # type: ignore[method-assign,assignment]
socket.getaddrinfo = _guarded_getaddrinfo


@pytest.fixture(autouse=True)
def _network_guard():
    """Fail the test if it (or code it called) tried to leave loopback, even if the
    error was swallowed somewhere along the way."""
    start = len(_violations)
    yield
    new = _violations[start:]
    if new:
        pytest.fail("; ".join(new), pytrace=False)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own embedded store and no configured remote sources."""
    home = tmp_path_factory.mktemp("torch_ipfs_home")
    monkeypatch.setenv("TORCH_IPFS_HOME", str(home))
    for var in ("TORCH_IPFS_API", "TORCH_IPFS_GATEWAYS"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(autouse=True)
def _empty_block_cache():
    """Each test starts with an empty verified-block cache, as a fresh process does
    (tests count the blocks a read fetches)."""
    from torch_ipfs.unixfs.blockcache import default_cache

    default_cache().clear()
    yield


@pytest.fixture
def rng():
    """A seeded random generator: tests are reproducible."""
    import random

    return random.Random(int(os.environ.get("TORCH_IPFS_TEST_SEED", "1234")))

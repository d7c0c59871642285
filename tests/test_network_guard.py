import socket

import conftest
import pytest


def test_loopback_is_allowed():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    c = socket.create_connection(srv.getsockname(), timeout=2)
    c.close()
    srv.close()


def test_non_loopback_connect_is_refused_and_recorded():
    s = socket.socket()
    start = len(conftest._violations)
    with pytest.raises(ConnectionRefusedError, match="non-loopback"):
        s.connect(("192.0.2.1", 80))  # TEST-NET-1: never routed, and never reached here
    s.close()
    # The guard fixture would fail this test; clear the record since we provoked it.
    assert len(conftest._violations) == start + 1
    del conftest._violations[start:]


def test_dns_lookup_of_a_public_name_is_refused():
    start = len(conftest._violations)
    with pytest.raises(socket.gaierror, match="non-loopback"):
        socket.getaddrinfo("example.org", 443)
    del conftest._violations[start:]

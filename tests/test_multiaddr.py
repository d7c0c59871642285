"""Kubo API addresses: multiaddrs and URLs to base URL + unix socket."""

from __future__ import annotations

import pytest

from torch_ipfs.multiaddr import DEFAULT_API, APIAddress, parse_api_address


@pytest.mark.parametrize(
    ("address", "base_url", "uds"),
    [
        ("/ip4/127.0.0.1/tcp/5001", "http://127.0.0.1:5001", None),
        ("/ip4/10.1.2.3/tcp/80/http", "http://10.1.2.3:80", None),
        ("/ip6/::1/tcp/5001", "http://[::1]:5001", None),
        ("/ip6/0:0:0:0:0:0:0:1/tcp/5001", "http://[::1]:5001", None),
        ("/dns/kubo.example.org/tcp/443/https", "https://kubo.example.org:443", None),
        ("/dns4/kubo.example.org/tcp/8443/tls/http", "https://kubo.example.org:8443", None),
        ("/dns6/kubo-1.internal/tcp/5001", "http://kubo-1.internal:5001", None),
        ("/unix/run/kubo/api.sock", "http://localhost", "/run/kubo/api.sock"),
        ("/unix/%2Frun%2Fkubo%2Fapi.sock", "http://localhost", "/run/kubo/api.sock"),
        ("http://127.0.0.1:5001", "http://127.0.0.1:5001", None),
        ("http://127.0.0.1:5001/api/v0/", "http://127.0.0.1:5001", None),
        ("https://kubo.example.org/proxy/api/v0", "https://kubo.example.org/proxy", None),
        ("http://[::1]:5001", "http://[::1]:5001", None),
        ("  /ip4/127.0.0.1/tcp/5001  ", "http://127.0.0.1:5001", None),
    ],
)
def test_parse_api_address(address: str, base_url: str, uds: str | None) -> None:
    parsed = parse_api_address(address)
    assert parsed == APIAddress(base_url, uds, address.strip())


def test_default_and_display() -> None:
    assert str(parse_api_address(DEFAULT_API)) == "http://127.0.0.1:5001"
    assert str(parse_api_address("/unix/tmp/k.sock")) == "unix:/tmp/k.sock"


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("", "empty"),
        ("127.0.0.1:5001", "expected a multiaddr"),
        ("/ip4/127.0.0.1", "expected /<ip4"),
        ("/ip4/300.0.0.1/tcp/5001", "not an IPv4 address"),
        ("/ip6/::zz/tcp/5001", "not an IPv6 address"),
        ("/ip4/127.0.0.1/udp/5001", "over /tcp"),
        ("/ip4/127.0.0.1/tcp/0", "not a TCP port"),
        ("/ip4/127.0.0.1/tcp/70000", "not a TCP port"),
        ("/ip4/127.0.0.1/tcp/port", "not a TCP port"),
        ("/ip4/127.0.0.1/tcp/5001/ws", "only /http, /https or /tls/http"),
        ("/dnsaddr/bootstrap.libp2p.io/tcp/5001", "cannot dial /dnsaddr"),
        ("/dns/bad host/tcp/5001", "not a DNS name"),
        ("/unix", "needs a socket path"),
        ("/", "empty multiaddr"),
        ("http://:5001", "no host"),
        ("http://127.0.0.1:99999", "invalid Kubo API address"),
        ("http://127.0.0.1:5001/?x=1", "query strings"),
    ],
)
def test_malformed_addresses_raise_value_error_naming_them(address: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_api_address(address)
    message = str(info.value)
    assert fragment in message
    assert repr(address.strip()) in message or address == ""


def test_credentials_in_a_url_are_refused_without_echoing_them() -> None:
    with pytest.raises(ValueError) as info:
        parse_api_address("http://alice:s3cret-pw@127.0.0.1:5001")
    assert "s3cret-pw" not in str(info.value)
    assert "'http://127.0.0.1:5001'" in str(info.value)
    assert "auth=" in str(info.value)

"""Kubo API addresses: multiaddrs (and plain URLs) to an HTTP base URL.

Kubo publishes its RPC endpoint as a multiaddr (``Addresses.API`` in its config, and
the ``$IPFS_PATH/api`` file): ``/ip4/127.0.0.1/tcp/5001`` by default. Users also paste
URLs. :func:`parse_api_address` accepts both and returns an :class:`APIAddress`, which
an HTTP client turns into a connection (over TCP, TLS or a unix socket).

Accepted forms::

    /ip4/127.0.0.1/tcp/5001            -> http://127.0.0.1:5001
    /ip6/::1/tcp/5001                  -> http://[::1]:5001
    /dns/node.example/tcp/443/https    -> https://node.example:443   (also /dns4, /dns6, /tls/http)
    /ip4/10.0.0.2/tcp/5001/http        -> http://10.0.0.2:5001
    /unix/run/kubo/api.sock            -> http://localhost over the socket /run/kubo/api.sock
    http://127.0.0.1:5001[/api/v0]     -> http://127.0.0.1:5001

Anything else raises :class:`ValueError` naming the address. This module imports no
HTTP library (httpx is only used in ``torch_ipfs.sources``).
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from dataclasses import dataclass

__all__ = ["DEFAULT_API", "APIAddress", "parse_api_address"]

#: Kubo's default RPC address.
DEFAULT_API = "/ip4/127.0.0.1/tcp/5001"

_DNS_PROTOCOLS = ("dns", "dns4", "dns6")


@dataclass(frozen=True)
class APIAddress:
    """Where a Kubo RPC API listens.

    ``base_url`` is what HTTP requests are made against (``http://127.0.0.1:5001``);
    ``uds`` is the unix socket path to connect through, if any (the URL's host is then
    only the ``Host`` header). ``original`` is the text the user gave.
    """

    base_url: str
    uds: str | None = None
    original: str = ""

    def __str__(self) -> str:
        """A printable name for messages: the URL, or ``unix:<path>`` for a socket."""
        return f"unix:{self.uds}" if self.uds else self.base_url


def parse_api_address(address: str) -> APIAddress:
    """Parse a Kubo API multiaddr or an ``http(s)://`` URL.

    Raises :class:`ValueError` (with the address in the message) when it is malformed or
    uses a protocol we cannot dial (``/dnsaddr``, ``/p2p``, ``/udp``...).
    """
    if not isinstance(address, str) or not address.strip():
        raise ValueError(f"invalid Kubo API address {address!r}: empty")
    text = address.strip()
    if text.startswith(("http://", "https://")):
        return _parse_url(text)
    if text.startswith("/"):
        return _parse_multiaddr(text)
    raise ValueError(
        f"invalid Kubo API address {address!r}: expected a multiaddr such as "
        f"{DEFAULT_API} or a URL such as http://127.0.0.1:5001"
    )


def _fail(address: str, reason: str) -> ValueError:
    return ValueError(f"invalid Kubo API address {address!r}: {reason}")


def _parse_url(text: str) -> APIAddress:
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port  # raises ValueError on a bad port
    except ValueError as e:
        raise _fail(text, str(e)) from None
    if not parts.hostname:
        raise _fail(text, "no host")
    if parts.username or parts.password:
        # Never echo a secret: name the address with the credentials cut out.
        redacted = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        raise _fail(redacted, "credentials in the URL are not allowed; pass auth=('user', 'password')")
    if parts.query or parts.fragment:
        raise _fail(text, "query strings and fragments are not allowed in the API URL")
    path = parts.path.rstrip("/")
    if path.endswith("/api/v0"):  # users paste the full RPC prefix; requests add it again
        path = path[: -len("/api/v0")]
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return APIAddress(f"{parts.scheme}://{netloc}{path}", None, text)


def _parse_multiaddr(text: str) -> APIAddress:
    parts = text.split("/")[1:]
    if not parts or parts[0] == "":
        raise _fail(text, "empty multiaddr")
    proto = parts[0]
    if proto == "unix":
        # The unix protocol takes the whole rest of the address as the socket path.
        rest = "/".join(parts[1:])
        if not rest:
            raise _fail(text, "/unix needs a socket path")
        path = urllib.parse.unquote(rest)  # newer multiaddr encoders percent-escape the path
        if not path.startswith("/"):
            path = "/" + path
        return APIAddress("http://localhost", path, text)
    if len(parts) < 4:
        raise _fail(text, "expected /<ip4|ip6|dns|dns4|dns6>/<host>/tcp/<port>[/http|/https|/tls/http]")
    host_proto, host, transport, port_text, *suffix = parts
    if host_proto == "ip4":
        try:
            host = str(ipaddress.IPv4Address(host))
        except ValueError:
            raise _fail(text, f"{host!r} is not an IPv4 address") from None
    elif host_proto == "ip6":
        try:
            host = f"[{ipaddress.IPv6Address(host)}]"
        except ValueError:
            raise _fail(text, f"{host!r} is not an IPv6 address") from None
    elif host_proto in _DNS_PROTOCOLS:
        if not host or "/" in host or not all(c.isalnum() or c in "-._" for c in host):
            raise _fail(text, f"{host!r} is not a DNS name")
    else:
        raise _fail(text, f"cannot dial /{host_proto} (supported: /ip4, /ip6, /dns, /dns4, /dns6, /unix)")
    if transport != "tcp":
        raise _fail(text, f"the Kubo RPC API runs over /tcp, not /{transport}")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _fail(text, f"{port_text!r} is not a TCP port")
    scheme = _scheme(text, suffix)
    return APIAddress(f"{scheme}://{host}:{int(port_text)}", None, text)


def _scheme(text: str, suffix: list[str]) -> str:
    if suffix in ([], ["http"]):
        return "http"
    if suffix in (["https"], ["tls", "http"]):
        return "https"
    raise _fail(text, "after /tcp/<port> only /http, /https or /tls/http may follow")

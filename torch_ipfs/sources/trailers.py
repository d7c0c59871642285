"""HTTP/1.1 trailers for httpx responses, which httpx itself throws away.

Why this exists: Kubo streams RPC responses (``cat``, ``add``, ``dag/export``...) with a
200 status sent before the work is done, so when it fails mid-way the only report is an
``X-Stream-Error`` trailer after the last chunk. httpx (through httpcore) parses responses
with h11 and discards the trailers h11 hands it, so without this module such a failure
would look like a body that merely ended early, or like success.

How: :class:`TrailerAwareTransport` is httpx's own transport with a connection pool whose
network streams also feed every byte they read to a second, passive h11 parser
(:class:`_TrailerTap`), one per connection, which records each response's trailers.
:class:`ResponseTrailers` finds the trailers of one response among them.

Risk: httpx offers no hook for the network backend, so the transport replaces the private
``HTTPTransport._pool`` attribute with an identical pool that has one. An httpx release
that renames or rebuilds it would silently stop trailers from being seen (the pool would
simply not be tapped): ``test_stream_error_trailer_becomes_kubo_error`` in
``tests/test_kubo.py`` fails if that happens, and
``test_trailers_of_interleaved_streams_are_not_confused`` checks that each response is
matched with its own trailers, also when the connection carries many other responses
before its reader looks (``test_trailers_survive_a_slow_reader``).

Limit: the tap gives its parser a placeholder POST as the request context, which frames
every response correctly for POST and GET but not for HEAD or CONNECT: use the transport
only for clients that never send those (every Kubo RPC request is a POST).
"""

from __future__ import annotations

from typing import Any

import h11
import httpcore
import httpx

__all__ = ["ResponseTrailers", "TrailerAwareTransport"]


class _Slot:
    """Where the trailers of one claimed response land when it ends."""

    __slots__ = ("trailers",)

    def __init__(self, trailers: dict[str, str] | None = None) -> None:
        self.trailers = trailers


class _TrailerTap:
    """A passive HTTP/1.1 response parser over the bytes httpcore reads from one connection.

    Responses on a connection are numbered; ``started`` is the number of the one being
    received. A reader claims its response's number (:meth:`claim`) while it still holds
    the connection, and the trailers are put in its slot when the response ends, however
    many responses the connection carries for other threads before the reader looks.
    """

    _KEEP = 8  # unclaimed finished responses kept per connection (a claim may come later)

    def __init__(self) -> None:
        self._conn: h11.Connection | None = h11.Connection(h11.CLIENT)
        self._expect_response()
        self.started = -1
        self._finished: dict[int, dict[str, str]] = {}
        self._claims: dict[int, _Slot] = {}

    def claim(self, number: int) -> _Slot:
        """The slot of response ``number``; call it while holding the connection (so no
        other response can start on it), typically right after its headers arrived."""
        done = self._finished.pop(number, None)
        if done is not None:  # it ended in the same read that brought its headers
            return _Slot(done)
        slot = self._claims[number] = _Slot()
        return slot

    def _expect_response(self) -> None:
        assert self._conn is not None
        # A placeholder request gives h11 the framing context a response needs (see the
        # module docstring for why POST).
        self._conn.send(
            h11.Request(method="POST", target="/", headers=[("Host", "tap"), ("Content-Length", "0")])
        )
        self._conn.send(h11.EndOfMessage())

    def feed(self, data: bytes) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            conn.receive_data(data)
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
                    return
                if isinstance(event, h11.Response):
                    self.started += 1
                elif isinstance(event, h11.EndOfMessage):
                    trailers = {
                        k.decode("latin-1").lower(): v.decode("utf-8", "replace") for k, v in event.headers
                    }
                    slot = self._claims.pop(self.started, None)
                    if slot is not None:
                        slot.trailers = trailers
                    else:
                        self._finished[self.started] = trailers
                        self._finished.pop(self.started - self._KEEP, None)
                    if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                        conn.start_next_cycle()
                        self._expect_response()
                    else:  # the server will close the connection: nothing more to parse
                        self._conn = None
                        return
        except h11.ProtocolError:
            # httpcore's own parser sees the same bytes and reports the problem; stop tapping.
            self._conn = None


class _TapStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream
        self.tap = _TrailerTap()

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = self._stream.read(max_bytes, timeout)
        self.tap.feed(data)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, timeout)

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None):
        return _TapStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _TapBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        return _TapStream(self._backend.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        return _TapStream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class TrailerAwareTransport(httpx.HTTPTransport):
    """httpx's transport (no proxies from the environment) whose connections record the
    trailers of the responses they carry; ``uds`` is a Unix socket path or None."""

    def __init__(self, *, uds: str | None, max_connections: int) -> None:
        super().__init__(trust_env=False, uds=uds)
        # httpx offers no hook for the network backend; replace the pool it built with an
        # identical one that has it (the module docstring says what guards this).
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=5.0,
            uds=uds,
            network_backend=_TapBackend(),
        )


class ResponseTrailers:
    """Where the trailers of one streamed response will be once its body has been read.

    Create it when the response's headers have arrived, before reading the body: the
    connection is the response's until it is closed, so the response its tap is receiving
    then is this one, and its number identifies the trailers later.
    """

    def __init__(self, resp: httpx.Response) -> None:
        stream = resp.extensions.get("network_stream")
        tap: _TrailerTap | None = getattr(stream, "tap", None)
        self._slot = tap.claim(tap.started) if tap is not None else None

    @property
    def recorded(self) -> bool:
        """False when the response did not come through a :class:`TrailerAwareTransport`."""
        return self._slot is not None

    def pop(self) -> dict[str, str] | None:
        """The response's trailers (lower-case names; ``{}`` when it had none), or None if
        the response has not ended properly (cut short) or this is not :attr:`recorded`."""
        if self._slot is None:
            return None
        trailers, self._slot.trailers = self._slot.trailers, None
        return trailers

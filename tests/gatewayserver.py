"""A real ``torch_ipfs.serve`` trustless gateway on 127.0.0.1, for a ``with`` block."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch_ipfs.serve import GatewayServer, make_server
from torch_ipfs.sources.base import BlockSource


@contextlib.contextmanager
def running_gateway(store: BlockSource, *, delay: float = 0.0) -> Iterator[GatewayServer]:
    """Serve ``store`` on a free port (``.url``) until the block ends."""
    srv = make_server(store, port=0, delay=delay)
    srv.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()

"""A real ``torch_ipfs.serve`` trustless gateway on 127.0.0.1: in this process for a
``with`` block, or as the ``torch-ipfs serve`` command in a process of its own."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

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


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_process(
    home: Path, port: int, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.Popen:
    """``torch-ipfs serve ARGS`` over the store in ``home`` on 127.0.0.1:port, returned
    once it accepts connections. ``env`` replaces the environment (default: this one
    without a Kubo node or gateways); ``TORCH_IPFS_HOME`` is ``home`` either way."""
    base = {**os.environ, "TORCH_IPFS_API": "", "TORCH_IPFS_GATEWAYS": ""} if env is None else dict(env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch_ipfs.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *args],
        env={**base, "TORCH_IPFS_HOME": str(home)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("torch-ipfs serve did not start") from None
            time.sleep(0.05)

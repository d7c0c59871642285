"""The ``torch-ipfs serve`` gateway in its own process, counting the bytes it sends.

Run as ``python -m bench.suite.server STORE_DIR DELAY_SECONDS``: it serves the embedded
store at ``STORE_DIR`` on a free loopback port with :func:`torch_ipfs.serve.make_server`
(the same server as ``torch-ipfs serve --delay``), prints the port, then answers each
line ``bytes`` on stdin with the total bytes written to clients so far (headers and
bodies, every response of every connection). It exits when stdin closes.

A separate process, as a real gateway would be: it neither shares the GIL with the
loader being measured nor leaves threads behind in it.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

__all__ = ["GatewayProcess"]


class _CountingSocket:
    """A connected socket that adds the bytes sent through it to its server's counter.

    ``http.server`` writes responses with ``sendall`` (its ``wfile`` is unbuffered), so
    counting there sees every byte; everything else goes to the real socket."""

    def __init__(self, sock: Any, server: Any) -> None:
        self._sock = sock
        self._server = server

    def sendall(self, data: Any, *args: Any) -> None:
        self._sock.sendall(data, *args)
        self._server.count(len(memoryview(data).cast("B")))

    def send(self, data: Any, *args: Any) -> int:
        sent = self._sock.send(data, *args)
        self._server.count(sent)
        return sent

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _serve(store_dir: str, delay: float) -> None:
    from torch_ipfs.serve import GatewayServer
    from torch_ipfs.sources.local import LocalStore

    class CountingGateway(GatewayServer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.bytes_sent = 0
            self._lock = threading.Lock()
            super().__init__(*args, **kwargs)

        def count(self, n: int) -> None:
            with self._lock:
                self.bytes_sent += n

        def finish_request(self, request: Any, client_address: Any) -> None:
            super().finish_request(_CountingSocket(request, self), client_address)

    server = CountingGateway(("127.0.0.1", 0), LocalStore(store_dir), delay=delay)
    server.start()
    sys.stdout.write(f"{server.server_address[1]}\n")
    sys.stdout.flush()
    for line in sys.stdin:
        if line.strip() == "bytes":
            sys.stdout.write(f"{server.bytes_sent}\n")
            sys.stdout.flush()
    server.shutdown()
    server.server_close()


class GatewayProcess:
    """A running gateway subprocess: ``url``, ``bytes_sent()``, ``close()``."""

    def __init__(self, store_dir: Path, delay: float) -> None:
        self.delay = delay
        repo = Path(__file__).resolve().parents[2]
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.suite.server", str(store_dir), repr(delay)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=repo,
        )
        line = self._proc.stdout.readline()  # type: ignore[union-attr]
        if not line.strip().isdigit():
            self.close()
            raise RuntimeError(f"gateway process for {store_dir} did not start (said {line!r})")
        self.url = f"http://127.0.0.1:{int(line)}"
        self._lock = threading.Lock()

    def bytes_sent(self) -> int:
        """Total bytes the gateway has written to clients since it started."""
        with self._lock:
            self._proc.stdin.write("bytes\n")  # type: ignore[union-attr]
            self._proc.stdin.flush()  # type: ignore[union-attr]
            return int(self._proc.stdout.readline())  # type: ignore[union-attr]

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.stdin.close()  # type: ignore[union-attr]
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def __enter__(self) -> GatewayProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    _serve(sys.argv[1], float(sys.argv[2]))

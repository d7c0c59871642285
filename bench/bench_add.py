"""``add`` into the embedded store: the importer's own hash vs the store hashing each block again.

The importer hashes every block to name it; ``BlockStore.put_hashed`` stores it without a
second SHA-256. The baseline, in the same process, is the same import through a wrapper
that only offers ``put`` (so the store verifies every block again). Same root CID both
ways; best of 3 runs of 256 MiB of random bytes (in memory) into a fresh LocalStore.

    python bench/bench_add.py
"""

from __future__ import annotations

import os
import tempfile
import time

from torch_ipfs.sources.local import LocalStore
from torch_ipfs.unixfs.importer import import_bytes


class _PutOnly:
    """A store facade without ``put_hashed``: every block is verified again by ``put``."""

    def __init__(self, store: LocalStore) -> None:
        self.put = store.put


def _best_seconds(data: bytes, rehash: bool) -> tuple[float, str]:
    best, cid = float("inf"), ""
    for _ in range(3):
        with tempfile.TemporaryDirectory() as home:
            store = LocalStore(home)
            start = time.perf_counter()
            cid = str(import_bytes(data, _PutOnly(store) if rehash else store).cid)
            best = min(best, time.perf_counter() - start)
    return best, cid


def main() -> None:
    data = os.urandom(256 << 20)
    rehashed, cid_a = _best_seconds(data, rehash=True)
    hashed_once, cid_b = _best_seconds(data, rehash=False)
    assert cid_a == cid_b, (cid_a, cid_b)
    print(
        f"add 256 MiB to LocalStore: store re-hashes {256 / rehashed:.0f} MiB/s, "
        f"put_hashed {256 / hashed_once:.0f} MiB/s, ratio {rehashed / hashed_once:.2f}x ({cid_b})"
    )


if __name__ == "__main__":
    main()

"""WriteBehind: block writes on background threads, for the exporter.

A real LocalStore underneath throughout; a failing disk is played by a LocalStore whose
block write raises after N blocks (named as such), since a full disk cannot be had here.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

import numpy as np
import pytest

from torch_ipfs.car import export_car
from torch_ipfs.cid import CID, RAW
from torch_ipfs.client import Client
from torch_ipfs.errors import StoreError
from torch_ipfs.exporter import export_dataset
from torch_ipfs.sources.base import MemoryStore
from torch_ipfs.sources.local import LocalStore
from torch_ipfs.sources.writebehind import WriteBehind


def _block(i: int, size: int = 1000) -> tuple[CID, bytes]:
    data = hashlib.sha256(str(i).encode()).digest() * (size // 32)
    return CID(1, RAW, b"\x12\x20" + hashlib.sha256(data).digest()), data


class FailingDisk(LocalStore):
    """Stand-in for a disk that fills up: the block write after ``good`` ones raises."""

    def __init__(self, root, good: int) -> None:
        super().__init__(root)
        self.good = good
        self.writes = 0
        self._count = threading.Lock()

    def _write_block(self, mh: bytes, data: bytes) -> bool:
        with self._count:
            self.writes += 1
            if self.writes > self.good:
                raise StoreError(f"cannot write block to {self.root}: No space left on device")
        return super()._write_block(mh, data)


class SlowDisk(LocalStore):
    """A LocalStore whose block writes wait until ``release`` is set."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.release = threading.Event()

    def _write_block(self, mh: bytes, data: bytes) -> bool:
        assert self.release.wait(30)
        return super()._write_block(mh, data)


def _writer_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("torch-ipfs-write-")]


def test_every_block_is_stored_when_it_closes(tmp_path):
    store = LocalStore(tmp_path / "s")
    blocks = [_block(i) for i in range(200)]
    with WriteBehind(store, threads=3) as deferred:
        for cid, data in blocks:
            deferred.put_hashed(cid, data)
        assert all(deferred.has(cid) and deferred.get(cid) == data for cid, data in blocks)
    assert all(store.get(cid) == data for cid, data in blocks)
    assert sorted(store.iter_multihashes()) == sorted(cid.multihash for cid, _ in blocks)
    assert os.listdir(tmp_path / "s" / "tmp") == []  # no temp file left
    assert _writer_threads() == []


def test_put_verifies_before_queueing(tmp_path):
    cid, data = _block(1)
    with WriteBehind(LocalStore(tmp_path / "s")) as deferred:
        with pytest.raises(Exception, match="hash"):
            deferred.put(cid, data[:-1] + b"x")
        assert not deferred.has(cid)


def test_a_write_error_is_raised_by_the_next_put_and_by_close(tmp_path):
    disk = FailingDisk(tmp_path / "s", good=5)
    deferred = WriteBehind(disk, threads=2)
    with pytest.raises(StoreError, match="No space left"):
        for i in range(1000):
            deferred.put_hashed(*_block(i))
            time.sleep(0.001)
    assert i < 1000  # the error came back while blocks were still being put
    with pytest.raises(StoreError, match="No space left"):
        deferred.close()
    written_after = disk.writes
    assert written_after <= 5 + 2  # no write started after the failure (one per thread at most)
    assert len(list(disk.iter_multihashes())) == 5
    assert os.listdir(tmp_path / "s" / "tmp") == []
    assert _writer_threads() == []


def test_the_queue_is_bounded_in_bytes(tmp_path):
    disk = SlowDisk(tmp_path / "s")
    deferred = WriteBehind(disk, threads=1, max_bytes=10 * 1024)
    put = []

    def producer():
        for i in range(30):
            deferred.put_hashed(*_block(i, 1024))
            put.append(i)

    thread = threading.Thread(target=producer)
    thread.start()
    try:
        time.sleep(0.3)
        assert len(put) == 10  # 10 x 1 KiB queued (one of them being written): the 11th waits
    finally:
        disk.release.set()
    thread.join(10)
    deferred.close()
    assert len(put) == 30 and len(list(disk.iter_multihashes())) == 30


class Images:
    def __len__(self) -> int:
        return 300

    def __getitem__(self, i: int):
        if i >= 300:
            raise IndexError(i)
        rng = np.random.default_rng(i)
        return rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), i % 7


def test_an_export_through_it_has_the_same_root_and_every_block(tmp_path):
    expected = export_dataset(Images(), samples_per_shard=40, destination=MemoryStore(), progress=False)
    client = Client(home=tmp_path / "h", api="", gateways=[])
    result = export_dataset(Images(), samples_per_shard=40, client=client, progress=False)
    assert result.cid == expected.cid
    assert client.store.is_pinned(result.cid)
    with open(tmp_path / "all.car", "wb") as fh:
        export_car(client.store, result.cid, fh)  # walks the whole DAG: every block is there
    assert _writer_threads() == []


def test_a_failing_dataset_stops_the_writers(tmp_path):
    class Broken(Images):
        def __getitem__(self, i: int):
            if i == 130:
                raise RuntimeError("sample 130 is unreadable")
            return super().__getitem__(i)

    client = Client(home=tmp_path / "h", api="", gateways=[])
    with pytest.raises(Exception, match="sample 130 is unreadable"):
        export_dataset(Broken(), samples_per_shard=40, client=client, progress=False)
    assert _writer_threads() == []
    assert os.listdir(client.store.root / "tmp") == []


def test_a_write_that_ends_after_another_failed_is_quiet(tmp_path, monkeypatch):
    # Writer A is still writing block 0 when writer B fails on block 1 (and clears the
    # queue): A's end must not trip over the cleared bookkeeping.
    class OneSlowOneBad(LocalStore):
        def __init__(self, root) -> None:
            super().__init__(root)
            self.release = threading.Event()
            self.slow_started = threading.Event()

        def _write_block(self, mh: bytes, data: bytes) -> bool:
            if data == _block(0)[1]:
                self.slow_started.set()
                assert self.release.wait(30)
                return super()._write_block(mh, data)
            raise StoreError("cannot write block: No space left on device")

    crashed = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashed.append(args.exc_value))
    disk = OneSlowOneBad(tmp_path / "s")
    deferred = WriteBehind(disk, threads=2)
    deferred.put_hashed(*_block(0))
    assert disk.slow_started.wait(10)
    deferred.put_hashed(*_block(1))
    time.sleep(0.2)  # writer B fails meanwhile
    disk.release.set()
    with pytest.raises(StoreError, match="No space left"):
        deferred.close()
    assert crashed == [] and _writer_threads() == []
    assert disk.has(_block(0)[0])  # the write in flight completed

"""MetricsCollector and InstrumentedSource: exact counts, thread safety, persistence."""

from __future__ import annotations

import math
import threading

import pytest

from torch_ipfs.cid import CID
from torch_ipfs.errors import BlockNotFoundError, IntegrityError
from torch_ipfs.metrics import InstrumentedSource, MetricsCollector, instrument_client, percentile
from torch_ipfs.sources.base import BlockSource, MemoryStore


def test_operations_metrics_counters_and_summary():
    m = MetricsCollector()
    op = m.start_operation("fetch", cid="a")
    d = m.end_operation(op, size=3)
    assert d >= 0
    with pytest.raises(KeyError):
        m.end_operation(op)
    op = m.start_operation("fetch")
    m.end_operation(op, success=False, error="SourceTimeoutError")
    m.record_metric("queue", 2, loader="x")
    m.record_metric("queue", 4)
    m.increment("skipped")
    m.increment("skipped", 2)
    s = m.get_summary()
    assert s["operations"]["fetch"]["count"] == 2 and s["operations"]["fetch"]["failures"] == 1
    assert s["operations"]["fetch"]["success_rate"] == 0.5
    assert s["operations"]["fetch"]["errors"] == {"SourceTimeoutError": 1}
    assert s["metrics"]["queue"] == {"count": 2, "sum": 6.0, "mean": 3.0, "min": 2.0, "max": 4.0, "last": 4.0}
    assert s["counters"] == {"skipped": 3}
    events = m.get_metrics()
    assert events["operations"]["fetch"][0]["cid"] == "a" and events["operations"]["fetch"][0]["size"] == 3
    assert events["metrics"]["queue"][0]["loader"] == "x" and events["metrics"]["queue"][1]["value"] == 4.0


def test_track_context_manager_records_failures_and_reraises():
    m = MetricsCollector()
    with m.track("decode", field="png") as extra:
        extra["bytes"] = 10
    with pytest.raises(ZeroDivisionError), m.track("decode"):
        1 / 0  # noqa: B018
    ops = m.get_metrics()["operations"]["decode"]
    assert ops[0]["success"] is True and ops[0]["field"] == "png" and ops[0]["bytes"] == 10
    assert ops[1]["success"] is False and ops[1]["error"] == "ZeroDivisionError"


def test_ipfs_kit_metadata_keyword():
    m = MetricsCollector()
    op = m.start_operation("train")
    m.end_operation(op, metadata={"epoch": 3})
    m.record_metric("loss", 0.5, metadata={"epoch": 3})
    data = m.get_metrics()
    assert data["operations"]["train"][0]["epoch"] == 3 and data["metrics"]["loss"][0]["epoch"] == 3


def test_bounded_series_keep_exact_totals():
    m = MetricsCollector(max_events=10)
    for i in range(100):
        m.record_metric("v", i)
    assert len(m.values("v")) == 10 and m.values("v")[0][1] == 90.0
    s = m.get_summary()["metrics"]["v"]
    assert s["count"] == 100 and s["sum"] == sum(range(100)) and s["min"] == 0 and s["max"] == 99


def test_thread_safety_exact_counts():
    m = MetricsCollector()

    def work():
        for _ in range(2000):
            with m.track("op"):
                pass
            m.record_metric("v", 1)
            m.increment("n")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = m.get_summary()
    assert s["operations"]["op"]["count"] == 8000 and s["metrics"]["v"]["sum"] == 8000.0
    assert s["counters"]["n"] == 8000


def test_save_load_round_trip(tmp_path):
    m = MetricsCollector()
    with m.track("a", k=1):
        pass
    m.record_metric("b", 7, x="y")
    m.increment("c", 5)
    path = m.save(tmp_path / "m.json")
    again = MetricsCollector.load(path)
    assert again.get_summary()["counters"] == {"c": 5}
    assert again.get_summary()["operations"]["a"]["count"] == 1
    assert again.get_metrics()["metrics"]["b"] == m.get_metrics()["metrics"]["b"]
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError):
        MetricsCollector.load(tmp_path / "bad.json")


def test_percentile():
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([5.0], 0.95) == 5.0
    assert math.isnan(percentile([], 0.5))


class Liar(BlockSource):
    """Returns wrong bytes for every block."""

    name = "liar"

    def _get_raw(self, cid: CID) -> bytes:
        return b"not the block"


def test_instrumented_source_counts_blocks_bytes_and_failures():
    store = MemoryStore()
    blocks = [bytes([i]) * (10 + i) for i in range(5)]
    cids = [CID.compute(b) for b in blocks]
    for c, b in zip(cids, blocks):
        store.put(c, b)
    m = MetricsCollector()
    src = InstrumentedSource(store, m, label="mem")
    assert src.get(cids[0]) == blocks[0]
    assert [b for _, b in src.get_many(cids[1:])] == blocks[1:]
    assert m.counter("source.blocks[mem]") == 5
    assert m.counter("source.bytes[mem]") == sum(map(len, blocks))
    assert len(m.durations("source.fetch")) == 5 == len(m.durations("source.verify"))
    with pytest.raises(BlockNotFoundError):
        src.get(CID.compute(b"absent"))
    assert m.counter("source.not_found[mem]") == 1
    liar = InstrumentedSource(Liar(), m, label="liar")
    with pytest.raises(IntegrityError):
        liar.get(cids[0])
    assert m.counter("source.integrity_errors[liar]") == 1
    assert m.get_summary()["operations"]["source.verify"]["failures"] == 1


def test_instrument_client_wraps_each_source():
    from torch_ipfs.client import Client

    m = MetricsCollector()
    with Client() as client:
        cid = client.add(b"hello metrics")
        instrument_client(client, m)
        instrument_client(client, m)  # idempotent
        assert client.cat(cid) == b"hello metrics"
        (wrapped,) = client.source.sources
        assert isinstance(wrapped, InstrumentedSource) and wrapped.source is client.store
        assert m.counter(f"source.blocks[{client.store.name}]") == 1
        assert wrapped.pins() == client.store.pins()  # the wrapped source's API passes through

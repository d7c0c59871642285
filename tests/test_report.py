"""The HTML + PNG report renders real plots from a real loader run."""

from __future__ import annotations

import argparse
import builtins
import json
import re
import struct

import pytest

from torch_ipfs.cli_report import add_report_arguments, cmd_report
from torch_ipfs.client import Client
from torch_ipfs.errors import ManifestError
from torch_ipfs.loader import IPFSDataLoader
from torch_ipfs.metrics import InstrumentedSource, MetricsCollector, instrument_client
from torch_ipfs.report import render, text_summary, time_split

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def run_metrics(tmp_path):
    """Metrics of a real run: a CID-list dataset through a disk cache, two epochs."""
    from torch_ipfs.sources.cache import CachedSource

    metrics = MetricsCollector()
    with Client() as client:
        cids = [str(client.add(json.dumps({"id": i, "features": [i] * 20}).encode())) for i in range(40)]
        root = str(client.add(json.dumps({"samples": cids}).encode()))
        cached = Client(sources=[CachedSource(client.store, tmp_path / "cache", max_bytes=1 << 24)])
        instrument_client(cached, metrics)
        with IPFSDataLoader(cached, batch_size=8, metrics=metrics) as loader:
            loader.load_dataset(root)
            list(loader)
            loader.load_dataset(root)  # fresh layout: the second pass hits the cache
            list(loader)
    return metrics


def test_report_files_are_real_pngs_and_html_with_numbers(run_metrics, tmp_path):
    page = render(run_metrics, tmp_path / "out")
    assert page == tmp_path / "out" / "index.html"
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    for name in ("throughput", "latency", "cache", "time_split"):
        data = (tmp_path / "out" / f"{name}.png").read_bytes()
        width, height = png_size(data)
        assert width >= 600 and height >= 250 and len(data) > 5000  # a drawn figure, not a stub
        assert f'src="{name}.png"' in html
    row = re.search(r"<th>samples loaded</th><td>([\d,]+)</td>", html)
    assert row and row.group(1) == "80"
    assert re.search(r"<th>epochs completed</th><td>2</td>", html)
    assert re.search(r"<th>cache hit rate \(in epochs\)</th><td>0\.5\d*</td>", html)
    assert "loader.read" in html and "source.fetch" in html
    assert not list((tmp_path / "out").glob("*.part"))
    again = MetricsCollector.load(tmp_path / "out" / "metrics.json")
    assert again.get_summary()["counters"] == run_metrics.get_summary()["counters"]


def test_text_summary_and_time_split(run_metrics):
    text = text_summary(run_metrics)
    assert re.search(r"samples loaded\s+80\n", text)
    assert re.search(r"samples skipped\s+0\n", text)
    split = time_split(run_metrics)
    assert set(split) == {"network", "verify", "other read", "decode", "consumer wait"}
    assert split["network"] > 0 and split["decode"] > 0


def test_text_fallback_without_matplotlib(run_metrics, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    out = render(run_metrics, tmp_path / "text")
    assert out.name == "summary.txt"
    assert re.search(r"samples loaded\s+80\n", out.read_text())
    assert not list((tmp_path / "text").glob("*.png"))


def test_cmd_report_from_file_and_from_dataset(run_metrics, tmp_path):
    parser = add_report_arguments(argparse.ArgumentParser())
    saved = run_metrics.save(tmp_path / "m.json")
    code, text = cmd_report(parser.parse_args([str(saved), "-o", str(tmp_path / "r1")]))
    assert code == 0 and (tmp_path / "r1" / "index.html").exists() and "samples loaded" in text
    code, text = cmd_report(parser.parse_args([str(saved), "--text"]))
    assert code == 0 and re.search(r"samples loaded\s+80\n", text)
    assert cmd_report(parser.parse_args([]))[0] == 2
    with Client() as client:
        root = str(client.add(json.dumps({"data": [{"x": i} for i in range(10)]}).encode()))
    code, text = cmd_report(
        parser.parse_args(["--dataset", root, "--epochs", "2", "-o", str(tmp_path / "r2")])
    )
    assert code == 0 and re.search(r"samples loaded\s+20\n", text)
    assert (tmp_path / "r2" / "throughput.png").read_bytes()[:8] == PNG_SIGNATURE
    # a root that is no dataset: the typed error the CLI prints as one line
    with pytest.raises(ManifestError, match="unknown dataset layout"):
        cmd_report(parser.parse_args(["--dataset", "bafkqaaa", "-o", str(tmp_path / "r3")]))


def _html_headline(page: str) -> dict[str, str]:
    return dict(re.findall(r"<tr><th>([^<]+)</th><td>([^<]*)</td></tr>", page))


def _text_headline(text: str) -> dict[str, str]:
    block = text.split("\n\n")[1]
    return {line[:40].rstrip(): line[41:] for line in block.splitlines()}


def test_every_figure_comes_from_one_summary(run_metrics, tmp_path):
    """The page, summary.txt, report.json and the plots agree on every number, for a
    run of two epochs through a cache in front of the embedded store."""
    import html as htmllib

    page = render(run_metrics, tmp_path / "out").read_text()
    text = (tmp_path / "out" / "summary.txt").read_text()
    snap = json.loads((tmp_path / "out" / "report.json").read_text())
    from torch_ipfs.report import _fmt

    in_html = {htmllib.unescape(k): htmllib.unescape(v) for k, v in _html_headline(page).items()}
    in_text = _text_headline(text)
    in_json = {k: _fmt(v) for k, v in snap["headline"].items()}
    assert in_html == in_text == in_json
    assert in_json["samples loaded"] == "80" and in_json["epochs completed"] == "2"
    # the dataset and the sources are named
    dataset = snap["headline"]["dataset"]
    assert dataset and f"<code>{dataset}</code>" in page and dataset in text
    assert snap["headline"]["sources"] == snap["info"]["sources"] and snap["info"]["sources"]
    # both epochs are plotted, with the numbers of the epoch table
    epochs = snap["epochs"]
    assert [e["pass"] for e in epochs] == [1, 2] and [e["samples"] for e in epochs] == [40, 40]
    plotted = snap["plotted"]
    assert plotted["throughput"]["epochs"] == [1, 2]
    assert plotted["throughput"]["samples_per_s"] == [e["samples_per_s"] for e in epochs]
    assert plotted["throughput"]["overall"] == snap["headline"]["samples/s (in epochs)"]
    overall = 80 / sum(e["seconds"] for e in epochs)
    assert abs(snap["headline"]["samples/s (in epochs)"] - overall) < 1e-9
    assert plotted["cache"]["epochs"] == [1, 2] and plotted["cache"]["hit_rate"] == [0.0, 1.0]
    assert snap["headline"]["cache hits (in epochs)"] + snap["headline"]["cache misses (in epochs)"] == sum(
        e["cache_hits"] + e["cache_misses"] for e in epochs
    )
    assert plotted["latency"]["counts"]["block fetch"] == snap["operations"]["source.fetch"]["count"]
    # blocks delivered add up over the sources; a miss is not a failed fetch
    assert snap["headline"]["blocks delivered (all sources)"] == sum(r["blocks"] for r in snap["sources"])
    assert snap["operations"]["source.fetch"]["failures"] == snap["headline"]["source errors"] == 0
    # verification that no source timed apart is "not measured", never 0 s
    if "source.verify" not in snap["operations"]:
        assert in_json["verification (s)"] == "-" and snap["plotted"]["time_split"]["verify"] is None


def test_elapsed_is_one_snapshot_while_the_run_goes_on(run_metrics, tmp_path, monkeypatch):
    """Rendering takes time; the page and the text still show the same elapsed."""
    import time

    import torch_ipfs.report as report

    slow = report._figure_bytes

    def slower(*args, **kwargs):
        time.sleep(0.05)
        return slow(*args, **kwargs)

    monkeypatch.setattr(report, "_figure_bytes", slower)
    page = render(run_metrics, tmp_path / "out").read_text()
    text = (tmp_path / "out" / "summary.txt").read_text()
    assert _html_headline(page)["elapsed (s)"] == _text_headline(text)["elapsed (s)"]


def test_a_miss_in_one_source_is_not_a_failed_fetch():
    from torch_ipfs.cid import CID
    from torch_ipfs.errors import BlockNotFoundError
    from torch_ipfs.report import summarize
    from torch_ipfs.sources.base import MemoryStore

    metrics = MetricsCollector()
    source = InstrumentedSource(MemoryStore(), metrics, label="empty store")
    missing = CID.decode("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")
    with pytest.raises(BlockNotFoundError):
        source.get(missing)
    s = summarize(metrics)
    assert "source.fetch" not in s["operations"]  # no failed fetch, no latency sample
    assert s["headline"]["lookups not found (next source asked)"] == 1
    assert s["headline"]["source errors"] == 0
    assert s["sources"] == [{"source": "empty store", "blocks": 0, "MB": 0.0, "not found": 1, "errors": 0,
                             "integrity failures": 0}]  # fmt: skip

"""The HTML + PNG report renders real plots from a real loader run."""

from __future__ import annotations

import argparse
import builtins
import json
import re
import struct

import pytest

from torch_ipfs.client import Client
from torch_ipfs.loader import IPFSDataLoader
from torch_ipfs.metrics import MetricsCollector, instrument_client
from torch_ipfs.report import add_report_arguments, cmd_report, render, text_summary, time_split

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
    assert re.search(r"<th>cache hit rate</th><td>0\.5\d*</td>", html)
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

"""The benchmark suite (``python -m bench``) runs end to end and its output is complete and sane.

Runs the ``small`` profile (5,000 images, 3 rounds, every contender with ``num_workers``
0 and 2, the goal probes; about two minutes on 2 cores) as a user would, from the
repository root, with this suite's network guard installed in the benchmark process.
Checks completeness and consistency, never speed: performance goals are judged by the
benchmark's own report, not by tests."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.suite.contenders import CONTENDER_NAMES, all_contenders  # noqa: E402
from bench.suite.data import PROFILES  # noqa: E402
from bench.suite.peers import installed  # noqa: E402

# litdata and Mosaic live in the bench env (requirements/bench.txt); here they may be
# missing, and must then be reported as not installed rather than fail or vanish.
MISSING = {c.name: c.requires for c in all_contenders() if c.requires and not installed(c.requires)}

# The network guard of tests/conftest.py, installed in the benchmark process too (its
# DataLoader workers and isolated measurement children are forked from it).
_GUARDED_MAIN = (
    "import runpy, sys; sys.path.insert(0, 'tests'); import conftest; "
    "runpy.run_module('bench', run_name='__main__', alter_sys=True)"
)
PROFILE = PROFILES["small"]
SAMPLES = PROFILE.variants[0].samples
NETWORK = {
    "webdataset-http",
    "webdataset-http-50ms",
    "torch_ipfs-gateway-0ms-cold",
    "torch_ipfs-gateway-50ms-cold",
    "ipfs-dataset-baseline",
}
WARM = {"torch_ipfs-gateway-0ms-warm", "torch_ipfs-gateway-50ms-warm"}


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("bench-out")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-c", _GUARDED_MAIN, "--profile", PROFILE.name, "--out", str(out), "--quiet"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc, out


def test_exits_cleanly_and_prints_the_report(bench_run) -> None:
    proc, out = bench_run
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| webdataset-local | 2 |" in proc.stdout
    assert "## Goals (issues 7 and 11)" in proc.stdout
    report = (out / "report.md").read_text()
    for name in CONTENDER_NAMES:
        if name in MISSING:
            assert f"| {name} | - | not installed ({MISSING[name]}) |" in report, name
        else:
            assert f"| {name} | 0 |" in report and f"| {name} | 2 |" in report, name
    assert "## torch_ipfs against every peer" in report
    assert "| torch_ipfs-embedded-iterable | 2 |" in report.split("against every peer")[1]


def test_results_json_has_every_contender_with_sane_figures(bench_run) -> None:
    _, out = bench_run
    results = json.loads((out / "results.json").read_text())
    assert list(results) == CONTENDER_NAMES
    assert {"webdataset-local", "torch_ipfs-embedded-iterable"} <= set(results)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["failures"] == []
    tar_bytes_per_sample = meta["data"][0]["tar_bytes_per_sample"]
    assert meta["data"][0]["variant"]["samples"] == SAMPLES
    reference = results["tarfile-loop"]["by_workers"]["0"]["checksum"]
    for name, entry in results.items():
        if name in MISSING:
            assert entry["not_installed"] == MISSING[name] and entry["by_workers"] == {}, name
            continue
        assert "not_installed" not in entry, name
        assert entry["workers"] == 2
        assert set(entry["by_workers"]) == {"0", "2"}, name
        for workers, f in entry["by_workers"].items():
            where = f"{name} workers={workers}"
            for key in ("samples_per_s", "time_to_first_batch_s", "peak_rss_mb", "total_rss_mb"):
                assert _finite(f[key]) and f[key] > 0, (where, key, f[key])
            # main + workers is at least the largest worker, and more with workers
            assert f["total_rss_mb"] >= f["peak_rss_mb"] * (2 if workers == "2" else 1) - 1, where
            for key in ("bytes_per_sample", "disk_bytes_per_sample"):
                assert _finite(f[key]) and f[key] >= 0, (where, key, f[key])
            assert f["samples"] == SAMPLES, where
            assert f["checksum"] == reference and f["same_tensors_as_reference"] is True, where
            assert f["time_to_first_batch_s"] < f["samples"] / f["samples_per_s"], where
            if name in NETWORK:  # every byte of the data crossed the gateway at least once
                assert f["bytes_per_sample"] >= tar_bytes_per_sample, where
            else:  # local contenders, and a warm cache, fetch nothing over the network
                assert f["bytes_per_sample"] == 0, where
        assert entry["samples_per_s"] == entry["by_workers"]["2"]["samples_per_s"]
    assert reference["samples"] == SAMPLES
    # every ratio of ours against every measured peer, in results.json too
    ours = results["torch_ipfs-embedded-iterable"]["ratios"]["2"]
    measured_peers = {n for n, e in results.items() if e["by_workers"] and not n.startswith("torch_ipfs")}
    assert set(ours) == measured_peers
    base = results["webdataset-local"]["by_workers"]["2"]["samples_per_s"]
    mine = results["torch_ipfs-embedded-iterable"]["by_workers"]["2"]["samples_per_s"]
    assert ours["webdataset-local"] == round(mine / base, 3)


def test_goals_are_all_measured(bench_run) -> None:
    _, out = bench_run
    goals = json.loads((out / "goals.json").read_text())
    names = [g["name"] for g in goals["goals"]]
    assert len(names) == 7 + 13, names
    assert any("export from encoded bytes vs ShardWriter" in n for n in names)
    assert any("random single-sample raw reads vs Mosaic" in n for n in names)
    assert any("raw read path vs litdata" in n for n in names)
    assert sum(n.startswith("embedded iterable vs webdataset-local") for n in names) == 2
    assert sum("50 ms vs 0 ms" in n for n in names) == 2
    assert any("map-style single-sample" in n for n in names)
    assert sum("worker RSS flat" in n for n in names) == 2
    for goal in goals["goals"]:
        assert isinstance(goal["met"], bool), goal
        if goal["detail"].startswith("not measured:"):  # only for a peer missing here
            assert MISSING and any(p in goal["detail"] for p in ("litdata", "streaming")), goal
            assert goal["met"] is False
            continue
        assert _finite(goal["measured"]), goal
    raw = goals["probes"]["raw_read"]
    assert {"torch_ipfs", "webdataset", "sha256 of the sample bytes"} <= set(raw["us_per_sample"])
    assert raw["samples"] == SAMPLES
    assert "torch_ipfs" in goals["probes"]["random_raw"]["reads_per_s"]
    probe = goals["probes"]["map_blocks"]
    assert probe["samples"] == PROFILE.map_probe_samples
    assert probe["sample_bytes_per_sample"] > 0
    assert probe["whole_shard_bytes_per_sample"] > probe["bytes_fetched_per_sample"]
    for kind in ("rss_iterable", "rss_map"):
        rss = goals["probes"][kind]
        assert rss["samples_per_epoch"] == [SAMPLES] * PROFILE.rss_epochs, kind
        assert len(rss["worker_rss_mb"]) == PROFILE.rss_epochs and min(rss["worker_rss_mb"]) > 0, kind


def test_chart_is_a_valid_png(bench_run) -> None:
    _, out = bench_run
    path = out / "samples_per_s.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] >= 800 and image.size[1] >= 300


def test_the_issue11_preset_picks_exact_names_in_every_variant(tmp_path) -> None:
    from bench.suite.runner import PRESETS, SuiteRun

    run = SuiteRun(PROFILE, tmp_path, tmp_path, PRESETS["issue11"])
    for name in ("litdata-local", "litdata-local/jpeg224", "webdataset-http-50ms", "random_raw/jpeg224",
                 "torch_ipfs-gateway-50ms-cold", "tarfile-loop", "export"):  # fmt: skip
        assert run._wanted(name), name
    for name in ("litdata-local-remote+cache", "webdataset-http", "torch_ipfs-gateway-50ms-warm",
                 "torch_ipfs-gateway-0ms-cold", "in-memory-tensors", "rss_map", "map_blocks"):  # fmt: skip
        assert not run._wanted(name), name
    substring = SuiteRun(PROFILE, tmp_path, tmp_path, ["gateway"])
    assert substring._wanted("torch_ipfs-gateway-0ms-warm") and not substring._wanted("litdata-local")


def test_pixel_checksum_is_exact_beyond_32_bits() -> None:
    import torch

    from bench.suite.measure import _pixel_sum

    # 256 JPEG-size images of 255: 9,824,236,544 in all, past 2**32 (a uint8 or int32
    # accumulator would wrap); the checksum compares contenders, so it must be exact.
    batch = torch.full((256, 3, 224, 224), 255, dtype=torch.uint8)
    assert _pixel_sum(batch) == 256 * 3 * 224 * 224 * 255
    batch[0, 0, 0, 0] = 7
    assert _pixel_sum(batch) == 256 * 3 * 224 * 224 * 255 - 248
    assert _pixel_sum(batch[:, 1:2]) == 256 * 224 * 224 * 255  # a strided view
    assert _pixel_sum(torch.full((4, 4), 2.0)) == 32

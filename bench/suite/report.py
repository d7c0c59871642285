"""Output of a suite run: ``results.json``, a markdown table of ratios, a PNG bar chart.

``results.json`` maps each contender's name to its figures. The top-level figures are
those of the headline setting (the largest ``num_workers`` run, 2 by default); every
setting is under ``by_workers``::

    {"webdataset-local": {"samples_per_s": ..., "time_to_first_batch_s": ...,
                          "peak_rss_mb": ..., "bytes_per_sample": ...,
                          "disk_bytes_per_sample": ..., "workers": 2,
                          "by_workers": {"0": {...}, "2": {...}}, ...}, ...}
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

__all__ = [
    "BASELINE",
    "add_ratios",
    "bar_chart",
    "goals_markdown",
    "markdown_table",
    "ratios_markdown",
    "write_json",
]

BASELINE = "webdataset-local"
FIGURES = (
    "samples_per_s",
    "time_to_first_batch_s",
    "peak_rss_mb",
    "total_rss_mb",
    "bytes_per_sample",
    "disk_bytes_per_sample",
)


def write_json(path: Path, value: Any) -> None:
    """Write JSON to a temporary file, then rename it into place."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=False, default=_plain) + "\n")
    os.replace(tmp, path)


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _fmt(value: float, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def _ratio(a: float, b: float) -> str:
    if not b or not math.isfinite(a) or not math.isfinite(b):
        return "n/a"
    return f"{a / b:.2f}x"


def _spread(f: dict[str, Any]) -> str:
    return f"{_fmt(f.get('samples_per_s_min', math.nan))}-{_fmt(f.get('samples_per_s_max', math.nan))}"


def markdown_table(results: dict[str, Any], baseline: str = BASELINE) -> str:
    """One row per contender and ``num_workers``; ratios against ``baseline`` with the same
    workers and the same data (``name/variant`` rows against ``baseline/variant``)."""
    lines = [
        f"| contender | workers | samples/s (min-max) | vs {baseline} | first batch (s) | vs | "
        "peak RSS/worker (MB) | vs | RSS main+workers (MB) | vs | net bytes/sample | disk bytes/sample |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, entry in results.items():
        if entry.get("not_installed"):
            lines.append(f"| {name} | - | not installed ({entry['not_installed']}) |" + " |" * 9)
        for workers, f in entry["by_workers"].items():
            variant = name.partition("/")[2]
            reference = f"{baseline}/{variant}" if variant else baseline
            base = results.get(reference, {}).get("by_workers", {}).get(workers)
            if f.get("error"):
                lines.append(
                    f"| {name} | {workers} | FAILED: {f['error'].splitlines()[-1][:80]} |" + " |" * 9
                )
                continue

            def vs(key: str, f: dict[str, Any] = f, base: dict[str, Any] | None = base) -> str:
                if not base or base.get("error") or key not in f or key not in base:
                    return "n/a"
                return _ratio(f[key], base[key])

            lines.append(
                f"| {name} | {workers} | {_fmt(f['samples_per_s'])} ({_spread(f)}) | {vs('samples_per_s')} | "
                f"{_fmt(f['time_to_first_batch_s'], 3)} | {vs('time_to_first_batch_s')} | "
                f"{_fmt(f['peak_rss_mb'])} | {vs('peak_rss_mb')} | "
                f"{_fmt(f.get('total_rss_mb', math.nan))} | {vs('total_rss_mb')} | "
                f"{_fmt(f['bytes_per_sample'])} | {_fmt(f['disk_bytes_per_sample'])} |"
            )
    return "\n".join(lines)


def _is_ours(name: str) -> bool:
    return name.startswith("torch_ipfs-")


def _rows_and_peers(results: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Rows: torch_ipfs's contenders plus the two peer loaders; columns: every other
    loader, ceiling and baseline (each variant's own, ``name/variant``)."""
    names = [n for n, e in results.items() if e.get("by_workers")]
    rows = [n for n in names if _is_ours(n) or n.startswith(("litdata-local", "mosaic-local"))]
    peers = [n for n in names if not _is_ours(n)]
    return rows, peers


def add_ratios(results: dict[str, Any]) -> None:
    """Put ``ratios``: ``{workers: {peer: samples/s ratio}}`` into each row's entry (the
    same workers and the same variant), for results.json."""
    rows, peers = _rows_and_peers(results)
    for name in rows:
        variant = name.partition("/")[2]
        entry = results[name]
        entry["ratios"] = {}
        for workers, f in entry["by_workers"].items():
            if f.get("error"):
                continue
            out = {}
            for peer in peers:
                if peer == name or peer.partition("/")[2] != variant:
                    continue
                p = results[peer]["by_workers"].get(workers)
                if p and not p.get("error") and p.get("samples_per_s"):
                    out[peer] = round(f["samples_per_s"] / p["samples_per_s"], 3)
            entry["ratios"][workers] = out


def ratios_markdown(results: dict[str, Any]) -> str:
    """Samples/s of each torch_ipfs contender (and litdata's, Mosaic's) over every peer's,
    one table per data variant."""
    rows, peers = _rows_and_peers(results)
    if not rows:
        return "none measured"
    missing = [f"`{n}` ({e['not_installed']})" for n, e in results.items() if e.get("not_installed")]
    tables = []
    for variant in dict.fromkeys(n.partition("/")[2] for n in rows):
        cols = [p for p in peers if p.partition("/")[2] == variant]
        short = [p.partition("/")[0] for p in cols]
        title = f"{variant or 'first variant'}:\n\n" if variant else ""
        lines = ["| contender | workers | " + " | ".join(f"/ {p}" for p in short) + " |"]
        lines.append("|---|---:|" + "---:|" * len(cols))
        for name in rows:
            if name.partition("/")[2] != variant:
                continue
            for workers, ratios in results[name].get("ratios", {}).items():
                cells = [f"{ratios[p]:.2f}x" if p in ratios else "" for p in cols]
                lines.append(f"| {name} | {workers} | " + " | ".join(cells) + " |")
        tables.append(title + "\n".join(lines))
    if missing:
        tables.append("Not installed in this environment (run `tox -e bench`): " + ", ".join(missing))
    return "\n\n".join(tables)


def goals_markdown(goals: list[dict[str, Any]]) -> str:
    lines = ["| goal | target | measured | met | detail |", "|---|---|---:|---|---|"]
    for g in goals:
        measured = g["measured"]
        shown = _fmt(measured, 2) if isinstance(measured, float) else str(measured)
        met = "yes" if g["met"] else "not measured" if g["detail"].startswith("not measured") else "**no**"
        lines.append(f"| {g['name']} | {g['target']} | {shown} | {met} | {g['detail']} |")
    return "\n".join(lines)


def bar_chart(results: dict[str, Any], path: Path, title: str) -> None:
    """Samples/s and time to first batch per contender, one bar per ``num_workers``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    settings = sorted({w for e in results.values() for w in e["by_workers"]}, key=int)
    fig, axes = plt.subplots(1, 2, figsize=(14, 0.45 * len(names) * len(settings) + 2), sharey=True)
    height = 0.8 / max(1, len(settings))
    for panel, (key, label) in zip(
        axes, (("samples_per_s", "samples/s"), ("time_to_first_batch_s", "time to first batch (s)"))
    ):
        for i, workers in enumerate(settings):
            values = []
            for name in names:
                f = results[name]["by_workers"].get(workers, {})
                v = f.get(key)
                values.append(v if isinstance(v, (int, float)) and math.isfinite(v) else 0.0)
            ys = [n + i * height for n in range(len(names))]
            bars = panel.barh(ys, values, height=height, label=f"num_workers={workers}")
            panel.bar_label(
                bars,
                labels=[_fmt(v, 0 if key == "samples_per_s" else 2) for v in values],
                fontsize=7,
                padding=2,
            )
        base = results.get(BASELINE, {}).get("by_workers", {})
        for workers in settings:
            v = base.get(workers, {}).get(key)
            if isinstance(v, (int, float)) and math.isfinite(v):
                panel.axvline(v, linestyle=":", linewidth=1, color="gray")
        if key == "samples_per_s":
            # the in-memory upper bound is 10-30x the rest: a log axis keeps them readable
            panel.set_xscale("log")
            label += " (log scale)"
        panel.set_xlabel(label)
        panel.grid(axis="x", alpha=0.3)
    axes[0].set_yticks([n + height * (len(settings) - 1) / 2 for n in range(len(names))], names, fontsize=8)
    axes[0].invert_yaxis()
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(title + f"  (dotted: {BASELINE})", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))  # keep the title clear of the panels
    tmp = path.with_name(path.stem + ".part.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)

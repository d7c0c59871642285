"""A performance report from a :class:`~torch_ipfs.metrics.MetricsCollector`: an HTML
page with PNG plots, or a text summary when matplotlib is not installed.

``render(metrics, out_dir)`` writes into ``out_dir``:

- ``throughput.png``: samples/s (loader batches) and MB/s (blocks from sources) over time;
- ``latency.png``: histograms of block-fetch and sample-read latency (log-scaled ms);
- ``cache.png``: cache hits vs misses and the hit rate per epoch;
- ``time_split.png``: where the time went: network, verification, decoding, waiting;
- ``index.html``: the plots and the summary numbers (``summary.txt`` holds the same
  numbers as text, ``metrics.json`` the raw events for ``torch-ipfs report metrics.json``).

Without matplotlib only ``summary.txt`` (and ``metrics.json``) are written; the text
summary's path is returned.

Every file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import argparse
import functools
import html
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch_ipfs.metrics import MetricsCollector

__all__ = ["add_report_arguments", "cmd_report", "render", "text_summary"]

PLOTS = ("throughput", "latency", "cache", "time_split")


def _write(path: Path, write: Callable[[Path], object]) -> Path:
    tmp = path.with_name(path.name + ".part")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def headline(metrics: MetricsCollector) -> dict[str, Any]:
    """The numbers a reader wants first (used by the page and the text summary)."""
    s = metrics.get_summary()
    counters, ops, values = s["counters"], s["operations"], s["metrics"]
    epoch_time = ops.get("loader.epoch", {}).get("total_s", 0.0)
    samples = counters.get("loader.samples", 0)
    source_bytes = sum(v for k, v in counters.items() if k.startswith("source.bytes["))
    fetch_s = ops.get("source.fetch", {}).get("total_s", 0.0)
    hits, misses = counters.get("cache.hits", 0), counters.get("cache.misses", 0)
    return {
        "elapsed (s)": s["elapsed_s"],
        "epochs completed": counters.get("loader.epochs", 0),
        "samples loaded": samples,
        "samples/s (in epochs)": samples / epoch_time if epoch_time else None,
        "samples skipped": counters.get("loader.skipped", 0),
        "sample retries": counters.get("loader.retries", 0),
        "batch wait p50 (ms)": _p(metrics, "loader.batch_wait", 0.5),
        "batch wait p95 (ms)": _p(metrics, "loader.batch_wait", 0.95),
        "queue occupancy (mean batches)": values.get("loader.queue_occupancy", {}).get("mean"),
        "blocks fetched": sum(v for k, v in counters.items() if k.startswith("source.blocks[")),
        "MB fetched": source_bytes / 1e6,
        "fetch latency p50 (ms)": ops.get("source.fetch", {}).get("p50_ms"),
        "fetch latency p95 (ms)": ops.get("source.fetch", {}).get("p95_ms"),
        "MB/s while fetching": source_bytes / 1e6 / fetch_s if fetch_s else None,
        "integrity failures": sum(v for k, v in counters.items() if k.startswith("source.integrity_errors[")),
        "source errors": sum(v for k, v in counters.items() if k.startswith("source.errors[")),
        "cache hit rate": hits / (hits + misses) if hits + misses else None,
    }


def _p(metrics: MetricsCollector, name: str, q: float) -> float | None:
    from torch_ipfs.metrics import percentile

    values = sorted(v for _, v in metrics.values(name))
    return 1000 * percentile(values, q) if values else None


def text_summary(metrics: MetricsCollector) -> str:
    """The headline numbers and per-operation statistics as plain text."""
    lines = ["torch_ipfs performance summary", ""]
    for name, value in headline(metrics).items():
        lines.append(f"{name:<32} {_fmt(value)}")
    ops = metrics.get_summary()["operations"]
    if ops:
        lines += [
            "",
            f"{'operation':<24} {'count':>8} {'fail':>6} {'mean ms':>10} {'p50 ms':>10} {'p95 ms':>10}",
        ]
        for name, o in ops.items():
            lines.append(
                f"{name:<24} {o['count']:>8} {o['failures']:>6} {_fmt(o['mean_ms']):>10} "
                f"{_fmt(o['p50_ms']):>10} {_fmt(o['p95_ms']):>10}"
            )
    return "\n".join(lines) + "\n"


# -- plots -------------------------------------------------------------------------------------


def _rate(events: list[tuple[float, float]], bins: int = 25) -> tuple[list[float], list[float]]:
    """Bin ``(time, amount)`` events into a rate over time (amount per second)."""
    if not events:
        return [], []
    t0 = min(t for t, _ in events)
    t1 = max(t for t, _ in events)
    width = max((t1 - t0) / bins, 1e-3)
    n = max(1, math.ceil((t1 - t0) / width) + 1)
    sums = [0.0] * n
    for t, v in events:
        sums[min(n - 1, int((t - t0) / width))] += v
    return [t0 + (i + 0.5) * width for i in range(n)], [v / width for v in sums]


def _save(plt: Any, fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def _plot_throughput(plt: Any, metrics: MetricsCollector, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 3.6))
    x, y = _rate(metrics.values("loader.batch_samples"))
    if x:
        ax.plot(x, y, color="#1f77b4", lw=2, label="samples/s")
        ax.fill_between(x, y, color="#1f77b4", alpha=0.15)
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("samples / s", color="#1f77b4")
    bx, by = _rate(metrics.values("source.bytes"))
    if bx:
        ax2 = ax.twinx()
        ax2.plot(bx, [v / 1e6 for v in by], color="#ff7f0e", lw=1.5, ls="--", label="MB/s from sources")
        ax2.set_ylabel("MB / s from sources", color="#ff7f0e")
    if not x and not bx:
        ax.text(0.5, 0.5, "no samples or blocks recorded", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("Throughput over time")
    ax.grid(alpha=0.3)
    _save(plt, fig, path)


def _plot_latency(plt: Any, metrics: MetricsCollector, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 3.6))
    series = [
        ("block fetch (source.fetch)", metrics.durations("source.fetch"), "#ff7f0e"),
        ("sample read (loader.read)", metrics.durations("loader.read"), "#1f77b4"),
        ("batch wait (loader)", [v for _, v in metrics.values("loader.batch_wait")], "#2ca02c"),
    ]
    drawn = False
    positive = [1000 * d for _, ds, _ in series for d in ds if d > 0]
    if positive:
        lo, hi = max(min(positive), 1e-4), max(positive)
        edges = _log_edges(lo, hi * 1.01, 30)
        for label, durations, color in series:
            ms = [max(1000 * d, lo) for d in durations]
            if ms:
                ax.hist(ms, bins=edges, alpha=0.55, color=color, label=f"{label}, n={len(ms)}")
                drawn = True
        ax.set_xscale("log")
    if drawn:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no latencies recorded", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("count")
    ax.set_title("Latency distribution")
    ax.grid(alpha=0.3)
    _save(plt, fig, path)


def _log_edges(lo: float, hi: float, n: int) -> list[float]:
    a, b = math.log10(lo), math.log10(max(hi, lo * 1.0001))
    return [10 ** (a + (b - a) * i / n) for i in range(n + 1)]


def _plot_cache(plt: Any, metrics: MetricsCollector, path: Path) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3.6), gridspec_kw={"width_ratios": [1, 2]})
    hits, misses = metrics.counter("cache.hits"), metrics.counter("cache.misses")
    ax1.bar(["hits", "misses"], [hits, misses], color=["#2ca02c", "#d62728"])
    for i, v in enumerate((hits, misses)):
        ax1.text(i, v, f"{v:,}", ha="center", va="bottom")
    ax1.set_title("Cache lookups (blocks)")
    rates = metrics.values("cache.hit_rate")
    if rates:
        xs = list(range(1, len(rates) + 1))
        ys = [100 * v for _, v in rates]
        ax2.bar(xs, ys, color="#2ca02c", width=0.6)
        for x, y in zip(xs, ys):
            ax2.text(x, y, f"{y:.0f}%", ha="center", va="bottom")
        ax2.set_xticks(xs)
        ax2.set_ylim(0, 110)
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("hit rate (%)")
    else:
        ax2.text(0.5, 0.5, "no cache in the read path", ha="center", va="center", transform=ax2.transAxes)
    ax2.set_title("Cache hit rate per epoch")
    ax2.grid(alpha=0.3)
    _save(plt, fig, path)


def time_split(metrics: MetricsCollector) -> dict[str, float]:
    """Seconds spent per stage: network (block fetch), verification (hashing), the rest
    of reading a sample (parsing, I/O not seen by a source wrapper), decoding, and the
    consumer waiting for batches."""
    ops = metrics.get_summary()["operations"]

    def total(name: str) -> float:
        return ops.get(name, {}).get("total_s", 0.0)

    network, verify, read = total("source.fetch"), total("source.verify"), total("loader.read")
    return {
        "network": network,
        "verify": verify,
        "other read": max(0.0, read - network - verify) if read else 0.0,
        "decode": total("loader.decode"),
        "consumer wait": sum(v for _, v in metrics.values("loader.batch_wait")),
    }


def _plot_time_split(plt: Any, metrics: MetricsCollector, path: Path) -> None:
    split = time_split(metrics)
    fig, ax = plt.subplots(figsize=(8, 2.8))
    colors = ["#ff7f0e", "#9467bd", "#8c564b", "#1f77b4", "#7f7f7f"]
    total = sum(split.values())
    left = 0.0
    for (name, seconds), color in zip(split.items(), colors):
        ax.barh([0], [seconds], left=left, color=color, label=f"{name}: {seconds:.3f} s")
        if total and seconds / total > 0.08:
            ax.text(
                left + seconds / 2,
                0,
                f"{100 * seconds / total:.0f}%",
                ha="center",
                va="center",
                color="white",
            )
        left += seconds
    ax.set_yticks([])
    ax.set_xlabel("seconds (summed over threads)")
    ax.set_title("Where the time went")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=3, fontsize=8)
    _save(plt, fig, path)


# -- the page ----------------------------------------------------------------------------------


def render(
    metrics: MetricsCollector, out_dir: str | os.PathLike[str], *, title: str = "torch_ipfs report"
) -> Path:
    """Write the report into ``out_dir`` (created); return ``index.html``, or
    ``summary.txt`` when matplotlib is missing."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = text_summary(metrics)
    metrics.save(out / "metrics.json")  # so the report can be rendered again later
    text_path = _write(out / "summary.txt", lambda p: p.write_text(summary, encoding="utf-8"))
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return text_path
    drawers = {
        "throughput": _plot_throughput,
        "latency": _plot_latency,
        "cache": _plot_cache,
        "time_split": _plot_time_split,
    }
    for name, draw in drawers.items():
        _write(out / f"{name}.png", functools.partial(draw, plt, metrics))
    page = _html(metrics, title)
    return _write(out / "index.html", lambda p: p.write_text(page, encoding="utf-8"))


def _html(metrics: MetricsCollector, title: str) -> str:
    rows = "\n".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in headline(metrics).items()
    )
    ops = metrics.get_summary()["operations"]
    op_rows = "\n".join(
        f"<tr><td>{html.escape(n)}</td><td>{o['count']:,}</td><td>{o['failures']:,}</td>"
        f"<td>{_fmt(o['mean_ms'])}</td><td>{_fmt(o['p50_ms'])}</td><td>{_fmt(o['p95_ms'])}</td></tr>"
        for n, o in ops.items()
    )
    captions = {
        "throughput": "Samples per second delivered to the training loop, and bytes per second "
        "from the sources.",
        "latency": "How long blocks, samples and batches took. A long right tail means stalls.",
        "cache": "Blocks served from the local cache vs fetched from remote sources.",
        "time_split": "Network, hash verification, decoding and the consumer waiting for data.",
    }
    figures = "\n".join(
        f'<figure><img src="{name}.png" alt="{name}">'
        f"<figcaption>{html.escape(captions[name])}</figcaption></figure>"
        for name in PLOTS
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ padding: .25em .8em; border-bottom: 1px solid #ddd; text-align: right; }}
th {{ text-align: left; font-weight: normal; color: #555; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; }}
figcaption {{ color: #555; font-size: .9em; }}
.grid {{ display: grid; grid-template-columns: 1fr 1fr; gap: 0 2em; }}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
<div class="grid"><table>{rows}</table></div>
{figures}
<h2>Operations</h2>
<table>
<tr><th>operation</th><th>count</th><th>failures</th><th>mean ms</th><th>p50 ms</th><th>p95 ms</th></tr>
{op_rows}
</table>
</body></html>
"""


# -- the CLI command -----------------------------------------------------------------------------


def add_report_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags of ``torch-ipfs report`` (for the CLI to add to its subparser)."""
    parser.add_argument("metrics_file", nargs="?", help="a metrics JSON written by MetricsCollector.save()")
    parser.add_argument(
        "--dataset", help="instead: run the batch loader over this dataset address and report it"
    )
    parser.add_argument("--epochs", type=int, default=1, help="epochs to run with --dataset (default 1)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size with --dataset (default 32)")
    parser.add_argument(
        "-o", "--out", default="torch-ipfs-report", help="output directory (default ./torch-ipfs-report)"
    )
    parser.add_argument("--text", action="store_true", help="print the text summary only (no plots)")
    return parser


def run_dataset(
    address: str, *, epochs: int = 1, batch_size: int = 32, client: Any = None
) -> MetricsCollector:
    """Run ``epochs`` loader epochs over a dataset with every source instrumented."""
    from torch_ipfs.client import Client
    from torch_ipfs.loader import IPFSDataLoader
    from torch_ipfs.metrics import instrument_client

    metrics = MetricsCollector()
    own = client is None
    client = client if client is not None else Client()
    try:
        instrument_client(client, metrics)
        with IPFSDataLoader(client, batch_size=batch_size, metrics=metrics) as loader:
            result = loader.load_dataset(address)
            if not result["success"]:
                raise RuntimeError(f"cannot load {address}: {result['error_type']}: {result['error']}")
            for _ in range(epochs):
                for _batch in loader:
                    pass
    finally:
        if own:
            client.close()
    return metrics


def cmd_report(args: argparse.Namespace) -> tuple[int, str]:
    """Run ``torch-ipfs report``; returns ``(exit code, text to print)`` (the CLI prints)."""
    if bool(args.metrics_file) == bool(args.dataset):
        return 2, "torch-ipfs report: give either a metrics JSON file or --dataset ADDRESS\n"
    if args.dataset:
        metrics = run_dataset(args.dataset, epochs=args.epochs, batch_size=args.batch_size)
    else:
        metrics = MetricsCollector.load(args.metrics_file)
    if args.text:
        return 0, text_summary(metrics)
    page = render(metrics, args.out)
    return 0, text_summary(metrics) + f"\nreport: {page}\n"

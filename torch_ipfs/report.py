"""A performance report from a :class:`~torch_ipfs.metrics.MetricsCollector`: an HTML
page with PNG plots, or a text summary when matplotlib is not installed.

Every number shown comes from ONE :func:`summarize` snapshot taken when rendering
starts: the page, ``summary.txt``, ``report.json`` and the plots all read that snapshot,
so they agree (a run still going on does not make the HTML disagree with the text).

``render(metrics, out_dir)`` writes into ``out_dir``:

- ``throughput.png``: samples/s of each epoch (its samples over its wall time) and the
  run's figure, the same number as the table's ``samples/s (in epochs)``;
- ``latency.png``: histograms of block-fetch, sample-read and batch-wait latency;
- ``cache.png``: cache hits vs misses, and the hit rate of every epoch;
- ``time_split.png``: where the time went: network, verification, decoding, waiting;
- ``index.html``: the dataset and sources measured, the summary numbers, a row per
  epoch and per source, the plots; ``summary.txt`` the same as text, ``report.json`` the
  snapshot (with the values each plot drew), ``metrics.json`` the raw events for
  ``torch-ipfs report metrics.json``.

:func:`create_visualization` is ipfs_kit's visualisation API over the same renderers.
Nothing here loads data: running a dataset for ``torch-ipfs report`` lives beside the
CLI (:mod:`torch_ipfs.cli_report`). Every file is written to a temporary name and
renamed into place.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from torch_ipfs.formats.manifest import finite_json
from torch_ipfs.metrics import MetricsCollector, percentile

__all__ = [
    "Visualization",
    "create_visualization",
    "headline",
    "render",
    "summarize",
    "text_summary",
    "time_split",
]

Summary = dict[str, Any]


def _write(path: Path, write: Callable[[Path], object]) -> Path:
    tmp = path.with_name(path.name + ".part")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _write_text(path: Path, text: str) -> Path:
    return _write(path, lambda p: p.write_text(text, encoding="utf-8"))


def _write_bytes(path: Path, data: bytes) -> Path:
    return _write(path, lambda p: p.write_bytes(data))


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "-"
    return str(value)


# -- the one snapshot ---------------------------------------------------------------------------


def _labelled(counters: Mapping[str, int], prefix: str) -> dict[str, int]:
    """``{label: n}`` of the counters ``prefix[label]``."""
    pattern = re.compile(re.escape(prefix) + r"\[(.*)\]$")
    return {m.group(1): v for k, v in counters.items() if (m := pattern.match(k))}


def _ms_percentile(values: list[float], q: float) -> float | None:
    return 1000 * percentile(sorted(values), q) if values else None


def summarize(metrics: MetricsCollector) -> Summary:
    """Everything the report shows, computed once from one copy of the collector's events."""
    snap = metrics.get_metrics()
    frozen = MetricsCollector.from_dict(snap)
    s = frozen.get_summary()
    counters, ops = s["counters"], s["operations"]
    info = dict(snap.get("info") or {})

    # epochs: one row per loader pass, in the order they ran (the cache rows were
    # recorded at the end of each completed pass, in the same order)
    hits_ev = [v for _, v in frozen.values("cache.epoch_hits")]
    misses_ev = [v for _, v in frozen.values("cache.epoch_misses")]
    epochs = []
    completed = 0
    for n, e in enumerate(snap["operations"].get("loader.epoch", []), 1):
        samples = int(e.get("samples", 0))
        row: dict[str, Any] = {
            "pass": n,
            "epoch": e.get("epoch"),
            "completed": bool(e.get("success", True)),
            "samples": samples,
            "seconds": e["duration"],
            "samples_per_s": samples / e["duration"] if e["duration"] > 0 else None,
            "cache_hits": None,
            "cache_misses": None,
            "cache_hit_rate": None,
        }
        if row["completed"]:
            if completed < len(hits_ev) and completed < len(misses_ev):
                h, m = int(hits_ev[completed]), int(misses_ev[completed])
                row.update(cache_hits=h, cache_misses=m, cache_hit_rate=h / (h + m) if h + m else None)
            completed += 1
        epochs.append(row)
    epoch_samples = sum(r["samples"] for r in epochs)
    epoch_seconds = sum(r["seconds"] for r in epochs)

    # sources, in read order, each with what it delivered and what it did not have
    blocks = _labelled(counters, "source.blocks")
    nbytes = _labelled(counters, "source.bytes")
    not_found = _labelled(counters, "source.not_found")
    errors = _labelled(counters, "source.errors")
    integrity = _labelled(counters, "source.integrity_errors")
    names = list(info.get("sources") or [])
    names += sorted((set(blocks) | set(not_found) | set(errors) | set(integrity)) - set(names))
    sources = [
        {
            "source": name,
            "blocks": blocks.get(name, 0),
            "MB": nbytes.get(name, 0) / 1e6,
            "not found": not_found.get(name, 0),
            "errors": errors.get(name, 0),
            "integrity failures": integrity.get(name, 0),
        }
        for name in dict.fromkeys(names)
    ]

    fetch = ops.get("source.fetch", {})
    fetch_s = fetch.get("total_s", 0.0)
    total_bytes = sum(nbytes.values())
    hits, misses = counters.get("cache.hits", 0), counters.get("cache.misses", 0)
    waits = [v for _, v in frozen.values("loader.batch_wait")]
    occupancy = s["metrics"].get("loader.queue_occupancy", {}).get("mean")
    verify = ops.get("source.verify")
    split = {
        "network": fetch_s,
        "verify": verify["total_s"] if verify else None,  # None: not measured (not 0 s)
        "other read": None,
        "decode": ops.get("loader.decode", {}).get("total_s", 0.0),
        "consumer wait": sum(waits),
    }
    read = ops.get("loader.read", {}).get("total_s", 0.0)
    split["other read"] = max(0.0, read - fetch_s - (split["verify"] or 0.0)) if read else 0.0

    head: dict[str, Any] = {
        "dataset": info.get("dataset"),
        "sources": names or None,
        "elapsed (s)": snap["elapsed_s"],
        "epochs completed": completed,
        "samples loaded": counters.get("loader.samples", 0),
        "samples/s (in epochs)": epoch_samples / epoch_seconds if epoch_seconds > 0 else None,
        "samples skipped": counters.get("loader.skipped", 0),
        "sample retries": counters.get("loader.retries", 0),
        "batch wait p50 (ms)": _ms_percentile(waits, 0.5),
        "batch wait p95 (ms)": _ms_percentile(waits, 0.95),
        "queue occupancy (mean batches)": occupancy,
        "blocks delivered (all sources)": sum(r["blocks"] for r in sources),
        "MB delivered (all sources)": total_bytes / 1e6,
        "lookups not found (next source asked)": sum(r["not found"] for r in sources),
        "fetch latency p50 (ms)": fetch.get("p50_ms"),
        "fetch latency p95 (ms)": fetch.get("p95_ms"),
        "MB/s while fetching": total_bytes / 1e6 / fetch_s if fetch_s else None,
        "verification (s)": split["verify"],
        "integrity failures": sum(r["integrity failures"] for r in sources),
        "source errors": sum(r["errors"] for r in sources),
        # the loader counts the cache's lookups of its epochs (not the manifest reads of
        # load_dataset, which "blocks delivered" includes)
        "cache hits (in epochs)": hits if hits + misses else None,
        "cache misses (in epochs)": misses if hits + misses else None,
        "cache hit rate (in epochs)": hits / (hits + misses) if hits + misses else None,
    }
    return {
        "format": "torch_ipfs.report/1",
        "headline": head,
        "epochs": epochs,
        "sources": sources,
        "time_split": split,
        "operations": ops,
        "training": _training(frozen),
        "info": info,
        "series": {
            "source.fetch": frozen.durations("source.fetch"),
            "loader.read": frozen.durations("loader.read"),
            "loader.batch_wait": waits,
            "loader.load_dataset": frozen.durations("loader.load_dataset"),
        },
    }


def _as_summary(metrics_or_summary: MetricsCollector | Summary) -> Summary:
    if isinstance(metrics_or_summary, MetricsCollector):
        return summarize(metrics_or_summary)
    return metrics_or_summary


def headline(metrics: MetricsCollector | Summary) -> dict[str, Any]:
    """The numbers a reader wants first (the page's and the text's first table)."""
    return dict(_as_summary(metrics)["headline"])


def time_split(metrics: MetricsCollector | Summary) -> dict[str, float | None]:
    """Seconds spent per stage: network (block fetch), verification (hashing; ``None``
    when no source timed it apart), the rest of reading a sample, decoding, and the
    consumer waiting for batches."""
    return dict(_as_summary(metrics)["time_split"])


_TRAINING = re.compile(r"^(?P<model>.+)/epoch/(?P<epoch>\d+)/(?P<name>[^/]+)$")


def _training(metrics: MetricsCollector) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """ipfs_kit's training metrics ``<model>/epoch/<n>/<name>``: ``{model: {name:
    [(epoch, last value), ...]}}`` sorted by epoch."""
    out: dict[str, dict[str, dict[int, float]]] = {}
    for name in metrics.metric_names():
        m = _TRAINING.match(name)
        values = metrics.values(name)
        if m and values:
            out.setdefault(m["model"], {}).setdefault(m["name"], {})[int(m["epoch"])] = values[-1][1]
    return {model: {k: sorted(v.items()) for k, v in series.items()} for model, series in out.items()}


# -- text ----------------------------------------------------------------------------------------


def _table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    cols = list(rows[0])
    cells = [[_fmt(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return lines


def text_summary(metrics: MetricsCollector | Summary) -> str:
    """The headline numbers, the epochs, the sources and the operations as plain text."""
    s = _as_summary(metrics)
    lines = ["torch_ipfs performance summary", ""]
    for name, value in s["headline"].items():
        lines.append(f"{name:<40} {_fmt(value)}")
    if s["epochs"]:
        lines += ["", "epochs"] + _table(_epoch_rows(s))
    if s["sources"]:
        lines += ["", "sources (read order)"] + _table(s["sources"])
    ops = s["operations"]
    if ops:
        lines += ["", "operations"] + _table(_op_rows(ops))
    return "\n".join(lines) + "\n"


def _epoch_rows(s: Summary) -> list[dict[str, Any]]:
    return [
        {
            "pass": r["pass"],
            "epoch": r["epoch"],
            "completed": r["completed"],
            "samples": r["samples"],
            "seconds": r["seconds"],
            "samples/s": r["samples_per_s"],
            "cache hits": r["cache_hits"],
            "cache misses": r["cache_misses"],
            "hit rate": r["cache_hit_rate"],
        }
        for r in s["epochs"]
    ]


def _op_rows(ops: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "operation": n,
            "count": o["count"],
            "failures": o["failures"],
            "total s": o["total_s"],
            "mean ms": o["mean_ms"],
            "p50 ms": o["p50_ms"],
            "p95 ms": o["p95_ms"],
        }
        for n, o in ops.items()
    ]


# -- plots ---------------------------------------------------------------------------------------


class _Files:
    """The part of pyplot the drawers use, for figures that only go to files: plain
    ``Figure`` objects, so rendering never touches pyplot's global state or backend
    (safe in threads, in notebooks, headless)."""

    def __init__(self) -> None:
        from matplotlib.figure import Figure
        from matplotlib.image import imread

        self._figure, self.imread = Figure, imread

    def subplots(self, *grid: int, figsize: Any = None, **options: Any) -> tuple[Any, Any]:
        fig = self._figure(figsize=figsize)
        return fig, fig.subplots(*grid, **options)

    def close(self, fig: Any) -> None:  # a plain Figure holds no window
        pass


def _pyplot(*, show: bool = False) -> Any:
    """Something to draw with: pyplot itself when a figure is to be shown, else
    :class:`_Files`; ``None`` when matplotlib is missing."""
    try:
        if show:
            import matplotlib.pyplot as plt

            return plt
        return _Files()
    except ImportError:
        return None


def _no_data(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)


def _draw_throughput(plt: Any, s: Summary) -> tuple[Any, dict[str, Any]]:
    fig, ax = plt.subplots(figsize=(8, 3.6))
    rows = [r for r in s["epochs"] if r["samples_per_s"] is not None]
    overall = s["headline"]["samples/s (in epochs)"]
    xs = [r["pass"] for r in rows]
    ys = [r["samples_per_s"] for r in rows]
    if rows:
        ax.bar(xs, ys, color="#1f77b4", width=0.6, label="samples/s of the epoch")
        for x, y in zip(xs, ys):
            ax.text(x, y, _fmt(y), ha="center", va="bottom", fontsize=8)
        ax.axhline(overall, color="#ff7f0e", ls="--", label=f"run: {_fmt(overall)} samples/s")
        ax.set_xticks(xs)
        ax.legend(fontsize=8, loc="lower right")
    else:
        _no_data(ax, "no epochs recorded")
    ax.set_xlabel("epoch (pass over the dataset)")
    ax.set_ylabel("samples / s")
    ax.set_title(f"Throughput per epoch (run: {_fmt(overall)} samples/s)")
    ax.grid(alpha=0.3, axis="y")
    return fig, {"epochs": xs, "samples_per_s": ys, "overall": overall}


def _log_edges(lo: float, hi: float, n: int) -> list[float]:
    a, b = math.log10(lo), math.log10(max(hi, lo * 1.0001))
    return [10 ** (a + (b - a) * i / n) for i in range(n + 1)]


def _draw_latency(plt: Any, s: Summary) -> tuple[Any, dict[str, Any]]:
    fig, ax = plt.subplots(figsize=(8, 3.6))
    series = [
        ("block fetch", s["series"]["source.fetch"], "#ff7f0e"),
        ("sample read", s["series"]["loader.read"], "#1f77b4"),
        ("batch wait", s["series"]["loader.batch_wait"], "#2ca02c"),
    ]
    counts = {label: len(ds) for label, ds, _ in series}
    positive = [1000 * d for _, ds, _ in series for d in ds if d > 0]
    if positive:
        lo, hi = max(min(positive), 1e-4), max(positive)
        edges = _log_edges(lo, hi * 1.01, 30)
        for label, durations, color in series:
            if durations:
                ms = [max(1000 * d, lo) for d in durations]
                ax.hist(ms, bins=edges, alpha=0.55, color=color, label=f"{label}, n={len(ms):,}")
        ax.set_xscale("log")
        ax.legend(fontsize=8)
    else:
        _no_data(ax, "no latencies recorded")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("count")
    ax.set_title("Latency distribution")
    ax.grid(alpha=0.3)
    return fig, {"counts": counts}


def _draw_cache(plt: Any, s: Summary) -> tuple[Any, dict[str, Any]]:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3.6), gridspec_kw={"width_ratios": [1, 2]})
    h = s["headline"]
    hits, misses = h["cache hits (in epochs)"], h["cache misses (in epochs)"]
    drawn: dict[str, Any] = {"hits": hits, "misses": misses, "epochs": [], "hit_rate": []}
    if hits is None:
        _no_data(ax1, "no cache lookups")
        _no_data(ax2, "no cache in the read path")
    else:
        ax1.bar(["hits", "misses"], [hits, misses], color=["#2ca02c", "#d62728"])
        for i, v in enumerate((hits, misses)):
            ax1.text(i, v, _fmt(v), ha="center", va="bottom")
        rows = [r for r in s["epochs"] if r["completed"]]
        xs = [r["pass"] for r in rows]
        ys = [r["cache_hit_rate"] for r in rows]
        ax2.bar(xs, [100 * (y or 0.0) for y in ys], color="#2ca02c", width=0.6)
        for x, y in zip(xs, ys):
            ax2.text(
                x,
                100 * (y or 0.0),
                "no lookups" if y is None else f"{100 * y:.0f}%",
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax2.set_xticks(xs)
        ax2.set_ylim(0, 110)
        ax2.set_xlabel("epoch (pass)")
        ax2.set_ylabel("hit rate (%)")
        drawn.update(epochs=xs, hit_rate=ys)
    ax1.set_title("Cache lookups (blocks)")
    ax2.set_title(f"Hit rate per epoch (run: {_fmt(h['cache hit rate (in epochs)'])})")
    ax2.grid(alpha=0.3)
    return fig, drawn


def _draw_time_split(plt: Any, s: Summary) -> tuple[Any, dict[str, Any]]:
    split = s["time_split"]
    fig, ax = plt.subplots(figsize=(8, 2.8))
    colors = ["#ff7f0e", "#9467bd", "#8c564b", "#1f77b4", "#7f7f7f"]
    total = sum(v for v in split.values() if v)
    left = 0.0
    for (name, seconds), color in zip(split.items(), colors):
        label = f"{name}: not measured" if seconds is None else f"{name}: {_fmt(seconds)} s"
        width = seconds or 0.0
        ax.barh([0], [width], left=left, color=color, label=label)
        if total and width / total > 0.08:
            ax.text(
                left + width / 2, 0, f"{100 * width / total:.0f}%", ha="center", va="center", color="white"
            )
        left += width
    ax.set_yticks([])
    ax.set_xlabel("seconds (summed over threads)")
    ax.set_title("Where the time went")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=3, fontsize=8)
    return fig, dict(split)


def _draw_training(plt: Any, s: Summary, model_id: str | None = None) -> tuple[Any, dict[str, Any]]:
    fig, ax = plt.subplots(figsize=(8, 3.6))
    models = {m: v for m, v in s["training"].items() if model_id is None or m == model_id}
    drawn: dict[str, Any] = {}
    for model, series in models.items():
        for name, points in series.items():
            label = name if len(models) == 1 else f"{model}: {name}"
            ax.plot([e for e, _ in points], [v for _, v in points], marker="o", label=label)
            drawn[label] = points
    if drawn:
        ax.legend(fontsize=8)
    else:
        _no_data(
            ax,
            f"no training metrics{f' for {model_id!r}' if model_id else ''} "
            "(record_metric('<model>/epoch/<n>/<name>', value))",
        )
    ax.set_xlabel("epoch")
    ax.set_title(f"Training metrics{f' of {model_id}' if model_id else ''}")
    ax.grid(alpha=0.3)
    return fig, drawn


def _draw_load_times(plt: Any, s: Summary) -> tuple[Any, dict[str, Any]]:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3.6))
    loads = [1000 * d for d in s["series"]["loader.load_dataset"]]
    waits = [1000 * d for d in s["series"]["loader.batch_wait"]]
    if loads:
        ax1.bar(range(1, len(loads) + 1), loads, color="#1f77b4")
        ax1.set_xlabel("load_dataset call")
    else:
        _no_data(ax1, "no load_dataset calls")
    ax1.set_ylabel("ms")
    ax1.set_title("Dataset load time")
    if waits:
        ax2.plot(range(1, len(waits) + 1), waits, color="#2ca02c")
        ax2.set_xlabel("batch")
    else:
        _no_data(ax2, "no batches")
    ax2.set_ylabel("ms")
    ax2.set_title("Batch wait (prefetch queue)")
    return fig, {"load_ms": loads, "batch_wait_ms": waits}


_DRAWERS: dict[str, Callable[[Any, Summary], tuple[Any, dict[str, Any]]]] = {
    "throughput": _draw_throughput,
    "latency": _draw_latency,
    "cache": _draw_cache,
    "time_split": _draw_time_split,
}

_CAPTIONS = {
    "throughput": "Samples per second of each epoch (its samples over its wall time); the dashed "
    "line is the run's figure, the table's samples/s.",
    "latency": "How long blocks, samples and batches took. A long right tail means stalls.",
    "cache": "Blocks served from the local cache vs fetched from remote sources, per epoch.",
    "time_split": "Network, hash verification, decoding and the consumer waiting for data.",
    "training": "Training metrics recorded as <model>/epoch/<n>/<name>.",
}


def _figure_bytes(plt: Any, fig: Any, fmt: str) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _write_plots(plt: Any, s: Summary, out: Path, fmt: str, drawn: dict[str, Any]) -> list[str]:
    """Each plot (``_DRAWERS``) as ``out/<name>.<fmt>``; what each drew into ``drawn``."""
    paths = []
    for name, draw in _DRAWERS.items():
        fig, drawn[name] = draw(plt, s)
        paths.append(str(_write_bytes(out / f"{name}.{fmt}", _figure_bytes(plt, fig, fmt))))
    return paths


# -- the page ------------------------------------------------------------------------------------


def render(
    metrics: MetricsCollector, out_dir: str | os.PathLike[str], *, title: str = "torch_ipfs report"
) -> Path:
    """Write the report into ``out_dir`` (created); return ``index.html``, or
    ``summary.txt`` when matplotlib is missing."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = summarize(metrics)
    metrics.save(out / "metrics.json")
    text_path = _write_text(out / "summary.txt", text_summary(s))
    plt = _pyplot()
    drawn: dict[str, Any] = {}
    if plt is not None:
        _write_plots(plt, s, out, "png", drawn)
    _write_text(out / "report.json", _json({**s, "plotted": drawn}))
    if plt is None:
        return text_path
    return _write_text(out / "index.html", page(s, title, {n: f"{n}.png" for n in _DRAWERS}))


def _json(value: Any) -> str:
    return json.dumps(finite_json(value), indent=1, default=str)


def _html_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r.values()) + "</tr>" for r in rows
    )
    return f"<table>\n<tr>{head}</tr>\n{body}\n</table>"


def page(s: Summary, title: str, images: Mapping[str, str]) -> str:
    """The HTML page of summary ``s``; ``images`` maps plot names to ``src`` values."""
    rows = "\n".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in s["headline"].items()
    )
    figures = "\n".join(
        f'<figure><img src="{src}" alt="{name}">'
        f"<figcaption>{html.escape(_CAPTIONS.get(name, name))}</figcaption></figure>"
        for name, src in images.items()
    )
    dataset = s["headline"].get("dataset")
    subtitle = f"<p>Dataset <code>{html.escape(str(dataset))}</code>" if dataset else "<p>No dataset recorded"
    subtitle += f"; sources (read order): {html.escape(_fmt(s['headline'].get('sources')))}</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ padding: .25em .8em; border-bottom: 1px solid #ddd; text-align: right; }}
th {{ text-align: left; font-weight: normal; color: #555; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; }}
figcaption {{ color: #555; font-size: .9em; }}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
{subtitle}
<table>{rows}</table>
<h2>Epochs</h2>
{_html_table(_epoch_rows(s)) or "<p>No epochs recorded.</p>"}
<h2>Sources</h2>
{_html_table(s["sources"]) or "<p>No instrumented sources.</p>"}
{figures}
<h2>Operations</h2>
{_html_table(_op_rows(s["operations"]))}
</body></html>
"""


# -- ipfs_kit's visualisation API ------------------------------------------------------------------


class Visualization:
    """ipfs_kit's ``create_visualization(metrics)`` object: plots, a dashboard, an HTML
    report and exports of one collector, each drawn from a fresh :func:`summarize`
    snapshot (so a figure and the report's tables agree).

    Plot methods return the values they drew; with ``output_file`` they also write the
    figure there (format from its suffix: png, svg, pdf; ``.html`` for the dashboard).
    ``show_plot=True`` shows the figure when ``interactive`` and a display is available,
    and is ignored headless. Without matplotlib the plot methods return the values only
    and the reports are the text summary.
    """

    def __init__(
        self, metrics: MetricsCollector, interactive: bool = False, theme: str | None = None
    ) -> None:
        self.metrics = metrics
        self.interactive = interactive
        self.theme = theme

    def _plot(
        self,
        draw: Callable[[Any, Summary], tuple[Any, dict[str, Any]]],
        figsize: Any,
        show_plot: bool,
        output_file: str | os.PathLike[str] | None,
    ) -> dict[str, Any]:
        s = summarize(self.metrics)
        show = show_plot and self.interactive and output_file is None
        plt = _pyplot(show=show)
        if plt is None:
            return {}
        fig, drawn = draw(plt, s)
        if figsize is not None:
            fig.set_size_inches(*figsize)
        if output_file is not None:
            path = Path(output_file)
            data = _figure_bytes(plt, fig, path.suffix.lstrip(".") or "png")
            _write_bytes(path, data)
        elif show:
            plt.show()  # returns at once on a non-interactive backend (headless)
        plt.close(fig)
        return drawn

    def plot_training_metrics(
        self,
        model_id: str | None = None,
        figsize: Any = None,
        show_plot: bool = False,
        output_file: str | os.PathLike[str] | None = None,
    ) -> dict[str, Any]:
        """Curves of ``<model>/epoch/<n>/<name>`` metrics per epoch (of ``model_id``)."""
        return self._plot(lambda plt, s: _draw_training(plt, s, model_id), figsize, show_plot, output_file)

    def plot_dataset_load_times(
        self, figsize: Any = None, show_plot: bool = False, output_file: str | os.PathLike[str] | None = None
    ) -> dict[str, Any]:
        """``load_dataset`` durations and the per-batch wait on the prefetch queue."""
        return self._plot(_draw_load_times, figsize, show_plot, output_file)

    def plot_throughput(
        self, figsize: Any = None, show_plot: bool = False, output_file: str | os.PathLike[str] | None = None
    ) -> dict[str, Any]:
        return self._plot(_draw_throughput, figsize, show_plot, output_file)

    def plot_cache_performance(
        self, figsize: Any = None, show_plot: bool = False, output_file: str | os.PathLike[str] | None = None
    ) -> dict[str, Any]:
        return self._plot(_draw_cache, figsize, show_plot, output_file)

    def plot_worker_utilization(
        self, figsize: Any = None, show_plot: bool = False, output_file: str | os.PathLike[str] | None = None
    ) -> dict[str, Any]:
        """Where the loader's threads spent their time (network, verify, decode, wait);
        torch_ipfs has no pubsub worker pool to plot (training runs under torchrun)."""
        return self._plot(_draw_time_split, figsize, show_plot, output_file)

    def plot_comprehensive_dashboard(
        self, figsize: Any = None, show_plot: bool = False, output_file: str | os.PathLike[str] | None = None
    ) -> Path | None:
        """Every plot at once: to ``output_file`` (``.html``: the self-contained report;
        else one image of all plots), or shown."""
        if output_file is None:
            for draw in (*_DRAWERS.values(), _draw_training):
                self._plot(draw, figsize, show_plot, None)
            return None
        path = Path(output_file)
        if path.suffix.lower() in (".html", ".htm"):
            return self.generate_html_report(path)
        plt = _pyplot()
        if plt is None:
            return _write_text(path.with_suffix(".txt"), text_summary(self.metrics))
        s = summarize(self.metrics)
        fig, axes = plt.subplots(len(_DRAWERS), 1, figsize=figsize or (8, 14))
        images = [_figure_bytes(plt, draw(plt, s)[0], "png") for draw in _DRAWERS.values()]
        for ax, data in zip(axes, images):
            ax.imshow(plt.imread(io.BytesIO(data), format="png"))
            ax.axis("off")
        data = _figure_bytes(plt, fig, path.suffix.lstrip(".") or "png")
        return _write_bytes(path, data)

    def generate_html_report(self, path: str | os.PathLike[str], title: str = "torch_ipfs report") -> Path:
        """One self-contained HTML file (plots embedded) at ``path``; returns it."""
        path = Path(path)
        s = summarize(self.metrics)
        plt = _pyplot()
        images: dict[str, str] = {}
        if plt is not None:
            draws = dict(_DRAWERS)
            if s["training"]:
                draws["training"] = _draw_training
            for name, draw in draws.items():
                data = _figure_bytes(plt, draw(plt, s)[0], "png")
                images[name] = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        if path.parent != Path(""):
            path.parent.mkdir(parents=True, exist_ok=True)
        return _write_text(path, page(s, title, images))

    def export_visualizations(
        self, export_dir: str | os.PathLike[str], formats: Iterable[str] = ("png", "html", "json")
    ) -> dict[str, list[str]]:
        """Every plot in each image format (``png``, ``svg``, ``pdf``), the report
        (``html``), the snapshot and raw events (``json``), the text summary (``txt``)
        into ``export_dir``; returns ``{format: [paths]}``."""
        out = Path(export_dir)
        out.mkdir(parents=True, exist_ok=True)
        formats = list(formats)
        unknown = sorted(set(formats) - {"png", "svg", "pdf", "html", "json", "txt"})
        if unknown:
            raise ValueError(f"unknown export formats {unknown}; choose from png, svg, pdf, html, json, txt")
        s = summarize(self.metrics)
        written: dict[str, list[str]] = {f: [] for f in formats}
        plt = _pyplot()
        drawn: dict[str, Any] = {}
        for fmt in [f for f in formats if f in ("png", "svg", "pdf")]:
            if plt is None:
                break
            written[fmt] += _write_plots(plt, s, out, fmt, drawn)
        if "html" in formats:
            written["html"].append(str(self.generate_html_report(out / "report.html")))
        if "json" in formats:
            written["json"].append(str(_write_text(out / "report.json", _json({**s, "plotted": drawn}))))
            written["json"].append(str(self.metrics.save(out / "metrics.json")))
        if "txt" in formats:
            written["txt"].append(str(_write_text(out / "summary.txt", text_summary(s))))
        return written

    def get_metrics_dataframe(self, model_id: str | None = None) -> Any:
        """Training metrics as a pandas DataFrame indexed by epoch (one column per name)."""
        import pandas as pd

        training = summarize(self.metrics)["training"]
        columns: dict[str, dict[int, float]] = {}
        for model, series in training.items():
            if model_id is None or model == model_id:
                for name, points in series.items():
                    columns[name if model_id else f"{model}/{name}"] = dict(points)
        return pd.DataFrame(columns).sort_index().rename_axis("epoch")


def create_visualization(
    metrics: MetricsCollector, interactive: bool = False, theme: str | None = None
) -> Visualization:
    """ipfs_kit's ``create_visualization(metrics, interactive=...)``."""
    return Visualization(metrics, interactive=interactive, theme=theme)

"""A whole suite run: export the data, start the gateways, measure every contender in an
isolated child, run the goal probes, write the outputs.

Outputs in ``OUT``: ``results.json`` (contender -> figures), ``goals.json``,
``meta.json`` (profile, data, machine, load), ``report.md`` (tables) and
``samples_per_s.png`` (chart). The export lives in ``OUT/work`` (or ``--work``) and is
reused by a later run with the same profile.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import shutil
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.suite import goals as goal_probes
from bench.suite.contenders import Contender, Context, all_contenders
from bench.suite.data import BenchData, Profile, prepare
from bench.suite.measure import PassFigures, isolated, measure_pass, median_figures, start_pass_server
from bench.suite.peers import installed
from bench.suite.report import (
    add_ratios,
    bar_chart,
    goals_markdown,
    markdown_table,
    ratios_markdown,
    write_json,
)
from bench.suite.server import GatewayProcess

__all__ = ["PRESETS", "SuiteRun", "run_suite"]

#: ``--preset NAME``: the contenders and probes one issue's goals are judged on, so that
#: every ratio of those goals comes from one run.
PRESETS: dict[str, list[str]] = {
    "issue11": [
        "=tarfile-loop",  # the reference checksum every contender must match
        "=decode-only-ceiling",
        "=webdataset-local",
        "=webdataset-http-50ms",
        "=litdata-local",
        "=mosaic-local",
        "=torch_ipfs-embedded-iterable",
        "=torch_ipfs-embedded-map",
        "=torch_ipfs-gateway-50ms-cold",
        "=raw_read",
        "=random_raw",
        "=export",
    ],
}

log = logging.getLogger(__name__)

HEADLINE_FIGURES = (
    "samples_per_s",
    "time_to_first_batch_s",
    "peak_rss_mb",
    "total_rss_mb",
    "bytes_per_sample",
    "disk_bytes_per_sample",
)


def _one_pass(contender: Contender, ctx: Context, workers: int) -> PassFigures:
    """In a fresh isolated child: untimed preparation, then one timed pass (its
    ``net_bytes`` are counted by the caller, which holds the gateway's pipe)."""
    contender.before_pass(ctx, workers)
    return measure_pass(lambda: contender.loader(ctx, workers), None)


class SuiteRun:
    """State of one run (results so far, failures), so ``python -m bench`` can report it."""

    def __init__(self, profile: Profile, out: Path, work: Path, only: list[str] | None = None) -> None:
        self.profile = profile
        self.out = out
        self.work = work
        self.only = only
        self.results: dict[str, Any] = {}
        self.probes: dict[str, Any] = {}
        self.failures: list[str] = []
        self.data: list[BenchData] = []

    def _wanted(self, name: str) -> bool:
        """``only`` entries match as substrings; ``=name`` matches one name exactly (the
        variant suffix ``/jpeg224`` aside)."""
        if not self.only:
            return True
        base = name.partition("/")[0]
        return any(base == part[1:] if part.startswith("=") else part in name for part in self.only)

    def measure_variant(self, data: BenchData, suffix: str) -> None:
        """Every contender x ``num_workers`` over one exported variant.

        Passes run in rounds (pass 1 of every contender, then pass 2 of every one, ...),
        so that a change of load on a shared machine falls on all contenders alike; the
        median of a contender's passes is its figure. Setup and each pass run in a child
        of their own: every pass starts from the same memory image.
        """
        profile = self.profile
        ctx_scratch = self.work / "scratch"
        shutil.rmtree(ctx_scratch, ignore_errors=True)
        ctx_scratch.mkdir(parents=True)
        with ExitStack() as stack:
            stack.callback(shutil.rmtree, ctx_scratch, ignore_errors=True)
            gateways = {d: stack.enter_context(GatewayProcess(data.home, d)) for d in profile.delays}
            ctx = Context(data, profile.batch_size, {d: g.url for d, g in gateways.items()}, ctx_scratch)
            wanted = [c for c in all_contenders(profile.delays) if self._wanted(c.name + suffix)]
            for contender in wanted:  # every entry in report order, measured or not
                entry = {"description": contender.description, "by_workers": {}}
                self.results[contender.name + suffix] = entry
                if contender.requires and not installed(contender.requires):
                    entry["not_installed"] = contender.requires
                    log.info(
                        "%s: %s is not installed here (tox -e bench)", contender.name, contender.requires
                    )
            runs = [
                (contender.name + suffix, contender, workers)
                for contender in wanted
                if not (contender.requires and not installed(contender.requires))
                for workers in profile.workers
            ]
            passes: dict[tuple[str, int], list[PassFigures]] = {}
            errors: dict[tuple[str, int], str] = {}

            def attempt(key: tuple[str, int], fn: Any, *args: Any) -> Any:
                try:
                    return isolated(fn, *args)
                except RuntimeError as e:
                    errors[key] = str(e)
                    log.error("%s workers=%d failed:\n%s", key[0], key[1], e)
                    return None

            for name, contender, workers in runs:
                attempt((name, workers), contender.setup, ctx, workers)
            for round_no in range(profile.repeats):
                started = time.perf_counter()
                for name, contender, workers in runs:
                    if (name, workers) in errors:
                        continue
                    gateway = gateways.get(contender.gateway_delay)  # type: ignore[arg-type]
                    sent = gateway.bytes_sent() if gateway else 0
                    figures = attempt((name, workers), _one_pass, contender, ctx, workers)
                    if figures is not None:
                        figures.net_bytes = gateway.bytes_sent() - sent if gateway else 0
                        passes.setdefault((name, workers), []).append(figures)
                        log.info(
                            "%-36s workers=%d %8.0f samples/s  first batch %.3fs  rss %.0f MB",
                            name,
                            workers,
                            figures.samples_per_s,
                            figures.time_to_first_batch_s,
                            figures.peak_rss_mb,
                        )
                log.info(
                    "round %d/%d done (%.1fs)", round_no + 1, profile.repeats, time.perf_counter() - started
                )
        reference: dict[str, int] | None = None  # the first contender's (tarfile-loop) checksum
        for name, contender, workers in runs:
            entry = self.results.setdefault(name, {"description": contender.description, "by_workers": {}})
            key = (name, workers)
            if key in errors:
                self.failures.append(f"{name} (workers={workers}): {errors[key]}")
                entry["by_workers"][str(workers)] = {"error": errors[key]}
                continue
            figures = median_figures(passes[key])
            checksums = [
                {"samples": p.samples, "pixel_sum": p.pixel_sum, "label_sum": p.label_sum}
                for p in passes[key]
            ]
            # every pass must deliver the same tensors; differing passes show as a mismatch
            checksum = checksums[0] if all(c == checksums[0] for c in checksums) else checksums
            reference = reference or checksums[0]
            figures["checksum"] = checksum
            figures["same_tensors_as_reference"] = checksum == reference
            if checksum != reference or checksums[0]["samples"] != data.total_samples:
                self.failures.append(
                    f"{name} (workers={workers}) delivered {checksum}, expected "
                    f"{data.total_samples} samples and {reference}"
                )
            entry["by_workers"][str(workers)] = figures
            if workers == max(profile.workers):
                entry.update({k: figures[k] for k in HEADLINE_FIGURES})
                entry["workers"] = workers
        add_ratios(self.results)

    def run_probes(self, data: BenchData, suffix: str = "") -> None:
        profile = self.profile
        jobs = {
            "map_blocks": (goal_probes.map_block_probe, data, profile.map_probe_samples),
            "rss_iterable": (
                goal_probes.rss_over_epochs,
                data,
                profile.rss_epochs,
                profile.batch_size,
                "iterable",
            ),
            "rss_map": (goal_probes.rss_over_epochs, data, profile.rss_epochs, profile.batch_size, "map"),
        }
        if suffix:  # later variants: only the raw-read probes
            jobs = {}
        jobs.update(
            {
                "raw_read" + suffix: (goal_probes.raw_read_probe, data, profile.raw_probe_samples),
                "random_raw" + suffix: (goal_probes.random_raw_probe, data, profile.random_probe_samples),
                "export" + suffix: (goal_probes.export_probe, data),
            }
        )
        for name, (fn, *args) in jobs.items():
            if not self._wanted(name):
                continue
            started = time.perf_counter()
            try:
                self.probes[name] = isolated(fn, *args)
            except RuntimeError as e:
                self.failures.append(f"probe {name}: {e}")
                self.probes[name] = {"error": str(e)}
                log.error("probe %s failed:\n%s", name, e)
            log.info("probe %s done (%.1fs)", name, time.perf_counter() - started)

    def run(self) -> None:
        start_pass_server(["bench.suite.preloaded"])
        for i, variant in enumerate(self.profile.variants):
            started = time.perf_counter()
            data = prepare(variant, self.work / variant.name)
            self.data.append(data)
            log.info(
                "%s ready: %s, %d shards (%.1fs)",
                variant.name,
                data.root,
                len(data.shard_paths),
                time.perf_counter() - started,
            )
            suffix = "" if i == 0 else f"/{variant.name}"
            self.measure_variant(data, suffix)
            self.run_probes(data, suffix)

    def write(self, seconds: float, load_before: tuple[float, ...]) -> dict[str, Any]:
        goals = [g.as_dict() for g in goal_probes.evaluate(self.results, self.probes, self.profile.workers)]
        meta = {
            "profile": asdict(self.profile),
            "data": [d.summary() for d in self.data],
            "seconds": round(seconds, 1),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "load_average_before": load_before,
                "load_average_after": os.getloadavg(),
                "versions": _versions(),
            },
            "failures": self.failures,
        }
        write_json(self.out / "results.json", self.results)
        write_json(self.out / "goals.json", {"goals": goals, "probes": self.probes})
        write_json(self.out / "meta.json", meta)
        title = f"torch_ipfs bench, profile {self.profile.name}: " + ", ".join(
            f"{d.variant.name} x{d.total_samples}" for d in self.data
        )
        if self.results:
            bar_chart(self.results, self.out / "samples_per_s.png", title)
        report = _report_markdown(title, self.results, goals, meta)
        (self.out / "report.md").write_text(report)
        return {"goals": goals, "meta": meta, "report": report}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in (
        "torch",
        "torchvision",
        "webdataset",
        "litdata",
        "mosaicml-streaming",
        "httpx",
        "pillow",
        "numpy",
    ):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "missing"
    return out


def _report_markdown(
    title: str, results: dict[str, Any], goals: list[dict[str, Any]], meta: dict[str, Any]
) -> str:
    data = "; ".join(
        f"{d['variant']['name']}: {d['variant']['samples']} samples in {d['shards']} shards, "
        f"{d['tar_bytes_per_sample']:.0f} tar bytes/sample, root {d['root']}"
        for d in meta["data"]
    )
    descriptions = "\n".join(f"- `{name}`: {entry['description']}" for name, entry in results.items())
    failures = "\n".join(f"- {f.splitlines()[0]}" for f in meta["failures"]) or "none"
    load = meta["machine"]
    return (
        f"# {title}\n\n"
        f"Data: {data}. Batch size {meta['profile']['batch_size']}, repeats {meta['profile']['repeats']} "
        f"(median), {meta['machine']['cpus']} CPUs, load average "
        f"{load['load_average_before'][0]:.1f} before / {load['load_average_after'][0]:.1f} after, "
        f"{meta['seconds']:.0f} s in all.\n\n"
        f"## Throughput, first batch, memory, bytes (ratios vs webdataset-local, same workers)\n\n"
        f"{markdown_table(results)}\n\n"
        f"## torch_ipfs against every peer (samples/s ratio, same workers, same data)\n\n"
        f"{ratios_markdown(results)}\n\n## Goals (issues 7 and 11)\n\n{goals_markdown(goals)}\n\n"
        f"## Contenders\n\n{descriptions}\n\n## Failures\n\n{failures}\n"
    )


def run_suite(
    profile: Profile, out: Path, work: Path | None = None, only: list[str] | None = None
) -> tuple[SuiteRun, dict[str, Any]]:
    """Run the suite and write its outputs; returns the run and what was written."""
    out.mkdir(parents=True, exist_ok=True)
    suite = SuiteRun(profile, out, work or out / "work", only)
    load_before = os.getloadavg()
    started = time.perf_counter()
    suite.run()
    written = suite.write(time.perf_counter() - started, load_before)
    return suite, written


def finite_positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0

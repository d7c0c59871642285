"""``python -m bench --profile tiny|small|full --out DIR``: the suite against the peers.

Run from the repository root. Prints the markdown report (ratios against
webdataset-local, the goals) and writes ``DIR/results.json``, ``DIR/goals.json``,
``DIR/meta.json``, ``DIR/report.md`` and ``DIR/samples_per_s.png``. Exit status 1 when a
contender failed or delivered different tensors than the reference; a missed goal is
reported, not an error.

Profiles: ``tiny`` (1,024 images, one pass each: a quick look),
``small`` (5,000 images, 3 passes: a few minutes on 2 cores), ``full`` (50,000 32x32 PNG
plus 10,000 224x224 JPEG, 3 passes: long).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

from bench.suite.data import PROFILES
from bench.suite.runner import PRESETS, run_suite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="small")
    parser.add_argument("--out", type=Path, required=True, help="directory for the results")
    parser.add_argument("--work", type=Path, help="where the exported data lives (default OUT/work; reused)")
    parser.add_argument("--repeats", type=int, help="rounds of passes (default: the profile's)")
    parser.add_argument(
        "--only",
        action="append",
        help="run only contenders/probes whose name contains this (=NAME: exactly this name)",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="run the contenders and probes of one issue's goals (issue11: the peers and probes of issue 11)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "torch_ipfs"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    started = time.perf_counter()
    profile = PROFILES[args.profile]
    if args.repeats is not None:
        if args.repeats < 1:
            parser.error("--repeats must be >= 1")
        profile = dataclasses.replace(profile, repeats=args.repeats)
    only = (args.only or []) + (PRESETS[args.preset] if args.preset else [])
    suite, written = run_suite(profile, args.out, args.work, only or None)
    print(written["report"])
    print(
        f"wrote {args.out}/results.json, report.md, samples_per_s.png in {time.perf_counter() - started:.0f}s"
    )
    if suite.failures:
        print(f"{len(suite.failures)} failure(s):", *suite.failures, sep="\n", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

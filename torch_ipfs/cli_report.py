"""``torch-ipfs report``: render a saved metrics file, or run the batch loader over a
dataset with every source instrumented and render that run.

It sits beside the CLI, above the loader and the client; :mod:`torch_ipfs.report`
below it only renders (so the package has no import circle).
"""

from __future__ import annotations

import argparse
from typing import Any

from torch_ipfs.metrics import MetricsCollector
from torch_ipfs.report import render, text_summary

__all__ = ["add_report_arguments", "cmd_report", "run_dataset"]


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
    """Run ``epochs`` loader epochs over a dataset with every source instrumented; a
    dataset that cannot be opened raises the error that says why."""
    from torch_ipfs.client import Client
    from torch_ipfs.loader import IPFSDataLoader
    from torch_ipfs.metrics import instrument_client

    metrics = MetricsCollector()
    own = client is None
    client = client if client is not None else Client()
    try:
        instrument_client(client, metrics)
        with IPFSDataLoader(client, batch_size=batch_size, metrics=metrics) as loader:
            if not loader.load_dataset(address)["success"]:
                assert loader.load_error is not None
                raise loader.load_error  # typed (IPFSError, OSError, ...): one line from the CLI
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

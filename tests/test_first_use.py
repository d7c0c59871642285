"""The friction a new user met, each fixed and kept fixed: progress bars on long CLI
operations, errors without tracebacks, CID objects accepted as addresses, add(dir,
recursive=True), exports that check the destination before encoding."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pytest

import torch_ipfs

ROOT = Path(__file__).resolve().parents[1]


def run_cli(args, *, home, tty: bool, cwd=None, env_extra=None):
    """The real console entry point in a child process; stderr a pseudo-terminal when
    ``tty``. Returns (exit code, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "TORCH_IPFS_DEBUG"}
    env.update({"TORCH_IPFS_HOME": str(home), "PYTHONPATH": str(ROOT), **(env_extra or {})})
    cmd = [sys.executable, "-m", "torch_ipfs.cli", *map(str, args)]
    if not tty:
        p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, timeout=120)
        return p.returncode, p.stdout.decode(), p.stderr.decode()
    master, slave = pty.openpty()
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    err = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            err += chunk
        elif p.poll() is not None:
            break
    out = p.stdout.read().decode()
    p.wait(timeout=30)
    os.close(master)
    return p.returncode, out, err.decode(errors="replace")


@pytest.fixture
def big_file(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(3 * 1024 * 1024))
    return path


def test_add_get_and_dag_show_progress_on_a_terminal(tmp_path, big_file):
    home = tmp_path / "home"
    code, out, err = run_cli(["add", big_file], home=home, tty=True)
    assert code == 0 and out.startswith("added ")
    cid = out.split()[1]
    assert re.search(r"add: +100%.*3\.00M", err), err
    code, _, err = run_cli(["get", cid, "-o", tmp_path / "back.bin"], home=home, tty=True)
    assert code == 0 and re.search(r"get: +100%", err), err
    assert (tmp_path / "back.bin").read_bytes() == big_file.read_bytes()
    code, _, err = run_cli(["dag", "export", cid, "-o", tmp_path / "x.car"], home=home, tty=True)
    assert code == 0 and re.search(r"dag export: +100%", err), err
    code, out, err = run_cli(["dag", "import", tmp_path / "x.car"], home=tmp_path / "other", tty=True)
    assert code == 0 and cid in out and re.search(r"dag import: +100%", err), err


def test_no_progress_with_q_or_without_a_terminal(tmp_path, big_file):
    home = tmp_path / "home"
    code, out, err = run_cli(["add", "-q", big_file], home=home, tty=True)
    assert code == 0 and "%" not in err and "add:" not in err
    cid = out.strip()
    code, _, err = run_cli(["get", "-q", cid, "-o", tmp_path / "b"], home=home, tty=True)
    assert code == 0 and "get:" not in err
    code, _, err = run_cli(["add", big_file], home=home, tty=False)
    assert code == 0 and err == ""


def test_export_of_missing_torchvision_data_is_one_line(tmp_path):
    code, out, err = run_cli(
        ["export", "CIFAR10", "--root", tmp_path / "data"], home=tmp_path / "h", tty=False
    )
    assert code == 1 and out == ""
    assert "Traceback" not in err
    assert err.startswith("Error: cannot build dataset CIFAR10 with --root ")
    assert "RuntimeError: Dataset not found" in err and "never downloads" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_cli(
        ["export", "CIFAR10", "--root", tmp_path / "data"],
        home=tmp_path / "h",
        tty=False,
        env_extra={"TORCH_IPFS_DEBUG": "1"},
    )
    assert code != 0 and "Traceback" in err


def test_fsspec_takes_the_cid_objects_add_returns(tmp_path):
    (tmp_path / "d" / "s").mkdir(parents=True)
    (tmp_path / "d" / "s" / "a.txt").write_text("a")
    cid = torch_ipfs.add(tmp_path / "d")
    fs = fsspec.filesystem("ipfs")
    assert fs.find(cid) == [f"{cid}/s/a.txt"]
    assert fs.ls(cid, detail=False) == [f"{cid}/s"]
    assert fs.isdir(cid) and fs.cat_file(torch_ipfs.parse_address(f"{cid}/s/a.txt")) == b"a"
    assert fs.open(torch_ipfs.parse_address(f"{cid}/s/a.txt")).read() == b"a"


def test_add_directory_recursive(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("x")
    assert torch_ipfs.add(tmp_path / "d", recursive=True) == torch_ipfs.add(tmp_path / "d")
    with pytest.raises(IsADirectoryError, match="recursive=True"):
        torch_ipfs.add(tmp_path / "d", recursive=False)
    assert torch_ipfs.add(tmp_path / "d" / "x", recursive=False) == torch_ipfs.add(b"x")


class Counting:
    """A dataset that counts how many samples the exporter asked for."""

    def __init__(self):
        self.read = 0

    def __len__(self):
        return 50

    def __getitem__(self, i):
        self.read += 1
        return b"x" * 10, i


def test_export_to_an_unreachable_kubo_fails_before_encoding(tmp_path):
    import socket

    from torch_ipfs.errors import SourceError
    from torch_ipfs.exporter import export

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ds = Counting()
    with pytest.raises(
        SourceError, match=r"cannot export to Kubo at /ip4/127\.0\.0\.1/tcp/\d+.*nothing was encoded"
    ):
        export(ds, destination=f"kubo:/ip4/127.0.0.1/tcp/{port}", progress=False)
    assert ds.read == 0
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export(ds, destination=f"car:{tmp_path / 'no' / 'x.car'}", progress=False)
    assert ds.read == 0

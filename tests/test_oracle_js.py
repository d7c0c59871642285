"""Our importer against the JavaScript reference importer (npm ``ipfs-unixfs-importer``,
pinned in tests/oracles/js/package.json; ``npm ci --prefix tests/oracles/js`` installs it).

The JS importer takes any chunk size and width, so small chunkers build deep trees
cheaply: every layout edge is compared here, for CIDv1 + raw leaves (its defaults) and
for ``cidVersion: 0, rawLeaves: false`` (Kubo's v0). If node or the package is missing,
these tests fail; they never skip.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from oracles import OracleError

from torch_ipfs.sources.base import NullStore
from torch_ipfs.unixfs.importer import ImportOptions, import_file, import_path

JS_DIR = Path(__file__).parent / "oracles" / "js"
CHUNK = 262144

#: (cid_version, chunk size, max links) -> file sizes compared at those settings
FILE_CASES = {
    (4, 3): [0, 1, 3, 4, 5, 12, 13, 36, 37, 46, 50, 108, 109, 333],
    (64, 174): [64 * 174 - 1, 64 * 174, 64 * 174 + 1, 64 * 174 * 174 + 1],
    (CHUNK, 174): [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 174 * CHUNK + 1],
}
SETTINGS = {"v1": ImportOptions(cid_version=1), "v0": ImportOptions(cid_version=0, raw_leaves=False)}


def js_import(
    paths: list[Path], *, cid_version: int, raw_leaves: bool, chunk_size: int, max_links: int, hidden: bool
) -> list[str]:
    """Root CIDs from ipfs-unixfs-importer for ``paths`` (one node process)."""
    node = shutil.which("node")
    if node is None:
        raise OracleError("node (Node.js) is not installed; the JS importer oracle needs it")
    if not (JS_DIR / "node_modules" / "ipfs-unixfs-importer").is_dir():
        raise OracleError(f"run `npm ci --prefix {JS_DIR}` first (ipfs-unixfs-importer is not installed)")
    cmd = [node, str(JS_DIR / "import.mjs"), "--cid-version", str(cid_version), "--raw-leaves",
           "true" if raw_leaves else "false", "--chunk-size", str(chunk_size), "--max-links", str(max_links)]
    if hidden:
        cmd.append("--hidden")
    proc = subprocess.run(cmd + [str(p) for p in paths], capture_output=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise OracleError(f"JS importer failed: {proc.stderr.decode('utf-8', 'replace')[-2000:]}")
    return [r["cid"] for r in json.loads(proc.stdout)]


def _make_tree(root: Path, rng: random.Random) -> None:
    (root / "sub" / "ünïcødé 😀" / "deep").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "Z.bin").write_bytes(rng.randbytes(CHUNK * 2 + 5))
    (root / "sub" / "ünïcødé 😀" / "deep" / "数据.bin").write_bytes(rng.randbytes(5000))
    (root / "sub" / "zero").write_bytes(b"")
    (root / ".hidden").write_bytes(b"hidden\n")
    os.symlink("../a.txt", root / "sub" / "link-to-a")


@pytest.fixture(scope="session")
def js_case(tmp_path_factory):
    """Files and a folder on disk, and the JS importer's CIDs for each setting."""
    base = tmp_path_factory.mktemp("js-oracle")
    rng = random.Random(99)
    files: dict[tuple[int, int, int], Path] = {}
    for (chunk, links), sizes in FILE_CASES.items():
        for size in sizes:
            path = base / f"f-{chunk}-{links}-{size}.bin"
            path.write_bytes(rng.randbytes(size))
            files[(chunk, links, size)] = path
    tree = base / "tree"
    tree.mkdir()
    _make_tree(tree, rng)
    vector = base / "aoeu.txt"
    vector.write_bytes(b"aoeuidhtns" * 200)

    results: dict[tuple, str] = {}
    for label, opts in SETTINGS.items():
        for chunk, links in FILE_CASES:
            keys = [k for k in files if k[:2] == (chunk, links)]
            cids = js_import([files[k] for k in keys], cid_version=opts.cid_version,
                             raw_leaves=opts.use_raw_leaves, chunk_size=chunk, max_links=links, hidden=False)
            results.update({(label, *k): cid for k, cid in zip(keys, cids)})
        for hidden in (False, True):
            (cid,) = js_import([tree], cid_version=opts.cid_version, raw_leaves=opts.use_raw_leaves,
                               chunk_size=CHUNK, max_links=174, hidden=hidden)
            results[(label, "tree", hidden)] = cid
        (cid,) = js_import([vector], cid_version=opts.cid_version, raw_leaves=opts.use_raw_leaves,
                           chunk_size=4, max_links=174, hidden=False)
        results[(label, "aoeu")] = cid
    return files, tree, vector, results


@pytest.mark.parametrize("label", list(SETTINGS))
@pytest.mark.parametrize(
    ("chunk", "links", "size"), [(c, n, s) for (c, n), sizes in FILE_CASES.items() for s in sizes]
)
def test_files_match_js(js_case, label, chunk, links, size):
    files, _, _, js = js_case
    options = ImportOptions(
        cid_version=SETTINGS[label].cid_version,
        raw_leaves=SETTINGS[label].raw_leaves,
        chunker=f"size-{chunk}",
        max_links=links,
    )
    with open(files[(chunk, links, size)], "rb") as f:
        ours = import_file(f, NullStore(), options)
    assert str(ours.cid) == js[(label, chunk, links, size)]


@pytest.mark.parametrize("label", list(SETTINGS))
@pytest.mark.parametrize("hidden", [False, True])
def test_tree_matches_js(js_case, label, hidden):
    _, tree, _, js = js_case
    options = ImportOptions(cid_version=SETTINGS[label].cid_version, raw_leaves=SETTINGS[label].raw_leaves,
                            hidden=hidden)
    assert str(list(import_path(tree, NullStore(), options))[-1].cid) == js[(label, "tree", hidden)]


def test_published_vector_matches_js(js_case):
    _, _, vector, js = js_case
    assert js[("v0", "aoeu")] == "QmRo11d4QJrST47aaiGVJYwPhoNA4ihRpJ5WaxBWjWDwbX"
    with open(vector, "rb") as f:
        assert str(import_file(f, NullStore(), ImportOptions(cid_version=1, chunker="size-4")).cid) == js[
            ("v1", "aoeu")
        ]

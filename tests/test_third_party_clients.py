"""Real third-party clients against ``torch-ipfs serve``: ipfsspec 0.6 (the fsspec IPFS
client of the xarray/zarr world, from PyPI, in a venv of its own). It relies on the
headers Kubo's gateway sends (``X-Ipfs-Roots`` for ``info``/``ls``/``find``).

The venv is built on first use under ``tests/oracles/ipfsspec/.venv`` (pip from the
package index, the only non-loopback traffic, and not from this process). If it cannot
be built the test fails: a client that is not there proves nothing."""

from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path

import pytest
from gatewayserver import free_port, serve_process

from torch_ipfs.sources.local import LocalStore
from torch_ipfs.unixfs.importer import ImportOptions, import_path

HERE = Path(__file__).resolve().parent / "oracles" / "ipfsspec"
VENV = HERE / ".venv"
IPFSSPEC = "ipfsspec==0.6.0"

FILES = {
    "top.txt": b"hello from torch-ipfs serve\n",
    "dir/a.txt": b"alpha\n",
    "dir/sub/b.bin": bytes(range(256)) * 40,  # several blocks at the chunker below
}


def _venv_python() -> Path:
    python = VENV / "bin" / "python"
    marker = VENV / f".installed-{IPFSSPEC}"
    if not marker.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
        proc = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", IPFSSPEC],
            capture_output=True, text=True, timeout=600,
        )
        assert proc.returncode == 0, f"could not install {IPFSSPEC} into {VENV}:\n{proc.stderr}"
        marker.touch()
    return python


@pytest.mark.slow
def test_ipfsspec_reads_info_ls_find_cat_and_ranges_through_serve(tmp_path):
    python = _venv_python()
    tree = tmp_path / "tree"
    for name, data in FILES.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    home = tmp_path / "home"
    store = LocalStore(home)
    entries = list(import_path(tree, store, ImportOptions(cid_version=1, chunker="size-4096")))
    root = str(entries[-1].cid)
    cids = {e.name.removeprefix("tree/"): str(e.cid) for e in entries}
    port = free_port()
    server = serve_process(home, port)
    try:
        proc = subprocess.run(
            [str(python), str(HERE / "client.py"), root],
            env={"PATH": os.environ.get("PATH", ""), "IPFS_GATEWAY": f"http://127.0.0.1:{port}",
                 "HOME": str(tmp_path)},
            capture_output=True, text=True, timeout=120,
        )
    finally:
        server.kill()
        server.wait()
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["info"] == {
        "top.txt": {"type": "file", "size": len(FILES["top.txt"]), "CID": cids["top.txt"]},
        "dir": {"type": "directory", "CID": cids["dir"]},
        "dir/sub/b.bin": {"type": "file", "size": len(FILES["dir/sub/b.bin"]), "CID": cids["dir/sub/b.bin"]},
    }
    assert seen["ls"] == [f"{root}/dir/a.txt", f"{root}/dir/sub"]
    assert seen["find"] == sorted(f"{root}/{name}" for name in FILES)
    assert bytes.fromhex(seen["cat"]) == FILES["top.txt"]
    assert bytes.fromhex(seen["ranged"]) == FILES["dir/sub/b.bin"][1000:1300]


def test_serve_sends_the_headers_kubo_sends(tmp_path):
    """What ipfsspec and other clients read: one root per path segment, the path, an
    ETag per representation, immutable caching."""
    import httpx
    from gatewayserver import running_gateway

    store = LocalStore(tmp_path / "home")
    tree = tmp_path / "tree"
    for name, data in FILES.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    options = ImportOptions(cid_version=1, chunker="size-4096")
    cids = {e.name: e.cid for e in import_path(tree, store, options)}
    root, sub, leaf = cids["tree"], cids["tree/dir/sub"], cids["tree/dir/sub/b.bin"]
    with running_gateway(store) as srv, httpx.Client(base_url=srv.url) as http:
        path = f"/ipfs/{root}/dir/sub/b.bin"
        for params, etag in (({}, f'"{leaf}"'), ({"format": "raw"}, f'"{leaf}.raw"'),
                             ({"format": "car", "dag-scope": "block"}, None)):
            resp = http.get(path, params=params)
            assert resp.status_code == 200
            assert resp.headers["X-Ipfs-Roots"] == f"{root},{cids['tree/dir']},{sub},{leaf}"
            assert resp.headers["X-Ipfs-Path"] == path
            assert resp.headers["Cache-Control"] == "public, max-age=29030400, immutable"
            if etag is not None:
                assert resp.headers["Etag"] == etag
            else:
                assert resp.headers["Etag"].startswith(f'"{root}.car.')
        listing = http.get(f"/ipfs/{root}/dir")
        assert listing.headers["X-Ipfs-Roots"] == f"{root},{cids['tree/dir']}"
        assert http.get(f"/ipfs/{root}").headers["X-Ipfs-Roots"] == str(root)


JS_DIR = Path(__file__).resolve().parent / "oracles" / "js"


@pytest.mark.slow
def test_helia_clients_read_through_serve(tmp_path):
    """@helia/verified-fetch (files by path) and @helia/unixfs (a byte range, a listing),
    with torch-ipfs serve as their only router and gateway (no delegated routing)."""
    import shutil

    node = shutil.which("node")
    assert node is not None, "node (Node.js) is not installed; the Helia clients need it"
    assert (JS_DIR / "node_modules" / "@helia" / "verified-fetch").is_dir(), (
        f"run `npm ci --prefix {JS_DIR}` first (the Helia clients are not installed)"
    )
    tree = tmp_path / "tree"
    for name, data in FILES.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    home = tmp_path / "home"
    entries = list(import_path(tree, LocalStore(home), ImportOptions(cid_version=1, chunker="size-4096")))
    cids = {e.name.removeprefix("tree/"): str(e.cid) for e in entries}
    root = str(entries[-1].cid)
    port = free_port()
    server = serve_process(home, port)
    try:
        proc = subprocess.run([node, str(JS_DIR / "helia_client.mjs"), f"http://127.0.0.1:{port}", root],
                              capture_output=True, text=True, timeout=120)
    finally:
        server.kill()
        server.wait()
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout)
    assert seen["fetch top.txt"] == {"status": 200, "hex": FILES["top.txt"].hex()}
    assert seen["fetch dir/sub/b.bin"] == {"status": 200, "hex": FILES["dir/sub/b.bin"].hex()}
    assert bytes.fromhex(seen["cat range"]) == FILES["dir/sub/b.bin"][1000:1300]
    assert seen["ls"] == [["a.txt", cids["dir/a.txt"]], ["sub", cids["dir/sub"]]]

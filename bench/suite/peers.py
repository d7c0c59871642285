"""The other loaders' formats: litdata and Mosaic streaming, written from the same samples.

Both are written ONCE per variant, with their own writers, from the very tar files every
other contender reads (so the encoded image bytes are identical): ``litdata.optimize``
into ``<work>/litdata`` and ``streaming.MDSWriter`` into ``<work>/mosaic``. A stamp file
next to each output says the write finished; a later run reuses it. Each is then read
with its own ``StreamingDataset`` from the local directory.

Neither package is needed to run the rest of the suite: :func:`installed` says whether
one is importable, and the runner reports a contender whose package is missing as "not
installed" (``requirements/bench.txt`` and ``tox -e bench`` install them).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.suite.data import BenchData

__all__ = ["installed", "litdata_dir", "mosaic_dir", "shard_records", "write_litdata", "write_mosaic"]

#: litdata's and Mosaic's chunk / shard size: about the tar shards' size, so neither
#: format gains from larger reads than the others get.
CHUNK_BYTES = 1 << 26


def installed(package: str) -> bool:
    """True when ``package`` can be imported in this environment."""
    return importlib.util.find_spec(package) is not None


def shard_records(path: Path, ext: str) -> Iterator[tuple[bytes, int]]:
    """``(encoded image bytes, label)`` of one tar shard, in order."""
    with tarfile.open(path) as tf:
        key, fields = None, {}
        for member in tf:
            if not member.isfile():
                continue
            k, _, name = member.name.partition(".")
            if k != key:
                if fields:
                    yield fields[ext], int(fields["cls"])
                key, fields = k, {}
            fields[name] = tf.extractfile(member).read()  # type: ignore[union-attr]
        if fields:
            yield fields[ext], int(fields["cls"])


def litdata_dir(data: BenchData) -> Path:
    return data.home.parent / "litdata"


def mosaic_dir(data: BenchData) -> Path:
    return data.home.parent / "mosaic"


def _stamped(out: Path, data: BenchData) -> bool:
    try:
        return json.loads((out.parent / f"{out.name}.stamp").read_text()).get("root") == data.root
    except (OSError, ValueError):
        return False


def _stamp(out: Path, data: BenchData) -> None:
    (out.parent / f"{out.name}.stamp").write_text(json.dumps({"root": data.root}))


# litdata's optimize calls this in its worker: module level, so it pickles.
def _litdata_samples(path: str, ext: str = "png") -> Iterator[dict[str, Any]]:
    for image, label in shard_records(Path(path), ext):
        yield {"image": image, "cls": label}


def _litdata_samples_written(out: Path) -> int:
    try:
        index = json.loads((out / "index.json").read_text())
    except (OSError, ValueError):
        return -1
    return sum(int(c["chunk_size"]) for c in index.get("chunks", []))


def write_litdata(data: BenchData) -> Path:
    """The variant as litdata chunks (``litdata.optimize``, one writer process, in order)."""
    import functools

    import litdata

    out = litdata_dir(data)
    if _stamped(out, data) and _litdata_samples_written(out) == data.total_samples:
        return out
    shutil.rmtree(out, ignore_errors=True)
    litdata.optimize(
        fn=functools.partial(_litdata_samples, ext=data.variant.extension),
        inputs=[str(p) for p in data.shard_paths],
        output_dir=str(out),
        chunk_bytes=CHUNK_BYTES,
        num_workers=1,
        mode="overwrite",
    )
    written = _litdata_samples_written(out)
    if written != data.total_samples:
        raise RuntimeError(
            f"litdata.optimize wrote {written} samples to {out}, expected {data.total_samples}"
        )
    _stamp(out, data)
    return out


def write_mosaic(data: BenchData) -> Path:
    """The variant as Mosaic MDS shards (``streaming.MDSWriter``, uncompressed)."""
    from streaming import MDSWriter

    out = mosaic_dir(data)
    if _stamped(out, data):
        return out
    shutil.rmtree(out, ignore_errors=True)
    with MDSWriter(out=str(out), columns={"image": "bytes", "cls": "int"}, size_limit=CHUNK_BYTES) as w:
        for path in data.shard_paths:
            for image, label in shard_records(path, data.variant.extension):
                w.write({"image": image, "cls": label})
    _stamp(out, data)
    return out

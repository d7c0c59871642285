"""Profiles and the benchmark data: a synthetic CIFAR-like dataset, exported once.

The images are generated deterministically from numpy's RNG (seeded per sample, so any
subset or order gives the same pixels): a coarse random colour field upsampled to full
size plus a little per-pixel noise, which PNG compresses to about CIFAR-10's real size
(~2.3 KB per 32x32 image). Labels are uniform over 10 classes.

The dataset is exported ONCE per variant with :func:`torch_ipfs.exporter.export_dataset`
into the embedded store of a benchmark home; the very same tar shards are then written
out of that store with :meth:`torch_ipfs.client.Client.get`, and those files are what
every peer reads (from disk or over HTTP from the same gateway). A stamp file lets a
second run in the same work directory reuse the export (it is reproducible: the same
options give the same root CID).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["PROFILES", "BenchData", "Profile", "SyntheticImages", "Variant", "prepare"]

log = logging.getLogger(__name__)

NUM_CLASSES = 10


@dataclass(frozen=True)
class Variant:
    """One dataset the contenders read: ``samples`` images of ``size`` x ``size`` pixels."""

    name: str
    samples: int
    size: int
    image_format: str  # "png" or "jpeg"
    samples_per_shard: int
    jpeg_quality: int = 90
    seed: int = 0

    @property
    def extension(self) -> str:
        return "png" if self.image_format == "png" else "jpg"


@dataclass(frozen=True)
class Profile:
    """How much to run: which variants, how many repeats, which DataLoader settings."""

    name: str
    variants: tuple[Variant, ...]
    repeats: int
    workers: tuple[int, ...] = (0, 2)
    batch_size: int = 256
    #: epochs of the persistent-workers RSS measurement
    rss_epochs: int = 10
    #: samples read one by one for the map-style blocks-per-sample measurement
    map_probe_samples: int = 64
    #: rounds of the raw read-path probe (every sample's bytes, no DataLoader)
    raw_probe_samples: int = 3
    #: random single-sample raw reads per round of the random-read probe
    random_probe_samples: int = 2_000
    #: injected per-request delays of the two gateways, seconds
    delays: tuple[float, ...] = (0.0, 0.05)
    notes: dict[str, str] = field(default_factory=dict)


PNG32 = "png32"
JPEG224 = "jpeg224"

PROFILES: dict[str, Profile] = {
    # For the test of the suite itself: every contender, minimal sizes, one repeat.
    "tiny": Profile(
        "tiny",
        (Variant(PNG32, 1_024, 32, "png", 256),),
        repeats=1,
        rss_epochs=10,
        map_probe_samples=16,
        random_probe_samples=256,
    ),
    # A few minutes on 2 cores.
    "small": Profile("small", (Variant(PNG32, 5_000, 32, "png", 1_000),), repeats=3),
    # Issue 7's and 11's sizes: 50,000 CIFAR-size PNGs; the 224x224 JPEG variant has
    # 5,000 images (~25 KB each; more would take hours over all contenders on 2 cores).
    "full": Profile(
        "full",
        (
            Variant(PNG32, 50_000, 32, "png", 5_000),
            Variant(JPEG224, 5_000, 224, "jpeg", 500),
        ),
        repeats=3,
        map_probe_samples=256,
        random_probe_samples=20_000,
    ),
}


class SyntheticImages:
    """A map-style dataset of ``(PIL image, label)`` pairs, deterministic per index."""

    def __init__(self, samples: int, size: int, seed: int = 0) -> None:
        self.samples = samples
        self.size = size
        self.seed = seed
        self.classes = [f"class{i}" for i in range(NUM_CLASSES)]

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        if not 0 <= index < self.samples:
            raise IndexError(index)
        rng = np.random.default_rng((self.seed, index))
        label = int(rng.integers(NUM_CLASSES))
        coarse = rng.integers(0, 256, (max(2, self.size // 4),) * 2 + (3,), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((self.size, self.size), Image.BILINEAR)
        noise = rng.integers(-8, 9, (self.size, self.size, 3), dtype=np.int16)
        pixels = (np.asarray(image, dtype=np.int16) + noise).clip(0, 255).astype(np.uint8)
        return Image.fromarray(pixels), label


@dataclass(frozen=True)
class BenchData:
    """An exported variant: its root CID, the store it lives in and the tar files on disk."""

    variant: Variant
    root: str
    home: Path
    shard_names: tuple[str, ...]
    shard_paths: tuple[Path, ...]
    shard_bytes: tuple[int, ...]
    export_seconds: float

    @property
    def url(self) -> str:
        return f"ipfs://{self.root}"

    @property
    def total_samples(self) -> int:
        return self.variant.samples

    @property
    def tar_bytes(self) -> int:
        return sum(self.shard_bytes)

    def summary(self) -> dict[str, Any]:
        return {
            "variant": asdict(self.variant),
            "root": self.root,
            "shards": len(self.shard_paths),
            "tar_bytes": self.tar_bytes,
            "tar_bytes_per_sample": self.tar_bytes / self.total_samples,
            "export_seconds": round(self.export_seconds, 3),
        }


def prepare(variant: Variant, work_dir: Path) -> BenchData:
    """Export ``variant`` into ``work_dir/home`` (once) and write its files to ``work_dir/tree``."""
    from torch_ipfs.client import Client
    from torch_ipfs.exporter import export_dataset

    work_dir.mkdir(parents=True, exist_ok=True)
    home, tree, stamp = work_dir / "home", work_dir / "tree", work_dir / "stamp.json"
    client = Client(home=home, api="", gateways=[])
    try:
        cached = _load_stamp(stamp, variant, client)
        if cached is not None:
            root, seconds = cached
            log.info("%s: reusing the export %s in %s", variant.name, root, work_dir)
        else:
            start = time.perf_counter()
            result = export_dataset(
                SyntheticImages(variant.samples, variant.size, variant.seed),
                samples_per_shard=variant.samples_per_shard,
                image_format=variant.image_format,
                jpeg_quality=variant.jpeg_quality,
                name=f"bench-{variant.name}",
                client=client,
                progress=False,
            )
            root = str(result.cid)
            # The peers' files come out of the store, so they are the exported bytes.
            client.get(root, tree)
            seconds = time.perf_counter() - start
            stamp.write_text(json.dumps({"variant": asdict(variant), "root": root, "seconds": seconds}))
            log.info("%s: exported %d samples to %s in %.1fs", variant.name, variant.samples, root, seconds)
    finally:
        client.close()
    paths = tuple(sorted((tree / "shards").glob("shard-*.tar")))
    if not paths:
        raise RuntimeError(f"{variant.name}: no tar shards under {tree / 'shards'}")
    return BenchData(
        variant=variant,
        root=root,
        home=home,
        shard_names=tuple(p.name for p in paths),
        shard_paths=paths,
        shard_bytes=tuple(p.stat().st_size for p in paths),
        export_seconds=seconds,
    )


def _load_stamp(stamp: Path, variant: Variant, client: Any) -> tuple[str, float] | None:
    """The root of an earlier identical export still present in the store, or None."""
    try:
        saved = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    if saved.get("variant") != asdict(variant):
        return None
    from torch_ipfs.cid import CID

    root = saved.get("root")
    if not isinstance(root, str) or not client.store.has(CID.decode(root)):
        return None
    return root, float(saved.get("seconds", 0.0))

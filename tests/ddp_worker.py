"""The script ``test_sharding.py`` runs under a real ``torchrun --nproc_per_node=2`` (gloo),
and the tiny dataset the sharding/shuffle tests use in-process.

Each rank iterates :class:`SampleIds` through a ``DataLoader`` with 2 workers for two
epochs (``set_epoch`` each time), once padded and once with ``drop_last=True``, and writes
the ids it actually received to ``OUT_DIR/rank<R>.json``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from torch_ipfs.sharding import SampleSpan, ShardedIterableDataset

#: Shard sizes the torchrun run uses: 59 samples, uneven, one empty shard.
DDP_SHARDS = [1, 7, 0, 13, 2, 30, 6]
DDP_EPOCHS = 2


class SampleIds(ShardedIterableDataset):
    """Sample ``i`` of shard ``s`` is the id ``(s, i)``: what was yielded is what we check."""

    def __init__(self, sizes: Sequence[int], **options) -> None:
        self.sizes = list(sizes)
        self.reads: list[SampleSpan] = []  # spans read in this process
        super().__init__(**options)

    def shard_sizes(self) -> list[int]:
        return self.sizes

    def read_span(self, span: SampleSpan) -> Iterator[tuple[int, int]]:
        self.reads.append(span)
        for i in range(span.start, span.stop):
            yield (span.shard, i)


def _ids(batches) -> list[list[int]]:
    return [[int(s), int(i)] for shard, index in batches for s, i in zip(shard, index)]


def main(out_dir: str) -> int:
    import torch.distributed as dist
    from torch.utils.data import DataLoader

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    record: dict = {"rank": rank, "world_size": world, "env_rank": os.environ["RANK"]}
    for name, drop_last in (("padded", False), ("drop_last", True)):
        dataset = SampleIds(DDP_SHARDS, shuffle=True, seed=11, drop_last=drop_last)
        loader = DataLoader(dataset, batch_size=4, num_workers=2)
        record[name] = {"len": len(dataset), "epochs": {}}
        for epoch in range(DDP_EPOCHS):
            dataset.set_epoch(epoch)
            record[name]["epochs"][str(epoch)] = _ids(loader)
    out = Path(out_dir)
    tmp = out / f"rank{rank}.json.part"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, out / f"rank{rank}.json")
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

"""Exact rank x worker splitting (torch_ipfs.sharding), checked from the ids real
DataLoaders (and a real torchrun) actually yield."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from ddp_worker import DDP_EPOCHS, DDP_SHARDS, SampleIds
from torch.utils.data import DataLoader

from torch_ipfs.errors import ManifestError
from torch_ipfs.sharding import (
    SKIPPED,
    SampleSpan,
    SplitIterator,
    distributed_context,
    plan_epoch,
    split_for_worker,
    worker_context,
)

# uneven shards with an empty one; one shard; fewer shards than workers and N < world x workers
SHARD_LAYOUTS = [[1, 7, 0, 13, 2], [100], [2, 1]]


def expand(spans) -> list[tuple[int, int]]:
    return [(s.shard, i) for s in spans for i in range(s.start, s.stop)]


def global_order(sizes, **options) -> list[tuple[int, int]]:
    """The epoch's order before padding/dropping: rank 0's plan for one rank, unpadded."""
    return expand(plan_epoch(sizes, world_size=1, **options)[0])


def cyclic_prefix(order, n):
    return [order[i % len(order)] for i in range(n)]


@pytest.fixture
def as_rank(monkeypatch):
    """Run as rank ``r`` of ``w`` the way torchrun does: through RANK / WORLD_SIZE."""

    def set_rank(rank: int, world: int) -> None:
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))

    return set_rank


def run_loader(dataset, num_workers: int, **kwargs) -> list[tuple[int, int]]:
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, **kwargs)
    return [tuple(x) for x in loader]


# -- the plan alone (exhaustive; cheap) ----------------------------------------------------


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
def test_plan_is_exact_for_every_world_and_worker_count(shuffle, drop_last):
    layouts = [*SHARD_LAYOUTS, [0, 3, 0], [5], [], [0, 0], [3, 0, 0, 50, 1, 1, 1, 9]]
    for sizes, world, workers, epoch in itertools.product(layouts, range(1, 6), range(1, 5), range(3)):
        options = {"seed": 7, "epoch": epoch, "shuffle": shuffle, "drop_last": drop_last}
        n = sum(sizes)
        order = global_order(sizes, **options)
        assert sorted(order) == sorted((s, i) for s, size in enumerate(sizes) for i in range(size))
        plan = plan_epoch(sizes, world_size=world, **options)
        assert plan == plan_epoch(sizes, world_size=world, **options)  # deterministic
        per_rank = n // world if drop_last else -(-n // world)
        total = per_rank * world
        everything = []
        for rank_spans in plan:
            assert len(expand(rank_spans)) == per_rank
            shares = [expand(split_for_worker(rank_spans, w, workers)) for w in range(workers)]
            assert max(map(len, shares)) - min(map(len, shares)) <= 1
            assert sum(shares, []) == expand(rank_spans)  # contiguous blocks, in order
            everything += expand(rank_spans)
        assert everything == cyclic_prefix(order, total)  # ranks take consecutive blocks
        assert all(len(s) > 0 for r in plan for s in r)


def test_plan_without_shuffle_is_shard_order_split_inside_shards():
    assert plan_epoch([1, 7, 0, 13, 2], world_size=3) == [
        [SampleSpan(0, 0, 1), SampleSpan(1, 0, 7)],
        [SampleSpan(3, 0, 8)],
        [SampleSpan(3, 8, 13), SampleSpan(4, 0, 2), SampleSpan(0, 0, 1)],  # padded with sample (0, 0)
    ]
    assert plan_epoch([1, 7, 0, 13, 2], world_size=3, drop_last=True) == [
        [SampleSpan(0, 0, 1), SampleSpan(1, 0, 6)],
        [SampleSpan(1, 6, 7), SampleSpan(3, 0, 6)],
        [SampleSpan(3, 6, 13)],  # shard 4 dropped: the last N mod W = 2 samples
    ]
    assert plan_epoch([1], world_size=4) == [[SampleSpan(0, 0, 1)]] * 4  # padding repeats
    assert plan_epoch([1], world_size=4, drop_last=True) == [[], [], [], []]
    assert plan_epoch([], world_size=2) == [[], []]


def test_shuffled_plan_depends_on_seed_and_epoch_only():
    sizes = [3, 9, 4, 1, 12, 7, 5]
    base = global_order(sizes, seed=1, epoch=0, shuffle=True)
    assert base == global_order(sizes, seed=1, epoch=0, shuffle=True)
    assert base != global_order(sizes, seed=1, epoch=1, shuffle=True)
    assert base != global_order(sizes, seed=2, epoch=0, shuffle=True)
    # (seed, epoch) is not collapsed to seed + epoch
    assert base != global_order(sizes, seed=0, epoch=1, shuffle=True)
    # shards stay contiguous runs: at most one shard is split (by the rotation)
    spans = plan_epoch(sizes, seed=1, epoch=0, shuffle=True)[0]
    assert len(spans) <= len(sizes) + 1
    # pinned: the generator is self-contained, so this order is the same on every machine,
    # Python and torch version (ranks with different installs still agree)
    assert [(s.shard, s.start, s.stop) for s in spans] == [
        (4, 1, 12), (3, 0, 1), (0, 0, 3), (5, 0, 7), (6, 0, 5), (2, 0, 4), (1, 0, 9), (4, 0, 1),
    ]  # fmt: skip


def test_shuffle_rotation_varies_the_padded_and_dropped_samples():
    dropped = set()
    for epoch in range(8):
        order = global_order([100], seed=0, epoch=epoch, shuffle=True)
        plan = plan_epoch([100], seed=0, epoch=epoch, shuffle=True, drop_last=True, world_size=3)
        kept = set(expand(sum(plan, [])))
        assert set(order) - kept == {order[-1]}
        dropped |= set(order) - kept
    assert len(dropped) > 1


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: plan_epoch([1, 2], world_size=0), "world_size must be an integer >= 1"),
        (lambda: plan_epoch([1, -2]), r"shard_sizes\[1\] must be an integer >= 0"),
        (lambda: plan_epoch([1], shuffle="yes"), "shuffle must be True or False"),
        (lambda: plan_epoch([1], drop_last=None), "drop_last must be True or False"),
        (lambda: plan_epoch([1], epoch=-1), "epoch must be an integer >= 0"),
        (lambda: plan_epoch([1], seed=1.5), "seed must be an integer"),
        (lambda: split_for_worker([], 3, 3), r"worker_id must be an integer in \[0, 3\)"),
        (lambda: split_for_worker([], 0, 0), "num_workers must be an integer >= 1"),
        (lambda: SplitIterator([1], shuffle=1), "shuffle must be True or False"),
    ],
)
def test_invalid_options_are_refused_naming_the_valid_values(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_contexts_come_from_the_environment_torchrun_sets(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed_context() == (0, 1)
    assert worker_context() == (0, 1)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert distributed_context() == (2, 4)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="0 <= RANK < WORLD_SIZE"):
        distributed_context()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="must be integers"):
        distributed_context()


# -- real DataLoaders ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("sizes", SHARD_LAYOUTS, ids=str)
def test_dataloader_matrix_exactly_once_equal_counts(sizes, drop_last, as_rank):
    """world 1..4 x workers 0..3: what real DataLoaders yield per simulated rank."""
    n = sum(sizes)
    options = {"seed": 3, "shuffle": True, "drop_last": drop_last}
    order = global_order(sizes, epoch=1, **options)
    for world, workers in itertools.product(range(1, 5), range(4)):
        per_rank = n // world if drop_last else -(-n // world)
        plan = plan_epoch(sizes, epoch=1, world_size=world, **options)
        yielded: list[tuple[int, int]] = []
        for rank in range(world):
            as_rank(rank, world)
            dataset = SampleIds(sizes, **options)
            dataset.set_epoch(1)
            assert len(dataset) == per_rank
            got = run_loader(dataset, workers)
            where = f"world={world} workers={workers} rank={rank}"
            assert len(got) == per_rank, where
            assert Counter(got) == Counter(expand(plan[rank])), where
            if workers == 0:
                assert got == expand(plan[rank]), where  # one stream, in plan order
            yielded += got
        counts = Counter(yielded)
        everything = Counter(order)
        if drop_last:
            assert max(counts.values(), default=1) == 1
            assert everything - counts == Counter(order[len(order) - n % world :])  # the documented drop
        else:
            assert set(counts) == set(everything)
            assert counts - everything == Counter(cyclic_prefix(order, per_rank * world - n))  # the padding


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
def test_each_worker_reads_few_contiguous_spans(as_rank):
    as_rank(0, 1)
    dataset = SampleIds([40, 40, 40])
    # the worker's share of 120 samples is one run of 40: at most 2 shards, 2 spans
    shares = [split_for_worker(plan_epoch([40, 40, 40])[0], w, 3) for w in range(3)]
    assert shares == [[SampleSpan(0, 0, 40)], [SampleSpan(1, 0, 40)], [SampleSpan(2, 0, 40)]]
    assert sorted(run_loader(dataset, 3)) == sorted(expand(sum(shares, [])))


def test_order_is_deterministic_per_epoch_and_changes_with_set_epoch(as_rank):
    as_rank(1, 2)
    sizes = [5, 9, 3, 11, 7]
    runs = {}
    for epoch in (0, 1, 0):
        dataset = SampleIds(sizes, shuffle=True, seed=9)
        dataset.set_epoch(epoch)
        runs.setdefault(epoch, []).append(run_loader(dataset, 2))
    assert runs[0][0] == runs[0][1]
    assert runs[0][0] != runs[1][0]
    # without set_epoch the order stays (DistributedSampler semantics)
    dataset = SampleIds(sizes, shuffle=True, seed=9)
    assert run_loader(dataset, 0) == run_loader(dataset, 0)


def test_set_epoch_reaches_persistent_workers(as_rank):
    as_rank(0, 1)
    sizes = [5, 9, 3, 11, 7]
    dataset = SampleIds(sizes, shuffle=True, seed=4)
    loader = DataLoader(dataset, batch_size=None, num_workers=2, persistent_workers=True)
    for epoch in range(3):
        dataset.set_epoch(epoch)
        fresh = SampleIds(sizes, shuffle=True, seed=4)
        fresh.set_epoch(epoch)
        assert [tuple(x) for x in loader] == run_loader(fresh, 2), f"epoch {epoch}"


def test_skipped_samples_count_but_are_not_yielded_and_wrong_counts_are_loud():
    class EveryOther(SampleIds):
        def read_span(self, span):
            for shard, i in super().read_span(span):
                yield SKIPPED if i % 2 else (shard, i)

    assert list(EveryOther([4])) == [(0, 0), (0, 2)]

    class Short(SampleIds):
        def read_span(self, span):
            yield from list(super().read_span(span))[:-1]

    message = r"shard 0: read_span\(0, 4\) gave 3 samples, the shard sizes say 4"
    with pytest.raises(ManifestError, match=message):
        list(Short([4]))

    class Long(SampleIds):
        def read_span(self, span):
            yield from super().read_span(span)
            yield (span.shard, span.stop)

    with pytest.raises(ManifestError, match="gave more samples"):
        list(Long([4]))


# -- resume ------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, 1, 9, 19, 20])
def test_resume_without_workers_continues_exactly(k, as_rank):
    as_rank(1, 3)  # rank 1 of 3 over 59 samples: ceil(59 / 3) = 20
    options = {"seed": 5, "shuffle": True}
    full_ds = SampleIds(DDP_SHARDS, **options)
    full_ds.set_epoch(2)
    full = list(full_ds)
    assert len(full) == 20

    first_ds = SampleIds(DDP_SHARDS, **options)
    first_ds.set_epoch(2)
    first = list(itertools.islice(iter(first_ds), k))
    state = json.loads(json.dumps(first_ds.state_dict()))  # a checkpoint survives JSON

    resumed = SampleIds(DDP_SHARDS, **options)  # a fresh process: epoch not set yet
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert first + rest == full
    # the skip moved span starts: nothing before the resume point was read again
    assert sum(len(s) for s in resumed.reads) == len(full) - k
    # after the resumed pass, the next pass is a whole epoch again
    assert list(resumed) == full


def test_resume_state_checks(as_rank):
    as_rank(0, 2)
    dataset = SampleIds([10, 10], shuffle=True, seed=1)
    assert dataset.state_dict() == {
        "version": 1, "seed": 1, "shuffle": True, "drop_last": False,
        "epoch": 0, "yielded": 0, "context": None,
    }  # fmt: skip
    list(itertools.islice(iter(dataset), 3))
    state = dataset.state_dict()
    assert (state["yielded"], state["context"]) == (3, [0, 2, 0, 1])

    other_seed = SampleIds([10, 10], shuffle=True, seed=2)
    with pytest.raises(ValueError, match="saved with seed=1, this dataset has seed=2"):
        other_seed.load_state_dict(state)

    as_rank(0, 4)  # resumed with a different world size: cannot be exact
    moved = SampleIds([10, 10], shuffle=True, seed=1)
    moved.load_state_dict(state)
    with pytest.raises(ValueError, match="resume with the same world size"):
        list(moved)

    as_rank(0, 2)
    restarted = SampleIds([10, 10], shuffle=True, seed=1)
    restarted.load_state_dict(state)
    restarted.set_epoch(1)  # another epoch: the resume point does not apply
    assert len(list(restarted)) == 10


def test_resume_with_stateful_dataloader_and_workers(as_rank):
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    as_rank(1, 2)
    sizes = [1, 7, 0, 13, 2, 30, 6]
    options = {"seed": 8, "shuffle": True}

    def loader_for(dataset):
        return stateful.StatefulDataLoader(dataset, batch_size=3, num_workers=2)

    def ids(batches):
        return [(int(s), int(i)) for shard, index in batches for s, i in zip(shard, index)]

    dataset = SampleIds(sizes, **options)
    dataset.set_epoch(3)
    full = ids(loader_for(dataset))
    assert Counter(full) == Counter(expand(plan_epoch(sizes, epoch=3, world_size=2, **options)[1]))

    for k in (1, 4, 9):
        dataset = SampleIds(sizes, **options)
        dataset.set_epoch(3)
        loader = loader_for(dataset)
        batches = []
        for batch in loader:
            batches.append(batch)
            if len(batches) == k:
                break
        state = loader.state_dict()
        del loader

        resumed = SampleIds(sizes, **options)  # epoch comes from the state
        again = loader_for(resumed)
        again.load_state_dict(state)
        assert ids(batches) + ids(again) == full, f"resume after {k} batches"


# -- a real torchrun -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_ranks_two_workers_exactly_once(tmp_path):
    script = Path(__file__).with_name("ddp_worker.py")
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "GLOO_SOCKET_IFNAME": "lo",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(script), str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout}\n{proc.stderr}"

    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [(r["rank"], r["world_size"], r["env_rank"]) for r in records] == [(0, 2, "0"), (1, 2, "1")]
    n = sum(DDP_SHARDS)  # 59: odd, so padding repeats one sample and drop_last drops one
    everything = Counter((s, i) for s, size in enumerate(DDP_SHARDS) for i in range(size))
    orders = []
    for name, per_rank in (("padded", 30), ("drop_last", 29)):
        assert [r[name]["len"] for r in records] == [per_rank, per_rank]
        for epoch in range(DDP_EPOCHS):
            per = [[tuple(x) for x in r[name]["epochs"][str(epoch)]] for r in records]
            assert [len(p) for p in per] == [per_rank, per_rank]
            counts = Counter(per[0] + per[1])
            order = global_order(DDP_SHARDS, seed=11, epoch=epoch, shuffle=True)
            if name == "padded":
                assert counts - everything == Counter(order[:1])  # the one padded sample
                assert set(counts) == set(everything)
            else:
                assert everything - counts == Counter(order[n - 1 :])  # the one dropped sample
                assert max(counts.values()) == 1
            orders.append(per[0])
    assert orders[0] != orders[1]  # set_epoch reshuffled

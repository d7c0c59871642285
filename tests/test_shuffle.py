"""ShuffleDataset: bounded buffer, seeded per epoch, exactly once, with real DataLoaders."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import pytest
from ddp_worker import SampleIds
from torch.utils.data import DataLoader, IterableDataset

from torch_ipfs.shuffle import ShuffleDataset


class Numbers(IterableDataset):
    """``0 .. n-1`` (``n`` may depend on the epoch), recording how many items are in flight
    (pulled from here but not yet handed to the consumer) each time one is pulled."""

    def __init__(self, n_per_epoch: dict[int, int] | int) -> None:
        self.n_per_epoch = n_per_epoch
        self.epoch = 0
        self.delivered = 0  # the consumer counts what it received here
        self.in_flight: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        n = self.n_per_epoch if isinstance(self.n_per_epoch, int) else self.n_per_epoch[self.epoch]
        for i in range(n):
            self.in_flight.append(i + 1 - self.delivered)
            yield i


def consume(shuffle: ShuffleDataset, inner: Numbers) -> list[int]:
    inner.delivered = 0
    inner.in_flight.clear()
    out = []
    for item in shuffle:
        inner.delivered += 1
        out.append(item)
    return out


@pytest.mark.parametrize("n, buffer_size", [(0, 4), (3, 10), (10, 10), (11, 10), (200, 16), (50, 1)])
def test_every_item_once_and_the_buffer_never_holds_more_than_its_size(n, buffer_size):
    inner = Numbers(n)
    out = consume(ShuffleDataset(inner, buffer_size, seed=1), inner)
    assert sorted(out) == list(range(n))
    assert max(inner.in_flight, default=0) == min(n, buffer_size)
    if n > 2 and buffer_size > 1:
        assert out != list(range(n))


def test_buffer_does_not_shrink_after_a_short_epoch():
    inner = Numbers({0: 3, 1: 100, 2: 2, 3: 100})
    shuffle = ShuffleDataset(inner, 10, seed=0)
    for epoch, expected_peak in ((0, 3), (1, 10), (2, 2), (3, 10)):
        shuffle.set_epoch(epoch)  # forwarded to the wrapped dataset
        assert inner.epoch == epoch
        out = consume(shuffle, inner)
        assert sorted(out) == list(range(len(out)))
        assert max(inner.in_flight) == expected_peak, f"epoch {epoch}"


def test_order_is_a_function_of_seed_and_epoch():
    def order(seed, epoch, dataset=None):
        if dataset is None:
            dataset = ShuffleDataset(Numbers(100), 16, seed=seed)
        dataset.set_epoch(epoch)
        return list(dataset)

    assert order(3, 0) == order(3, 0)
    assert order(3, 0) != order(3, 1)
    assert order(3, 0) != order(4, 0)
    same = ShuffleDataset(Numbers(100), 16, seed=3)
    assert order(3, 1, same) == order(3, 1, same) == order(3, 1)  # set_epoch pins the order


def test_without_set_epoch_passes_differ_but_replay_from_the_seed():
    first = ShuffleDataset(Numbers(60), 8, seed=5)
    passes = [list(first) for _ in range(3)]
    assert len({tuple(p) for p in passes}) == 3
    assert all(sorted(p) == list(range(60)) for p in passes)
    second = ShuffleDataset(Numbers(60), 8, seed=5)
    assert [list(second) for _ in range(3)] == passes
    assert first.epoch is None


def test_invalid_arguments():
    with pytest.raises(ValueError, match="buffer_size must be an integer >= 1, got 0"):
        ShuffleDataset(Numbers(3), 0)
    with pytest.raises(ValueError, match="seed must be an integer"):
        ShuffleDataset(Numbers(3), 2, seed="a")
    with pytest.raises(ValueError, match="epoch must be an integer >= 0"):
        ShuffleDataset(Numbers(3), 2).set_epoch(-1)
    state = ShuffleDataset(Numbers(3), 2, seed=1).state_dict()
    with pytest.raises(ValueError, match="saved with buffer_size=2, this ShuffleDataset has buffer_size=3"):
        ShuffleDataset(Numbers(3), 3, seed=1).load_state_dict(state)


# -- with DataLoader workers over a splitting dataset --------------------------------------------

SIZES = [4, 17, 0, 9, 30]


def ids(loader) -> list[tuple[int, int]]:
    return [tuple(x) for x in loader]


def test_with_workers_every_item_once_and_orders_by_epoch(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    everything = sorted((s, i) for s, n in enumerate(SIZES) for i in range(n))

    def epoch_order(epoch):
        dataset = ShuffleDataset(SampleIds(SIZES, shuffle=True, seed=2), 8, seed=2)
        dataset.set_epoch(epoch)
        return ids(DataLoader(dataset, batch_size=None, num_workers=2))

    orders = [epoch_order(0), epoch_order(1), epoch_order(0)]
    assert all(sorted(o) == everything for o in orders)
    assert orders[0] == orders[2]
    assert orders[0] != orders[1]


def test_passes_differ_with_workers_and_without_set_epoch(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    everything = sorted((s, i) for s, n in enumerate(SIZES) for i in range(n))
    for persistent in (False, True):
        dataset = ShuffleDataset(SampleIds(SIZES), 8, seed=2)
        loader = DataLoader(dataset, batch_size=None, num_workers=2, persistent_workers=persistent)
        passes = [ids(loader) for _ in range(3)]
        assert all(sorted(p) == everything for p in passes)
        assert len({tuple(p) for p in passes}) == 3, f"persistent_workers={persistent}"


# -- resume ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("set_epoch", [True, False])
@pytest.mark.parametrize("k", [0, 1, 25, 59, 60])
def test_resume_without_workers_continues_exactly(k, set_epoch, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")

    def make():
        dataset = ShuffleDataset(SampleIds(SIZES, shuffle=True, seed=1), 8, seed=4)
        if set_epoch:
            dataset.set_epoch(2)
        return dataset

    reference = make()
    list(reference)  # a first pass: without set_epoch the second pass has another order
    full = list(reference)
    assert len(full) == sum(SIZES)

    interrupted = make()
    list(interrupted)
    first = list(itertools.islice(iter(interrupted), k))
    state = json.loads(json.dumps(interrupted.state_dict()))

    resumed = ShuffleDataset(SampleIds(SIZES, shuffle=True, seed=1), 8, seed=4)
    resumed.load_state_dict(state)
    assert first + list(resumed) == full


def test_resume_with_stateful_dataloader_and_workers(monkeypatch):
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")

    def make():
        dataset = ShuffleDataset(SampleIds(SIZES, shuffle=True, seed=1), 6, seed=9)
        dataset.set_epoch(1)
        return stateful.StatefulDataLoader(dataset, batch_size=4, num_workers=2)

    def flat(batches):
        return [(int(s), int(i)) for shard, index in batches for s, i in zip(shard, index)]

    full = flat(make())
    assert len(full) == 30  # ceil(60 / 2)
    for k in (1, 3, 6):
        loader = make()
        batches = list(itertools.islice(iter(loader), k))
        state = loader.state_dict()
        del loader
        again = stateful.StatefulDataLoader(
            ShuffleDataset(SampleIds(SIZES, shuffle=True, seed=1), 6, seed=9), batch_size=4, num_workers=2
        )
        again.load_state_dict(state)
        rest = flat(again)
        assert flat(batches) + rest == full, f"resume after {k} batches"
        assert not Counter(flat(batches)) & Counter(rest)

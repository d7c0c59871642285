"""A bounded, seeded shuffle buffer over any iterable dataset.

Streaming datasets read shards sequentially; :class:`ShuffleDataset` mixes samples
within a window of ``buffer_size`` items, the way ``tf.data`` / WebDataset shuffle
buffers do, with three properties those often lack (see ``docs/ddp.md``):

- the buffer never holds more than ``buffer_size`` items, and that bound is a constant
  (it never shrinks after a short epoch);
- the order is a pure function of ``(seed, epoch, rank, worker id)`` -- or, while
  ``set_epoch`` has never been called, of a per-worker pass counter instead of the
  epoch, so successive passes differ but a fresh process replays the same orders;
- resume is exact: the state records how many items this worker yielded and the wrapped
  dataset's state at the start of the pass; a resumed pass replays the pass and drops
  the items already yielded.

Splitting over ranks and workers is the wrapped dataset's job (e.g. a
:class:`~torch_ipfs.sharding.ShardedIterableDataset`); this wrapper shuffles whatever
share the wrapped dataset yields in the current worker.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from typing import Any

from torch.utils.data import IterableDataset

from torch_ipfs.sharding import SharedInts, check_int, epoch_seed, reader_context

__all__ = ["ShuffleDataset"]

#: Version of the dict :meth:`ShuffleDataset.state_dict` returns.
STATE_VERSION = 1
#: Pass counters kept in shared memory, one per DataLoader worker id (modulo this).
_PASS_SLOTS = 64
_AUTO = -1  # epoch value meaning "set_epoch never called"
_END = object()


def shuffled(items: Iterable[Any], buffer_size: int, rng: random.Random) -> Iterator[Any]:
    """``items`` in buffered random order, holding at most ``buffer_size`` of them.

    When the buffer is full, a random slot is yielded *before* the next item is pulled into
    it, so pulled-minus-yielded never exceeds ``buffer_size``. The tail is drained in
    random order.
    """
    it = iter(items)
    buf: list[Any] = []
    for item in it:
        buf.append(item)
        if len(buf) == buffer_size:
            break
    if len(buf) == buffer_size:
        while True:
            j = rng.randrange(buffer_size)
            out, buf[j] = buf[j], None
            yield out
            nxt = next(it, _END)
            if nxt is _END:
                buf[j] = buf[-1]
                buf.pop()
                break
            buf[j] = nxt
    rng.shuffle(buf)
    while buf:
        yield buf.pop()


class ShuffleDataset(IterableDataset):
    """Shuffle ``dataset`` through a buffer of at most ``buffer_size`` items.

    ``set_epoch(e)`` fixes the order to that of ``(seed, e)`` (and is forwarded to the
    wrapped dataset); without it each pass in a worker gets the next order of a seeded
    sequence. Every item the wrapped dataset yields in a pass is yielded exactly once.
    """

    def __init__(self, dataset: Iterable[Any], buffer_size: int, seed: int = 0) -> None:
        super().__init__()
        self.dataset = dataset
        self.buffer_size = check_int("buffer_size", buffer_size, 1)
        self.seed = check_int("seed", seed, None)
        # [epoch or _AUTO, pass counter of worker slot 0, 1, ...], shared with workers so
        # set_epoch reaches persistent workers and pass counts survive worker restarts.
        self._shared = SharedInts([_AUTO] + [0] * _PASS_SLOTS)
        self._progress: dict[str, Any] | None = None
        self._resume: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.dataset!r}, buffer_size={self.buffer_size}, seed={self.seed})"

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    @property
    def epoch(self) -> int | None:
        """The epoch set by :meth:`set_epoch`, or ``None`` if it was never called."""
        epoch = self._shared[0]
        return None if epoch == _AUTO else epoch

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``(seed, epoch)`` from the next pass on, here and in workers."""
        self._shared[0] = check_int("epoch", epoch, 0)
        if self._progress is not None and self._progress["epoch"] != epoch:
            self._progress = None
        set_inner = getattr(self.dataset, "set_epoch", None)
        if callable(set_inner):
            set_inner(epoch)

    # -- iteration

    def _inner_state(self) -> Any:
        state_dict = getattr(self.dataset, "state_dict", None)
        return state_dict() if callable(state_dict) else None

    def __iter__(self) -> Iterator[Any]:
        context = reader_context()
        slot = 1 + context[2] % _PASS_SLOTS
        resume, self._resume = self._resume, None
        skip = 0
        if resume is not None:
            if resume["yielded"] and resume["context"] != list(context):
                raise ValueError(
                    f"cannot resume: the shuffle state was saved by (rank, world_size, worker_id, "
                    f"num_workers)={resume['context']} but is loaded by {list(context)}"
                )
            epoch, pass_no, skip = resume["epoch"], resume["pass"], resume["yielded"]
            if resume["inner"] is not None:
                self.dataset.load_state_dict(resume["inner"])  # type: ignore[attr-defined]
            elif epoch != _AUTO and callable(getattr(self.dataset, "set_epoch", None)):
                self.dataset.set_epoch(epoch)  # type: ignore[attr-defined]
        else:
            epoch = self._shared[0]
            pass_no = self._shared[slot] if epoch == _AUTO else 0
        if epoch == _AUTO:
            self._shared[slot] = pass_no + 1
        # Everything here runs at iter(), not at the first next(): StatefulDataLoader takes a
        # state right after iter(), and it must describe this pass. Likewise the wrapped
        # dataset's state is taken right after its iter(): the start of its pass.
        items = iter(self.dataset)
        progress = {
            "epoch": epoch,
            "pass": pass_no,
            "yielded": 0,
            "context": list(context),
            "inner": self._inner_state(),
        }
        self._progress = progress
        rank, _, worker, _ = context
        rng = random.Random(epoch_seed(self.seed, epoch, pass_no, rank, worker))
        return self._pass(shuffled(items, self.buffer_size, rng), progress, skip)

    @staticmethod
    def _pass(items: Iterator[Any], progress: dict[str, Any], skip: int) -> Iterator[Any]:
        for item in items:
            progress["yielded"] += 1
            if progress["yielded"] > skip:  # replaying a resumed pass: drop what was delivered
                yield item

    # -- resume

    def state_dict(self) -> dict[str, Any]:
        """``{"version", "seed", "buffer_size", "epoch", "pass", "yielded", "context",
        "inner"}``: the pass in progress (or last finished, or a loaded one not started)."""
        if self._resume is not None:
            progress = self._resume
        elif self._progress is not None:
            progress = self._progress
        else:
            epoch = self._shared[0]
            context = reader_context()
            pass_no = self._shared[1 + context[2] % _PASS_SLOTS] if epoch == _AUTO else 0
            progress = {
                "epoch": epoch,
                "pass": pass_no,
                "yielded": 0,
                "context": None,
                "inner": self._inner_state(),
            }
        return {"version": STATE_VERSION, "seed": self.seed, "buffer_size": self.buffer_size, **progress}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next pass continue the saved one exactly (it re-reads the wrapped
        dataset from the start of the saved pass and drops the ``yielded`` items)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"unsupported shuffle state version {state.get('version')!r} (expected {STATE_VERSION})"
            )
        for name in ("seed", "buffer_size"):
            if state[name] != getattr(self, name):
                raise ValueError(
                    f"cannot resume: the state was saved with {name}={state[name]!r}, "
                    f"this ShuffleDataset has {name}={getattr(self, name)!r}"
                )
        if state["inner"] is not None and not callable(getattr(self.dataset, "load_state_dict", None)):
            raise ValueError(
                f"cannot resume: the state has a wrapped-dataset state but {self.dataset!r} "
                "has no load_state_dict"
            )
        keys = ("epoch", "pass", "yielded", "context", "inner")
        self._resume = {k: state[k] for k in keys}
        self._shared[0] = state["epoch"]
        self._progress = None

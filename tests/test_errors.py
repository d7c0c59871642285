"""Every torch_ipfs error crosses a process boundary intact: pickle (multiprocessing,
futures) and the DataLoader's re-raise of a worker's exception."""

from __future__ import annotations

import inspect
import pickle

import pytest
from torch.utils.data import DataLoader, Dataset

from torch_ipfs import errors
from torch_ipfs.cid import CID

CID_A = CID.compute(b"a block")


def _example(cls: type[errors.IPFSError]) -> errors.IPFSError:
    """An instance built through the class's own constructor, with a value per parameter."""
    args: list[object] = []
    kwargs: dict[str, object] = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = str(param.annotation)
        if name == "cid":
            value: object = CID_A
        elif name == "tried":
            value = ["local store", "gateway http://127.0.0.1:1"]
        elif annotation.startswith("int") or name in ("size", "limit", "code", "index"):
            value = 7
        else:
            value = f"<{name}>"
        if param.kind == param.KEYWORD_ONLY:
            kwargs[name] = value
        else:
            args.append(value)
    if not args and not kwargs:
        args = [f"{cls.__name__} happened"]
    return cls(*args, **kwargs)


ERROR_TYPES = sorted(
    {obj for obj in vars(errors).values() if isinstance(obj, type) and issubclass(obj, errors.IPFSError)},
    key=lambda c: c.__name__,
)


def test_every_error_type_is_covered():
    assert {c.__name__ for c in ERROR_TYPES} >= set(errors.__all__)


@pytest.mark.parametrize("cls", ERROR_TYPES, ids=lambda c: c.__name__)
def test_pickles_to_an_equal_message_and_attributes(cls):
    err = _example(cls)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls
    assert str(back) == str(err) and back.args == err.args
    assert vars(back) == vars(err)


@pytest.mark.parametrize("cls", ERROR_TYPES, ids=lambda c: c.__name__)
def test_rebuilt_from_a_message_alone_says_that_message(cls):
    # What torch's DataLoader does with a worker's exception: type(e)(message=text).
    err = cls(message="Caught it in DataLoader worker process 1.\nOriginal Traceback: ...")
    assert type(err) is cls
    assert str(err) == "Caught it in DataLoader worker process 1.\nOriginal Traceback: ..."


class _Raising(Dataset):
    def __init__(self, error: Exception) -> None:
        self.error = error

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int):
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        errors.BlockNotFoundError(CID_A, ["local store"], "add a source"),
        errors.SourceUnavailableError("block x unavailable: ConnectError", source="http://127.0.0.1:1"),
        errors.IntegrityError(CID_A, "http://127.0.0.1:1", "content hash does not match"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_dataloader_worker_reraises_the_type_and_the_original_message(error):
    loader = DataLoader(_Raising(error), num_workers=1)
    with pytest.raises(type(error)) as info:
        for _ in loader:
            pass
    text = str(info.value)
    assert text.startswith(f"Caught {type(error).__name__} in DataLoader worker process 0.")
    assert str(error) in text
    assert "block Caught" not in text  # the message is not fed back in as a CID

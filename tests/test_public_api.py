"""The public surface: one sorted ``__all__``, every name importable, nothing heavy on import."""

import subprocess
import sys

import torch_ipfs


def test_all_is_sorted_and_unique():
    assert torch_ipfs.__all__ == sorted(set(torch_ipfs.__all__))


def test_every_public_name_resolves():
    missing = [name for name in torch_ipfs.__all__ if getattr(torch_ipfs, name, None) is None]
    assert missing == []


def test_unknown_names_raise_attribute_error():
    try:
        torch_ipfs.no_such_thing  # noqa: B018
    except AttributeError as e:
        assert "no_such_thing" in str(e)
    else:
        raise AssertionError("expected AttributeError")


def test_importing_the_package_does_not_import_torch():
    code = "import sys, torch_ipfs; torch_ipfs.CID; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

"""The timeout, retry-budget and Kubo-offline settings: environment parsing, defaults,
and the client that datasets build (and its DataLoader workers) using them."""

from __future__ import annotations

import pickle

import pytest

from torch_ipfs.client import Client
from torch_ipfs.config import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_RETRY_BUDGET,
    Settings,
)


def test_defaults():
    s = Settings.from_env({})
    assert (s.connect_timeout, s.read_timeout, s.retry_budget, s.kubo_offline) == (5.0, 15.0, 60.0, False)
    assert (DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT, DEFAULT_RETRY_BUDGET) == (5.0, 15.0, 60.0)


def test_values_from_the_environment():
    s = Settings.from_env({
        "TORCH_IPFS_CONNECT_TIMEOUT": "2.5", "TORCH_IPFS_READ_TIMEOUT": " 40 ",
        "TORCH_IPFS_RETRY_BUDGET": "0", "TORCH_IPFS_KUBO_OFFLINE": "Yes",
    })
    assert (s.connect_timeout, s.read_timeout, s.retry_budget, s.kubo_offline) == (2.5, 40.0, 0.0, True)
    assert Settings.from_env({"TORCH_IPFS_KUBO_OFFLINE": "off"}).kubo_offline is False


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("TORCH_IPFS_RETRY_BUDGET", "-1", "TORCH_IPFS_RETRY_BUDGET: seconds must be a finite number >= 0"),
        ("TORCH_IPFS_RETRY_BUDGET", "inf", "TORCH_IPFS_RETRY_BUDGET: seconds must be a finite number >= 0"),
        ("TORCH_IPFS_RETRY_BUDGET", "nan", "TORCH_IPFS_RETRY_BUDGET: seconds must be a finite number >= 0"),
        ("TORCH_IPFS_READ_TIMEOUT", "soon", "TORCH_IPFS_READ_TIMEOUT: invalid number of seconds 'soon'"),
        ("TORCH_IPFS_CONNECT_TIMEOUT", "0", "TORCH_IPFS_CONNECT_TIMEOUT and TORCH_IPFS_READ_TIMEOUT must be"),
        ("TORCH_IPFS_KUBO_OFFLINE", "maybe", "TORCH_IPFS_KUBO_OFFLINE: expected 1/true/yes/on or 0/false"),
    ],
)
def test_bad_values_name_the_variable(name, value, message):
    with pytest.raises(ValueError) as info:
        Settings.from_env({name: value})
    assert str(info.value).startswith(message)


def test_the_client_datasets_build_uses_the_settings_and_workers_inherit_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_IPFS_RETRY_BUDGET", "12")
    monkeypatch.setenv("TORCH_IPFS_CONNECT_TIMEOUT", "1.5")
    monkeypatch.setenv("TORCH_IPFS_READ_TIMEOUT", "7")
    with Client(home=tmp_path, api="", gateways=["http://127.0.0.1:1"]) as client:
        (gateway,) = client._remote
        assert (gateway.retry_budget, gateway.connect_timeout, gateway.stall_timeout) == (12.0, 1.5, 7.0)
        assert client.settings["retry_budget"] == 12.0
    with Client(home=tmp_path, api="", gateways=["http://127.0.0.1:1"], retry_budget=3) as client:
        monkeypatch.setenv("TORCH_IPFS_RETRY_BUDGET", "99")  # a spawned worker keeps the client's value
        clone = pickle.loads(pickle.dumps(client))
        assert clone.retry_budget == 3.0 and clone._remote[0].retry_budget == 3.0
        clone.close()
    with pytest.raises(ValueError, match="retry_budget"):
        Client(home=tmp_path, api="", gateways=[], retry_budget=-1)

"""Where torch_ipfs keeps its data, and the settings read from the environment.

=========================  ===========================================================
``TORCH_IPFS_HOME``        directory of the embedded store (default: the user cache dir,
                           ``$XDG_CACHE_HOME/torch_ipfs`` or ``~/.cache/torch_ipfs``)
``TORCH_IPFS_API``         a Kubo RPC address (multiaddr or URL); unset or empty = none
``TORCH_IPFS_GATEWAYS``    comma-separated trustless gateway base URLs; unset = none
``TORCH_IPFS_CACHE_BYTES`` size limit of the disk cache in front of remote sources
                           (``10737418240``, ``10G``, ``512MiB``; default 10 GiB)
``TORCH_IPFS_CONNECT_TIMEOUT`` seconds to wait for a TCP connection (default 5)
``TORCH_IPFS_READ_TIMEOUT`` seconds without a byte before an attempt fails (default 15)
``TORCH_IPFS_RETRY_BUDGET`` seconds a block read keeps retrying a source that is down
                           (connection refused, 5xx, 429, stall) before it fails; 0 = one
                           attempt (default 60: rides out a gateway or node restart)
``TORCH_IPFS_KUBO_OFFLINE`` ``1``/``true``: ask the Kubo node for blocks it already has
                           only, so a missing block fails at once (default off)
``TORCH_IPFS_MAX_SAMPLE_BYTES``
                           the largest sample a dataset reads (sizes as above; default
                           256 MiB); a larger one is a ``SampleTooLargeError``
=========================  ===========================================================

docs/sources.md explains the defaults.

Nothing here touches the disk or the network: it only reads the environment.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_SAMPLE_BYTES",
    "DEFAULT_READ_TIMEOUT",
    "DEFAULT_RETRY_BUDGET",
    "Settings",
    "default_home",
    "env_mebibytes",
    "max_sample_bytes",
    "parse_size",
]

ENV_HOME = "TORCH_IPFS_HOME"
ENV_API = "TORCH_IPFS_API"
ENV_GATEWAYS = "TORCH_IPFS_GATEWAYS"
ENV_CACHE_BYTES = "TORCH_IPFS_CACHE_BYTES"
ENV_CONNECT_TIMEOUT = "TORCH_IPFS_CONNECT_TIMEOUT"
ENV_READ_TIMEOUT = "TORCH_IPFS_READ_TIMEOUT"
ENV_RETRY_BUDGET = "TORCH_IPFS_RETRY_BUDGET"
ENV_KUBO_OFFLINE = "TORCH_IPFS_KUBO_OFFLINE"
ENV_MAX_SAMPLE_BYTES = "TORCH_IPFS_MAX_SAMPLE_BYTES"

#: Default size limit of the disk cache in front of remote sources.
DEFAULT_CACHE_BYTES = 10 * 1024**3
#: A loopback or LAN host connects in milliseconds; 5 s covers a busy remote one.
DEFAULT_CONNECT_TIMEOUT = 5.0
#: No byte for this long = the attempt failed (a hung server or a node searching for a
#: block it lacks); a healthy source sends a 256 KiB block far sooner.
DEFAULT_READ_TIMEOUT = 15.0
#: How long one block read retries a source that is down before it fails: a gateway or
#: node restart (tens of seconds) must not kill a training job.
DEFAULT_RETRY_BUDGET = 60.0

#: Default per-sample byte limit: far above any real image, clip or text sample (video
#: datasets raise it), far below what a hostile 2^50-byte "file" would take.
DEFAULT_MAX_SAMPLE_BYTES = 256 * 1024**2

_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)


def default_home(environ: Mapping[str, str] | None = None) -> Path:
    """The embedded store's directory: ``$TORCH_IPFS_HOME``, else ``torch_ipfs`` in the
    user's cache directory (``$XDG_CACHE_HOME`` when it is an absolute path, as the XDG
    spec asks, else ``~/.cache``)."""
    env = os.environ if environ is None else environ
    home = env.get(ENV_HOME, "").strip()
    if home:
        return Path(home).expanduser()
    xdg = env.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "torch_ipfs"


def parse_seconds(name: str, text: str, default: float) -> float:
    """A non-negative number of seconds from an environment variable (``""`` = default)."""
    text = text.strip()
    if not text:
        return default
    try:
        return seconds(text)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


def seconds(text: str) -> float:
    """A finite number of seconds >= 0 (``"2.5"``); :class:`ValueError` saying why not."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"invalid number of seconds {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"seconds must be a finite number >= 0, got {text!r}")
    return value


def parse_bool(name: str, text: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (``""`` = false), case-insensitive."""
    value = text.strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{name}: expected 1/true/yes/on or 0/false/no/off, got {text!r}")


def env_mebibytes(name: str, environ: Mapping[str, str] | None = None) -> int | None:
    """Environment variable ``name``, a number of MiB (``"0.5"``, ``"512"``), in bytes
    (below 0 counts as 0); None when it is unset or blank. :class:`ValueError` naming the
    variable otherwise."""
    raw = (os.environ if environ is None else environ).get(name)
    if raw is None or not raw.strip():
        return None
    try:
        return max(0, int(float(raw) * 1024 * 1024))
    except ValueError:
        raise ValueError(f"{name} must be a number of MiB, got {raw!r}") from None


def parse_size(text: str | int) -> int:
    """Parse a byte count: ``1048576``, ``10G``/``10GB`` (powers of 1000) or
    ``512MiB``/``512Mi`` (powers of 1024). Raises :class:`ValueError` naming the input."""
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"invalid size {text!r}: must not be negative")
        return text
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"invalid size {text!r}: expected a byte count such as 1048576, 10G or 512MiB")
    number, unit, binary = int(m.group(1)), m.group(2).lower(), m.group(3)
    if binary and not unit:
        raise ValueError(f"invalid size {text!r}: 'i' needs a unit (KiB, MiB, GiB, TiB)")
    scale = 1024 ** ("kmgt".index(unit) + 1) if binary else _UNITS[unit]
    return number * scale


@dataclass(frozen=True)
class Settings:
    """The configuration a client is built from (see the module docstring for the variables).

    ``api`` is ``None`` when no Kubo node is configured; ``gateways`` is empty when no
    gateway is: public gateways are never used unless listed here. The timeouts and the
    retry budget (seconds) apply to the Kubo and the gateway source alike.
    """

    home: Path
    api: str | None = None
    gateways: list[str] = field(default_factory=list)
    cache_bytes: int = DEFAULT_CACHE_BYTES
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    retry_budget: float = DEFAULT_RETRY_BUDGET
    kubo_offline: bool = False
    max_sample_bytes: int = DEFAULT_MAX_SAMPLE_BYTES

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (default ``os.environ``)."""
        env = os.environ if environ is None else environ
        api = env.get(ENV_API, "").strip() or None
        gateways = [g.strip() for g in env.get(ENV_GATEWAYS, "").split(",") if g.strip()]
        raw_cache = env.get(ENV_CACHE_BYTES, "").strip()
        try:
            cache_bytes = parse_size(raw_cache) if raw_cache else DEFAULT_CACHE_BYTES
        except ValueError as e:
            raise ValueError(f"{ENV_CACHE_BYTES}: {e}") from None
        connect = parse_seconds(
            ENV_CONNECT_TIMEOUT, env.get(ENV_CONNECT_TIMEOUT, ""), DEFAULT_CONNECT_TIMEOUT
        )
        read = parse_seconds(ENV_READ_TIMEOUT, env.get(ENV_READ_TIMEOUT, ""), DEFAULT_READ_TIMEOUT)
        if connect == 0 or read == 0:
            raise ValueError(f"{ENV_CONNECT_TIMEOUT} and {ENV_READ_TIMEOUT} must be > 0")
        return cls(
            home=default_home(env),
            api=api,
            gateways=gateways,
            cache_bytes=cache_bytes,
            connect_timeout=connect,
            read_timeout=read,
            retry_budget=parse_seconds(ENV_RETRY_BUDGET, env.get(ENV_RETRY_BUDGET, ""), DEFAULT_RETRY_BUDGET),
            kubo_offline=parse_bool(ENV_KUBO_OFFLINE, env.get(ENV_KUBO_OFFLINE, "")),
            max_sample_bytes=max_sample_bytes(env),
        )


def max_sample_bytes(environ: Mapping[str, str] | None = None) -> int:
    """The per-sample byte limit: ``$TORCH_IPFS_MAX_SAMPLE_BYTES`` (``256MiB``, ``1G``,
    a byte count) or :data:`DEFAULT_MAX_SAMPLE_BYTES`. Read on every call, so a change
    of the variable applies to the next sample."""
    env = os.environ if environ is None else environ
    raw = env.get(ENV_MAX_SAMPLE_BYTES, "").strip()
    if not raw:
        return DEFAULT_MAX_SAMPLE_BYTES
    return _parse_limit(raw)


@functools.lru_cache(maxsize=8)  # the same few strings, once per sample
def _parse_limit(raw: str) -> int:
    try:
        return parse_size(raw)
    except ValueError as e:
        raise ValueError(f"{ENV_MAX_SAMPLE_BYTES}: {e}") from None

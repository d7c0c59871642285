"""Retrying a remote source by time, not by attempts, and saying so once.

A training job must ride out a gateway or node restart: a block read that fails for a
reason that may pass (a refused connection, a 5xx, a 429) is retried with exponential
back-off and jitter until its *retry budget* (seconds) is spent. :class:`OutageLog`
makes the log say "waiting" once per outage and "back" once when it ends, however many
blocks and threads are waiting meanwhile. :class:`Refused` marks the answers no retry
can change.
"""

from __future__ import annotations

import logging
import random
import threading
import time

from torch_ipfs.errors import SourceUnavailableError

__all__ = ["OutageLog", "Refused", "backoff_delay"]


class Refused(SourceUnavailableError):
    """An answer that asking again will not change, so it is never retried: a redirect
    (never followed: it could lead to a host nobody configured), a 4xx other than
    404/410/429 (401/403 from Kubo included), a server that is not a trustless gateway."""


def backoff_delay(round_no: int, base: float, cap: float, rng: random.Random) -> float:
    """The wait before retry ``round_no`` (1, 2, ...): ``base * 2**(round_no-1)`` capped at
    ``cap``, scaled by a random 50-100 % so readers that failed together do not retry
    together."""
    return min(base * 2 ** (round_no - 1), cap) * (0.5 + 0.5 * rng.random())


class OutageLog:
    """One warning when a source starts failing, one when it answers again, and for a
    source that flaps (fails, answers, fails...) at most one pair per ``quiet`` seconds."""

    def __init__(self, logger: logging.Logger, name: str, *, quiet: float = 60.0) -> None:
        self.logger, self.name, self.quiet = logger, name, quiet
        self._lock = threading.Lock()
        self._since: float | None = None  # start of the current outage
        self._logged = False  # whether the current outage was reported
        self._last_report = -float("inf")

    @property
    def waiting(self) -> bool:
        return self._since is not None

    def started(self, cause: str, budget: float) -> None:
        now = time.monotonic()
        with self._lock:
            if self._since is not None:
                return
            self._since = now
            self._logged = now - self._last_report >= self.quiet
            if self._logged:
                self._last_report = now
        if self._logged:
            self.logger.warning(
                "%s: cannot fetch blocks (%s); retrying each block for up to %g s", self.name, cause, budget
            )

    def ended(self) -> None:
        if self._since is None:  # the common case: no lock on the hot path
            return
        with self._lock:
            since, self._since = self._since, None
            logged, self._logged = self._logged, False
        if since is not None and logged:
            self.logger.warning("%s answers again after %.1f s", self.name, time.monotonic() - since)

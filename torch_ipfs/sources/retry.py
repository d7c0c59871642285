"""Retrying a remote source by time, not by attempts, and saying so once.

A training job must ride out a gateway or node restart: a block read that fails for a
reason that may pass (a refused connection, a 5xx, a 429) is retried with exponential
back-off and jitter until its *retry budget* (seconds) is spent. :class:`OutageLog`
makes the log say "waiting" once per outage and "back" once when it ends, however many
blocks and threads are waiting meanwhile.
"""

from __future__ import annotations

import logging
import random
import threading
import time

__all__ = ["OutageLog", "backoff_delay"]


def backoff_delay(round_no: int, base: float, cap: float, rng: random.Random) -> float:
    """The wait before retry ``round_no`` (1, 2, ...): ``base * 2**(round_no-1)`` capped at
    ``cap``, scaled by a random 50-100 % so readers that failed together do not retry
    together."""
    return min(base * 2 ** (round_no - 1), cap) * (0.5 + 0.5 * rng.random())


class OutageLog:
    """One warning when a source starts failing, one when it answers again."""

    def __init__(self, logger: logging.Logger, name: str) -> None:
        self.logger, self.name = logger, name
        self._lock = threading.Lock()
        self._since: float | None = None

    @property
    def waiting(self) -> bool:
        return self._since is not None

    def started(self, cause: str, budget: float) -> None:
        with self._lock:
            if self._since is not None:
                return
            self._since = time.monotonic()
        self.logger.warning(
            "%s: cannot fetch blocks (%s); retrying each block for up to %g s", self.name, cause, budget
        )

    def ended(self) -> None:
        if self._since is None:  # the common case: no lock on the hot path
            return
        with self._lock:
            since, self._since = self._since, None
        if since is not None:
            self.logger.warning("%s answers again after %.1f s", self.name, time.monotonic() - since)

"""Handing items from a producer thread to a consumer through a bounded queue, without
the producer hanging on a full queue once the consumer has gone away."""

from __future__ import annotations

import queue
import threading

__all__ = ["put_until_stopped"]


def put_until_stopped(q: queue.Queue, item: object, stop: threading.Event, poll: float = 0.1) -> bool:
    """Put ``item`` into ``q``, waiting while it is full; False (not put) once ``stop`` is set."""
    while not stop.is_set():
        try:
            q.put(item, timeout=poll)
            return True
        except queue.Full:
            continue
    return False

"""One limit on the tasks that run at once in several process pools together."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

__all__ = ["Slots"]


class Slots:
    """At most ``limit`` tasks running at once across the pools that share it; the rest queue.

    A pool takes a slot before it hands a task to a worker and gives it back when
    the task ends; a slot given back wakes every pool, so whichever has work runs it.
    """

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit if limit else (os.cpu_count() or 1)
        if self.limit < 1:
            raise ValueError("a parallel limit needs at least one slot")
        self._lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self._wakers: list[Callable[[], None]] = []

    def attach(self, wake: Callable[[], None]) -> None:
        """Call ``wake()`` (a pool's) whenever a slot frees."""
        with self._lock:
            self._wakers.append(wake)

    def detach(self, wake: Callable[[], None]) -> None:
        """Stop calling ``wake``."""
        with self._lock:
            if wake in self._wakers:
                self._wakers.remove(wake)

    def try_take(self) -> bool:
        """Take a slot if one is free."""
        with self._lock:
            if self.running >= self.limit:
                return False
            self.running += 1
            self.peak = max(self.peak, self.running)
            return True

    def give_back(self) -> None:
        """Free a slot and wake the pools that may have work waiting for it."""
        with self._lock:
            self.running -= 1
            wakers = list(self._wakers)
        for wake in wakers:
            wake()

"""A plugin for the benchmarks: a non-blocking action that counts the hook runs calling it."""

from __future__ import annotations

import time

from platybus.extensions import Plugin, action


class CounterPlugin(Plugin):
    """``counter.count(n)``: remembers every ``n`` seen, how many calls, and the last one's time."""

    def start(self) -> None:
        """Start with nothing counted."""
        self.seen: set[int] = set()
        self.calls = 0
        self.last = 0.0

    @action(blocking=False)
    def count(self, n: int) -> None:
        """Count one run for event number ``n``."""
        self.seen.add(n)
        self.calls += 1
        self.last = time.time()

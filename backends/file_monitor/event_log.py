"""The file monitor's event log lines, limited to a rate, with a summary of the rest."""

from __future__ import annotations

import logging
from collections import Counter


class EventLog:
    """One INFO line per event, up to ``rate`` a second; a summary line for the rest."""

    def __init__(self, log: logging.Logger, rate: int, enabled: bool) -> None:
        self._log = log
        self._rate = rate
        self._enabled = enabled
        self._window = 0.0
        self._lines = 0
        self._skipped: Counter[str] = Counter()

    def record(self, kind: str, text: str, now: float) -> None:
        """Log one event line, or count it for the next summary."""
        if not self._enabled:
            return
        if now - self._window >= 1.0:
            self.summarize(now)
            self._window = now
            self._lines = 0
        if self._lines < self._rate:
            self._lines += 1
            self._log.info("%s %s", kind, text)
        else:
            self._skipped[kind] += 1

    def next_deadline(self) -> float | None:
        """When the next summary line is due, if events were skipped."""
        return self._window + 1.0 if self._skipped else None

    def tick(self, now: float) -> None:
        """Write the summary line once its second is over."""
        if self._skipped and now - self._window >= 1.0:
            self.summarize(now)
            self._window = now
            self._lines = 0

    def summarize(self, now: float) -> None:
        """Write one line summing up the skipped events."""
        if not self._skipped:
            return
        total = sum(self._skipped.values())
        detail = ", ".join(f"{k} {n}" for k, n in sorted(self._skipped.items()))
        self._log.info("... and %d more file events in %.1fs (%s)", total,
                       max(now - self._window, 1.0), detail)
        self._skipped.clear()

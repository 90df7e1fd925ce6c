"""A started file monitor on a real bus, and a recorder of the events it publishes."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest
from platybus.backends.file_monitor import FileMonitorBackend

from platybus.bus import Bus
from platybus.messages import Event


class Recorder:
    """Collects every ``file.*`` event a bus delivers, and waits for conditions on them."""

    def __init__(self, bus: Bus) -> None:
        self.events: list[Event] = []
        self._cond = threading.Condition()
        bus.subscribe("file.*", self._record)

    def _record(self, event: Event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Block until ``predicate()`` holds; fail the test after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"timed out; events so far: {self.summary()}")
                self._cond.wait(min(left, 0.05))  # also re-check state that is not an event

    def wait_for(self, type_: str, relative: str, timeout: float = 5.0) -> Event:
        """Wait for an event of ``type_`` about ``relative`` and return it."""
        self.wait(lambda: self.find(type_, relative) is not None, timeout)
        found = self.find(type_, relative)
        assert found is not None
        return found

    def find(self, type_: str, relative: str) -> Event | None:
        """The first event of ``type_`` about ``relative``, if any."""
        with self._cond:
            for event in self.events:
                if event.type == type_ and event.data.relative == relative:
                    return event
        return None

    def paths(self, type_: str) -> list[str]:
        """The relative paths of every event of ``type_``, in order."""
        with self._cond:
            return [e.data.relative for e in self.events if e.type == type_]

    def count(self, type_: str) -> Counter[str]:
        """How many events of ``type_`` each relative path got."""
        return Counter(self.paths(type_))

    def summary(self) -> list[tuple[str, str]]:
        """(type, relative) of the first 50 events, for failure messages."""
        with self._cond:
            return [(e.type, e.data.relative) for e in self.events[:50]]


class Monitor:
    """A running file monitor with its bus and recorder."""

    def __init__(self, backend: FileMonitorBackend, bus: Bus, recorder: Recorder) -> None:
        self.backend = backend
        self.bus = bus
        self.events = recorder

    def stop(self) -> None:
        """Stop the backend and the bus; idempotent."""
        self.backend.stop()
        self.backend.join(10)
        self.bus.stop()
        assert not self.backend.is_alive()

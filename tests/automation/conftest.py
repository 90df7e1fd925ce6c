"""A real bus, action registry and Automation built from YAML, with recording actions."""

from __future__ import annotations

import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from platybus.actions import ActionRegistry, ActionRunner, ActionSpec
from platybus.automation import Automation
from platybus.automation.cron import Clock
from platybus.bus import Bus
from platybus.codec import Codec
from platybus.config import load_config
from platybus.extensions import NodeContext
from platybus.messages import Event


class Recorder:
    """Test actions that record their calls: ``rec.note`` (non-blocking), ``rec.slow``, ..."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.running = 0
        self.max_running = 0

    def note(self, value: Any = None, tag: str = "") -> Any:
        """Record a value."""
        with self.lock:
            self.calls.append((tag, value))
        return value

    def slow(self, seconds: float = 0.2, tag: str = "") -> str:
        """Record start and end around a sleep (ends early when ``release`` is set)."""
        with self.lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self.calls.append((f"start:{tag}", seconds))
        self.release.wait(seconds)
        with self.lock:
            self.running -= 1
            self.calls.append((f"end:{tag}", seconds))
        return tag

    def fail(self, message: str = "boom") -> None:
        """Always fail."""
        raise RuntimeError(message)

    def thread(self, tag: str = "") -> None:
        """Record the name of the thread that runs the action."""
        self.note(threading.current_thread().name, tag)

    def add_to(self, registry: ActionRegistry) -> None:
        registry.add(ActionSpec.from_function("rec.note", self.note, blocking=False))
        registry.add(ActionSpec.from_function("rec.slow", self.slow))
        registry.add(ActionSpec.from_function("rec.fail", self.fail, blocking=False))
        registry.add(ActionSpec.from_function("rec.thread", self.thread, blocking=False))
        registry.add(ActionSpec.from_function("rec.thread_blocking", self.thread))

    def tags(self) -> list[str]:
        with self.lock:
            return [tag for tag, _ in self.calls]

    def values(self, tag: str | None = None) -> list[Any]:
        with self.lock:
            return [v for t, v in self.calls if tag is None or t == tag]


class Harness:
    """One automation on a real bus, started and stopped by the fixture."""

    def __init__(self, tmp_path: Path, yaml: str, *, node_id: str = "n1",
                 clock: Clock | None = None, start: bool = True) -> None:
        self.path = tmp_path / f"{node_id}.yaml"
        self.path.write_text(textwrap.dedent(yaml))
        self.config = load_config(self.path)
        self.bus = Bus(node_id)
        self.actions = ActionRegistry()
        self.rec = Recorder()
        self.rec.add_to(self.actions)
        self.context = NodeContext(node_id=node_id, bus=self.bus, codec=Codec(),
                                   actions=self.actions, data_dir=tmp_path / "data")
        self.automation = Automation(self.config, self.context, clock=clock)
        self.runner = ActionRunner(self.bus, self.actions)
        self.started = False
        if start:
            self.start()

    def start(self) -> None:
        self.bus.start()
        self.runner.start()
        self.automation.start()
        self.started = True

    def stop(self) -> None:
        if self.started:
            self.automation.stop()
            self.runner.stop()
            self.bus.stop()
            self.started = False

    def publish(self, type_: str, **data: Any) -> Event:
        event = Event(type=type_, data=data)
        self.bus.publish(event)
        return event

    def traces(self, **filters: Any) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.actions.call("trace.list", {"last": 1000,
                                                                        **filters})
        return result


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll until ``predicate()`` is truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    """Build harnesses from YAML; every one is stopped after the test."""
    made: list[Harness] = []

    def make(yaml: str, **kwargs: Any) -> Harness:
        h = Harness(tmp_path, yaml, **kwargs)
        made.append(h)
        return h

    yield make
    for h in made:
        h.rec.release.set()
        h.stop()

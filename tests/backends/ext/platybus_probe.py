"""A plugin for the multi-node tests: records what its node handled, in files a test reads.

Loaded with ``class: platybus_probe:ProbePlugin`` from ``node.extensions_path``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from platybus.bus import Subscription
from platybus.extensions import Plugin, action
from platybus.messages import Event, Request


class ProbePlugin(Plugin):
    """Records ``probe.*`` events and marks to ``<data_dir>/<node>-*.jsonl``."""

    def start(self) -> None:
        self.dir = Path(self.context.data_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._events = open(self.dir / "events.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self._marks = open(self.dir / "marks.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self._counted = open(self.dir / "counted.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._sub: Subscription = self.context.bus.subscribe("type=probe.*", self._record)

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(10)
        self._sub.unsubscribe()
        self._events.close()
        self._marks.close()
        self._counted.close()

    def _record(self, event: Event) -> None:
        line = json.dumps({"id": event.id, "type": event.type, "origin": event.origin,
                           "n": event.get("n")})
        with self._lock:
            self._events.write(line + "\n")
            self._events.flush()

    @action
    def whoami(self) -> str:
        """Return this node's id."""
        return self.context.node_id

    @action
    def echo(self, value: Any = None) -> Any:
        """Return ``value``."""
        return value

    @action
    def mark(self, tag: str) -> str:
        """Record that this node ran this action with ``tag``."""
        with self._lock:
            self._marks.write(json.dumps({"tag": tag}) + "\n")
            self._marks.flush()
        return self.context.node_id

    @action
    def count(self, n: int, id: str = "", sleep: float = 0.0) -> int:
        """A hook's counting action: record ``n`` (written before it returns), then sleep."""
        line = json.dumps({"n": n, "id": id, "pid": os.getpid()})
        with self._lock:
            self._counted.write(line + "\n")
            self._counted.flush()  # in the OS's hands: a kill -9 of this process keeps it
        if sleep:
            time.sleep(sleep)
        return n

    @action
    def relay(self, node: str, action: str, args: dict[str, Any] | None = None,
              timeout: float = 5.0) -> dict[str, Any]:
        """Send a request from this node to ``node`` and return its response."""
        response = self.context.bus.request(
            Request(action=action, args=args or {}, target=node, origin=self.context.node_id),
            timeout=timeout)
        return {"output": response.output,
                "error": None if response.error is None else
                {"type": response.error.type, "message": response.error.message}}

    @action
    def burst(self, count: int, interval: float = 0.0, background: bool = False) -> int:
        """Publish ``count`` events ``probe.tick`` numbered 0..count-1."""
        if background:
            thread = threading.Thread(target=self._burst, args=(count, interval),
                                      name="probe-burst")
            self._threads.append(thread)
            thread.start()
        else:
            self._burst(count, interval)
        return count

    def _burst(self, count: int, interval: float) -> None:
        for n in range(count):
            if self._stopping.is_set():
                return
            self.context.bus.publish(Event(type="probe.tick", data={"n": n},
                                           origin=self.context.node_id))
            if interval:
                time.sleep(interval)

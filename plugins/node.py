"""The ``node`` plugin: what this node is and how it is doing."""

from __future__ import annotations

import os
import time
from typing import Any

import msgspec

from platybus.extensions import Plugin, action


class NodePlugin(Plugin):
    """Information about the running node."""

    @action(blocking=False)
    def info(self) -> dict[str, Any]:
        """Return the node id, version, pid, state and health of its components."""
        health = self.context.health()
        return {
            "id": self.context.node_id,
            "version": self.context.version,
            "pid": os.getpid(),
            "data_dir": str(self.context.data_dir),
            **{k: v for k, v in health.items() if k not in ("node", "version")},
            "actions": [spec.name for spec in self.context.actions.specs()],
        }

    @action(blocking=False)
    def stats(self) -> dict[str, Any]:
        """Return the bus counters and per-action call counts and times."""
        actions = {
            spec.name: {"calls": spec.stats.calls, "errors": spec.stats.errors,
                        "seconds": round(spec.stats.seconds, 6)}
            for spec in self.context.actions.specs() if spec.stats.calls
        }
        bus: dict[str, Any] = msgspec.to_builtins(self.context.bus.stats())
        return {"bus": bus, "actions": actions}

    @action(blocking=False)
    def ping(self) -> dict[str, Any]:
        """Answer with this node's id and the time: proof that it serves requests."""
        return {"pong": True, "node": self.context.node_id, "ts": time.time()}

"""A file monitor in its own process, for tests that must stall the monitor.

Usage: ``python file_monitor_child.py DIR COUNT``. Prints ``ready`` once it
watches ``DIR``, then waits until ``COUNT`` files were reported ready (or 30 s go by with no event)
and prints one JSON line: per event type, how often each relative path was seen,
plus the backend's overflow and rescan counters.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from pathlib import Path

import msgspec
from platybus.backends.file_monitor import FileMonitorBackend, FileMonitorConfig

from platybus.actions import ActionRegistry
from platybus.bus import Bus
from platybus.codec import Codec
from platybus.extensions import NodeContext
from platybus.messages import Event


def main() -> None:
    """Watch a directory until enough files were reported, then print the tally."""
    root, count = Path(sys.argv[1]), int(sys.argv[2])
    bus = Bus("child")
    bus.start()
    context = NodeContext(node_id="child", bus=bus, codec=Codec(), actions=ActionRegistry(),
                          data_dir=root.parent)
    config = msgspec.convert({"paths": [{"path": str(root), "ready": True}], "settle": 0.3,
                              "log_events": False}, FileMonitorConfig)
    seen: dict[str, Counter[str]] = {}
    done = threading.Event()
    count_seen = [0]

    def tally(event: Event) -> None:
        count_seen[0] += 1
        seen.setdefault(event.type, Counter())[event.data.relative] += 1
        if len(seen.get("file.ready", ())) >= count:
            done.set()

    bus.subscribe("file.*", tally)
    backend = FileMonitorBackend("file_monitor", config, context)
    backend.start()
    try:
        backend.ready.wait(10)
        print("ready", flush=True)
        # Done, or stuck: 60 turns of half a second without any event. Counted in turns,
        # not clock time, so the time this process spent stopped does not count.
        idle, before = 0, 0
        while not done.wait(0.5) and idle < 60:
            idle = 0 if count_seen[0] != before else idle + 1
            before = count_seen[0]
    finally:
        backend.stop()
        backend.join(10)
        bus.stop()
    print(json.dumps({"seen": seen, "overflows": backend.overflows,
                      "rescans": backend.rescans, "errors": backend.errors}), flush=True)


if __name__ == "__main__":
    main()

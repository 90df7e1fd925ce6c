"""Process-isolated handlers: events handled per second beside the same handler inline.

Baseline: the same trivial handler subscribed on the bus and run in the node's
process, measured in the same run. The isolated figure goes through the whole
path: bus → codec → pipe → worker → result → ``handler.done`` on the bus.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from platybus.bus import Bus, BusConfig
from platybus.config import load_config
from platybus.isolation.handlers import Handler
from platybus.isolation.pool import ProcessPool
from platybus.messages import Event
from platybus.node import Node


class Trivial(Handler):
    """The handler under test: it does almost nothing, so the figure is the overhead."""

    @staticmethod
    def handle(config: Any, event: Event) -> int:
        """Return a number from the event."""
        return int(event.data["n"]) * int(config["factor"])


def inline(n: int) -> float:
    """Events/s with the handler called on the bus in this process."""
    bus = Bus("bench", BusConfig(queue_size=n + 10))
    done = threading.Event()
    count = 0
    config = {"factor": 2}

    def handler(event: Event) -> None:
        nonlocal count
        Trivial.handle(config, event)
        count += 1
        if count == n:
            done.set()

    bus.subscribe("type=bench.job", handler)
    bus.start()
    start = time.perf_counter()
    for i in range(n):
        bus.publish(Event(type="bench.job", data={"n": i}))
    done.wait(120)
    elapsed = time.perf_counter() - start
    bus.stop()
    return n / elapsed


def isolated(n: int, workers: int) -> float:
    """Events/s through a node's process-isolated handler, counted by ``handler.done``."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(f"""
node: {{id: bench, data_dir: {tmp}}}
handlers:
  trivial:
    class: bench.isolation:Trivial
    factor: 2
    if: "type=bench.job"
    workers: {workers}
    queue_size: {n + 1000}
""")
        node = Node(load_config(config))
        node.start()
        done = threading.Event()
        count = 0

        def on_done(event: Event) -> None:
            nonlocal count
            count += 1
            if count == n:
                done.set()

        node.bus.subscribe("type=handler.done or type=handler.failed", on_done)
        # Warm up: start every worker before timing.
        warm = [Event(type="bench.job", data={"n": -1}) for _ in range(workers * 4)]
        for event in warm:
            node.bus.publish(event)
        deadline = time.monotonic() + 60
        while count < len(warm) and time.monotonic() < deadline:
            time.sleep(0.01)
        count = 0
        start = time.perf_counter()
        for i in range(n):
            node.bus.publish(Event(type="bench.job", data={"n": i}))
        done.wait(120)
        elapsed = time.perf_counter() - start
        node.stop()
        return count / elapsed


def pool_only(n: int, workers: int) -> float:
    """Tasks/s through ``ProcessPool.submit`` alone (no bus, no result events)."""
    pool = ProcessPool("bench", size=workers, queue_size=n + 1000)
    pool.start()
    try:
        warm = [pool.submit("bench.isolation:Trivial.handle", {"factor": 2},
                            Event(type="bench.job", data={"n": 0})) for _ in range(workers * 4)]
        for future in warm:
            future.result(60)
        start = time.perf_counter()
        futures = [pool.submit("bench.isolation:Trivial.handle", {"factor": 2},
                               Event(type="bench.job", data={"n": i})) for i in range(n)]
        for future in futures:
            future.result(120)
        return n / (time.perf_counter() - start)
    finally:
        pool.stop()


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the figures beside the inline baseline."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=20_000, help="events for the isolated runs")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    base = inline(args.n * 10)
    ours = isolated(args.n, args.workers)
    raw_pool = pool_only(args.n, args.workers)
    overhead_us = (1 / ours - 1 / base) * 1e6
    print(f"trivial handler, {args.workers} worker process(es), {args.n:,} events")
    print(f"  inline on the bus          {base:>10,.0f} events/s   (baseline)")
    print(f"  process-isolated handler   {ours:>10,.0f} events/s   = {ours / base:.1%} of inline")
    print(f"  ProcessPool.submit alone   {raw_pool:>10,.0f} tasks/s")
    print(f"  overhead per event         {overhead_us:>10.1f} us")


if __name__ == "__main__":
    main()

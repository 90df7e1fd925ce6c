"""Fan-out A -> B over Redis into a counting hook on B, ``durable: true`` vs ``false``.

Node A runs in this process and publishes the events as fast as its bus takes
them; node B runs in another process, where a hook (``if: type=bench.tick``)
calls a non-blocking counting action. With ``durable: true`` B's link
acknowledges an entry only once the intake journal (SQLite, in B's data dir)
has the hook's runs for it. Baseline, same run and same redis-server: redis-py
pipelined XADD of the same encoded payloads, one entry each, 1,000 per pipeline.
Target: durable >= 30k events/s end to end, none lost, none duplicated.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._redis import SECRET, RedisServer, spawn
from bench.redis_fanout import raw_pipelined

EVENTS = 100_000


def config(directory: Path, node_id: str, url: str, prefix: str,
           durable: bool | None = None) -> Path:
    """A node config with the redis backend and, with ``durable`` given, the counting hook."""
    body: dict[str, Any] = {
        "node": {"id": node_id, "data_dir": str(directory / prefix / node_id),
                 "log_level": "warning"},
        "backends": {"redis": {"url": url, "prefix": prefix, "secret": SECRET}},
    }
    if durable is not None:
        body["plugins"] = {"counter": {"class": "bench._counter:CounterPlugin"}}
        body["traces"] = {"enabled": False}
        body["hooks"] = {"count": {"if": {"type": "bench.tick"}, "durable": durable,
                                   "then": [{"action": "counter.count",
                                             "args": {"n": "${event.data.n}"}}]}}
    path = directory / f"{node_id}-{prefix}.yaml"
    path.write_text(json.dumps(body))
    return path


def _receiver(path: str, total: int, ready: Any, results: Any) -> None:
    """Node B: wait until the hook counted every event or 120 s passed."""
    from platybus.config import load_config
    from platybus.node import Node

    logging.basicConfig(level=logging.WARNING)
    node = Node(load_config(path))
    node.start()
    counter: Any = node.plugins["counter"]
    ready.set()
    deadline = time.monotonic() + 120
    while len(counter.seen) < total and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)  # late duplicates would show up now
    journal = node.automation.journal
    results.put({"unique": len(counter.seen), "handled": counter.calls, "last": counter.last,
                 "journaled": journal.accepted if journal is not None else 0})
    node.stop()


def fan_out(directory: Path, url: str, total: int, durable: bool) -> dict[str, Any]:
    """Run A -> B once; return B's counts and the rate."""
    from platybus.config import load_config
    from platybus.messages import Event
    from platybus.node import Node

    events = [Event(type="bench.tick", origin="A", data={"n": n, "room": "kitchen", "on": True})
              for n in range(total)]
    context = multiprocessing.get_context("spawn")
    ready, results = context.Event(), context.Queue()
    prefix = f"bench-durable-{str(durable).lower()}"
    b = spawn(_receiver, str(config(directory, "B", url, prefix, durable)), total, ready,
              results)
    a = Node(load_config(config(directory, "A", url, prefix)))
    a.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("node B did not start")
        time.sleep(0.2)
        started = time.time()
        for event in events:
            a.bus.publish(event)
        outcome: dict[str, Any] = results.get(timeout=180)
    finally:
        a.stop()
        b.join(30)
    outcome["rate"] = outcome["unique"] / max(1e-9, outcome["last"] - started)
    return outcome


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(prog="python -m bench redis_durable")
    parser.add_argument("--events", type=int, default=EVENTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from platybus.codec import Codec
    from platybus.messages import Event

    total = args.events
    codec = Codec()
    payloads = [codec.encode(Event(type="bench.tick", origin="A",
                                   data={"n": n, "room": "kitchen", "on": True}))
                for n in range(total)]
    with RedisServer() as server, tempfile.TemporaryDirectory() as tmp:
        baseline = raw_pipelined(server.url, payloads)
        rows = {durable: fan_out(Path(tmp), server.url, total, durable)
                for durable in (False, True)}
    print(f"{'fan-out A -> B hook, ' + format(total, ',') + ' events':<44} {'events/s':>10} "
          f"{'lost':>6} {'dup':>6} {'journaled':>10}")
    print(f"{'raw redis-py pipelined XADD (write only)':<44} {baseline:>10.0f}")
    for durable, row in rows.items():
        label = f"platybus, hook durable: {str(durable).lower()}"
        print(f"{label:<44} {row['rate']:>10.0f} {total - row['unique']:>6} "
              f"{row['handled'] - row['unique']:>6} {row['journaled']:>10}")
    print("target: durable >= 30,000 events/s end to end, 0 lost, 0 duplicated")


if __name__ == "__main__":
    main(sys.argv[1:])

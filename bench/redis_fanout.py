"""Event fan-out from node A to node B over Redis: 100k events, delivered rate, lost, duplicated.

Node A runs in this process and publishes the events on its bus as fast as the
bus takes them; node B runs in another process and counts what its handler
sees. Baseline, same run and same redis-server: redis-py pipelined XADD of the
same encoded payloads, one entry each, 1,000 per pipeline.
Target: >= 50k events/s delivered, none lost, none duplicated.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench._redis import RedisServer, node_config, spawn

EVENTS = 100_000


def _receiver(config: str, total: int, ready: Any, results: Any) -> None:
    """Node B: count ``bench.tick`` events until all arrived or 60 s passed."""
    from platybus.config import load_config
    from platybus.messages import Event
    from platybus.node import Node

    logging.basicConfig(level=logging.WARNING)
    node = Node(load_config(config))
    seen: set[int] = set()
    counts = {"handled": 0, "last": 0.0}

    def count(event: Event) -> None:
        counts["handled"] += 1
        seen.add(event.data["n"])
        counts["last"] = time.time()

    node.bus.subscribe("type=bench.tick", count)
    node.start()
    ready.set()
    deadline = time.monotonic() + 60
    while len(seen) < total and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)  # late duplicates would show up now
    results.put({"unique": len(seen), "handled": counts["handled"], "last": counts["last"]})
    node.stop()


def raw_pipelined(url: str, payloads: list[bytes]) -> float:
    """Events/s of redis-py pipelined XADD of the payloads."""
    r = redis.Redis.from_url(url)
    started = time.perf_counter()
    for start in range(0, len(payloads), 1000):
        pipe = r.pipeline(transaction=False)
        for payload in payloads[start:start + 1000]:
            pipe.xadd("bench:raw", {"m": payload}, maxlen=200_000, approximate=True)
        pipe.execute()
    elapsed = time.perf_counter() - started
    r.delete("bench:raw")
    r.close()
    return len(payloads) / elapsed


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(prog="python -m bench redis_fanout")
    parser.add_argument("--events", type=int, default=EVENTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from platybus.codec import Codec
    from platybus.config import load_config
    from platybus.messages import Event
    from platybus.node import Node

    total = args.events
    events = [Event(type="bench.tick", origin="A", data={"n": n, "room": "kitchen", "on": True})
              for n in range(total)]
    codec = Codec()
    with RedisServer() as server, tempfile.TemporaryDirectory() as tmp:
        baseline = raw_pipelined(server.url, [codec.encode(e) for e in events])
        directory = Path(tmp)
        context = multiprocessing.get_context("spawn")
        ready, results = context.Event(), context.Queue()
        b = spawn(_receiver, str(node_config(directory, "B", server.url)), total, ready, results)
        a = Node(load_config(node_config(directory, "A", server.url)))
        a.start()
        try:
            if not ready.wait(30):
                raise RuntimeError("node B did not start")
            time.sleep(0.2)
            started = time.time()
            for event in events:
                a.bus.publish(event)
            published = time.time() - started
            outcome = results.get(timeout=90)
        finally:
            a.stop()
            b.join(20)
    elapsed = outcome["last"] - started
    lost = total - outcome["unique"]
    duplicated = outcome["handled"] - outcome["unique"]
    print(f"{'fan-out A -> B, ' + format(total, ',') + ' events':<40} {'events/s':>10} "
          f"{'lost':>6} {'dup':>6}")
    print(f"{'raw redis-py pipelined XADD (write only)':<40} {baseline:>10.0f} {'':>6} {'':>6}")
    print(f"{'platybus, delivered to B handler':<40} {outcome['unique'] / elapsed:>10.0f} "
          f"{lost:>6} {duplicated:>6}")
    print(f"(A's bus took the {total:,} publishes in {published:.2f}s)")
    print("target: >= 50,000 events/s, 0 lost, 0 duplicated (Platypush: at-most-once pub/sub)")


if __name__ == "__main__":
    main(sys.argv[1:])

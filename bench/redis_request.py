"""A request from node A to node B and back over Redis: latency and throughput.

Node B is a ``platybus run`` process; node A runs in this process and calls
``node.ping`` on B. Baseline, same run and same redis-server: a raw redis-py
request/reply between two processes (RPUSH a request, the other process BLPOPs
it and RPUSHes the reply, BLPOP the reply).
Targets: p50 <= 1 ms; >= 10k requests/s with 16 in flight.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

from bench._redis import RedisServer, node_config, percentile, spawn

ROUNDS = 3000
WARMUP = 300


def _echo_server(url: str) -> None:
    """The baseline's other process: answers every request on its reply list."""
    r = redis.Redis.from_url(url)
    while True:
        item = r.blpop(["bench:req"], timeout=30)
        if item is None or item[1] == b"stop":
            return
        reply_key, _, body = item[1].partition(b"|")
        r.rpush(reply_key, body)


def raw_round_trips(url: str, rounds: int) -> list[float]:
    """Latencies of raw BLPOP request/reply round trips."""
    server = spawn(_echo_server, url)
    r = redis.Redis.from_url(url)
    payload = b"bench:reply|" + b'{"action":"node.ping","args":{}}'
    samples = []
    try:
        for i in range(rounds + WARMUP):
            started = time.perf_counter()
            r.rpush("bench:req", payload)
            r.blpop(["bench:reply"], timeout=10)
            if i >= WARMUP:
                samples.append(time.perf_counter() - started)
    finally:
        r.rpush("bench:req", b"stop")
        server.join(10)
        r.close()
    return samples


def node_round_trips(node: object, rounds: int) -> list[float]:
    """Latencies of ``node.ping`` on B from A's bus, one at a time."""
    from platybus.messages import Request
    from platybus.node import Node

    assert isinstance(node, Node)
    samples = []
    for i in range(rounds + WARMUP):
        started = time.perf_counter()
        response = node.bus.request(Request(action="node.ping", target="B", origin="A"),
                                    timeout=10)
        if not response.ok:
            raise RuntimeError(f"request failed: {response.error}")
        if i >= WARMUP:
            samples.append(time.perf_counter() - started)
    return samples


def node_throughput(node: object, total: int, inflight: int) -> tuple[float, int]:
    """Requests/s with ``inflight`` requests outstanding at all times; and the errors."""
    from platybus.messages import Request, Response
    from platybus.node import Node

    assert isinstance(node, Node)
    lock = threading.Lock()
    done = threading.Event()
    counts = {"sent": 0, "received": 0, "errors": 0}

    def send() -> None:
        node.bus.publish(Request(action="node.ping", target="B", origin="A"),
                         on_reply=on_reply, timeout=30)

    def on_reply(response: Response) -> None:
        with lock:
            counts["received"] += 1
            if not response.ok:
                counts["errors"] += 1
            more = counts["sent"] < total
            if more:
                counts["sent"] += 1
            if counts["received"] == total:
                done.set()
        if more:
            send()

    started = time.perf_counter()
    with lock:
        counts["sent"] = inflight
    for _ in range(inflight):
        send()
    if not done.wait(120):
        raise RuntimeError(f"only {counts['received']} of {total} responses arrived")
    return total / (time.perf_counter() - started), counts["errors"]


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(prog="python -m bench redis_request")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--total", type=int, default=30_000,
                        help="requests in the 16-in-flight run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from platybus.config import load_config
    from platybus.messages import Request
    from platybus.node import Node

    with RedisServer() as server, tempfile.TemporaryDirectory() as tmp:
        raw = raw_round_trips(server.url, args.rounds)
        directory = Path(tmp)
        b = subprocess.Popen([sys.executable, "-m", "platybus", "run", "-c",
                              str(node_config(directory, "B", server.url))],
                             stderr=subprocess.DEVNULL)
        a = Node(load_config(node_config(directory, "A", server.url)))
        a.start()
        try:
            deadline = time.monotonic() + 20
            while not a.bus.request(Request(action="node.ping", target="B", origin="A"),
                                    timeout=0.5).ok:
                if time.monotonic() > deadline:
                    raise RuntimeError("node B did not start")
            samples = node_round_trips(a, args.rounds)
            rate, errors = node_throughput(a, args.total, 16)
        finally:
            a.stop()
            b.terminate()
            b.wait(20)
    print(f"{'request A -> B -> A':<38} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>9}")
    print(f"{'raw redis-py BLPOP request/reply':<38} {percentile(raw, 0.5):>8.3f} "
          f"{percentile(raw, 0.99):>8.3f} {1 / (sum(raw) / len(raw)):>9.0f}")
    print(f"{'platybus, one at a time':<38} {percentile(samples, 0.5):>8.3f} "
          f"{percentile(samples, 0.99):>8.3f} {1 / (sum(samples) / len(samples)):>9.0f}")
    print(f"{'platybus, 16 in flight':<38} {'':>8} {'':>8} {rate:>9.0f}"
          + (f"  ({errors} errors)" if errors else ""))
    print("targets: p50 <= 1 ms, >= 10,000 req/s with 16 in flight "
          "(Platypush 1.3.39: p50 2.3-2.7 ms, 345-400 req/s)")


if __name__ == "__main__":
    main(sys.argv[1:])

"""What a hook on another node is promised, with node processes and a real redis-server.

Node A publishes ``probe.tick`` events; node B runs a durable hook whose action
(``probe.count``) records every run in a file before it returns. B is killed
with ``-9``, stopped, flooded; Redis is restarted: every event's hook runs, and
a run repeats only when a kill caught it in flight.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from platybus.client import Client
from tests.backends.conftest import Launcher, NodeProcess


def counting(sleep: float = 0.0, **options: Any) -> dict[str, Any]:
    """Config sections: a hook counting every ``probe.tick`` with ``probe.count``."""
    return {"traces": {"disk": False, "keep": 100},
            "hooks": {"count": {"if": {"type": "probe.tick"}, **options, "then": [
                {"action": "probe.count",
                 "args": {"n": "${event.data.n}", "id": "${event.id}", "sleep": sleep}}]}}}


def in_flight(node: NodeProcess, pid: int) -> int:
    """Runs the killed process had started whose end its journal does not hold."""
    with sqlite3.connect(node.data / "journal.sqlite") as db:
        ended = {row[0] for row in db.execute("SELECT message_id FROM runs WHERE state = 1")}
    return sum(1 for run in node.counted() if run["pid"] == pid and run["id"] not in ended)


def wait_distinct(node: NodeProcess, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while len({r["n"] for r in node.counted()}) < count:
        assert time.monotonic() < deadline, f"only {len(node.counted())} runs"
        time.sleep(0.02)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_kill_9_three_times_while_1000_events_arrive_every_hook_runs(
        launch: Launcher, client: Client) -> None:
    launch("A")
    b = launch("B", sections=counting(sleep=0.002))
    assert client.request("A", "probe.burst", {"count": 1000, "interval": 0.004,
                                               "background": True}).ok
    flights: list[int] = []
    for kill in range(3):
        wait_distinct(b, 150 * (kill + 1))
        assert b.proc is not None
        pid = b.proc.pid
        b.kill()
        flights.append(in_flight(b, pid))
        b.start()
        b.wait_ready(client)
    wait_distinct(b, 1000, timeout=90)
    time.sleep(0.5)  # a late repeat would show now
    counts = Counter(run["n"] for run in b.counted())
    repeated = sum(c - 1 for c in counts.values())
    print(f"\nkill -9 x3, 1000 events: {len(counts)} ran, {repeated} repeated; in flight at "
          f"each kill: {flights}")
    assert set(counts) == set(range(1000))
    assert repeated <= sum(flights)


@pytest.mark.slow
def test_a_backlog_published_while_the_node_is_down_reaches_its_hooks(
        launch: Launcher, client: Client) -> None:
    launch("A")
    b = launch("B", sections=counting())
    b.stop()
    assert client.request("A", "probe.burst", {"count": 500}).ok
    b.start()
    b.wait_ready(client)
    wait_distinct(b, 500)
    time.sleep(0.3)
    assert sorted(run["n"] for run in b.counted()) == list(range(500))  # each once


@pytest.mark.slow
def test_a_burst_of_10000_events_runs_the_hook_10000_times_in_bounded_memory(
        launch: Launcher, client: Client) -> None:
    b = launch("B", sections=counting(sleep=0.001))
    assert b.proc is not None
    before = rss_mb(b.proc.pid)
    assert client.request("B", "probe.burst", {"count": 10_000}, timeout=60).ok
    wait_distinct(b, 10_000, timeout=180)
    peak = peak_rss_mb(b.proc.pid)
    runs = b.counted()
    print(f"\n10,000-event burst, 1 ms action: {len(runs)} runs; RSS before {before:.1f} MB, "
          f"peak {peak:.1f} MB")
    assert sorted(run["n"] for run in runs) == list(range(10_000))
    # The waiting runs are rows in the journal, not objects in memory.
    assert peak - before < 60


@pytest.mark.slow
def test_redis_restarted_mid_stream_loses_nothing_a_hook_was_promised(
        own_redis: Any, launch: Launcher, prefix: str, secret: str) -> None:
    with Client(own_redis.url, prefix=prefix, secret=secret, timeout=15) as observer:
        a = launch("A", url=own_redis.url, wait=False)
        b = launch("B", url=own_redis.url, wait=False, sections=counting())
        a.wait_ready(observer)
        b.wait_ready(observer)
        assert observer.request("A", "probe.burst", {"count": 1500, "interval": 0.001,
                                                     "background": True}).ok
        wait_distinct(b, 100)
        own_redis.stop()
        time.sleep(0.5)
        own_redis.start()
        wait_distinct(b, 1500)
    assert {run["n"] for run in b.counted()} == set(range(1500))

"""Link state events describe the present; the outgoing buffer is bounded and counted."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from platybus.client import Client
from platybus.config import load_config
from platybus.errors import LinkError
from platybus.messages import Event
from platybus.node import Node
from tests.backends.conftest import RedisServer


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


@pytest.mark.slow
def test_a_client_whose_first_connects_fail_does_not_broadcast_stale_link_down_events(
        tmp_path: Path, prefix: str, secret: str) -> None:
    server = RedisServer(tmp_path / "redis")  # not started yet
    late = Client(server.url, prefix=prefix, secret=secret, client_id="late", timeout=10)
    late_seen: list[Any] = []
    late.subscribe("type=node.link.*", late_seen.append)
    for _ in range(3):
        with pytest.raises(LinkError, match="cannot reach Redis"):
            late.connect(timeout=0.3)
    server.start()
    try:
        with Client(server.url, prefix=prefix, secret=secret, timeout=10) as observer:
            heard: list[Event] = []
            observer.subscribe("origin=late", heard.append)
            late.connect(timeout=5)
            late.publish(Event(type="late.marker", data={}))
            assert wait_for(lambda: any(e.type == "late.marker" for e in heard))
            types = [e.type for e in heard]
            # Told once that it is up now, and nothing about the failed attempts.
            assert types == ["node.link.up", "late.marker"], types
            late.disconnect()
    finally:
        late.disconnect()
        server.stop()


def test_a_nodes_own_link_down_stays_local_and_link_up_says_for_how_long(
        tmp_path: Path, prefix: str, secret: str) -> None:
    server = RedisServer(tmp_path / "redis")
    options = {"url": server.url, "prefix": prefix, "secret": secret, "reconnect_max": 0.2,
               "connect_timeout": 0.3}
    config = {"node": {"id": "A", "data_dir": str(tmp_path / "A")},
              "backends": {"redis": options}}
    path = tmp_path / "A.yaml"
    path.write_text(json.dumps(config))
    node = Node(load_config(path))
    local: list[Event] = []
    node.bus.subscribe("type=node.link.*", local.append)
    node.start()
    try:
        assert wait_for(lambda: any(e.type == "node.link.down" for e in local))
        server.start()
        with Client(server.url, prefix=prefix, secret=secret, timeout=10) as observer:
            heard: list[Event] = []
            observer.subscribe("origin=A", heard.append)
            assert wait_for(lambda: any(e.type == "node.link.up" for e in local))
            node.bus.publish(Event(type="a.marker", data={}, origin="A"))
            assert wait_for(lambda: any(e.type == "a.marker" for e in heard))
            assert "node.link.down" not in [e.type for e in heard]
        up = next(e for e in local if e.type == "node.link.up")
        assert up.data.down_for > 0
    finally:
        node.stop()
        server.stop()


def metric(text: str, name: str) -> float:
    match = re.search(rf"^platybus_{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"no {name} in:\n{text}"
    return float(match.group(1))


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
def test_buffer_overflow_follows_its_policy_and_is_counted_in_metrics(
        tmp_path: Path, prefix: str, policy: str) -> None:
    server = RedisServer(tmp_path / "redis")  # away at first
    options = {"url": server.url, "prefix": prefix, "buffer_size": 5, "buffer_policy": policy,
               "connect_timeout": 0.2, "reconnect_max": 0.2, "outgoing": "type=x.*"}
    config = {"node": {"id": "A", "data_dir": str(tmp_path / "A")},
              "backends": {"redis": options}}
    path = tmp_path / "A.yaml"
    path.write_text(json.dumps(config))
    node = Node(load_config(path))
    node.start()
    try:
        for n in range(20):
            node.bus.publish(Event(type="x.y", data={"n": n}, origin="A"))
        assert wait_for(lambda: metric(
            node.metrics(), f'link_dropped_total{{backend="redis",policy="{policy}"}}') == 15)
        text = node.metrics()
        assert metric(text, 'link_buffered{backend="redis"}') == 5
        assert metric(text, 'link_buffer_size{backend="redis"}') == 5
        assert metric(text, 'link_up{backend="redis"}') == 0

        # When Redis comes, what the policy kept is sent, in order.
        server.start()
        client = redis.Redis.from_url(server.url)
        try:
            def sent() -> list[int]:
                numbers: list[int] = []
                for _, fields in client.xrange(f"{prefix}:events"):
                    numbers += [m["data"]["n"] for m in json.loads(fields[b"m"])
                                if m["type"] == "x.y"]
                return numbers
            assert wait_for(lambda: len(sent()) == 5)
            assert sent() == ([15, 16, 17, 18, 19] if policy == "drop_oldest"
                              else [0, 1, 2, 3, 4])
        finally:
            client.close()
        # The reader, in its own backoff, may say so a moment after the writer has sent.
        assert wait_for(lambda: metric(node.metrics(), 'link_up{backend="redis"}') == 1)
    finally:
        node.stop()
        server.stop()

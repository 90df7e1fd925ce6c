"""The redis backend inside a node process of the test: selectors, routing, buffering, health.

These nodes run in the test's own process (they share nothing but Redis), which
keeps the finer checks fast; the multi-process scenarios are in test_redis_nodes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from platybus.config import load_config
from platybus.errors import ConfigError
from platybus.link.protocol import DedupWindow, Envelope, LinkConfig, Rejected, expired, mask_url
from platybus.messages import Event, Request
from platybus.node import Node


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def write_config(tmp_path: Path, node_id: str, redis: dict[str, Any],
                 extra: dict[str, Any] | None = None) -> Path:
    config = {"node": {"id": node_id, "data_dir": str(tmp_path / node_id / "data")},
              "backends": {"redis": redis}, **(extra or {})}
    path = tmp_path / f"{node_id}.yaml"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def make_node(tmp_path: Path, redis_url: str, prefix: str,
              secret: str) -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []

    def make(node_id: str, start: bool = True, **options: Any) -> Node:
        redis = {"url": redis_url, "prefix": prefix, "secret": secret,
                 "allow_actions": ["node.*", "event.*"], "reconnect_max": 0.3, **options}
        node = Node(load_config(write_config(tmp_path, node_id, redis)))
        nodes.append(node)
        if start:
            node.start()
        return node

    yield make
    for node in nodes:
        node.stop()


def collect(node: Node, selector: str) -> list[Event]:
    seen: list[Event] = []
    node.bus.subscribe(selector, seen.append)
    return seen


def test_outgoing_and_accept_selectors(make_node: Callable[..., Node]) -> None:
    a = make_node("A", outgoing="type=public.*")
    b = make_node("B", accept="not type=public.noise")
    got = collect(b, "type=public.* or type=private.* or type=shout")
    a.bus.publish(Event(type="private.diary", origin="A"))
    a.bus.publish(Event(type="shout", target="*", origin="A"))  # '*' always leaves
    a.bus.publish(Event(type="public.noise", origin="A"))
    a.bus.publish(Event(type="public.news", origin="A"))
    assert wait_for(lambda: len(got) >= 2)
    time.sleep(0.2)
    assert [e.type for e in got] == ["shout", "public.news"]
    details = b.health()["components"]["details"]["redis"]
    assert details["filtered"] == 1


def test_an_event_for_one_node_reaches_only_that_node(make_node: Callable[..., Node]) -> None:
    a, b, c = make_node("A"), make_node("B"), make_node("C")
    at_a, at_b, at_c = (collect(n, "type=door.*") for n in (a, b, c))
    a.bus.publish(Event(type="door.open", target="B", origin="A"))
    a.bus.publish(Event(type="door.closed", origin="A"))
    assert wait_for(lambda: len(at_b) == 2 and len(at_c) == 1)
    time.sleep(0.2)
    # The two travel on different streams (B's inbox, the shared event stream): no order
    # between them is promised, only that each arrives once.
    assert sorted(e.type for e in at_b) == ["door.closed", "door.open"]
    assert [e.type for e in at_c] == ["door.closed"]
    assert [e.type for e in at_a] == ["door.closed"]


def test_requests_from_a_node_get_their_response_through_the_bus(
        make_node: Callable[..., Node]) -> None:
    a = make_node("A")
    make_node("B")
    response = a.bus.request(Request(action="node.ping", target="B"), timeout=5)
    assert response.output["node"] == "B"
    # A remote request without an origin is stamped with the sender's id on the way out.
    assert response.target == "A"
    refused = a.bus.request(Request(action="node.nope", target="B"), timeout=5)
    assert refused.error is not None
    assert refused.error.type == "UnknownActionError"


def test_a_node_starts_while_redis_is_away_and_links_when_it_comes(
        own_redis: Any, tmp_path: Path, prefix: str, secret: str) -> None:
    redis = {"url": own_redis.url, "prefix": prefix, "secret": secret, "reconnect_max": 0.2,
             "connect_timeout": 0.5}
    own_redis.stop()
    a = Node(load_config(write_config(tmp_path, "A", redis)))
    b = Node(load_config(write_config(tmp_path, "B", redis)))
    try:
        a.start()
        health = a.health()
        assert health["ready"] is True
        assert health["components"]["backends"]["redis"] == "degraded"
        assert health["components"]["details"]["redis"]["link"] in ("connecting", "down")
        ups = collect(a, "type=node.link.up")
        answers: list[Any] = []
        a.bus.publish(Request(action="node.ping", target="B", origin="A"),
                      on_reply=answers.append, timeout=20)
        assert a.health()["components"]["details"]["redis"]["buffered"] == 1
        own_redis.start()
        b.start()
        assert wait_for(lambda: answers != [], timeout=15)
        assert answers[0].output["node"] == "B"
        assert ups
        assert a.health()["components"]["backends"]["redis"] == "ready"
    finally:
        a.stop()
        b.stop()


def test_a_full_buffer_drops_by_policy_and_fails_dropped_requests_at_once(
        tmp_path: Path, prefix: str) -> None:
    redis = {"url": "redis://127.0.0.1:1/0", "prefix": prefix, "buffer_size": 2,
             "connect_timeout": 0.2, "reconnect_max": 0.2}
    node = Node(load_config(write_config(tmp_path, "A", redis)))
    node.start()
    try:
        answers: list[Any] = []
        node.bus.publish(Request(action="node.ping", target="B", origin="A"),
                         on_reply=answers.append, timeout=30)
        for n in range(3):
            node.bus.publish(Event(type="x.y", data={"n": n}, origin="A"))
        assert wait_for(lambda: answers != [], timeout=5)
        assert answers[0].error.type == "LinkError"
        assert "outgoing buffer is full" in answers[0].error.message
        # The writer keeps retrying: while a retry has the batch in hand, nothing is buffered.
        def link() -> dict[str, Any]:
            details: dict[str, Any] = node.health()["components"]["details"]["redis"]
            return details

        assert wait_for(lambda: link()["buffered"] == 2, timeout=5)
        assert link()["dropped"] >= 2
    finally:
        node.stop()


def test_bad_redis_settings_are_config_errors_with_their_location(
        tmp_path: Path) -> None:
    for options, text in (({"url": "http://x"}, "url must start with"),
                          ({"outgoing": "type=("}, "outgoing:"),
                          ({"secret": "short"}, "at least 16"),
                          ({"nope": 1}, "unknown key")):
        path = write_config(tmp_path, "A", options)
        with pytest.raises(ConfigError, match=text) as info:
            Node(load_config(path))
        assert info.value.key is not None
        assert info.value.key.startswith("backends.redis")


def test_envelope_signatures_and_dedup_window() -> None:
    from platybus.codec import Codec

    codec = Codec()
    signed = Envelope(codec, "a-secret-of-16-chars")
    data = codec.encode(Event(type="a.b", origin="A"))
    fields = signed.pack("p:events", "A", [data])
    assert len(signed.open("p:events", fields)) == 1
    with pytest.raises(Rejected) as moved:
        signed.open("p:node:B", fields)
    assert moved.value.reason == "bad_signature"
    unsigned = Envelope(codec, None).pack("p:events", "A", [data])
    with pytest.raises(Rejected) as bare:
        signed.open("p:events", unsigned)
    assert bare.value.reason == "unsigned"
    window = DedupWindow(3)
    assert [window.seen(x) for x in "abca"] == [False, False, False, True]
    for x in "defgh":
        window.seen(x)
    assert window.seen("a") is False  # remembered for 3 to 6 ids, then forgotten
    assert mask_url("redis://user:pw@host:1/0") == "redis://user:***@host:1/0"
    request = Request(action="x.y", timeout=2.0)
    assert not expired(request, 30.0, added_ms=1000, redis_now_ms=2999)
    assert expired(request, 30.0, added_ms=1000, redis_now_ms=3001)
    assert expired(Request(action="x.y"), 30.0, added_ms=0, redis_now_ms=30_001)
    with pytest.raises(ValueError, match="reconnect_max"):
        LinkConfig(reconnect_min=2.0, reconnect_max=1.0)

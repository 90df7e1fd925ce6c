"""The in-memory link: two nodes in one process, joined without Redis."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from platybus.config import load_config
from platybus.expr import parse_selector
from platybus.link.loopback import LoopbackHub, LoopbackLink
from platybus.messages import Event, Request
from platybus.node import Node

MakeNode = Callable[[str], Node]


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)
    return value


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[MakeNode]:
    """Start nodes of the given ids (default plugins only); all stopped after the test."""
    nodes: list[Node] = []

    def make(node_id: str) -> Node:
        path = tmp_path / f"{node_id}.yaml"
        path.write_text(f"node: {{id: {node_id}, data_dir: {tmp_path / node_id}}}\n")
        node = Node(load_config(path))
        nodes.append(node)
        node.start()
        return node

    yield make
    for node in nodes:
        node.stop()


def link(node: Node, hub: LoopbackHub, **options: Any) -> LoopbackLink:
    joined = LoopbackLink(node.id, hub, node.codec, **options)
    assert joined.start(node.bus)
    return joined


def test_a_request_goes_to_the_other_node_and_its_answer_comes_back(
        make_node: MakeNode) -> None:
    a, b = make_node("a"), make_node("b")
    hub = LoopbackHub()
    link(a, hub)
    link(b, hub)
    b.runner.remote_allowed = lambda request: request.action == "node.ping"
    response = a.bus.request(Request(action="node.ping", target="b"), timeout=10)
    assert response.error is None
    assert (response.origin, response.output["node"]) == ("b", "b")
    refused = a.bus.request(Request(action="node.info", target="b"), timeout=10)
    assert refused.error is not None
    assert refused.error.type == "ActionNotAllowed"


def test_events_fan_out_through_outgoing_and_accept(make_node: MakeNode) -> None:
    a, b = make_node("a"), make_node("b")
    hub = LoopbackHub()
    link(a, hub, outgoing=parse_selector("type=garden.* or type=noise.*"))
    b_link = link(b, hub, accept=parse_selector("not type=noise.*"))
    seen: list[Event] = []
    b.bus.subscribe("type=garden.* or type=noise.* or type=kept.local", seen.append)
    a.bus.publish(Event(type="noise.hum"))
    a.bus.publish(Event(type="kept.local"))  # not picked by a's outgoing selector
    a.bus.publish(Event(type="garden.watered", data={"litres": 3}))
    wait_for(lambda: seen)
    [event] = seen
    assert (event.type, event.origin, event.data) == ("garden.watered", "a", {"litres": 3})
    assert b_link.stats.filtered == 1


def test_what_is_sent_while_a_node_is_away_waits_for_it(make_node: MakeNode) -> None:
    a, b = make_node("a"), make_node("b")
    hub = LoopbackHub()
    link(a, hub)
    b_link = link(b, hub)
    seen: list[Event] = []
    b.bus.subscribe("garden.*", seen.append)
    b_link.stop()
    a.bus.publish(Event(type="garden.watered"))
    a.bus.publish(Event(type="garden.watered", target="b"))
    assert a.bus.flush(5)
    assert seen == []
    b_link.start(b.bus)
    wait_for(lambda: len(seen) == 2)
    assert [e.target for e in seen] == [None, "b"]


def test_a_message_sent_twice_is_delivered_once(make_node: MakeNode) -> None:
    a, b = make_node("a"), make_node("b")
    hub = LoopbackHub()
    a_link = link(a, hub)
    b_link = link(b, hub)
    seen: list[Event] = []
    b.bus.subscribe("garden.*", seen.append)
    event = Event(type="garden.watered", target="b", origin="a")
    a_link.send(event)
    a_link.send(event)
    wait_for(lambda: seen)
    assert b.bus.flush(5)
    assert seen == [event]
    assert b_link.stats.duplicates == 1
    assert b_link.health()["link"] == "up"


def test_the_documented_example_runs(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "loopback_demo.py"
    done = subprocess.run([sys.executable, str(example)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=True)
    assert done.stdout.strip() == "garage answered kitchen"

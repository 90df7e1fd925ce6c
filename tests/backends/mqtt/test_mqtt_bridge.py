"""The mqtt backend against a real Mosquitto: both ways, captures, formats, QoS, retain."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from platybus.config import load_config
from platybus.errors import ArgumentError, ConfigError
from platybus.messages import Message
from platybus.node import Node
from tests.backends.mqtt.harness import Broker, Outside, node_config, wait_for

ROOT = Path(__file__).parents[3]


def collect(node: Node, selector: str = "mqtt.*") -> list[Any]:
    """Every event the selector matches, as the node's hooks see them."""
    seen: list[Any] = []
    lock = threading.Lock()

    def keep(message: Message) -> None:
        with lock:
            seen.append(message)

    node.bus.subscribe(selector, keep)
    return seen


def online(outside: Outside, node_id: str = "attic", count: int = 1) -> None:
    """Wait for the node's birth message: its subscriptions are in place by then."""
    topic = f"platybus/{node_id}/status"
    wait_for(lambda: len([m for m in outside.on(topic) if m.payload == b"online"]) >= count,
             what=f"{node_id} online")


def test_inbound_captures_topic_levels_and_decodes_json_text_and_bytes(
        tmp_path: Path, broker: Broker, outside: Outside,
        start_node: Callable[..., Node]) -> None:
    outside.publish("zigbee2mqtt/porch_sensor", '{"temperature": 21.5}', retain=True)
    outside.subscribe("platybus/attic/status")
    node = start_node(node_config(tmp_path, broker.port, {"subscribe": [
        {"topic": "zigbee2mqtt/{device}", "qos": 1, "event": "zigbee.state"},
        {"topic": "lab/{room}/#", "qos": 0}]}), started=False)
    events = collect(node, "type=zigbee.state or type=mqtt.message")
    node.start()
    online(outside)
    outside.publish("zigbee2mqtt/hallway_remote", '{"action": "on"}', qos=1)
    outside.publish("lab/bench/power", "42 W", qos=0)
    outside.publish("lab/kiln/raw", b"\xff\x00\xfe", qos=2)
    wait_for(lambda: len(events) >= 4, what="four events")
    by_topic = {e.data["topic"]: e for e in events}
    retained = by_topic["zigbee2mqtt/porch_sensor"]
    assert retained.type == "zigbee.state"
    assert retained.data["device"] == "porch_sensor"
    assert retained.data["payload"] == {"temperature": 21.5}
    assert retained.data["payload_format"] == "json"
    assert retained.data["retain"] is True
    remote = by_topic["zigbee2mqtt/hallway_remote"]
    assert (remote.data["device"], remote.data["payload"], remote.data["qos"],
            remote.data["retain"]) == ("hallway_remote", {"action": "on"}, 1, False)
    power = by_topic["lab/bench/power"]
    assert power.type == "mqtt.message"
    assert (power.data["room"], power.data["payload"], power.data["payload_format"],
            power.data["qos"]) == ("bench", "42 W", "text", 0)
    raw = by_topic["lab/kiln/raw"]
    assert (raw.data["payload"], raw.data["payload_format"], raw.data["qos"]) == (
        "/wD+", "base64", 0)  # sent with QoS 2, delivered at the subscription's QoS 0
    assert remote.origin == "attic"


def test_publish_action_sends_with_qos_retain_and_properties(
        tmp_path: Path, broker: Broker, outside: Outside,
        start_node: Callable[..., Node]) -> None:
    outside.subscribe("platybus/attic/status")
    outside.subscribe("home/#", qos=2)
    node = start_node(node_config(tmp_path, broker.port, {}))
    online(outside)
    node.actions.call("mqtt.publish", {"topic": "home/light", "payload": {"state": "ON"},
                                       "qos": 2, "retain": True,
                                       "properties": {"content_type": "application/json"}})
    node.actions.call("mqtt.publish", {"topic": "home/text", "payload": "hello", "qos": 0})
    node.actions.call("mqtt.publish", {"topic": "home/bytes", "payload": "/wD+",
                                       "format": "base64"})
    wait_for(lambda: len(outside.messages) >= 4, what="three messages")
    light = outside.on("home/light")[0]
    assert json.loads(light.payload) == {"state": "ON"}
    assert light.qos == 2
    assert outside.on("home/text")[0].payload == b"hello"
    assert outside.on("home/bytes")[0].payload == b"\xff\x00\xfe"
    late = Outside(broker.port, "late")
    try:
        late.subscribe("home/light")
        wait_for(lambda: late.on("home/light"), what="the retained light state")
        assert late.on("home/light")[0].retain
    finally:
        late.close()
    wait_for(lambda: node.backends["mqtt"].health()["outbox"] == 0, what="an empty outbox")


def test_a_publish_rule_forwards_bus_events_to_templated_topics(
        tmp_path: Path, broker: Broker, outside: Outside,
        start_node: Callable[..., Node]) -> None:
    outside.subscribe("platybus/attic/status")
    outside.subscribe("home/#")
    node = start_node(node_config(tmp_path, broker.port, {"publish": [
        {"if": "type=door.*", "topic": "home/${event.type}", "payload": "${event.data}",
         "qos": 1}]}))
    online(outside)
    node.actions.call("event.publish", {"type": "door.opened", "data": {"door": "front"}})
    wait_for(lambda: outside.on("home/door.opened"), what="the forwarded event")
    assert json.loads(outside.on("home/door.opened")[0].payload) == {"door": "front"}


def test_zigbee2mqtt_example_turns_a_remote_press_into_a_light_command(
        tmp_path: Path, broker: Broker, outside: Outside, monkeypatch: pytest.MonkeyPatch,
        start_node: Callable[..., Node]) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    example = (ROOT / "docs" / "examples" / "zigbee2mqtt.yaml").read_text()
    config = tmp_path / "zigbee2mqtt.yaml"  # the example, on this test's broker
    config.write_text(example.replace("port: 1883", f"port: {broker.port}"))
    outside.subscribe("platybus/hallway/status")
    outside.subscribe("zigbee2mqtt/hallway_light/set")
    start_node(config)
    online(outside, "hallway")
    outside.publish("zigbee2mqtt/hallway_remote", '{"action": "on", "battery": 97}')
    wait_for(lambda: outside.on("zigbee2mqtt/hallway_light/set"), what="the light command")
    command = outside.on("zigbee2mqtt/hallway_light/set")[0]
    assert json.loads(command.payload) == {"state": "ON", "brightness": 200}


def test_bad_input_is_counted_and_the_bridge_keeps_going(
        tmp_path: Path, broker: Broker, outside: Outside,
        start_node: Callable[..., Node]) -> None:
    outside.subscribe("platybus/attic/status")
    node = start_node(node_config(tmp_path, broker.port, {
        "max_payload": 64, "subscribe": [{"topic": "strict/#", "payload": "json"},
                                         {"topic": "any/#"}]}))
    events = collect(node, "mqtt.message")
    online(outside)
    outside.publish("any/big", "x" * 65)
    outside.publish("strict/broken", "{not json")
    outside.publish("any/fine", "ok")
    wait_for(lambda: events, what="the good message")
    backend = node.backends["mqtt"]
    health = wait_for(lambda: (h := backend.health())["oversize"] == 1
                      and h["malformed"] == 1 and h, what="the counts")
    assert [e.data["topic"] for e in events] == ["any/fine"]
    assert "not json" in health["last_error"] or "max_payload" in health["last_error"]
    with pytest.raises(ArgumentError, match="wildcard"):
        node.actions.call("mqtt.publish", {"topic": "home/+/light", "payload": "x"})
    assert node.state == "ready"


def test_refused_credentials_are_a_counted_clear_error(
        tmp_path: Path, start_node: Callable[..., Node]) -> None:
    secured = Broker(tmp_path / "secured", users={"hub": "right"})
    secured.start()
    try:
        node = start_node(node_config(tmp_path, secured.port, {
            "username": "hub", "password": "wrong"}))
        events = collect(node, "mqtt.disconnected")
        backend = node.backends["mqtt"]
        health = wait_for(lambda: (h := backend.health())["refused_connections"] >= 1 and h,
                          what="a refused connection")
        assert health["state"] == "degraded"
        assert "refused" in health["last_error"]
        wait_for(lambda: events, what="mqtt.disconnected")
        assert events[0].data["reason"]
        assert node.state == "ready"
    finally:
        secured.stop()


def test_a_wildcard_in_a_publish_topic_is_a_config_error_naming_the_key(
        tmp_path: Path) -> None:
    path = node_config(tmp_path, 1, {"publish": [{"if": "*", "topic": "home/#"}]})
    with pytest.raises(ConfigError) as raised:
        Node(load_config(path))
    assert "backends.mqtt.publish" in str(raised.value)
    assert "wildcard" in str(raised.value)

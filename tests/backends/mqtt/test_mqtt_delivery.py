"""Nothing accepted is lost: persistent sessions, the outbox, last will and birth."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from platybus.node import Node
from tests.backends.mqtt.harness import Broker, NodeProcess, Outside, node_config, wait_for
from tests.backends.mqtt.test_mqtt_bridge import collect, online

STATUS = "platybus/attic/status"


def test_messages_published_while_the_node_is_down_arrive_when_it_is_back(
        tmp_path: Path, broker: Broker, outside: Outside,
        start_node: Callable[..., Node]) -> None:
    config = node_config(tmp_path, broker.port, {"subscribe": [{"topic": "sensors/#"}]})
    outside.subscribe(STATUS)
    first = start_node(config)
    online(outside)
    first.stop()
    for n in range(5):
        outside.publish("sensors/door", str(n), qos=1)
    second = start_node(config, started=False)
    events = collect(second, "mqtt.message")
    second.start()
    wait_for(lambda: len(events) >= 5, what="the five messages")
    assert [e.data["payload"] for e in events] == [0, 1, 2, 3, 4]


def test_publishes_while_the_broker_is_away_survive_a_node_restart(
        tmp_path: Path, broker: Broker, start_node: Callable[..., Node]) -> None:
    watcher = Outside(broker.port, "watcher", persistent=True)
    try:
        watcher.subscribe(STATUS)
        watcher.subscribe("out/#")
        config = node_config(tmp_path, broker.port, {})
        first = start_node(config)
        online(watcher)
        broker.stop()
        wait_for(lambda: not first.backends["mqtt"].connected.is_set(), what="disconnected")
        for n in range(3):
            first.actions.call("mqtt.publish", {"topic": "out/n", "payload": n, "qos": 1})
        assert first.backends["mqtt"].health()["outbox"] == 3
        first.stop()
        second = start_node(config)
        assert second.backends["mqtt"].health()["outbox"] == 3
        for n in range(3, 5):
            second.actions.call("mqtt.publish", {"topic": "out/n", "payload": n, "qos": 2})
        broker.start()
        wait_for(lambda: len(watcher.on("out/n")) >= 5, timeout=30, what="five publishes")
        assert [json.loads(m.payload) for m in watcher.on("out/n")] == [0, 1, 2, 3, 4]
        wait_for(lambda: second.backends["mqtt"].health()["outbox"] == 0, what="empty outbox")
    finally:
        watcher.close()


@pytest.mark.slow
def test_last_will_when_the_node_is_killed_and_birth_on_every_connect(
        tmp_path: Path, broker: Broker, node_process: Callable[[Path], NodeProcess]) -> None:
    outside = Outside(broker.port, "status-watcher", persistent=True)  # kept across restarts
    outside.subscribe(STATUS)
    config = node_config(tmp_path, broker.port, {})
    node = node_process(config)
    online(outside)
    node.kill()
    wait_for(lambda: outside.on(STATUS)[-1].payload == b"offline", what="the last will")
    node.start()
    online(outside, count=2)
    broker.restart()
    online(outside, count=3)
    late = Outside(broker.port, "late")
    try:
        late.subscribe(STATUS)
        wait_for(lambda: late.on(STATUS), what="the retained status")
        assert late.on(STATUS)[0].payload == b"online"
        assert late.on(STATUS)[0].retain
    finally:
        late.close()
        outside.close()

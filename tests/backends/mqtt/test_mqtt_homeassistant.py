"""Home Assistant discovery, checked against Home Assistant's documented MQTT format."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from platybus.node import Node
from tests.backends.mqtt.harness import Broker, Outside, node_config, wait_for
from tests.backends.mqtt.test_mqtt_bridge import online

# From Home Assistant's "MQTT Discovery" page and its sensor and button pages: the topic
# form, the options each component accepts (abbreviations aside) and what is required.
TOPIC = re.compile(r"^homeassistant/(sensor|button)/[A-Za-z0-9_-]+/[A-Za-z0-9_-]+/config$")
COMMON = {"name", "unique_id", "object_id", "device", "availability", "availability_mode",
          "availability_topic", "payload_available", "payload_not_available", "icon",
          "entity_category", "enabled_by_default", "qos", "json_attributes_topic"}
ALLOWED = {"sensor": COMMON | {"state_topic", "value_template", "unit_of_measurement",
                               "device_class", "state_class", "expire_after", "force_update"},
           "button": COMMON | {"command_topic", "payload_press", "command_template", "retain",
                               "device_class"}}
REQUIRED = {"sensor": {"state_topic"}, "button": {"command_topic"}}
DEVICE = {"identifiers", "connections", "name", "manufacturer", "model", "sw_version",
          "hw_version", "configuration_url", "suggested_area", "via_device"}


def check_discovery(topic: str, payload: dict[str, Any]) -> str:
    """Assert one discovery message follows the documented format; return its component."""
    found = TOPIC.match(topic)
    assert found, topic
    component = found.group(1)
    assert set(payload) <= ALLOWED[component], set(payload) - ALLOWED[component]
    assert REQUIRED[component] <= set(payload)
    assert "+" not in payload[next(iter(REQUIRED[component]))]
    assert isinstance(payload["unique_id"], str)
    assert payload["unique_id"]
    assert set(payload["device"]) <= DEVICE
    assert payload["device"]["identifiers"]
    for entry in payload["availability"]:
        assert set(entry) <= {"topic", "payload_available", "payload_not_available",
                              "value_template"}
        assert entry["topic"]
    return component


def test_discovery_is_published_again_on_home_assistant_birth_and_a_button_runs(
        tmp_path: Path, broker: Broker, outside: Outside,
        start_node: Callable[..., Node]) -> None:
    outside.subscribe("platybus/attic/status")
    outside.subscribe("homeassistant/#")
    outside.subscribe("platybus/attic/sensor/#")
    marker = tmp_path / "out" / "pressed.txt"
    node = start_node(node_config(tmp_path, broker.port, {"homeassistant": {
        "sensors": [{"variable": "attic_temp", "name": "Attic temperature", "unit": "°C",
                     "device_class": "temperature"}], "state_interval": 0.2,
        "buttons": [{"procedure": "lights_off", "name": "Lights off"}]}},
        extra={"procedures": {"lights_off": {"steps": [
            {"action": "file.append", "args": {"path": str(marker), "content": "off\n"}}]}}}))
    node.actions.call("variable.set", {"name": "attic_temp", "value": 19.5})
    online(outside)
    configs = wait_for(lambda: len(c := [m for m in outside.messages
                                         if m.topic.endswith("/config")]) >= 2 and c,
                       what="two discovery configs")
    parsed = {m.topic: json.loads(m.payload) for m in configs}
    assert {check_discovery(t, p) for t, p in parsed.items()} == {"sensor", "button"}
    button = parsed["homeassistant/button/attic/lights_off/config"]
    assert button["availability"][0]["topic"] == "platybus/attic/status"
    sensor = parsed["homeassistant/sensor/attic/attic_temp/config"]
    state = wait_for(lambda: [m for m in outside.on(sensor["state_topic"])
                              if json.loads(m.payload)["value"] == 19.5],
                     what="the sensor state")
    assert state
    late = Outside(broker.port, "late")  # what Home Assistant sees when it subscribes later
    try:
        late.subscribe("homeassistant/+/+/+/config")
        late.subscribe(sensor["state_topic"])
        wait_for(lambda: len(late.messages) >= 3, what="the retained configs and state")
        assert all(m.retain for m in late.messages)
    finally:
        late.close()

    outside.publish("homeassistant/status", "online")
    wait_for(lambda: len([m for m in outside.messages if m.topic.endswith("/config")]) >= 4,
             what="discovery published again")

    outside.publish(button["command_topic"], button["payload_press"])
    wait_for(lambda: marker.exists() and marker.read_text() == "off\n",
             what="the procedure to run")

"""Home Assistant MQTT discovery: the retained config payloads that announce this node.

Pure: builds topics and payloads from the config; the backend publishes them.
The format is Home Assistant's documented one: a JSON object per entity at
``<prefix>/<component>/<node>/<object>/config`` with ``unique_id``, a
``device`` block, an ``availability`` list, and ``state_topic`` (sensors) or
``command_topic`` (buttons).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .config import HomeAssistant

PRESS = "PRESS"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def object_id(name: str) -> str:
    """Return a name as Home Assistant's object ids allow it (letters, digits, ``_``, ``-``)."""
    return _UNSAFE.sub("_", name) or "_"


@dataclass(frozen=True)
class Announcement:
    """One discovery entry: its config topic and payload, and the topic it reads or writes."""

    component: str
    name: str
    config_topic: str
    payload: dict[str, Any]
    topic: str


def status_topic(base: str, node_id: str) -> str:
    """The retained ``online``/``offline`` topic of a node."""
    return f"{base}/{node_id}/status"


def announcements(config: HomeAssistant, base: str, node_id: str,
                  version: str) -> list[Announcement]:
    """Return the discovery entries for the configured sensors and buttons."""
    node = object_id(node_id)
    device = {"identifiers": [f"platybus-{node_id}"], "name": node_id,
              "manufacturer": "platybus", "model": "node", "sw_version": version}
    availability = [{"topic": status_topic(base, node_id), "payload_available": "online",
                     "payload_not_available": "offline"}]
    found: list[Announcement] = []
    for sensor in config.sensors:
        obj = object_id(sensor.variable)
        state = f"{base}/{node_id}/sensor/{obj}/state"
        payload: dict[str, Any] = {
            "name": sensor.name or sensor.variable, "unique_id": f"platybus_{node}_{obj}",
            "object_id": f"{node}_{obj}", "state_topic": state, "device": device,
            "availability": availability, "value_template": "{{ value_json.value }}",
        }
        if sensor.unit:
            payload["unit_of_measurement"] = sensor.unit
        if sensor.device_class:
            payload["device_class"] = sensor.device_class
        found.append(Announcement("sensor", sensor.variable,
                                  f"{config.prefix}/sensor/{node}/{obj}/config", payload, state))
    for button in config.buttons:
        obj = object_id(button.procedure)
        command = f"{base}/{node_id}/button/{obj}/press"
        payload = {
            "name": button.name or button.procedure, "unique_id": f"platybus_{node}_{obj}",
            "object_id": f"{node}_{obj}", "command_topic": command, "payload_press": PRESS,
            "device": device, "availability": availability,
        }
        found.append(Announcement("button", button.procedure,
                                  f"{config.prefix}/button/{node}/{obj}/config", payload,
                                  command))
    return found

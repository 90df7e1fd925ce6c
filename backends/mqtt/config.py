"""The ``backends.mqtt`` section: broker, subscriptions, publish rules, discovery.

Every check runs in ``__post_init__``, so a bad topic or option mix is reported
at load time with the file, line and key of the entry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import msgspec

from platybus.automation.templates import compile_value
from platybus.errors import SelectorError
from platybus.expr import parse_selector

from .topics import TopicPattern, topic_problem

QoS = Literal[0, 1, 2]


class TlsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """TLS to the broker: a CA file, an optional client certificate, ``insecure`` explicitly."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")


class Subscription(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One ``subscribe:`` entry: a topic filter with captures, its QoS and its event type."""

    topic: str
    qos: QoS = 1
    event: str = "mqtt.message"
    payload: Literal["auto", "json", "text", "base64"] = "auto"

    def __post_init__(self) -> None:
        TopicPattern.parse(self.topic)
        if not self.event or " " in self.event:
            raise ValueError(f"event: {self.event!r} is not an event type")


class PublishRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True,
                  rename={"when": "if"}):
    """One ``publish:`` rule: bus events that match ``if`` go to a templated topic."""

    when: str
    topic: str
    payload: Any = "${event.data}"
    qos: QoS = 1
    retain: bool = False

    def __post_init__(self) -> None:
        try:
            parse_selector(self.when)
            compile_value(self.topic)
            compile_value(self.payload)
        except SelectorError as error:
            raise ValueError(str(error)) from None
        if "${" not in self.topic and (problem := topic_problem(self.topic)):
            raise ValueError(f"topic: {problem}")


class Sensor(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A node variable that Home Assistant shows as a sensor."""

    variable: str
    name: str | None = None
    unit: str | None = None
    device_class: str | None = None


class Button(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A procedure that Home Assistant shows as a button; pressing it runs the procedure."""

    procedure: str
    name: str | None = None


class HomeAssistant(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The ``homeassistant:`` block: what discovery announces."""

    prefix: str = "homeassistant"
    sensors: list[Sensor] = msgspec.field(default_factory=list)
    buttons: list[Button] = msgspec.field(default_factory=list)
    state_interval: float = 10.0

    def __post_init__(self) -> None:
        if problem := topic_problem(self.prefix):
            raise ValueError(f"prefix: {problem}")
        if self.state_interval <= 0:
            raise ValueError("state_interval must be positive")


class MqttConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Options of one MQTT broker connection."""

    host: str = "127.0.0.1"
    port: int = 1883
    protocol: Literal["3.1.1", "5"] = "5"
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    password_file: str | None = None
    tls: TlsConfig | None = None
    keepalive: int = 60
    session_expiry: int = 86400
    reconnect_min: int = 1
    reconnect_max: int = 30
    base_topic: str = "platybus"
    peers: list[str] = msgspec.field(default_factory=list)
    subscribe: list[Subscription] = msgspec.field(default_factory=list)
    publish: list[PublishRule] = msgspec.field(default_factory=list)
    max_payload: int = 262144
    outbox_size: int = 10000
    outbox_policy: Literal["reject", "drop_oldest"] = "reject"
    homeassistant: HomeAssistant | None = None

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port: {self.port} is not between 1 and 65535")
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        if self.password_file is not None and not Path(self.password_file).is_file():
            raise ValueError(f"password_file: {self.password_file} is not a readable file")
        if self.keepalive < 5:
            raise ValueError("keepalive must be at least 5 seconds")
        if not 0 < self.reconnect_min <= self.reconnect_max:
            raise ValueError("need 0 < reconnect_min <= reconnect_max")
        if problem := topic_problem(self.base_topic):
            raise ValueError(f"base_topic: {problem}")
        if self.max_payload < 1 or self.outbox_size < 1:
            raise ValueError("max_payload and outbox_size must be positive")

    def secret(self) -> str | None:
        """Return the password, read from ``password_file`` when given."""
        if self.password_file is not None:
            return Path(self.password_file).read_text(encoding="utf-8").strip()
        return self.password

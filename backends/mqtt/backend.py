"""The ``mqtt`` backend: one broker connection, both ways, losing nothing it accepted.

paho-mqtt's threaded client runs the socket on its own loop thread (started
and joined here); this backend's thread only waits for the stop request and
refreshes Home Assistant sensor states. See ``docs/backends/mqtt.md``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from platybus.automation.templates import Compiled, compile_value
from platybus.errors import ArgumentError, LinkError, PlatybusError
from platybus.expr import parse_selector
from platybus.extensions import Backend, NodeContext, action
from platybus.messages import Event, Message, Request, Response

from .config import MqttConfig, PublishRule, Subscription
from .discovery import PRESS, Announcement, announcements, status_topic
from .outbox import Outbox, OutboxFull
from .topics import TopicPattern, decode_payload, encode_payload, matches, topic_problem

STOP_FLUSH = 2.0


class MqttBackend(Backend):
    """Bridges one MQTT broker and the bus: subscriptions in, ``mqtt.publish`` and rules out."""

    Config = MqttConfig

    def __init__(self, name: str, config: MqttConfig, context: NodeContext) -> None:
        super().__init__(name, config, context)
        self.cfg = config
        node = context.node_id
        self.client_id = config.client_id or (
            f"platybus-{node}" if name == "mqtt" else f"platybus-{node}-{name}")
        self.status_topic = status_topic(config.base_topic, node)
        self.patterns = [(TopicPattern.parse(s.topic), s) for s in config.subscribe]
        self.rules = [(parse_selector(r.when), compile_value(r.topic), compile_value(r.payload), r)
                      for r in config.publish]
        self.peer_topics = {status_topic(config.base_topic, p): p for p in config.peers}
        self.ha = config.homeassistant
        self.announced: list[Announcement] = (
            announcements(self.ha, config.base_topic, node, context.version) if self.ha else [])
        self.buttons = {a.topic: a.name for a in self.announced if a.component == "button"}
        self.counts = {"received": 0, "oversize": 0, "malformed": 0, "unmatched": 0,
                       "published": 0, "publish_errors": 0, "refused_connections": 0,
                       "ack_skipped": 0, "connects": 0}
        self.connected = threading.Event()
        self.last_error = ""
        self._generation = 0
        self._lock = threading.Lock()
        self._mids: dict[int, int] = {}
        self._early: set[int] = set()
        self._handed: set[int] = set()
        self._states: dict[str, bytes] = {}
        self._subscriptions: list[Any] = []
        self.outbox = Outbox(context.data_dir / f"mqtt-{name}-outbox.sqlite",
                             config.outbox_size, config.outbox_policy)
        self.client = self._build_client()

    # -- client ------------------------------------------------------------

    def _build_client(self) -> paho.Client:
        cfg = self.cfg
        v5 = cfg.protocol == "5"
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else False, manual_ack=True)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.secret())
        if cfg.tls is not None:
            client.tls_set(ca_certs=cfg.tls.ca_file, certfile=cfg.tls.cert_file,
                           keyfile=cfg.tls.key_file)
            client.tls_insecure_set(cfg.tls.insecure)
        client.will_set(self.status_topic, "offline", qos=1, retain=True)
        client.reconnect_delay_set(cfg.reconnect_min, cfg.reconnect_max)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    def on_start(self) -> None:
        """Subscribe the publish rules, hand queued publishes to the client, connect."""
        for selector, topic, payload, rule in self.rules:
            self._subscriptions.append(self.context.bus.subscribe(
                selector, self._forwarder(topic, payload, rule)))
        for row in self.outbox.pending():
            self._hand(row.seq, row.topic, row.payload, row.qos, row.retain, row.properties)
        properties = None
        if self.cfg.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call, unused-ignore]
            properties.SessionExpiryInterval = self.cfg.session_expiry
            self.client.connect_async(self.cfg.host, self.cfg.port, self.cfg.keepalive,
                                      clean_start=False, properties=properties)
        else:
            self.client.connect_async(self.cfg.host, self.cfg.port, self.cfg.keepalive)
        self.client.loop_start()

    def loop(self) -> None:
        """Serve until stopped; refresh Home Assistant sensor states on their interval."""
        self.mark_ready()
        interval = self.ha.state_interval if self.ha and self.ha.sensors else None
        while not self.wait_for_stop(interval):
            if self.connected.is_set():
                self._publish_states(force=False)

    def on_stop(self) -> None:
        """Say ``offline``, let queued publishes flush briefly, disconnect, join the client."""
        for sub in self._subscriptions:
            sub.unsubscribe()
        if self.connected.is_set():
            info = self.client.publish(self.status_topic, "offline", qos=1, retain=True)
            deadline = time.monotonic() + STOP_FLUSH
            while not info.is_published() and time.monotonic() < deadline:
                time.sleep(0.01)
        self.client.disconnect()
        self.client.loop_stop()
        self.outbox.close()

    def health(self) -> dict[str, Any]:
        """Return the state (``degraded`` while the broker is away) and the counters."""
        report = {**super().health(), **self.counts, "outbox": len(self.outbox),
                  "outbox_dropped": self.outbox.dropped, "outbox_rejected": self.outbox.rejected,
                  "broker": f"{self.cfg.host}:{self.cfg.port}",
                  "connected": self.connected.is_set()}
        if self.last_error:
            report["last_error"] = self.last_error
        if report["state"] == "ready" and not self.connected.is_set():
            report["state"] = "degraded"
        return report

    # -- connection --------------------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any,
                    reason: ReasonCode, properties: Any) -> None:
        if reason.is_failure:
            self.counts["refused_connections"] += 1
            self.last_error = f"broker refused the connection: {reason}"
            self.log.error("MQTT broker %s:%s refused %s: %s", self.cfg.host, self.cfg.port,
                           self.client_id, reason)
            self.send_event(Event(type="mqtt.disconnected",
                                  data=self._where(reason=str(reason))))
            return
        self.counts["connects"] += 1
        with self._lock:
            self._generation += 1
        self.connected.set()
        self.last_error = ""
        topics: list[tuple[str, int]] = [(p.filter, s.qos) for p, s in self.patterns]
        topics += [(t, 1) for t in self.peer_topics]
        if self.ha:
            topics.append((f"{self.ha.prefix}/status", 1))
            topics += [(t, 1) for t in self.buttons]
        if topics:
            client.subscribe(topics)
        client.publish(self.status_topic, "online", qos=1, retain=True)
        self._announce()
        self._hand_waiting()
        self.log.info("connected to MQTT broker %s:%s as %s (session present: %s)",
                      self.cfg.host, self.cfg.port, self.client_id, flags.session_present)
        self.send_event(Event(type="mqtt.connected", data=self._where(
            session_present=bool(flags.session_present))))

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any,
                       reason: ReasonCode, properties: Any) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        with self._lock:
            # QoS 0 messages handed to a lost connection are sent again from the outbox.
            self._handed = {seq for mid, seq in self._mids.items()}
        if was and not self.should_keep_running():
            self.log.info("MQTT broker %s:%s: disconnected", self.cfg.host, self.cfg.port)
        elif was:
            self.last_error = f"disconnected: {reason}"
            self.log.warning("MQTT broker %s:%s: disconnected (%s)", self.cfg.host,
                             self.cfg.port, reason)
            self.send_event(Event(type="mqtt.disconnected", data=self._where(reason=str(reason))))

    def _where(self, **data: Any) -> dict[str, Any]:
        return {"backend": self.backend_name, "broker": f"{self.cfg.host}:{self.cfg.port}",
                "client_id": self.client_id, **data}

    # -- inbound -----------------------------------------------------------

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            self._receive(msg)
        except Exception:
            # Never let one message end paho's loop thread; it stays unacknowledged.
            self.log.exception("MQTT message on %s could not be handled", msg.topic)

    def _receive(self, msg: paho.MQTTMessage) -> None:
        topic = msg.topic
        if topic in self.peer_topics:
            state = msg.payload.decode("utf-8", "replace").strip()
            if state in ("online", "offline"):
                self.send_event(Event(type=f"mqtt.peer.{state}", data={
                    "peer": self.peer_topics[topic], "topic": topic}))
            return self._ack(msg)
        if self.ha is not None and topic == f"{self.ha.prefix}/status":
            if msg.payload.strip() == b"online":
                self.log.info("Home Assistant came online: announcing again")
                self._announce()
            return self._ack(msg)
        if topic in self.buttons:
            if msg.payload.strip() == PRESS.encode():
                self._press(self.buttons[topic])
            return self._ack(msg)
        found = next(((p, s) for p, s in self.patterns if matches(p.filter, topic)), None)
        if found is None:
            self.counts["unmatched"] += 1
            return self._ack(msg)
        pattern, sub = found
        if len(msg.payload) > self.cfg.max_payload:
            self.counts["oversize"] += 1
            self.last_error = (f"{topic}: payload of {len(msg.payload)} bytes is over "
                               f"max_payload ({self.cfg.max_payload}); dropped")
            self.log.error("MQTT %s", self.last_error)
            return self._ack(msg)
        payload, kind = self._decode(bytes(msg.payload), sub)
        if kind is None:
            self.counts["malformed"] += 1
            self.last_error = f"{topic}: payload is not {sub.payload}; dropped"
            self.log.error("MQTT %s", self.last_error)
            return self._ack(msg)
        self.counts["received"] += 1
        event = Event(type=sub.event, origin=self.context.node_id, data={
            **pattern.captured(topic), "topic": topic, "payload": payload,
            "payload_format": kind, "qos": msg.qos, "retain": bool(msg.retain)})
        if msg.qos == 0:
            self.send_event(event)
            return None
        self.events_sent += 1
        with self._lock:
            generation = self._generation
        self._when_safe(event).add_done_callback(
            lambda done: self._ack(msg, generation) if done.exception() is None else None)
        return None

    def _when_safe(self, event: Message) -> Future[None]:
        """A future that resolves once every durable hook's run of the event is journaled."""
        return self.context.bus.deliver(event)

    @staticmethod
    def _decode(raw: bytes, sub: Subscription) -> tuple[Any, str | None]:
        value, kind = decode_payload(raw)
        if sub.payload in ("auto", kind):
            return value, kind
        if sub.payload == "text" and kind == "json":
            return raw.decode("utf-8"), "text"
        if sub.payload == "base64":
            import base64

            return base64.b64encode(raw).decode("ascii"), "base64"
        return None, None

    def _ack(self, msg: paho.MQTTMessage, generation: int | None = None) -> None:
        if msg.qos == 0:
            return
        with self._lock:
            stale = generation is not None and generation != self._generation
        if stale:
            # Its packet id belonged to a lost connection: the broker sends it again.
            self.counts["ack_skipped"] += 1
            return
        self.client.ack(msg.mid, msg.qos)

    # -- outbound ----------------------------------------------------------

    @action
    def publish(self, topic: str, payload: Any = None, qos: int = 1, retain: bool = False,
                properties: dict[str, Any] | None = None,
                format: str | None = None) -> dict[str, Any]:
        """Queue a message for the broker; it leaves the outbox once the broker confirms it."""
        name = f"{self.backend_name}.publish"
        if problem := topic_problem(topic):
            raise ArgumentError(f"{name}: {problem}", action=name)
        if qos not in (0, 1, 2):
            raise ArgumentError(f"{name}: qos must be 0, 1 or 2, got {qos}", action=name)
        if format not in (None, "json", "text", "base64"):
            raise ArgumentError(f"{name}: format must be json, text or base64", action=name)
        try:
            data = encode_payload(payload, format)  # type: ignore[arg-type]
        except ValueError as error:
            raise ArgumentError(f"{name}: payload: {error}", action=name) from None
        if len(data) > self.cfg.max_payload:
            raise ArgumentError(f"{name}: payload of {len(data)} bytes is over max_payload "
                                f"({self.cfg.max_payload})", action=name)
        props = ""
        if properties:
            if self.cfg.protocol != "5":
                raise ArgumentError(f"{name}: properties need protocol 5", action=name)
            _properties(properties, name)
            props = json.dumps(properties)
        return {"seq": self.enqueue(topic, data, qos, retain, props), "queued": len(self.outbox)}

    def enqueue(self, topic: str, data: bytes, qos: int, retain: bool, props: str = "") -> int:
        """Store a publish in the outbox and hand it to the client; return its sequence."""
        try:
            seq = self.outbox.put(topic, data, qos, retain, props)
        except OutboxFull as error:
            raise LinkError(f"{self.backend_name}: {error}; the message was not accepted",
                            backend=self.backend_name) from None
        if qos > 0 or self.connected.is_set():
            self._hand(seq, topic, data, qos, retain, props)
        return seq

    def _hand(self, seq: int, topic: str, data: bytes, qos: int, retain: bool,
              props: str) -> None:
        with self._lock:
            self._handed.add(seq)
        properties = _properties(json.loads(props), "outbox") if props else None
        info = self.client.publish(topic, data, qos=qos, retain=retain, properties=properties)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            self.counts["publish_errors"] += 1
            self.log.error("MQTT publish to %s failed: %s", topic, paho.error_string(info.rc))
            with self._lock:
                self._handed.discard(seq)
            return
        if qos == 0 and info.rc == paho.MQTT_ERR_NO_CONN:
            with self._lock:
                self._handed.discard(seq)  # paho drops QoS 0 offline: the outbox keeps it
            return
        with self._lock:
            if info.mid in self._early:
                self._early.discard(info.mid)
                confirmed = True
            else:
                self._mids[info.mid] = seq
                confirmed = False
        if confirmed:
            self._confirmed(seq)

    def _hand_waiting(self) -> None:
        with self._lock:
            handed = set(self._handed)
        for row in self.outbox.pending():
            if row.seq not in handed:
                self._hand(row.seq, row.topic, row.payload, row.qos, row.retain, row.properties)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode,
                    properties: Any) -> None:
        # Called under paho's own lock: take only ours, never call back into the client.
        with self._lock:
            seq = self._mids.pop(mid, None)
            if seq is None:
                self._early.add(mid)
                return
        self._confirmed(seq)

    def _confirmed(self, seq: int) -> None:
        with self._lock:
            self._handed.discard(seq)
        try:
            self.outbox.done(seq)
        except Exception:
            self.log.exception("outbox: could not forget publish %d", seq)
            return
        self.counts["published"] += 1

    def _forwarder(self, topic: Compiled, payload: Compiled,
                   rule: PublishRule) -> Callable[[Message], None]:
        return lambda message: self._forward(message, topic, payload, rule)

    def _forward(self, message: Message, topic: Compiled, payload: Compiled,
                 rule: PublishRule) -> None:
        if not isinstance(message, Event) or message.type.startswith("mqtt."):
            return
        try:
            scope = {"event": message}
            target = str(topic.render(scope))
            if problem := topic_problem(target):
                raise ArgumentError(f"publish rule {rule.when!r}: {problem}")
            self.enqueue(target, encode_payload(payload.render(scope)), rule.qos, rule.retain)
        except (PlatybusError, ValueError, TypeError) as error:
            self.counts["publish_errors"] += 1
            self.log.error("MQTT publish rule %r: %s", rule.when, error)

    # -- Home Assistant ----------------------------------------------------

    def _announce(self) -> None:
        for item in self.announced:
            self.client.publish(item.config_topic, json.dumps(item.payload), qos=1, retain=True)
        self._publish_states(force=True)

    def _publish_states(self, force: bool) -> None:
        for item in self.announced:
            if item.component != "sensor":
                continue
            try:
                value = self.context.actions.call("variable.get", {"name": item.name})
            except PlatybusError as error:
                self.log.warning("Home Assistant sensor %s: %s", item.name, error)
                continue
            data = json.dumps({"value": value}).encode()
            if force or self._states.get(item.topic) != data:
                self._states[item.topic] = data
                self.client.publish(item.topic, data, qos=1, retain=True)

    def _press(self, procedure: str) -> None:
        self.log.info("Home Assistant pressed %s", procedure)

        def done(response: Response) -> None:
            if response.error is not None:
                self.log.error("procedure %s (pressed in Home Assistant) failed: %s",
                               procedure, response.error.message)

        self.send_request(Request(action=f"procedure.{procedure}", args={}), on_response=done)


def _properties(given: dict[str, Any], name: str) -> Properties:
    """Build MQTT 5 PUBLISH properties from ``content_type``-style names."""
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call, unused-ignore]
    for key, value in given.items():
        attr = "".join(part.capitalize() for part in key.split("_"))
        wire = value
        if attr == "UserProperty" and isinstance(value, dict):
            wire = list(value.items())
        if attr == "CorrelationData" and isinstance(value, str):
            wire = value.encode()
        try:
            setattr(props, attr, wire)
        except Exception as error:
            raise ArgumentError(f"{name}: property {key!r}: {error}") from None
    return props

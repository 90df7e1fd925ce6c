"""MQTT bridge: inbound messages to a hook, and outbound publishes, beside raw paho.

Starts its own Mosquitto on a free loopback port. Inbound: an outside paho client
publishes QoS 1 messages (each carrying its send time); a raw paho subscriber and
the node (``durable: true`` hook on the events) receive the same messages from the
same broker in the same run; figures are events/s and p50/p99 from send to the
node's handler. A second pass offers 1,000 msg/s for the latency target. Outbound:
``mqtt.publish`` (through the disk outbox) against raw paho ``publish`` at QoS 1.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from platybus.config import load_config
from platybus.messages import Message
from platybus.node import Node

sys.path.insert(0, str(Path(__file__).parents[1]))
from tests.backends.mqtt.harness import Broker


def _client(port: int, name: str) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=name)
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000 if ordered else 0.0


def _node(base: Path, port: int) -> Node:
    config = {
        "node": {"id": "bench", "data_dir": str(base / "data"), "log_level": "warning"},
        "backends": {"mqtt": {"port": port, "subscribe": [{"topic": "bench/#", "qos": 1}]}},
        "hooks": {"count": {"if": {"type": "mqtt.message"}, "durable": True,
                            "then": [{"set": {"seen": "${event.data.topic}"}}]}},
    }
    base.mkdir(parents=True, exist_ok=True)
    path = base / "config.yaml"
    path.write_text(json.dumps(config))
    return Node(load_config(path))


def inbound(port: int, base: Path, count: int, rate: float | None) -> None:
    node = _node(base, port)
    latencies: list[float] = []
    lock = threading.Lock()
    node_done = threading.Event()
    raw_done = threading.Event()
    times: dict[str, float] = {}

    def on_event(message: Message) -> None:
        now = time.time()
        with lock:
            latencies.append(now - message.data["payload"]["t"])  # type: ignore[attr-defined]
            if len(latencies) == 1:
                times["node_first"] = now
            if len(latencies) == count:
                times["node_last"] = now
                node_done.set()

    node.bus.subscribe("mqtt.message", on_event)
    node.start()
    backend: Any = node.backends["mqtt"]
    while not backend.connected.is_set():
        time.sleep(0.01)
    raw_seen = [0]

    def on_raw(client: Any, userdata: Any, msg: Any) -> None:
        raw_seen[0] += 1
        if raw_seen[0] == 1:
            times["raw_first"] = time.time()
        if raw_seen[0] == count:
            times["raw_last"] = time.time()
            raw_done.set()

    raw = _client(port, "raw-subscriber")
    raw.on_message = on_raw
    raw.subscribe("bench/#", 1)
    time.sleep(0.5)
    sender = _client(port, "sender")
    started = time.time()
    for n in range(count):
        sender.publish(f"bench/{n % 10}", json.dumps({"n": n, "t": time.time()}), qos=1)
        if rate:
            delay = started + (n + 1) / rate - time.time()
            if delay > 0:
                time.sleep(delay)
    raw_done.wait(120)
    node_done.wait(120)
    label = f"offered {rate:.0f} msg/s" if rate else "as fast as the sender goes"
    raw_rate = count / max(1e-9, times.get("raw_last", 0) - started)
    node_rate = count / max(1e-9, times.get("node_last", 0) - started)
    print(f"inbound {count} QoS 1 ({label}): raw paho subscriber {raw_rate:,.0f} msg/s; "
          f"node durable hook {node_rate:,.0f} events/s ({node_rate / raw_rate:.0%} of raw); "
          f"node p50 {_pct(latencies, 0.5):.2f} ms p99 {_pct(latencies, 0.99):.2f} ms; "
          f"received {len(latencies)}")
    for client in (sender, raw):
        client.disconnect()
        client.loop_stop()
    node.stop()


def outbound(port: int, base: Path, count: int) -> None:
    raw = _client(port, "raw-publisher")
    began = time.monotonic()
    infos = [raw.publish("out/raw", b"x" * 50, qos=1) for _ in range(count)]
    for info in infos:
        info.wait_for_publish(60)
    raw_rate = count / (time.monotonic() - began)
    raw.disconnect()
    raw.loop_stop()
    node = _node(base, port)
    node.start()
    backend: Any = node.backends["mqtt"]
    while not backend.connected.is_set():
        time.sleep(0.01)
    began = time.monotonic()
    for _ in range(count):
        node.actions.call("mqtt.publish", {"topic": "out/node", "payload": "x" * 50})
    while backend.health()["outbox"]:
        time.sleep(0.005)
    node_rate = count / (time.monotonic() - began)
    node.stop()
    print(f"outbound {count} QoS 1 confirmed: raw paho {raw_rate:,.0f} msg/s; "
          f"mqtt.publish through the outbox {node_rate:,.0f} msg/s "
          f"({node_rate / raw_rate:.0%} of raw)")


def main(argv: list[str]) -> None:
    """Run the MQTT benchmark and print its figures beside raw paho."""
    if not shutil.which("mosquitto") and not Path("/usr/sbin/mosquitto").exists():
        print("mosquitto is not installed: skipped")
        return
    count = int(argv[0]) if argv else 20000
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        broker = Broker(base / "broker")
        broker.start()
        try:
            inbound(broker.port, base / "in", count, None)
            inbound(broker.port, base / "in1k", 5000, 1000.0)
            outbound(broker.port, base / "out", count // 4)
        finally:
            broker.stop()


if __name__ == "__main__":
    main(sys.argv[1:])

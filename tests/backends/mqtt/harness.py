"""A real Mosquitto broker per test on a free loopback port, and outside MQTT clients.

The broker comes from PATH (Debian's ``mosquitto``), with persistence on in the
test's own directory, so a restart keeps sessions and queued messages. The
outside party is a separate paho client or ``mosquitto_pub``/``mosquitto_sub``,
never the node's own client.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from platybus.config import load_config
from platybus.node import Node

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll until ``check()`` is truthy and return it; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Broker:
    """A mosquitto of a test's own, to stop and start; persistence in its directory."""

    def __init__(self, directory: Path, users: dict[str, str] | None = None) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        lines = [f"listener {self.port} 127.0.0.1", "persistence true",
                 f"persistence_location {self.dir}/", "autosave_interval 1",
                 "max_queued_messages 0", "max_inflight_messages 100",
                 f"log_dest file {self.dir}/mosquitto.log",
                 "log_type error", "log_type warning", "log_type notice"]
        if os.geteuid() == 0:
            # As root, mosquitto drops to the 'mosquitto' user, who cannot write here.
            lines.append("user root")
        if users:
            passwd = self.dir / "passwd"
            for index, (user, password) in enumerate(users.items()):
                subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if index == 0 else []),
                                str(passwd), user, password], check=True,
                               capture_output=True)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                assert self.proc.poll() is None, (self.dir / "mosquitto.log").read_text()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        """A clean shutdown: mosquitto writes its persistence file."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    server = Broker(tmp_path / "broker")
    server.start()
    yield server
    server.stop()


class Outside:
    """A separate paho client: what a device or Home Assistant would be."""

    def __init__(self, port: int, client_id: str = "outside", persistent: bool = False) -> None:
        self.messages: list[paho.MQTTMessage] = []
        self.lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=not persistent)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_message = self._on_message
        self.connected = threading.Event()
        self.client.on_connect = lambda *args: self.connected.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_for(self.connected.is_set, what="the outside client to connect")

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append(msg)

    def subscribe(self, topic: str, qos: int = 1) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *args: done.set()
        self.client.subscribe(topic, qos)
        wait_for(done.is_set, what=f"subscription to {topic}")

    def publish(self, topic: str, payload: bytes | str, qos: int = 1,
                retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(10)

    def on(self, topic: str) -> list[paho.MQTTMessage]:
        with self.lock:
            return [m for m in self.messages if m.topic == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def outside(broker: Broker) -> Iterator[Outside]:
    client = Outside(broker.port)
    yield client
    client.close()


def node_config(tmp_path: Path, port: int, mqtt: dict[str, Any],
                extra: dict[str, Any] | None = None, node_id: str = "attic") -> Path:
    """Write a node config (JSON is YAML) with the mqtt backend and a file root."""
    (tmp_path / "out").mkdir(exist_ok=True)
    config = {
        "node": {"id": node_id, "data_dir": str(tmp_path / "data"), "log_level": "info"},
        "plugins": {"file": {"roots": [str(tmp_path / "out")]}, "variable": None},
        "backends": {"mqtt": {"host": "127.0.0.1", "port": port, "reconnect_max": 1,
                              **mqtt}},
        **(extra or {}),
    }
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """Build (and start, unless ``started=False``) in-process nodes; stopped after the test."""
    nodes: list[Node] = []

    def start(path: Path, started: bool = True) -> Node:
        node = Node(load_config(path))
        nodes.append(node)
        if started:
            node.start()
        return node

    yield start
    for node in nodes:
        node.stop()


class NodeProcess:
    """``platybus run`` as a child process, to kill with -9."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.log = config.parent / "node.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "platybus", "run", "-c", str(self.config)],
                cwd=self.config.parent, stdout=subprocess.DEVNULL, stderr=log)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@pytest.fixture
def node_process() -> Iterator[Callable[[Path], NodeProcess]]:
    started: list[NodeProcess] = []

    def launch(config: Path) -> NodeProcess:
        proc = NodeProcess(config)
        started.append(proc)
        proc.start()
        return proc

    yield launch
    for proc in started:
        proc.stop()

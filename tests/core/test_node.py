"""The node: start/stop order, idempotent stop, the single-instance lock, health."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from platybus.config import load_config
from platybus.errors import NodeAlreadyRunning, NodeError
from platybus.messages import Event, Request
from platybus.node import Node

BACKEND = '''
import threading
from platybus.extensions import Backend
from platybus.messages import Event

class Ticker(Backend):
    def loop(self):
        self.mark_ready()
        self.send_event(Event(type="ticker.started"))
        while self.should_keep_running():
            self.wait_for_stop(0.05)

class Broken(Backend):
    def on_start(self):
        raise OSError("port 1 is taken")
'''


def make_config(tmp_path: Path, extra: str = "", node_id: str = "t") -> Path:
    ext = tmp_path / "ext"
    ext.mkdir(exist_ok=True)
    (ext / "ticker_ext.py").write_text(textwrap.dedent(BACKEND))
    path = tmp_path / f"{node_id}.yaml"
    path.write_text(
        f"node:\n  id: {node_id}\n  data_dir: {tmp_path / 'data'}\n  extensions_path: [{ext}]\n"
        f"{extra}"
    )
    return path


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(load_config(make_config(
        tmp_path, "backends:\n  ticker:\n    class: ticker_ext:Ticker\n")))
    yield n
    n.stop()


def test_start_publishes_node_started_and_backends_run(node: Node) -> None:
    seen: list[Event] = []
    node.bus.subscribe("type=node.started or type=ticker.started", seen.append)
    node.start()
    response = node.bus.request(Request(action="node.ping"), timeout=5)
    assert response.output["node"] == "t"
    node.bus.publish(Event(type="sync"), synchronous=True)
    assert {e.type for e in seen} == {"node.started", "ticker.started"}
    health = node.health()
    assert health["ready"] is True
    assert health["components"]["backends"] == {"ticker": "ready"}


def test_stop_is_idempotent_and_joins_every_thread(node: Node) -> None:
    node.start()
    node.stop()
    node.stop()
    assert node.state == "stopped"
    assert not node.backends["ticker"].is_alive()
    assert not node.bus.running


def test_node_stopped_is_delivered_before_the_bus_stops(node: Node) -> None:
    seen: list[str] = []
    node.bus.subscribe("node.stopped", lambda e: seen.append(e.data.node_id))
    node.start()
    node.stop()
    assert seen == ["t"]


def test_second_node_with_same_id_and_data_dir_refuses(node: Node, tmp_path: Path) -> None:
    node.start()
    twin = Node(load_config(make_config(tmp_path)))
    with pytest.raises(NodeAlreadyRunning, match="already running"):
        twin.start()
    assert twin.state == "failed"
    # A node with another id may share the data dir.
    other = Node(load_config(make_config(tmp_path, node_id="u")))
    other.start()
    other.stop()


def test_a_backend_that_fails_to_start_fails_the_node_cleanly(tmp_path: Path) -> None:
    node = Node(load_config(make_config(tmp_path, "backends:\n  bad:\n"
                                                  "    class: ticker_ext:Broken\n")))
    with pytest.raises(OSError, match="port 1 is taken"):
        node.start()
    assert node.state == "failed"
    assert not node.bus.running
    with pytest.raises(NodeError):
        node.start()


def test_default_plugins_can_be_disabled(tmp_path: Path) -> None:
    node = Node(load_config(make_config(tmp_path, "plugins:\n  event:\n    enabled: false\n")))
    names: list[Any] = [s.name for s in node.actions.specs()]
    assert "node.ping" in names
    assert "event.publish" not in names


def test_metrics_render_prometheus_text(node: Node) -> None:
    node.start()
    node.bus.request(Request(action="node.ping"), timeout=5)
    text = node.metrics()
    assert "# TYPE platybus_bus_published_total counter" in text
    assert 'platybus_action_calls_total{action="node.ping"} 1' in text

"""The http backend inside a real node, on a free port, with real clients."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from platybus.backends.http.backend import HttpBackend

from platybus.config import load_config
from platybus.errors import ConfigError, ListenError
from platybus.link.loopback import LoopbackHub, LoopbackLink
from platybus.messages import Event
from platybus.node import Node

EXTENSIONS = '''
import time
from pathlib import Path

import msgspec

from platybus.extensions import Backend, Plugin, action


class Tools(Plugin):
    @action
    def sleep(self, seconds: float) -> str:
        """Sleep, then answer."""
        time.sleep(seconds)
        return "slept"

    @action
    def fail(self) -> None:
        """Raise on purpose."""
        raise ValueError("broken on purpose")

    @action(blocking=False)
    def echo(self, value: int) -> int:
        """Answer with the value."""
        return value


class GateConfig(msgspec.Struct, frozen=True):
    gate: str


class Gated(Backend):
    """Becomes ready only once its gate file exists."""

    Config = GateConfig

    def loop(self):
        gate = Path(self.config.gate)
        while self.should_keep_running() and not gate.exists():
            self._stop_requested.wait(0.02)
        self.mark_ready()
        self._stop_requested.wait()
'''


def write_config(tmp_path: Path, http: dict[str, Any] | None = None,
                 backends: dict[str, Any] | None = None,
                 bus: dict[str, Any] | None = None) -> Path:
    (tmp_path / "testext.py").write_text(EXTENSIONS, encoding="utf-8")
    config = {
        "node": {"id": "web", "data_dir": str(tmp_path / "data"),
                 "extensions_path": [str(tmp_path)], "stop_timeout": 3},
        "plugins": {"tools": {"class": "testext:Tools"}},
        "backends": {"http": {"port": 0, **(http or {})}, **(backends or {})},
    }
    if bus:
        config["node"]["bus"] = bus
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []

    def start(**http: Any) -> Node:
        node = Node(load_config(write_config(tmp_path, http)))
        nodes.append(node)
        node.start()
        return node

    yield start
    for node in nodes:
        node.stop()


def port_of(node: Node) -> int:
    backend = node.backends["http"]
    assert isinstance(backend, HttpBackend)
    return backend.port


def call(port: int, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """One request with http.client; JSON bodies come back decoded."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=headers or {})
        reply = conn.getresponse()
        raw = reply.read()
        kind = reply.getheader("Content-Type", "")
        decoded = json.loads(raw) if kind.startswith("application/json") else raw.decode()
        return reply.status, dict(reply.getheaders()), decoded
    finally:
        conn.close()


# -- /execute ---------------------------------------------------------------------


def test_execute_runs_an_action_and_answers_with_the_response(
        start_node: Callable[..., Node]) -> None:
    port = port_of(start_node())
    status, _, body = call(port, "POST", "/execute", {"action": "tools.echo", "args": {"value": 7}})
    assert status == 200
    assert body["output"] == 7
    assert body["error"] is None
    assert body["request_id"]
    assert body["id"]
    assert body["duration"] >= 0
    status, _, body = call(port, "POST", "/execute", {"action": "node.ping"})
    assert (status, body["output"]["pong"], body["output"]["node"]) == (200, True, "web")


def test_execute_error_statuses(start_node: Callable[..., Node]) -> None:
    port = port_of(start_node(max_body=4096))

    status, _, body = call(port, "POST", "/execute", b'{"action": ')
    assert status == 400
    assert body["error"]["type"] == "DecodeError"
    assert "malformed JSON" in body["error"]["message"]

    status, _, body = call(port, "POST", "/execute", {"action": "node.ping", "bogus": 1})
    assert status == 400
    assert "bogus" in body["error"]["message"]

    status, _, body = call(port, "POST", "/execute",
                           {"action": "tools.echo", "args": {"value": "seven"}})
    assert status == 400
    assert body["error"]["type"] == "ArgumentError"
    assert "value" in body["error"]["message"]

    status, _, body = call(port, "POST", "/execute", {"action": "tools.ech"})
    assert status == 404
    assert body["error"]["type"] == "UnknownActionError"
    assert "tools.echo" in body["error"]["message"]

    status, _, body = call(port, "POST", "/execute", {"action": "tools.fail"})
    assert status == 500
    assert body["error"] == {"type": "ValueError", "message": "broken on purpose",
                             "details": {"action": "tools.fail"}}

    status, _, body = call(port, "POST", "/execute",
                           {"action": "tools.sleep", "args": {"seconds": 0.5}, "timeout": 0.05})
    assert status == 504
    assert body["error"]["type"] == "RequestTimeout"

    status, _, body = call(port, "POST", "/execute",
                           {"action": "node.ping", "args": {"pad": "x" * 5000}})
    assert status == 413
    assert "max_body" in body["error"]["message"]
    assert "request_id" in body  # /execute always answers with a Response

    status, _, body = call(port, "POST", "/execute", {"action": "node.ping", "target": "elsewhere"})
    assert status == 502
    assert body["error"]["type"] == "NoRouteError"


def test_unknown_route_and_wrong_method(start_node: Callable[..., Node]) -> None:
    port = port_of(start_node())
    status, _, body = call(port, "GET", "/nowhere")
    assert status == 404
    assert body["error"]["type"] == "NotFound"
    status, headers, body = call(port, "GET", "/execute")
    assert status == 405
    assert headers["Allow"] == "POST"


def test_allow_list_refuses_other_actions_with_403(start_node: Callable[..., Node]) -> None:
    port = port_of(start_node(allow=["node.*"]))
    assert call(port, "POST", "/execute", {"action": "node.ping"})[0] == 200
    status, _, body = call(port, "POST", "/execute", {"action": "tools.echo",
                                                      "args": {"value": 1}})
    assert status == 403
    assert body["error"]["type"] == "ActionNotAllowed"
    _, _, listing = call(port, "GET", "/actions")
    assert {a["name"] for a in listing} == {"node.info", "node.ping", "node.stats"}


# -- auth -------------------------------------------------------------------------


def test_token_is_checked_on_every_route_but_health(start_node: Callable[..., Node]) -> None:
    port = port_of(start_node(token="s3cret"))
    ping = {"action": "node.ping"}
    status, headers, body = call(port, "POST", "/execute", ping)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert body["error"]["type"] == "Unauthorized"
    assert call(port, "POST", "/execute", ping, {"Authorization": "Bearer wrong"})[0] == 401
    assert call(port, "POST", "/execute", ping, {"Authorization": "Basic s3cret"})[0] == 401
    assert call(port, "POST", "/execute", ping, {"Authorization": "Bearer s3cret"})[0] == 200
    assert call(port, "GET", "/metrics")[0] == 401
    assert call(port, "GET", "/events")[0] == 401
    assert call(port, "GET", "/health")[0] == 200


def test_loopback_bind_needs_no_token(start_node: Callable[..., Node]) -> None:
    port = port_of(start_node(host="localhost"))
    assert call(port, "POST", "/execute", {"action": "node.ping"})[0] == 200


def test_non_loopback_bind_without_token_is_refused_before_start(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"host": "0.0.0.0"})
    with pytest.raises(ConfigError) as info:
        Node(load_config(path))
    assert info.value.key == "backends.http"
    assert "token is required" in str(info.value)
    assert "config.yaml" in str(info.value)


def test_token_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_TOKEN", "from-env")
    path = write_config(tmp_path, {"host": "0.0.0.0", "token": "${WEB_TOKEN}"})
    node = Node(load_config(path))
    backend = node.backends["http"]
    assert isinstance(backend, HttpBackend)
    assert backend.config.token == "from-env"


# -- start-up and stop ------------------------------------------------------------


def test_requests_before_the_node_is_ready_get_503(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    path = write_config(tmp_path, backends={"gated": {"class": "testext:Gated",
                                                       "gate": str(gate)}})
    node = Node(load_config(path))
    starter = threading.Thread(target=node.start, name="test-node-start")
    starter.start()
    try:
        assert node.backends["http"].ready.wait(5)
        port = port_of(node)
        status, headers, body = call(port, "POST", "/execute", {"action": "node.ping"})
        assert status == 503
        assert headers["Retry-After"] == "1"
        assert body["error"]["type"] == "NodeNotReady"
        assert call(port, "POST", "/events", {"type": "early.bird"})[0] == 503
        status, _, health = call(port, "GET", "/health")
        assert status == 503
        assert health["ready"] is False
        assert health["components"]["backends"]["gated"] == "starting"
        gate.touch()
        starter.join(10)
        assert node.state == "ready"
        assert call(port, "POST", "/execute", {"action": "node.ping"})[0] == 200
        status, _, health = call(port, "GET", "/health")
        assert status == 200
        assert health["components"]["backends"] == {
            "http": "ready", "gated": "ready"}
    finally:
        gate.touch()
        starter.join(10)
        node.stop()


def test_port_in_use_fails_the_start_with_a_clear_error(
        start_node: Callable[..., Node], tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ListenError, match=r"cannot listen on 127\.0\.0\.1.*set "
                                              r"backends\.http\.port to a free port"):
            start_node(port=taken.getsockname()[1])


# -- /events, SSE, websocket ------------------------------------------------------


def read_sse(reply: http.client.HTTPResponse, count: int) -> list[tuple[str, dict[str, Any]]]:
    frames: list[tuple[str, dict[str, Any]]] = []
    event, data = "", ""
    while len(frames) < count:
        line = reply.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif not line and data:
            frames.append((event, json.loads(data)))
            event, data = "", ""
    return frames


def test_publish_and_follow_the_sse_stream_with_a_filter(start_node: Callable[..., Node]) -> None:
    port = port_of(start_node())
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/events?filter=type%3Dgarden.*%20and%20data.zone%3Dnorth")
        reply = conn.getresponse()
        assert reply.status == 200
        assert reply.getheader("Content-Type") == "text/event-stream"
        for event in ({"type": "garden.watered", "data": {"zone": "south"}},
                      {"type": "kitchen.lit", "data": {"zone": "north"}},
                      {"type": "garden.watered", "data": {"zone": "north", "litres": 3}}):
            status, _, body = call(port, "POST", "/events", event)
            assert status == 202
            assert body["type"] == event["type"]
        [(name, message)] = read_sse(reply, 1)
        assert name == "garden.watered"
        assert message["data"] == {"zone": "north", "litres": 3}
        assert message["origin"] == "web"
        assert message["kind"] == "event"
    finally:
        conn.close()


def test_publish_rejects_bad_events(start_node: Callable[..., Node]) -> None:
    port = port_of(start_node())
    status, _, body = call(port, "POST", "/events", {"type": "not a type"})
    assert status == 400
    assert "dotted" in body["error"]["message"]
    status, _, body = call(port, "POST", "/events", {"data": {}})
    assert status == 400
    assert "type" in body["error"]["message"]
    status, _, body = call(port, "POST", "/events", {"type": "node.started", "data": {"x": 1}})
    assert status == 400  # typed events are validated against their class
    assert call(port, "GET", "/events?filter=type%3D%3D")[0] == 400


def test_a_full_bus_answers_503_at_once_and_the_server_keeps_serving(tmp_path: Path) -> None:
    # Under policy block a publisher may wait block_timeout for room; the HTTP loop never
    # does (here it would wait an hour and the client would time out).
    node = Node(load_config(write_config(
        tmp_path, bus={"queue_size": 4, "policy": "block", "block_timeout": 3600})))
    node.start()
    gate = threading.Event()
    try:
        node.bus.subscribe("type=jam", lambda event: gate.wait(30))  # holds the dispatcher
        port = port_of(node)
        answers = [call(port, "POST", "/events", {"type": "jam"}) for _ in range(8)]
        statuses = [status for status, _, _ in answers]
        assert 503 in statuses, statuses
        refused = answers[statuses.index(503)][2]
        assert refused["error"]["type"] == "QueueFullError"
        assert call(port, "GET", "/health")[0] == 200
    finally:
        gate.set()
        node.stop()
    assert node.state == "stopped"


def test_websocket_streams_filtered_events_and_serves_requests(
        start_node: Callable[..., Node]) -> None:
    node = start_node()
    port = port_of(node)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        async with aiohttp.ClientSession() as session, session.ws_connect(
                f"http://127.0.0.1:{port}/ws?filter=sensor.*") as ws:
            node.bus.publish(Event(type="door.opened", data={"n": 1}))
            node.bus.publish(Event(type="sensor.read", data={"celsius": 21.5}))
            streamed = await ws.receive_json(timeout=5)
            await ws.send_json({"kind": "request", "action": "tools.echo", "args": {"value": 4}})
            answered = await ws.receive_json(timeout=5)
            await ws.send_json({"kind": "bogus"})
            refused = await ws.receive_json(timeout=5)
            return streamed, answered, refused

    streamed, answered, refused = asyncio.run(scenario())
    assert (streamed["type"], streamed["data"]) == ("sensor.read", {"celsius": 21.5})
    assert answered["kind"] == "response"
    assert answered["output"] == 4
    assert refused["error"]["type"] == "DecodeError"


def test_a_slow_stream_client_is_dropped_and_counted(start_node: Callable[..., Node]) -> None:
    node = start_node(stream_queue=256)
    port = port_of(node)
    backend = node.backends["http"]
    assert isinstance(backend, HttpBackend)
    # A client that keeps reading, beside one that stops reading.
    fast = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    fast.request("GET", "/events?filter=flood.*")
    fast_reply = fast.getresponse()
    fast_frames = [0]

    def read_fast() -> None:
        try:
            while line := fast_reply.readline():
                fast_frames[0] += line.startswith(b"data: ")
        except (OSError, ValueError, AttributeError):
            pass  # closed by the test

    reader = threading.Thread(target=read_fast, name="test-fast-reader")
    reader.start()
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.settimeout(10)
    try:
        slow.connect(("127.0.0.1", port))
        slow.sendall(b"GET /events?filter=flood.* HTTP/1.1\r\nHost: x\r\n\r\n")
        assert slow.recv(64).startswith(b"HTTP/1.1 200")
        payload = "x" * 4000
        deadline = time.monotonic() + 20
        sent = 0
        # Bursts smaller than the queue: only a client that stops reading falls behind.
        while (backend.streams.dropped["queue_full"] == 0 and sent < 20_000
               and time.monotonic() < deadline):
            for _ in range(4):
                node.bus.publish(Event(type="flood.item", data={"pad": payload}))
            sent += 4
            time.sleep(0.002)
        assert backend.streams.dropped["queue_full"] == 1
        # The slow connection was cut: reading drains what was sent, then ends.
        while True:
            try:
                if not slow.recv(1 << 16):
                    break
            except ConnectionResetError:
                break
        metrics = call(port, "GET", "/metrics")[2]
        assert 'platybus_http_stream_dropped_total{reason="queue_full"} 1' in metrics
        assert "platybus_http_stream_clients 1" in metrics  # the fast reader is still there
        assert fast_frames[0] > 0
    finally:
        slow.close()
        if fast.sock is not None:
            fast.sock.shutdown(socket.SHUT_RDWR)
        fast.close()
        reader.join(5)
    assert call(port, "POST", "/execute", {"action": "node.ping"})[0] == 200


def test_stop_ends_open_streams(tmp_path: Path) -> None:
    node = Node(load_config(write_config(tmp_path)))
    node.start()
    conn = http.client.HTTPConnection("127.0.0.1", port_of(node), timeout=10)
    try:
        conn.request("GET", "/events")
        reply = conn.getresponse()
        assert reply.status == 200
        began = time.monotonic()
        node.stop()
        assert time.monotonic() - began < 3
        assert reply.read() is not None  # the stream ended instead of hanging
    finally:
        conn.close()
        node.stop()


# -- /health, /metrics, /actions --------------------------------------------------


def test_health_reports_components(start_node: Callable[..., Node]) -> None:
    port = port_of(start_node())
    status, _, health = call(port, "GET", "/health")
    assert status == 200
    assert health["ready"] is True
    assert health["node"] == "web"
    assert health["components"]["bus"] == "ready"
    assert health["components"]["backends"] == {"http": "ready"}


def test_metrics_are_prometheus_text(start_node: Callable[..., Node]) -> None:
    port = port_of(start_node())
    call(port, "POST", "/execute", {"action": "node.ping"})
    call(port, "POST", "/execute", {"action": "no.such"})
    status, headers, text = call(port, "GET", "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert line.startswith(("# HELP platybus_", "# TYPE platybus_"))
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    assert samples['platybus_http_requests_total{route="/execute",status="200"}'] == 1
    assert samples['platybus_http_requests_total{route="/execute",status="404"}'] == 1
    assert samples['platybus_action_calls_total{action="node.ping"}'] == 1
    assert samples["platybus_bus_published_total"] >= 4
    assert samples["platybus_http_stream_clients"] == 0
    assert 'platybus_http_stream_dropped_total{reason="queue_full"}' in samples


def test_actions_lists_names_signatures_and_docs(start_node: Callable[..., Node]) -> None:
    port = port_of(start_node())
    status, _, listing = call(port, "GET", "/actions")
    assert status == 200
    by_name = {a["name"]: a for a in listing}
    assert by_name["tools.echo"] == {
        "name": "tools.echo", "signature": "(value: int)", "doc": "Answer with the value.",
        "params": [{"name": "value", "type": "integer", "required": True, "nullable": False}]}
    assert "node.ping" in by_name


def test_config_rejects_bad_options(tmp_path: Path) -> None:
    for options, fragment in (({"port": 70000}, "port"), ({"public": ["/nope"]}, "/nope"),
                              ({"tokn": "x"}, "token"), ({"token": " "}, "token is empty")):
        with pytest.raises(ConfigError, match=fragment):
            Node(load_config(write_config(tmp_path, options)))


def test_cors_headers_for_allowed_origins(start_node: Callable[..., Node]) -> None:
    port = port_of(start_node(cors=["http://panel.local"]))
    _, headers, _ = call(port, "GET", "/health", headers={"Origin": "http://panel.local"})
    assert headers["Access-Control-Allow-Origin"] == "http://panel.local"
    _, headers, _ = call(port, "GET", "/health", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in headers
    status, headers, _ = call(port, "OPTIONS", "/execute",
                              headers={"Origin": "http://panel.local"})
    assert status == 204
    assert "Authorization" in headers["Access-Control-Allow-Headers"]




def test_execute_with_a_target_goes_through_the_link(
        start_node: Callable[..., Node], tmp_path: Path) -> None:
    node = start_node()
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other_config = other_dir / "config.yaml"
    other_config.write_text(yaml.safe_dump({"node": {"id": "other",
                                                     "data_dir": str(other_dir / "data")}}))
    other = Node(load_config(other_config))
    other.start()
    # The in-memory link stands in for Redis (tested on its own): here only the HTTP side
    # of a cross-node request is under test.
    hub = LoopbackHub()
    links = [LoopbackLink(n.id, hub, n.codec) for n in (node, other)]
    try:
        other.runner.remote_allowed = lambda request: request.action == "node.ping"
        for n, joined in zip((node, other), links, strict=True):
            joined.start(n.bus)
        port = port_of(node)
        status, _, body = call(port, "POST", "/execute",
                               {"action": "node.ping", "target": "other"})
        assert status == 200
        assert body["output"]["node"] == "other"
        assert body["origin"] == "other"
        status, _, body = call(port, "POST", "/execute",
                               {"action": "node.info", "target": "other"})
        assert status == 403
        assert body["error"]["type"] == "ActionNotAllowed"
    finally:
        for joined in links:
            joined.stop()
        other.stop()

"""The console's files and the routes it reads and changes, over real HTTP."""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from platybus.backends.http.backend import HttpBackend

from platybus.config import load_config
from platybus.node import Node

TOKEN = "console-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def call(port: int, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=AUTH if headers is None else headers)
        reply = conn.getresponse()
        raw = reply.read()
        kind = reply.getheader("Content-Type", "")
        decoded = json.loads(raw) if kind.startswith("application/json") else raw
        return reply.status, dict(reply.getheaders()), decoded
    finally:
        conn.close()


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Callable[..., tuple[Node, int]]]:
    nodes: list[Node] = []

    def start(http: dict[str, Any] | None = None, **sections: Any) -> tuple[Node, int]:
        config: dict[str, Any] = {
            "node": {"id": "lit", "data_dir": str(tmp_path / "data"), "stop_timeout": 3},
            "plugins": {"variable": {}},
            "backends": {"http": {"port": 0, "token": TOKEN, **(http or {})}},
            **sections,
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        node = Node(load_config(path))
        nodes.append(node)
        node.start()
        backend = node.backends["http"]
        assert isinstance(backend, HttpBackend)
        return node, backend.port

    yield start
    for node in nodes:
        node.stop()


def test_the_console_is_served_without_a_token(start_node: Callable[..., Any]) -> None:
    _, port = start_node({"console_rows": 42})
    status, headers, body = call(port, "GET", "/", headers={})
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert b'<meta name="platybus-rows" content="42">' in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    status, headers, body = call(port, "GET", "/ui/app.js", headers={})
    assert (status, headers["Content-Type"].split(";")[0]) == (200, "text/javascript")
    # Unchanged files are not sent again.
    status, _, _ = call(port, "GET", "/ui/app.js", headers={"If-None-Match": headers["ETag"]})
    assert status == 304
    status, _, body = call(port, "GET", "/ui/nothing.js", headers={})
    assert status == 404
    # The data behind it is not public.
    status, _, body = call(port, "GET", "/node", headers={})
    assert status == 401


def test_the_console_can_be_turned_off(start_node: Callable[..., Any]) -> None:
    _, port = start_node({"console": False})
    status, _, body = call(port, "GET", "/", headers={})
    assert status == 404
    assert body["error"]["type"] == "NotFound"


def test_node_answers_with_uptime_version_hash_and_counters(
        start_node: Callable[..., Any]) -> None:
    _, port = start_node()
    status, _, body = call(port, "GET", "/node")
    assert status == 200
    assert body["node"] == "lit"
    assert body["ready"] is True
    assert len(body["config_hash"]) == 12
    assert body["stats"]["bus"]["published"] >= 1
    status, _, peers = call(port, "GET", "/peers")
    assert status == 200
    assert peers == {"discovery": peers["discovery"], "links": {}}


def test_actions_describe_their_parameters_and_errors_name_the_argument(
        start_node: Callable[..., Any]) -> None:
    _, port = start_node()
    _, _, actions = call(port, "GET", "/actions")
    increment = next(a for a in actions if a["name"] == "variable.increment")
    assert increment["params"] == [
        {"name": "name", "type": "string", "required": True, "nullable": False},
        {"name": "by", "type": "number", "required": False, "nullable": False, "default": 1},
    ]
    status, _, body = call(port, "POST", "/execute", {
        "action": "variable.increment", "args": {"name": "n", "by": "lots"}})
    assert status == 400
    assert body["error"]["type"] == "ArgumentError"
    assert body["error"]["details"]["argument"] == "by"


def test_runs_and_explain(start_node: Callable[..., Any], tmp_path: Path) -> None:
    hooks = {
        "breaks": {"if": {"type": "demo.go"},
                   "then": [{"action": "variable.increment", "args": {"name": "x", "by": "z"}}]},
        "picky": {"if": {"type": "demo.go", "data.level": {"$gt": 5}},
                  "then": [{"action": "log.info", "args": {"message": "high"}}]},
    }
    _node, port = start_node(hooks=hooks)
    status, _, _ = call(port, "POST", "/events", {"type": "demo.go", "data": {"level": 1}})
    assert status == 202
    deadline = time.monotonic() + 15
    while True:
        _, _, runs = call(port, "GET", "/runs")
        failed = [t for t in runs["traces"] if t["kind"] == "hook" and t["outcome"] == "error"]
        if failed:
            break
        assert time.monotonic() < deadline, runs
        time.sleep(0.05)
    assert failed[0]["name"] == "breaks"
    assert "by" in failed[0]["actions"][0]["error"]
    assert {h["name"] for h in runs["status"]["hooks"]} == {"breaks", "picky"}
    status, _, explained = call(port, "POST", "/explain",
                                {"event": {"type": "demo.go", "data": {"level": 2}}})
    assert status == 200
    picky = next(h for h in explained["hooks"] if h["hook"] == "picky")
    assert picky["fires"] is False
    assert "level" in picky["reason"]
    status, _, body = call(port, "POST", "/explain", {"event": {"data": {}}})
    assert status == 400
    assert body["error"]["type"] == "ArgumentError"
    status, _, body = call(port, "POST", "/explain", {"evnt": {}})
    assert (status, body["error"]["type"]) == (400, "DecodeError")


def test_variables_are_listed_set_and_deleted(start_node: Callable[..., Any]) -> None:
    _, port = start_node()
    assert call(port, "GET", "/variables")[2] == {}
    status, _, _ = call(port, "POST", "/variables", {"name": "mode", "value": {"away": True}})
    assert status == 200
    assert call(port, "GET", "/variables")[2] == {"mode": {"away": True}}
    status, _, _ = call(port, "POST", "/variables", {"name": "mode", "delete": True})
    assert status == 200
    assert call(port, "GET", "/variables")[2] == {}
    status, _, body = call(port, "POST", "/variables", {"value": 1})
    assert (status, body["error"]["type"]) == (400, "DecodeError")
    status, headers, _ = call(port, "DELETE", "/variables")
    assert (status, headers["Allow"]) == (405, "GET, POST")


class Receiver(http.server.BaseHTTPRequestHandler):
    """Accepts every webhook POST."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


def test_outbox_entries_are_listed_retried_and_dropped(
        start_node: Callable[..., Any]) -> None:
    hook_port = free_port()
    notifiers = {"hook": {"class": "webhook", "if": "type=alarm.*",
                          "url": f"http://127.0.0.1:{hook_port}/", "retries": 0, "timeout": 2,
                          "retry": {"initial": 3600}}}
    _, port = start_node(notifiers=notifiers)
    for n in range(2):
        call(port, "POST", "/events", {"type": "alarm.ring", "data": {"n": n}})
    deadline = time.monotonic() + 15
    while len(entries := call(port, "GET", "/outbox")[2]) < 2:
        assert time.monotonic() < deadline, entries
        time.sleep(0.05)
    first, second = entries
    assert first["notifier"] == "hook"
    assert first["event_type"] == "alarm.ring"

    status, _, outcome = call(port, "POST", "/outbox",
                              {"op": "retry", "notifier": "hook", "event_id": first["event_id"]})
    assert (status, outcome) == (200, "failed")
    server = http.server.HTTPServer(("127.0.0.1", hook_port), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        status, _, outcome = call(port, "POST", "/outbox", {
            "op": "retry", "notifier": "hook", "event_id": first["event_id"]})
        assert (status, outcome) == (200, "sent")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    status, _, dropped = call(port, "POST", "/outbox", {
        "op": "drop", "notifier": "hook", "event_id": second["event_id"]})
    assert (status, dropped) == (200, True)
    assert call(port, "GET", "/outbox")[2] == []
    status, _, body = call(port, "POST", "/outbox",
                           {"op": "drop", "notifier": "hook", "event_id": "../etc"})
    assert (status, body["error"]["type"]) == (400, "ArgumentError")
    status, _, body = call(port, "POST", "/outbox",
                           {"op": "burn", "notifier": "hook", "event_id": "x"})
    assert status == 400


REPO = Path(__file__).resolve().parents[2]


def test_every_console_file_is_package_data() -> None:
    import fnmatch
    import tomllib

    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = setup["package-data"]["platybus.backends.http"]
    folder = REPO / "backends" / "http" / "console"
    files = [p.relative_to(folder.parent).as_posix() for p in folder.iterdir()]
    assert "console/index.html" in files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, p) for p in patterns)]
    assert not missing, f"not shipped in the wheel: {missing}"


def test_the_documented_example_serves_the_console_and_prints_its_link(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    config = yaml.safe_load((REPO / "docs" / "examples" / "console.yaml").read_text())
    config["backends"]["http"]["port"] = 0
    config["node"]["data_dir"] = str(tmp_path / "data")
    config["backends"]["file_monitor"]["paths"][0]["path"] = str(tmp_path / "watched")
    path = tmp_path / "console.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("PLATYBUS_TOKEN", "doc+token/1")
    node = Node(load_config(path))
    node.start()
    try:
        backend = node.backends["http"]
        assert isinstance(backend, HttpBackend)
        status, _, page = call(backend.port, "GET", "/", headers={})
        assert status == 200
        assert b'content="300"' in page
        url = f"http://127.0.0.1:{backend.port}"
        done = subprocess.run([sys.executable, "-m", "platybus", "console", "--url", url],
                              capture_output=True, text=True, timeout=30, check=False,
                              cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"{url}/#token=doc%2Btoken%2F1"
        assert done.stderr == ""
        wrong = subprocess.run([sys.executable, "-m", "platybus", "console", "--url", url,
                                "--token", "nope"], capture_output=True, text=True,
                               timeout=30, check=False, cwd=tmp_path)
        assert "refuses this token" in wrong.stderr
    finally:
        node.stop()

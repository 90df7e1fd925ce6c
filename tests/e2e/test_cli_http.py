"""``platybus exec --url``, ``send`` and ``monitor`` as processes against a running node."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from platybus.backends.http.backend import HttpBackend

from platybus.config import load_config
from platybus.node import Node

PLATYBUS = [sys.executable, "-m", "platybus"]
TOKEN = "cli-secret"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Node, str]]:
    """A node with the http backend (token required) and its URL."""
    config = tmp_path / "node.yaml"
    config.write_text(yaml.safe_dump({
        "node": {"id": "served", "data_dir": str(tmp_path / "data")},
        "backends": {"http": {"port": 0, "token": TOKEN}},
    }), encoding="utf-8")
    node = Node(load_config(config))
    node.start()
    backend = node.backends["http"]
    assert isinstance(backend, HttpBackend)
    try:
        yield node, f"http://127.0.0.1:{backend.port}"
    finally:
        node.stop()


def wait_for_stream_client(node: Node) -> None:
    """Wait until the node counts one connected stream client (it is subscribed by then)."""
    backend = node.backends["http"]
    assert isinstance(backend, HttpBackend)
    deadline = time.monotonic() + 15
    while "platybus_http_stream_clients 1" not in backend.render_metrics():
        assert time.monotonic() < deadline, "the monitor never connected"
        time.sleep(0.02)


def env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PLATYBUS_")}
    return {**clean, **extra}


def run_cli(*args: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PLATYBUS, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=30, check=False, env=env(**extra))


def test_exec_with_url_runs_on_the_node(served: tuple[Node, str], tmp_path: Path) -> None:
    _node, url = served
    done = run_cli("exec", "--url", url, "--token", TOKEN, "node.ping", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["node"] == "served"
    # Errors come back as the node's error, with a failing exit code.
    done = run_cli("exec", "--url", url, "--token", TOKEN, "node.pnig", cwd=tmp_path)
    assert done.returncode == 1
    assert "UnknownActionError" in done.stderr
    assert "node.ping" in done.stderr


def test_exec_takes_url_and_token_from_the_environment(
        served: tuple[Node, str], tmp_path: Path) -> None:
    _, url = served
    done = run_cli("exec", "event.publish", "type=from.env", cwd=tmp_path,
                   PLATYBUS_URL=url, PLATYBUS_TOKEN=TOKEN)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["type"] == "from.env"
    refused = run_cli("exec", "node.ping", cwd=tmp_path, PLATYBUS_URL=url,
                      PLATYBUS_TOKEN="wrong")
    assert refused.returncode == 1
    assert "Unauthorized" in refused.stderr


def test_send_reads_url_and_token_from_the_config(
        served: tuple[Node, str], tmp_path: Path) -> None:
    node, url = served
    port = url.rsplit(":", 1)[1]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({
        "backends": {"http": {"host": "127.0.0.1", "port": int(port), "token": TOKEN}},
    }), encoding="utf-8")
    seen: list[dict[str, object]] = []
    arrived = threading.Event()

    def record(event: object) -> None:
        seen.append({"type": event.type, "data": event.data})  # type: ignore[attr-defined]
        arrived.set()

    node.bus.subscribe("garden.*", record)
    done = run_cli("send", "garden.watered", "zone=north", "litres:=3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert arrived.wait(5)
    assert seen == [{"type": "garden.watered", "data": {"zone": "north", "litres": 3}}]


def test_send_without_a_node_fails_clearly(tmp_path: Path) -> None:
    done = run_cli("send", "x.y", "--url", "http://127.0.0.1:9", cwd=tmp_path)
    assert done.returncode == 2
    assert "cannot reach" in done.stderr


def test_monitor_prints_json_lines_when_piped(served: tuple[Node, str], tmp_path: Path) -> None:
    node, url = served
    monitor = subprocess.Popen(
        [*PLATYBUS, "monitor", "type=sensor.* and data.room=attic", "--url", url,
         "--token", TOKEN],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    try:
        wait_for_stream_client(node)
        sent = run_cli("send", "sensor.read", "room=attic", "celsius:=20", "--url", url,
                       "--token", TOKEN, cwd=tmp_path)
        assert sent.returncode == 0, sent.stderr
        assert monitor.stdout is not None
        first = json.loads(monitor.stdout.readline())
        for celsius in (21, 22):
            run_cli("send", "sensor.read", "room=cellar", f"celsius:={celsius}", "--url", url,
                    "--token", TOKEN, cwd=tmp_path)
            run_cli("send", "sensor.read", "room=attic", f"celsius:={celsius}", "--url", url,
                    "--token", TOKEN, cwd=tmp_path)
        lines = [json.loads(monitor.stdout.readline()) for _ in range(2)]
    finally:
        monitor.terminate()
        monitor.communicate(timeout=10)
    assert first["type"] == "sensor.read"
    assert [m["data"] for m in lines] == [{"room": "attic", "celsius": 21},
                                          {"room": "attic", "celsius": 22}]
    assert all(m["origin"] == "served" for m in [first, *lines])


def test_monitor_count_exits_by_itself(served: tuple[Node, str], tmp_path: Path) -> None:
    node, url = served
    monitor = subprocess.Popen(
        [*PLATYBUS, "monitor", "tick.*", "--count", "2", "--url", url, "--token", TOKEN],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    try:
        wait_for_stream_client(node)
        for n in range(5):
            run_cli("send", "tick.tock", f"n:={n}", "--url", url, "--token", TOKEN,
                    cwd=tmp_path)
            if monitor.poll() is not None:
                break
        out, _ = monitor.communicate(timeout=10)
    finally:
        if monitor.poll() is None:
            monitor.kill()
            monitor.wait(10)
    assert monitor.returncode == 0
    assert len(out.splitlines()) == 2


def test_monitor_on_a_terminal_is_coloured_text(served: tuple[Node, str], tmp_path: Path) -> None:
    node, url = served
    leader, follower = pty.openpty()
    monitor = subprocess.Popen(
        [*PLATYBUS, "monitor", "door.*", "--count", "1", "--url", url, "--token", TOKEN],
        cwd=tmp_path, stdout=follower, stderr=subprocess.PIPE, text=True, env=env())
    os.close(follower)
    try:
        wait_for_stream_client(node)
        run_cli("send", "door.opened", "where=porch", "--url", url, "--token", TOKEN,
                cwd=tmp_path)
        monitor.communicate(timeout=10)
        output = b""
        while select.select([leader], [], [], 0.5)[0]:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(leader)
        if monitor.poll() is None:
            monitor.kill()
            monitor.communicate(timeout=10)
    text = output.decode()
    assert "\x1b[" in text
    assert "door.opened" in text
    assert '{"where":"porch"}' in text
    assert not text.lstrip().startswith("{")  # readable text, not JSON

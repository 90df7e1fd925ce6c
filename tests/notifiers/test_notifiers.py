"""Built-in notifiers against real receivers, the manager, and PLATYBUS_NOTIFIERS."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from platybus.notifiers.command import CommandConfig, CommandNotifier
from platybus.notifiers.file import FileNotifier
from platybus.notifiers.log import LogConfig, LogNotifier
from platybus.notifiers.webhook import WebhookConfig, WebhookNotifier

from platybus.config import load_config
from platybus.errors import ConfigError, ExtensionError
from platybus.extensions import NodeContext
from platybus.messages import Event
from platybus.node import Node
from platybus.notify.manager import ENV_VAR, NotifierManager
from platybus.notify.records import EventRecord, event_from_document, load_event


class Receiver:
    """A real HTTP server on a free loopback port that records what it is sent."""

    def __init__(self, port: int = 0, statuses: list[int] | None = None) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.statuses = list(statuses or [])
        self.cond = threading.Condition()
        receiver = self

        class Handle(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                with receiver.cond:
                    if status < 300:
                        receiver.bodies.append(json.loads(body))
                        receiver.headers.append(dict(self.headers))
                    receiver.cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handle)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, name="test-receiver")
        self.thread.start()

    def wait(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.bodies) >= count, timeout), self.bodies
            return list(self.bodies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def sample() -> Event:
    record = EventRecord("camera.motion", {"camera": "front", "score": 0.9})
    record.begin()
    return record.close()


# -- each notifier against a real receiver ---------------------------------


@pytest.fixture
def context(tmp_path: Path) -> NodeContext:
    """What a notifier built outside a node gets of it."""
    return NodeContext.detached("test", tmp_path)


def test_file_notifier_dumps_loadable_events(tmp_path: Path, context: NodeContext) -> None:
    notifier = FileNotifier("file", FileNotifier.decode_config(str(tmp_path / "out")), context)
    event = sample()
    assert notifier.send_event(event)
    assert load_event(tmp_path / "out" / f"{event.id}.json") == event
    (tmp_path / "blocked").write_text("a file where a directory should be")
    blocked = FileNotifier("f", FileNotifier.decode_config(str(tmp_path / "blocked")), context)
    assert not blocked.send_event(event)


def test_log_notifier_writes_one_line(caplog: pytest.LogCaptureFixture,
                                      context: NodeContext) -> None:
    caplog.set_level(logging.INFO, logger="events")
    event = sample()
    assert LogNotifier("log", LogConfig(logger="events"), context).send_event(event)
    [record] = [r for r in caplog.records if r.name == "events"]
    assert event.id in record.getMessage()
    assert "camera.motion" in record.getMessage()


def test_webhook_posts_the_event_document(receiver: Receiver, context: NodeContext) -> None:
    notifier = WebhookNotifier("hook", WebhookConfig(
        url=receiver.url, headers={"Authorization": "Bearer t"}), context)
    event = sample()
    assert notifier.send_event(event)
    [body] = receiver.wait(1)
    assert event_from_document(body) == event
    assert receiver.headers[0]["Authorization"] == "Bearer t"
    assert receiver.headers[0]["X-Platybus-Event-Id"] == event.id


def test_webhook_retries_server_errors_but_not_client_errors(receiver: Receiver,
                                                             context: NodeContext) -> None:
    config = WebhookConfig(url=receiver.url, retries=2, retry_delay=0.01)
    receiver.statuses = [503, 500]
    assert WebhookNotifier("hook", config, context).send_event(sample())
    assert len(receiver.wait(1)) == 1
    receiver.statuses = [400]
    assert not WebhookNotifier("hook", config, context).send_event(sample())
    assert receiver.statuses == []


def test_webhook_gives_up_on_a_dead_receiver(context: NodeContext) -> None:
    config = WebhookConfig(url=f"http://127.0.0.1:{free_port()}/", retries=1, retry_delay=0.01,
                           timeout=1.0)
    assert not WebhookNotifier("hook", config, context).send_event(sample())
    with pytest.raises(ExtensionError, match="url must be"):
        WebhookNotifier("hook", WebhookConfig(url="ftp://example/"), context)


def test_command_gets_the_event_on_stdin(tmp_path: Path, context: NodeContext) -> None:
    out = tmp_path / "received.json"
    script = f"import sys; open({str(out)!r}, 'wb').write(sys.stdin.buffer.read())"
    notifier = CommandNotifier("cmd", CommandConfig(command=[sys.executable, "-c", script]),
                               context)
    event = sample()
    assert notifier.send_event(event)
    assert event_from_document(json.loads(out.read_bytes())) == event


def test_command_failures_and_timeouts(tmp_path: Path, context: NodeContext) -> None:
    failing = CommandNotifier("cmd", CommandNotifier.decode_config(
        f"{sys.executable} -c 'import sys; sys.exit(3)'"), context)
    assert failing.argv[-1] == "import sys; sys.exit(3)"
    assert not failing.send_event(sample())
    slow = CommandNotifier("cmd", CommandConfig(
        command=[sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5), context)
    started = time.monotonic()
    assert not slow.send_event(sample())
    assert time.monotonic() - started < 20
    missing = CommandNotifier("cmd", CommandConfig(command=[str(tmp_path / "no-such-program")]),
                              context)
    assert not missing.send_event(sample())


# -- configuration for a child process --------------------------------------


def test_platybus_notifiers_configures_a_child_process(tmp_path: Path) -> None:
    text = f"file={tmp_path / 'a|b'}|log={{\"level\": \"warning\"}}"
    manager = NotifierManager.from_environment({ENV_VAR: text.replace("a|b", "a%7Cb")})
    assert sorted(manager.channels) == ["file", "log"]
    assert manager.channels["file"].notifier.config.directory == str(tmp_path / "a|b")
    value = manager.environment()
    event = sample()
    event_file = tmp_path / "event.json"
    event_file.write_bytes(json.dumps(
        {"kind": "event", "id": event.id, "type": "child.said", "data": {"n": 1}}).encode())
    child = textwrap.dedent(f"""
        from platybus.notify.manager import NotifierManager
        from platybus.notify.records import load_event
        print(NotifierManager.from_environment().notify(load_event({str(event_file)!r})))
    """)
    done = subprocess.run([sys.executable, "-c", child], env={**os.environ, ENV_VAR: value},
                          capture_output=True, text=True, timeout=60, check=True)
    assert "'file': True" in done.stdout
    assert load_event(tmp_path / "a|b" / f"{event.id}.json").type == "child.said"


# -- the manager in a node --------------------------------------------------


def write_config(tmp_path: Path, notifiers: str) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(textwrap.dedent(f"""\
        node:
          id: notify
          data_dir: {tmp_path / "data"}
          stop_timeout: 2
        notifiers:
        """) + textwrap.indent(textwrap.dedent(notifiers), "  "))
    return config


def test_one_failing_notifier_never_stops_the_others(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"""\
        broken:
          class: command
          command: ["{sys.executable}", "-c", "raise SystemExit(1)"]
          if: "type=camera.*"
        files:
          class: file
          directory: {tmp_path / "out"}
          if: "type=camera.*"
        """)
    node = Node(load_config(config))
    node.start()
    try:
        events = [sample() for _ in range(3)]
        for event in events:
            node.bus.publish(event)
        node.bus.publish(Event(type="other.thing"))
        for event in events:
            wait_until((tmp_path / "out" / f"{event.id}.json").exists)
        assert node.notifiers is not None
        wait_until(lambda: len(node.notifiers.outbox.entries("broken")) == 3)  # type: ignore[union-attr]
        assert len(list((tmp_path / "out").glob("*.json"))) == 3
        status = node.actions.call("notifiers.status")
        assert status["files"]["sent"] == 3
        assert status["broken"]["failed"] == 3
    finally:
        node.stop()


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    cases = {
        "a: {class: nosuch}": "notifiers.a.class",
        "a: {class: file, dirctory: x}": "notifiers.a.dirctory",
        "a: {class: log, if: 'type=('}": "notifiers.a.if",
        "a: {class: log, retry: {initial: soon}}": "notifiers.a.retry.initial",
        "a: {class: webhook, url: 'ftp://x/'}": "notifiers.a",
    }
    for text, key in cases.items():
        with pytest.raises(ConfigError) as info:
            Node(load_config(write_config(tmp_path, text)))
        assert info.value.key == key, text
        assert info.value.line == 6


def test_events_published_just_before_stop_are_not_lost(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"""\
        files: {{class: file, directory: {tmp_path / "out"}}}
        """)
    node = Node(load_config(config))
    node.start()
    events = [sample() for _ in range(50)]
    for event in events:
        node.bus.publish(event)
    node.stop()
    assert {p.stem for p in (tmp_path / "out").glob("*.json")} >= {e.id for e in events}

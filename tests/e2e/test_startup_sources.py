"""Every subscriber before any source: what a source reports while the node starts reaches a hook.

(The Redis backlog case is in tests/backends/test_delivery.py, with node processes.)
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from platybus.config import load_config
from platybus.node import Node

TOKEN = "startup-token-0123456789"


def wait_until(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def hook_runs(node: Node) -> int:
    return node.automation.hooks.runs


def test_files_created_while_the_node_starts_each_reach_the_hook(tmp_path: Path) -> None:
    watched = tmp_path / "watched"
    watched.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(f"""
node: {{id: fm, data_dir: {tmp_path / 'data'}}}
traces: {{disk: false}}
backends:
  file_monitor:
    paths: [{watched}]
    events: [created]
hooks:
  seen:
    if: {{type: file.created}}
    then: [{{action: log.debug, args: {{message: "${{event.data.path}}"}}}}]
""")
    node = Node(load_config(config))
    stop = threading.Event()
    made: list[Path] = []

    def create() -> None:
        n = 0
        while not stop.is_set():
            path = watched / f"f{n}.txt"
            path.touch()
            made.append(path)
            n += 1
            time.sleep(0.002)

    writer = threading.Thread(target=create)
    writer.start()
    try:
        node.start()
        wait_until(lambda: len(made) > 20)
    finally:
        stop.set()
        writer.join()
    try:
        monitor = node.backends["file_monitor"]
        # Every file.created the monitor published, the first included, ran the hook.
        wait_until(lambda: monitor.events_sent >= 1 and hook_runs(node) == monitor.events_sent)
        time.sleep(0.2)
        assert hook_runs(node) == monitor.events_sent
    finally:
        node.stop()


def test_events_posted_while_the_node_starts_each_reach_the_hook(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"""
node: {{id: web, data_dir: {tmp_path / 'data'}}}
traces: {{disk: false}}
backends:
  http: {{port: 0, token: {TOKEN}}}
hooks:
  seen:
    if: {{type: door.opened}}
    then: [{{action: log.debug, args: {{message: "${{event.data.n}}"}}}}]
""")
    node = Node(load_config(config))
    backend = node.backends["http"]
    stop = threading.Event()
    accepted: list[int] = []

    def post() -> None:
        n = 0
        while not stop.is_set():
            port = getattr(backend, "port", 0)
            if not port:
                time.sleep(0.001)
                continue
            body = json.dumps({"type": "door.opened", "data": {"n": n}}).encode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/events", data=body, method="POST",
                headers={"Authorization": f"Bearer {TOKEN}",
                         "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:
                    if answer.status < 300:
                        accepted.append(n)
            except (urllib.error.URLError, ConnectionError):
                pass  # refused while starting (503) or not listening yet: not accepted
            n += 1

    poster = threading.Thread(target=post)
    poster.start()
    try:
        node.start()
        wait_until(lambda: len(accepted) > 20)
    finally:
        stop.set()
        poster.join()
    try:
        wait_until(lambda: hook_runs(node) == len(accepted))
        time.sleep(0.2)
        assert hook_runs(node) == len(accepted)
    finally:
        node.stop()

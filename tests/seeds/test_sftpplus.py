"""SFTPPlus's Python event handler example, translated: the class and its configuration run
in real worker processes of a node."""

from __future__ import annotations

import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from platybus.config import load_config
from platybus.errors import ConfigError
from platybus.messages import Event
from platybus.node import Node

# As SFTPPlus documents a handler: camelCase hooks and a static ``handle``.
DEMO = '''
import os
import time

from platybus.isolation.handlers import Handler


class DemoEventHandler(Handler):
    """Counts the events it handles; writes its lifecycle to the configured log."""

    def onStart(self, configuration):
        self.log = configuration["log"]
        with open(self.log, "a") as out:
            out.write("started\\n")

    def onStop(self):
        with open(self.log, "a") as out:
            out.write("stopped\\n")

    @staticmethod
    def handle(configuration, event):
        time.sleep(configuration.get("pause", 0))
        return {"pid": os.getpid(), "greeting": configuration["greeting"],
                "name": event.data["name"]}
'''


def write_node(tmp_path: Path, handlers: str, node: str = "") -> Path:
    """A config.yaml with an ``extensions/`` folder beside it holding the handler module."""
    (tmp_path / "extensions").mkdir(exist_ok=True)
    (tmp_path / "extensions" / "demo_handler.py").write_text(textwrap.dedent(DEMO))
    config = tmp_path / "config.yaml"
    config.write_text(f"node: {{id: sftpplus, data_dir: {tmp_path / 'data'}, stop_timeout: 2"
                      f"{node}}}\ndiscovery: {{enabled: false}}\nhandlers:\n"
                      + textwrap.indent(textwrap.dedent(handlers), "  "))
    return config


@pytest.mark.slow
def test_the_handler_class_runs_with_its_configuration_under_one_parallel_limit(
        tmp_path: Path, no_leaked_processes: None) -> None:
    log = tmp_path / "lifecycle.log"
    config = write_node(tmp_path, f"""\
        greet:
          class: "python:demo_handler.DemoEventHandler"
          log: {log}
          greeting: hello
          pause: 0.2
          if: "type=transfer.*"
        greet-too:
          class: "python:demo_handler:DemoEventHandler"
          log: {log}
          greeting: hi
          pause: 0.2
          if: "type=transfer.*"
        """, node=", handlers_parallel: 1")
    node = Node(load_config(config))
    done: list[Event] = []
    finished = threading.Condition()

    def record(event: Event) -> None:
        with finished:
            done.append(event)
            finished.notify_all()

    node.bus.subscribe("type=handler.done", record)
    node.start()
    try:
        assert log.read_text() == "started\nstarted\n"  # onStart, spelled as SFTPPlus does
        for n in range(3):
            node.bus.publish(Event(type="transfer.done", data={"name": f"f{n}"}))
        with finished:
            assert finished.wait_for(lambda: len(done) == 6, 60)
        results: list[Any] = [e.data.result for e in done]
        assert sorted(r["greeting"] for r in results) == ["hello"] * 3 + ["hi"] * 3
        status = node.actions.call("handlers.status", {})
        assert status["parallel"]["limit"] == 1
        assert status["parallel"]["peak"] == 1  # never two at once, across both handlers
    finally:
        node.stop()
    assert log.read_text() == "started\nstarted\nstopped\nstopped\n"


def test_a_limit_over_ten_minutes_needs_allow_long(tmp_path: Path) -> None:
    entry = '''\
        greet:
          class: "python:demo_handler.DemoEventHandler"
          greeting: hello
          timeout: 900
        '''
    with pytest.raises(ConfigError, match=r"over the 600s hard limit.*allow_long: true"):
        Node(load_config(write_node(tmp_path, entry)))
    allowed = entry.rstrip(" ") + "          allow_long: true\n"
    node = Node(load_config(write_node(tmp_path, allowed)))
    assert node.handlers is not None
    assert node.handlers.runners["greet"].settings.timeout == 900


def test_a_missing_module_names_the_folders_searched_and_the_key(tmp_path: Path) -> None:
    config = write_node(tmp_path, '''\
        greet:
          class: "python:nowhere.Handler"
        ''')
    with pytest.raises(ConfigError) as info:
        Node(load_config(config))
    text = str(info.value)
    assert str(tmp_path / "extensions") in text
    assert "node.extensions_path" in text

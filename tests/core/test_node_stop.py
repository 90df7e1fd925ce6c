"""The node's stop is bounded by ``node.stop_timeout`` as a whole and names what hung."""

from __future__ import annotations

import logging
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from platybus.config import load_config
from platybus.node import Node

EXTENSIONS = '''
import threading
from platybus.extensions import Backend, Plugin

class Hanging(Plugin):
    """A plugin whose stop blocks until the test releases it."""

    def __init__(self, name, config, context):
        super().__init__(name, config, context)
        self.release = threading.Event()
        self.stopping = threading.Event()

    def stop(self):
        self.stopping.set()
        self.release.wait()

class Polite(Plugin):
    """A plugin that records its stop."""

    def __init__(self, name, config, context):
        super().__init__(name, config, context)
        self.stopped = threading.Event()

    def stop(self):
        self.stopped.set()

class Ticker(Backend):
    def loop(self):
        self.mark_ready()
        self.wait_for_stop()

class Deaf(Backend):
    """A backend whose loop ignores stop until the test releases it."""

    def __init__(self, name, config, context):
        super().__init__(name, config, context)
        self.release = threading.Event()

    def loop(self):
        self.mark_ready()
        self.release.wait()
'''


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll until ``predicate()`` is true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        time.sleep(0.01)
    return value


def build(tmp_path: Path, body: str) -> Node:
    ext = tmp_path / "ext"
    ext.mkdir(exist_ok=True)
    (ext / "stop_ext.py").write_text(textwrap.dedent(EXTENSIONS))
    path = tmp_path / "node.yaml"
    path.write_text(
        f"node:\n  id: s\n  data_dir: {tmp_path / 'data'}\n  extensions_path: [{ext}]\n"
        f"  stop_timeout: 1\n{textwrap.dedent(body)}"
    )
    return Node(load_config(path))


def not_in_time(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "did not stop in time" in r.getMessage()]


@pytest.fixture
def hanging_node(tmp_path: Path) -> Iterator[Node]:
    # Plugins stop in reverse order: "polite" comes after the hung "hang".
    node = build(tmp_path, """\
        plugins:
          polite:
            class: stop_ext:Polite
          hang:
            class: stop_ext:Hanging
        backends:
          ticker:
            class: stop_ext:Ticker
        hooks:
          noted:
            if: {type: note}
            then:
              - action: node.ping
        """)
    yield node
    node.plugins["hang"].release.set()  # type: ignore[attr-defined]
    node.stop()


def test_a_plugin_whose_stop_hangs_is_named_and_the_rest_still_stops(
    hanging_node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    node = hanging_node
    node.start()
    caplog.set_level(logging.WARNING)
    node.stop()  # returns although the plugin's stop never does
    assert node.state == "stopped"
    assert node.plugins["hang"].stopping.is_set()  # type: ignore[attr-defined]
    lines = not_in_time(caplog)
    assert "plugin hang did not stop in time" in [r.getMessage() for r in lines]
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in lines)
    # Everything else was stopped all the same.
    wait_for(node.plugins["polite"].stopped.is_set)  # type: ignore[attr-defined]
    assert not node.backends["ticker"].is_alive()
    assert not node.bus.running
    assert node.automation.hooks._thread is None
    names = {"platybus-dispatcher", "platybus-hooks", "platybus-run-deadlines", "backend-ticker"}
    wait_for(lambda: not names & {t.name for t in threading.enumerate()})


def test_a_backend_that_ignores_stop_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node = build(tmp_path, """\
        backends:
          deaf:
            class: stop_ext:Deaf
          ticker:
            class: stop_ext:Ticker
        """)
    node.start()
    deaf = node.backends["deaf"]
    caplog.set_level(logging.WARNING)
    try:
        node.stop()
        assert node.state == "stopped"
        assert deaf.is_alive()
        assert "backend deaf did not stop in time" in [
            r.getMessage() for r in not_in_time(caplog)]
        assert not node.backends["ticker"].is_alive()
        assert not node.bus.running
    finally:
        deaf.release.set()  # type: ignore[attr-defined]
        deaf.join(10)
    node.stop()  # idempotent, and quiet the second time
    assert len(not_in_time(caplog)) == len({r.getMessage() for r in not_in_time(caplog)})


def test_a_clean_stop_reports_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    node = build(tmp_path, """\
        backends:
          ticker:
            class: stop_ext:Ticker
        """)
    node.start()
    caplog.set_level(logging.WARNING)
    node.stop()
    assert not_in_time(caplog) == []
    assert not node.backends["ticker"].is_alive()

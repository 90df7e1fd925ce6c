"""Handlers from config: a real node, real worker processes, events in and out."""

from __future__ import annotations

import logging
import os
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from platybus.config import load_config
from platybus.errors import ConfigError
from platybus.isolation.handlers import HandlerDone, HandlerFailed, HandlerSet, HandlerTimedOut
from platybus.messages import Event
from platybus.node import Node

MODULE = '''
import os
import time

from platybus.isolation.handlers import Handler


class Recorder(Handler):
    """Writes the pid of each on_start/on_stop call to the file its configuration names."""

    def on_start(self, configuration):
        self.log = configuration["log"]
        with open(self.log, "a") as out:
            out.write(f"start {os.getpid()}\\n")

    def on_stop(self):
        with open(self.log, "a") as out:
            out.write(f"stop {os.getpid()}\\n")

    @staticmethod
    def handle(configuration, event):
        mode = event.data.get("mode")
        if mode == "hang":
            time.sleep(3600)
        if mode == "fail":
            raise RuntimeError("asked to fail")
        if mode == "crash":
            os._exit(9)
        return {"pid": os.getpid(), "seen": event.data, "factor": configuration["factor"]}


class Everything(Handler):
    @staticmethod
    def handle(configuration, event):
        return event.type


class NotStatic(Handler):
    def handle(self, configuration, event):
        return None
'''


def write_config(tmp_path: Path, handlers: str) -> Path:
    ext = tmp_path / "ext"
    ext.mkdir(exist_ok=True)
    (ext / "rechandlers.py").write_text(textwrap.dedent(MODULE))
    config = tmp_path / "config.yaml"
    config.write_text(textwrap.dedent(f"""\
        node:
          id: iso
          data_dir: {tmp_path / "data"}
          extensions_path: [{ext}]
          stop_timeout: 1
        handlers:
        """) + textwrap.indent(textwrap.dedent(handlers), "  ").rstrip("\n")
        + "\ndiscovery: {enabled: false}\n")
    return config


RECORDER = """\
recorder:
  class: "python:rechandlers.Recorder"
  log: {log}
  factor: 3
  if: "type=job.*"
  timeout: 8
  workers: 1
"""
# The limit covers queueing too: after a crash, the next event waits for a fresh worker
# interpreter, which takes a while on a loaded machine.


class Collector:
    """Gathers handler.* events from the bus, with a bounded wait."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.cond = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def wait_for(self, parent_id: str, timeout: float = 15.0) -> Event:
        with self.cond:
            found = self.cond.wait_for(
                lambda: any(e.parent_id == parent_id for e in self.events), timeout)
            assert found, f"no handler event for {parent_id}: {self.events}"
            return next(e for e in self.events if e.parent_id == parent_id)


@pytest.fixture
def node(tmp_path: Path, no_leaked_processes: None) -> Iterator[Node]:
    config = write_config(tmp_path, RECORDER.format(log=tmp_path / "calls.log"))
    node = Node(load_config(config))
    node.start()
    yield node
    node.stop()


@pytest.fixture
def outcomes(node: Node) -> Collector:
    collector = Collector()
    node.bus.subscribe("type=handler.*", collector)
    return collector


def publish(node: Node, **data: Any) -> Event:
    event = Event(type="job.run", data=data)
    node.bus.publish(event)
    return event


def test_result_comes_back_as_a_typed_done_event(node: Node, outcomes: Collector) -> None:
    event = publish(node, mode="ok", size=5)
    done = outcomes.wait_for(event.id)
    assert isinstance(done, HandlerDone)
    assert done.type == "handler.done"
    assert done.data.handler == "recorder"
    assert done.data.event_type == "job.run"
    assert done.data.result["seen"] == {"mode": "ok", "size": 5}
    assert done.data.result["factor"] == 3
    assert done.data.result["pid"] != os.getpid()
    assert done.data.duration > 0


def test_exception_comes_back_as_a_failed_event(node: Node, outcomes: Collector) -> None:
    failed = outcomes.wait_for(publish(node, mode="fail").id)
    assert isinstance(failed, HandlerFailed)
    assert failed.data.error is not None
    assert failed.data.error.type == "RuntimeError"
    assert failed.data.error.message == "asked to fail"
    assert "rechandlers.py" in failed.data.error.details["traceback"]


def test_a_crash_is_reported_and_the_next_event_is_handled(
    node: Node, outcomes: Collector
) -> None:
    crash = publish(node, mode="crash")
    failed = outcomes.wait_for(crash.id)
    assert isinstance(failed, HandlerFailed)
    assert failed.data.error is not None
    assert failed.data.error.type == "WorkerCrashed"
    # Published once the crash is reported, so its limit covers only a fresh worker's start,
    # not the crash as well.
    after = publish(node, mode="ok")
    assert isinstance(outcomes.wait_for(after.id), HandlerDone)


def test_timeout_event_trace_record_and_status(
    node: Node, outcomes: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="platybus.isolation.handlers")
    hung = publish(node, mode="hang")
    timed_out = outcomes.wait_for(hung.id)
    assert isinstance(timed_out, HandlerTimedOut)
    assert timed_out.type == "handler.timeout"
    assert timed_out.data.error is not None
    assert timed_out.data.error.type == "HandlerTimeout"
    pid = timed_out.data.worker_pid
    assert pid is not None
    assert not Path(f"/proc/{pid}").exists()

    status = node.actions.call("handlers.status")
    assert status["handlers"]["recorder"]["timeouts"] == 1
    [trace] = status["traces"]
    assert trace["outcome"] == "timeout"
    assert trace["event_id"] == hung.id
    records = [r for r in caplog.records if getattr(r, "trace", None)]
    assert records[-1].trace["event_id"] == hung.id  # type: ignore[attr-defined]

    # The replacement worker handles the next event.
    assert isinstance(outcomes.wait_for(publish(node, mode="ok").id), HandlerDone)


def test_events_outside_the_condition_are_not_handled(node: Node, outcomes: Collector) -> None:
    node.bus.publish(Event(type="other.thing", data={"mode": "ok"}))
    outcomes.wait_for(publish(node, mode="ok").id)
    assert node.actions.call("handlers.status")["handlers"]["recorder"]["done"] == 1


def test_on_start_and_on_stop_run_in_the_node_process(
    tmp_path: Path, no_leaked_processes: None
) -> None:
    log = tmp_path / "calls.log"
    node = Node(load_config(write_config(tmp_path, RECORDER.format(log=log))))
    handlers = node.handlers
    assert handlers is not None
    node.start()
    handled = Collector()
    node.bus.subscribe("type=handler.done", handled)
    event = publish(node, mode="ok")
    worker_pid = handled.wait_for(event.id).data.result["pid"]
    node.stop()
    # The same object may start and stop again: each time in this process.
    handlers.start()
    handlers.stop(1.0)
    me = os.getpid()
    assert log.read_text().split() == ["start", str(me), "stop", str(me)] * 2
    assert worker_pid != me


def test_a_handler_never_sees_its_own_outcomes(
    tmp_path: Path, no_leaked_processes: None
) -> None:
    config = write_config(tmp_path, """\
        all:
          class: "python:rechandlers:Everything"
          workers: 1
        """)
    node = Node(load_config(config))
    node.start()
    try:
        handled = Collector()
        node.bus.subscribe("type=handler.done", handled)
        event = publish(node)
        assert handled.wait_for(event.id).data.result == "job.run"
        # One worker, first in first out: had the handler been fed its own outcomes,
        # they would have been handled before this later event.
        last = Event(type="job.last")
        node.bus.publish(last)
        assert handled.wait_for(last.id).data.result == "job.last"
        done_ids = {e.id for e in handled.events}
        assert not [e for e in handled.events if e.parent_id in done_ids]
        # node.started, job.run and job.last: nothing else (discovery is off: no peers).
        assert node.actions.call("handlers.status")["handlers"]["all"]["done"] == 3
    finally:
        node.stop()


@pytest.mark.parametrize(("entry", "message"), [
    ("rechandlers.Recorder", "to import a class, write 'module:Class'"),
    ("python:rechandlers.Missing", "has no 'Missing'"),
    ("python:nowhere_module.Thing", "cannot import 'nowhere_module'"),
    ("python:rechandlers.NotStatic", "must be a @staticmethod"),
])
def test_bad_entry_points_name_file_line_and_key(tmp_path: Path, entry: str, message: str) -> None:
    config = write_config(tmp_path, f"""\
        broken:
          class: "{entry}"
        """)
    with pytest.raises(ConfigError) as info:
        Node(load_config(config))
    assert message in str(info.value)
    assert info.value.key == "handlers.broken.class"
    assert info.value.file == str(config)
    assert info.value.line == 8


def test_bad_options_and_conditions_are_config_errors(tmp_path: Path) -> None:
    config = write_config(tmp_path, """\
        broken:
          class: "python:rechandlers.Everything"
          timout: 3
        """)
    with pytest.raises(ConfigError, match="did you mean 'timeout'") as info:
        Node(load_config(config))
    assert info.value.key == "handlers.broken.timout"
    config = write_config(tmp_path, """\
        broken:
          class: "python:rechandlers.Everything"
          if: "type=job.* and and"
        """)
    with pytest.raises(ConfigError) as info:
        Node(load_config(config))
    assert info.value.key == "handlers.broken.if"


def test_no_handlers_section_means_no_handler_machinery(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"node: {{id: plain, data_dir: {tmp_path}}}\n")
    node = Node(load_config(config))
    assert node.handlers is None
    assert "handlers.status" not in node.actions
    assert HandlerSet().status() == {"handlers": {}, "traces": []}


def test_events_published_just_before_stop_are_handled(
    tmp_path: Path, no_leaked_processes: None
) -> None:
    node = Node(load_config(write_config(tmp_path, RECORDER.format(log=tmp_path / "c.log"))))
    node.start()
    outcomes = Collector()
    node.bus.subscribe("type=handler.*", outcomes)
    event = publish(node, mode="ok")
    node.stop()
    # Handled, or reported as stopped before it ran: never silently dropped.
    assert outcomes.wait_for(event.id, timeout=0.1).type in ("handler.done", "handler.failed")


def test_if_takes_the_mapping_conditions_of_hooks(
    tmp_path: Path, no_leaked_processes: None
) -> None:
    config = write_config(tmp_path, """\
        csv:
          class: "python:rechandlers.Everything"
          if:
            type: "file.*"
            data.path: {$regex: '\\.csv$'}
            data.size: {$gt: 10}
          workers: 1
        """)
    node = Node(load_config(config))
    node.start()
    try:
        outcomes = Collector()
        node.bus.subscribe("type=handler.*", outcomes)
        skipped = [Event(type="file.created", data={"path": "a.txt", "size": 50}),
                   Event(type="file.created", data={"path": "a.csv", "size": 5}),
                   Event(type="job.run", data={"path": "a.csv", "size": 50})]
        for event in skipped:
            node.bus.publish(event)
        wanted = Event(type="file.created", data={"path": "b.csv", "size": 50})
        node.bus.publish(wanted)
        done = outcomes.wait_for(wanted.id)
        assert isinstance(done, HandlerDone)
        assert done.data.result == "file.created"
        node.bus.flush(5.0)
        assert {e.parent_id for e in outcomes.events} == {wanted.id}
        assert node.handlers is not None
        assert node.handlers.status()["handlers"]["csv"]["if"]["type"] == "file.*"
    finally:
        node.stop()


def test_bad_mapping_conditions_name_their_key(tmp_path: Path) -> None:
    config = write_config(tmp_path, """\
        broken:
          class: "python:rechandlers.Everything"
          if:
            data.size: {$gtt: 3}
        """)
    with pytest.raises(ConfigError, match="unknown operator '\\$gtt'") as info:
        Node(load_config(config))
    assert info.value.key == "handlers.broken.if.data.size.$gtt"
    assert info.value.file == str(config)
    assert info.value.line == 10

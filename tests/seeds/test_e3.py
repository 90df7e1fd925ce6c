"""e3-core's event records and handlers, translated: a record, the env round trip to a child."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from platybus.errors import RecordClosed
from platybus.notify.manager import ENV_VAR, NotifierManager, send_event
from platybus.notify.outbox import RetryPolicy
from platybus.notify.records import EventRecord, load_event


def test_a_record_as_a_context_manager_with_attribute_values(tmp_path: Path) -> None:
    log_file = tmp_path / "build.log"
    log_file.write_text("all good\n")
    with EventRecord("build.done", uid="build-42") as record:
        record.build = 42
        record.branch = "main"
        record.set_formatter("build", lambda n: f"#{n}")
        record.attach_file(log_file, name="log")
    assert record.closed
    assert record.id == "build-42"
    assert record.build == 42
    assert isinstance(record.event.data.begin, dt.datetime)
    with pytest.raises(RecordClosed):
        record.build = 43
    shown = record.as_dict()
    assert shown["values"] == {"build": "#42", "branch": "main"}
    assert shown["begin"].endswith("UTC")
    assert record.event.data.values["build"] == 42  # the event keeps the value itself
    path, sha1 = record.get_attachments()["log"]
    assert path == str(log_file.resolve())
    assert len(sha1) == 40


def test_an_exception_that_escapes_is_recorded_and_still_raised() -> None:
    record = EventRecord("build.done")

    def build() -> None:
        with record:
            record.step = "compile"
            _ = 1 / 0

    with pytest.raises(ZeroDivisionError):
        build()
    assert record.closed
    assert record.event.data.values["error"]["type"] == "ZeroDivisionError"


def test_bare_names_and_empty_configs_mean_the_defaults() -> None:
    for text in ("log", "log=", "log|file=/tmp/x"):
        manager = NotifierManager.from_environment({ENV_VAR: text})
        assert "log" in manager.channels
    manager = NotifierManager([])
    assert manager.add_handler("log", level="warning") == "log"
    assert manager.add_handler("log") == "log-2"
    assert manager.channels["log"].notifier.config.level == "warning"


@pytest.mark.slow
def test_the_environment_round_trip_into_a_child_keeps_names_filters_and_retry(
        tmp_path: Path) -> None:
    policy = RetryPolicy(initial=2.0, factor=3.0)
    parent = NotifierManager([])
    # The first as a node's config gives it: a filter (``if``) and a retry policy.
    parent.add_handler("file", _config_text=json.dumps({"directory": str(tmp_path / "builds")}),
                       _if="type=build.*", _retry=policy)
    parent.add_handler("file", directory=str(tmp_path / "all"))
    value = parent.environment()
    again = NotifierManager.from_environment({ENV_VAR: value})
    assert list(again.channels) == ["file", "file-2"]
    assert again.channels["file"].selector.source == "type=build.*"
    assert again.channels["file"].policy == policy

    script = textwrap.dedent("""
        from platybus.notify.manager import send_event
        from platybus.notify.records import EventRecord

        with EventRecord("build.done", uid="b1") as record:
            record.build = 7
        print(send_event(record))
        other = EventRecord("deploy.done", uid="d1")
        print(send_event(other))
    """)
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, ENV_VAR: value},
                          capture_output=True, text=True, timeout=60, check=True)
    lines = done.stdout.splitlines()
    assert lines == ["{'file': True, 'file-2': True}", "{'file-2': True}"]
    assert load_event(tmp_path / "builds" / "b1.json").data.values == {"build": 7}
    assert not (tmp_path / "builds" / "d1.json").exists()  # filtered out, as in the parent
    assert (tmp_path / "all" / "d1.json").exists()
    assert send_event(EventRecord("x.y"), {ENV_VAR: ""}) == {}

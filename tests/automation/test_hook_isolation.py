"""Hooks with isolation: process: Python code in real worker processes, killed at its limit."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from platybus.errors import ConfigError
from tests.automation.conftest import Harness, wait_for

Make = Callable[..., Harness]

SCRIPT = '''
import os
import time

from platybus.automation.scripts import hook


# The limit covers starting a worker interpreter, which takes seconds on a loaded machine.
@hook("type=job.run", isolation="process", timeout=60, mode="queue")
def isolated(event):
    if event.data.get("mode") == "crash":
        os._exit(3)
    return {"pid": os.getpid(), "n": event.data.get("n")}


@hook("type=job.hang", isolation="process", timeout=1, mode="queue")
def stuck(event):
    time.sleep(3600)


def double(n, tag=""):
    return {"pid": os.getpid(), "doubled": n * 2, "tag": tag}
'''


def config(tmp_path: Path, hooks: str = "") -> str:
    scripts = tmp_path / "scripts"
    scripts.mkdir(exist_ok=True)
    (scripts / "jobs.py").write_text(textwrap.dedent(SCRIPT))
    return f"scripts: {scripts}\nautomation: {{process_workers: 1}}\n" + textwrap.dedent(hooks)


def runs(h: Harness, name: str, count: int) -> list[dict[str, object]]:
    return wait_for(lambda: (found := h.traces(name=name, kind="hook")) and
                    len(found) >= count and all(t["outcome"] != "running" for t in found)
                    and found, timeout=15.0)


def test_an_isolated_python_hook_runs_in_another_process(
    no_leaked_processes: None, harness: Make, tmp_path: Path
) -> None:
    h = harness(config(tmp_path))
    h.publish("job.run", n=7)
    [run] = runs(h, "isolated", 1)
    assert run["outcome"] == "ok"
    [call] = run["actions"]
    assert call["action"] == "python:jobs:isolated"
    assert call["output"]["n"] == 7
    assert call["output"]["pid"] == call["worker_pid"]
    assert call["worker_pid"] != os.getpid()


def test_a_hung_hook_is_killed_at_its_timeout_and_a_crash_is_a_failure(
    no_leaked_processes: None, harness: Make, tmp_path: Path
) -> None:
    h = harness(config(tmp_path))
    pool = h.automation.engine.processes
    assert pool is not None
    h.publish("job.hang")
    [hung] = runs(h, "stuck", 1)
    assert hung["outcome"] == "timeout"
    wait_for(lambda: pool.stats().timeouts == 1, timeout=5.0)
    h.publish("job.run", mode="crash")
    h.publish("job.run", n=2)
    done = runs(h, "isolated", 2)
    crashed, ok = sorted(done, key=lambda t: str(t["outcome"]))
    assert crashed["outcome"] == "error"
    assert "died (exit code 3)" in str(crashed["error"])
    assert ok["outcome"] == "ok"
    pids = {hung["actions"][0]["worker_pid"], crashed["actions"][0]["worker_pid"],
            ok["actions"][0]["worker_pid"]}
    assert len(pids) == 3  # each killed or dead worker was replaced
    assert pool.stats().crashes == 1


def test_run_steps_of_a_yaml_hook_call_python_in_a_worker(
    no_leaked_processes: None, harness: Make, tmp_path: Path
) -> None:
    h = harness(config(tmp_path, """
        hooks:
          sized:
            if: {type: file.created, data.size: {$gt: 0}}
            isolation: process
            then:
              - run: "python:jobs:double"
                args: {n: "${event.data.size}", tag: sized}
                as: result
              - action: rec.note
                args: {value: "${result.doubled}", tag: "${result.tag}"}
    """))
    h.publish("file.created", size=21)
    [run] = runs(h, "sized", 1)
    assert run["outcome"] == "ok"
    assert h.rec.calls == [("sized", 42)]
    assert run["actions"][0]["args"] == {"n": 21, "tag": "sized"}
    assert run["actions"][0]["worker_pid"] != os.getpid()


def test_isolation_needs_python_code_to_isolate(harness: Make, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="actions always run in the node") as info:
        harness(config(tmp_path, """
            hooks:
              notes:
                if: {type: file.created}
                isolation: process
                then: [{action: rec.note, args: {value: 1}}]
        """), start=False)
    assert info.value.key == "hooks.notes.isolation"
    with pytest.raises(ConfigError, match="only hooks with 'isolation: process'") as info:
        harness(config(tmp_path, """
            hooks:
              notes:
                if: {type: file.created}
                then: [{run: "python:jobs:double", args: {n: 1}}]
        """), start=False)
    assert info.value.key == "hooks.notes.then[0].run"
    with pytest.raises(ConfigError, match=r"expected 'python:package\.module:function'"):
        harness(config(tmp_path, """
            hooks:
              notes:
                if: {type: file.created}
                isolation: process
                then: [{run: "jobs.double"}]
        """), start=False)


def test_the_documented_example_hashes_in_a_worker(
    no_leaked_processes: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo)  # the example's scripts path is relative to where platybus runs
    yaml = (repo / "docs/examples/isolation/config.yaml").read_text()
    # The harness has recording actions in place of the node's log plugin.
    yaml = yaml.replace("./data/isolated", str(tmp_path / "data")).replace(
        "action: log.info", "action: rec.note").replace("{message:", "{value:")
    h = Harness(tmp_path, yaml, node_id="isolated")
    try:
        target = tmp_path / "notes.txt"
        target.write_text("hello")
        h.publish("file.created", path=str(target))
        [run] = runs(h, "hash-text", 1)
        assert run["outcome"] == "ok", run
        digest = run["actions"][0]["output"]
        assert digest["size"] == 5
        assert digest["pid"] not in (None, os.getpid())
        assert h.rec.values()[0].endswith(f"hashed in process {digest['pid']}")
        h.publish("file.created", path="/tmp/blob.bin")
        [binary] = runs(h, "inspect_binary", 1)
        assert binary["outcome"] == "ok"
        assert binary["actions"][0]["output"]["path"] == "/tmp/blob.bin"
    finally:
        h.stop()

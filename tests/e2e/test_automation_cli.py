"""`platybus explain`, `platybus trace`, `check` and `actions` on automation, as real processes."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

PLATYBUS = [sys.executable, "-m", "platybus"]

EMITTER = '''
import threading

import msgspec

from platybus.extensions import Backend
from platybus.messages import Event


class Emitter(Backend):
    """Publishes the events of its config once the node has started."""

    class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
        events: list[dict] = []

    def loop(self):
        started = threading.Event()
        sub = self.context.bus.subscribe("node.started", lambda e: started.set())
        self.mark_ready()
        started.wait(10)
        sub.unsubscribe()
        for item in self.config.events:
            self.send_event(Event(type=item["type"], data=item.get("data", {})))
        self.wait_for_stop()
'''


def run_cli(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PLATYBUS, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False, input=stdin)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    ext = tmp_path / "ext"
    ext.mkdir()
    (ext / "emitter.py").write_text(EMITTER)
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(f"""\
        node:
          id: auto
          data_dir: {tmp_path / 'data'}
          extensions_path: [{ext}]
        plugins:
          variable: {{}}
        backends:
          emitter:
            class: emitter:Emitter
            events:
              - {{type: file.created, data: {{path: /w/report.txt, size: 10}}}}
              - {{type: file.created, data: {{path: /w/photo.jpg, size: 99}}}}
        hooks:
          texts:
            if: {{type: file.created, data.path: {{$regex: '(?P<name>[^/]+)\\.txt$'}}}}
            then:
              - action: log.info
                args: {{message: "text file ${{name}}"}}
          big:
            if: {{type: file.created, data.size: {{$gt: 50}}}}
            priority: 10
            then:
              - action: procedure.remember
                args: {{path: "${{event.data.path}}"}}
        procedures:
          remember:
            params: [path, {{times: 1}}]
            steps:
              - action: variable.set
                args: {{name: last_big, value: "${{path}}"}}
        """))
    return path


def test_explain_says_which_hooks_fire_and_why_not(config: Path, tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"type": "file.created",
                                 "data": {"path": "/in/box/minutes.txt", "size": 5}}))
    result = run_cli("explain", "-c", str(config), str(event), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("event file.created (id ")
    assert "  no     big (priority 10): data.size is 5, not > 50" in lines
    assert "  FIRES  texts (priority 100)" in lines
    assert '           hooks.texts.then[0]  log.info(message="text file minutes")' in lines

    result = run_cli("explain", "-c", str(config), "-", "--json", cwd=tmp_path,
                     stdin='{"type": "file.created", "data": {"path": "/a.jpg", "size": 60}}')
    assert result.returncode == 0, result.stderr
    hooks = {h["hook"]: h for h in json.loads(result.stdout)["hooks"]}
    assert hooks["big"]["fires"] is True
    assert hooks["big"]["steps"][0]["args"] == {"path": "/a.jpg"}
    assert hooks["texts"]["reason"] == (
        "data.path '/a.jpg' does not match regex '(?P<name>[^/]+)\\.txt$'")


def test_explain_refuses_bad_input(config: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = run_cli("explain", "-c", str(config), str(bad), cwd=tmp_path)
    assert result.returncode == 1
    assert "invalid JSON" in result.stderr
    bad.write_text('{"data": {}}')
    result = run_cli("explain", "-c", str(config), str(bad), cwd=tmp_path)
    assert result.returncode == 1
    assert "invalid event" in result.stderr


def test_trace_shows_what_a_running_node_did(config: Path, tmp_path: Path) -> None:
    process = subprocess.Popen([*PLATYBUS, "run", "-c", str(config)], cwd=tmp_path,
                               stderr=subprocess.DEVNULL, text=True)
    traces = tmp_path / "data" / "traces.jsonl"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if traces.exists() and traces.read_text().count("\n") >= 5:
                break
            time.sleep(0.1)
        result = run_cli("trace", "-c", str(config), "--hook", "texts", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "texts  matched -> run" in out
        assert "texts  not matched: data.path '/w/photo.jpg' does not match regex" in out
        assert 'log.info(message="text file report")  ok' in out
        assert "big" not in out
        result = run_cli("trace", "-c", str(config), "--name", "remember", "--json",
                         cwd=tmp_path)
        [proc] = json.loads(result.stdout)
        assert proc["kind"] == "procedure"
        assert proc["variables"] == {"path": "/w/photo.jpg", "times": 1}
        assert proc["actions"][0]["args"] == {"name": "last_big", "value": "/w/photo.jpg"}
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    result = run_cli("exec", "-c", str(config), "variable.get", "name=last_big", cwd=tmp_path)
    assert result.stdout.strip() == '"/w/photo.jpg"'


def test_actions_lists_procedures_and_check_reports_hook_errors(config: Path,
                                                               tmp_path: Path) -> None:
    result = run_cli("actions", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "procedure.remember(path, times=1)" in result.stdout
    assert "trace.list(hook: str | None = None" in result.stdout
    text = config.read_text().replace("action: log.info", "action: log.inf")
    config.write_text(text)
    result = run_cli("check", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 3
    line = text.splitlines().index("      - action: log.inf") + 1
    assert (f"{config}:{line}: hooks.texts.then[0].action: unknown action 'log.inf'; "
            "did you mean 'log.info'?") in result.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_trace_asks_the_running_node_and_get_traces(config: Path, tmp_path: Path) -> None:
    port = free_port()
    text = config.read_text().replace("backends:\n", f"backends:\n  http: {{port: {port}}}\n")
    config.write_text(text + "traces: {disk: false}\n")
    process = subprocess.Popen([*PLATYBUS, "run", "-c", str(config)], cwd=tmp_path,
                               stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 30
        body: list[dict[str, object]] = []
        token = run_cli("token", "-c", str(config), cwd=tmp_path).stdout.strip()
        asked = urllib.request.Request(f"http://127.0.0.1:{port}/traces?hook=texts&last=5",
                                       headers={"Authorization": f"Bearer {token}"})
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(asked, timeout=5) as reply:
                    body = json.loads(reply.read())
            except OSError:
                body = []
            if len(body) >= 3:
                break
            time.sleep(0.1)
        assert {t["kind"] for t in body} == {"event", "hook"}
        result = run_cli("trace", "-c", str(config), "--hook", "texts", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "texts  matched -> run" in result.stdout
        assert 'log.info(message="text file report")  ok' in result.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    result = run_cli("trace", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 3
    assert "cannot reach" in result.stderr
    assert "traces are not kept on disk" in result.stderr

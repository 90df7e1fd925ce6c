"""The platybus command as a user runs it: a real process, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from node_process import wait_ready

PLATYBUS = [sys.executable, "-m", "platybus"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PLATYBUS, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return found


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"node:\n  id: e2e\n  data_dir: {tmp_path / 'data'}\n"
        f"plugins:\n  shell: {{}}\n  variable: {{}}\n  file:\n    roots: [{tmp_path}]\n"
    )
    return path


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()
    if process.stderr is not None:
        process.stderr.close()


def test_run_stops_cleanly_on_sigterm(config: Path, tmp_path: Path) -> None:
    process = subprocess.Popen([*PLATYBUS, "run", "-c", str(config)], cwd=tmp_path,
                               stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(process)
        # A second node with the same id and data dir refuses, with its own exit code.
        twin = run_cli("run", "-c", str(config), cwd=tmp_path)
        assert twin.returncode == 4
        assert "already running" in twin.stderr
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        assert process.stderr is not None
        assert "node e2e stopped" in process.stderr.read()
    finally:
        stop(process)
    assert children_of(process.pid) == []


def test_sigint_also_stops_with_exit_code_zero(config: Path, tmp_path: Path) -> None:
    process = subprocess.Popen([*PLATYBUS, "run", "-c", str(config)], cwd=tmp_path,
                               stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(process)
        os.kill(process.pid, signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        stop(process)


def test_check_reports_a_broken_config_with_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("node:\n  id: x\nplugins:\n  shell:\n    timeout: forever\n")
    result = run_cli("check", "-c", str(path), cwd=tmp_path)
    assert result.returncode == 3
    assert f"{path}:5: plugins.shell.timeout: expected a number, got a string" in result.stderr


def test_check_accepts_a_good_config(config: Path, tmp_path: Path) -> None:
    result = run_cli("check", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_actions_lists_signatures_and_docs(config: Path, tmp_path: Path) -> None:
    result = run_cli("actions", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "shell.exec(cmd: list[str] | str" in result.stdout
    assert "node.ping()" in result.stdout


def test_exec_runs_an_action_and_prints_the_output(config: Path, tmp_path: Path) -> None:
    result = run_cli("exec", "-c", str(config), "shell.exec", 'cmd:=["echo", "hi"]', cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"stdout": "hi\\n"' in result.stdout
    result = run_cli("exec", "-c", str(config), "variable.set", "name=n", "value:=5",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = run_cli("exec", "-c", str(config), "variable.get", "name=n", cwd=tmp_path)
    assert result.stdout.strip() == "5"


def test_exec_reports_bad_arguments_and_unknown_actions(config: Path, tmp_path: Path) -> None:
    result = run_cli("exec", "-c", str(config), "shell.exec", "cmd=ls", "timeout=soon",
                     cwd=tmp_path)
    assert result.returncode == 1
    assert "ArgumentError: shell.exec: argument 'timeout'" in result.stderr
    result = run_cli("exec", "-c", str(config), "shell.exce", cwd=tmp_path)
    assert result.returncode == 1
    assert "did you mean 'shell.exec'" in result.stderr


def test_version_and_module_entry(tmp_path: Path) -> None:
    result = run_cli("version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("platybus ")


def test_the_documented_example_plugin_works(tmp_path: Path) -> None:
    examples = Path(__file__).resolve().parents[2] / "docs" / "examples"
    config = tmp_path / "greeter.yaml"
    config.write_text(
        (examples / "greeter.yaml").read_text()
        .replace("[docs/examples]", f"[{examples}]")
    )
    result = run_cli("exec", "-c", str(config), "greeter.greet", "name=Ada", "times:=2",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"text": "hi Ada hi Ada"' in result.stdout
    result = run_cli("exec", "-c", str(config), "greeter.greet", "nme=Ada", cwd=tmp_path)
    assert result.returncode == 1
    assert "unknown argument 'nme'; did you mean 'name'?" in result.stderr

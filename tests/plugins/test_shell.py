"""The shell plugin runs real subprocesses: argv, shell, timeouts, allow-list, output."""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from platybus.plugins.shell import (
    CommandNotAllowed,
    CommandTimeout,
    ProgramNotFound,
    ShellError,
    ShellPlugin,
)

from platybus.actions import ActionRegistry
from platybus.bus import Bus
from platybus.codec import Codec
from platybus.errors import ArgumentError
from platybus.extensions import NodeContext

Exec = Callable[..., dict[str, Any]]


@pytest.fixture
def make_shell(tmp_path: Path) -> Iterator[Callable[..., Exec]]:
    """Build a started shell plugin with the given options; return its exec caller."""
    plugins: list[ShellPlugin] = []

    def build(**options: Any) -> Exec:
        ctx = NodeContext(node_id="test", bus=Bus("test"), codec=Codec(),
                          actions=ActionRegistry(), data_dir=tmp_path)
        plugin = ShellPlugin("shell", ShellPlugin.Config(**options), ctx)
        plugin.start()
        plugins.append(plugin)
        ctx.actions.add_plugin(plugin)

        def call(**args: Any) -> dict[str, Any]:
            result: dict[str, Any] = ctx.actions.call("shell.exec", args)
            return result

        return call

    yield build
    for plugin in plugins:
        plugin.stop()


@pytest.fixture
def run(make_shell: Callable[..., Exec]) -> Exec:
    """Exec with the default config."""
    return make_shell()


def _gone(pid: int, within: float = 5.0) -> bool:
    """Whether ``pid`` has ended (a zombie waiting for init counts as ended)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.02)
    return False


# -- running commands -------------------------------------------------------------


def test_argv_runs_without_a_shell(run: Exec) -> None:
    result = run(cmd=["echo", "hi", "$HOME", "*"])
    assert result["exit_code"] == 0
    # No shell: variables and globs are passed through literally.
    assert result["stdout"] == "hi $HOME *\n"
    assert result["stderr"] == ""
    assert result["truncated"] is False
    assert 0 <= result["duration"] < 10


def test_string_without_shell_is_refused_with_a_list_suggestion(run: Exec) -> None:
    with pytest.raises(ArgumentError, match=r"shell: true.*\[\"ls\", \"-l\"\]"):
        run(cmd="ls -l")


def test_shell_true_runs_a_command_line(run: Exec) -> None:
    result = run(cmd="echo one; echo two >&2; exit 4", shell=True)
    assert (result["exit_code"], result["stdout"], result["stderr"]) == (4, "one\n", "two\n")


def test_list_with_shell_true_is_quoted_into_one_line(run: Exec) -> None:
    result = run(cmd=["printf", "%s|", "a b", "$HOME"], shell=True)
    assert result["stdout"] == "a b|$HOME|"


def test_non_zero_exit_is_returned_not_raised(run: Exec) -> None:
    result = run(cmd=[sys.executable, "-c", "import sys; print('out'); sys.exit(3)"])
    assert result["exit_code"] == 3
    assert result["stdout"] == "out\n"


def test_input_is_fed_to_stdin(run: Exec) -> None:
    assert run(cmd=["cat"], input="hello\nworld")["stdout"] == "hello\nworld"


def test_large_input_and_output_do_not_deadlock(run: Exec) -> None:
    text = "x" * 300_000 + "\n"
    script = "import sys; data = sys.stdin.read(); sys.stdout.write(data); sys.stderr.write(data)"
    result = run(cmd=[sys.executable, "-c", script], input=text)
    assert result["stdout"] == text
    assert result["stderr"] == text


def test_stdin_is_empty_without_input(run: Exec) -> None:
    # The child must not inherit (and block on) the node's own stdin.
    assert run(cmd=["cat"], timeout=5)["stdout"] == ""


def test_output_is_decoded_with_replacement(run: Exec) -> None:
    script = "import sys; sys.stdout.buffer.write(b'ok \\xff\\xfe done')"
    assert run(cmd=[sys.executable, "-c", script])["stdout"] == "ok \ufffd\ufffd done"


def test_output_is_capped_per_stream(make_shell: Callable[..., Exec]) -> None:
    run = make_shell(max_output=1000)
    script = "import sys; sys.stdout.write('a' * 50000); sys.stderr.write('b' * 10)"
    result = run(cmd=[sys.executable, "-c", script])
    assert result["stdout"] == "a" * 1000
    assert result["stderr"] == "b" * 10
    assert result["truncated"] is True
    assert result["exit_code"] == 0


# -- working directory and environment -----------------------------------------------


def test_cwd_from_config_and_argument(make_shell: Callable[..., Exec], tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    run = make_shell(cwd=str(tmp_path))
    pwd = [sys.executable, "-c", "import os; print(os.getcwd())"]
    assert run(cmd=pwd)["stdout"].strip() == os.path.realpath(tmp_path)
    # A relative cwd argument is taken relative to the configured one.
    assert run(cmd=pwd, cwd="sub")["stdout"].strip() == os.path.realpath(tmp_path / "sub")


def test_missing_cwd_is_a_clear_error(run: Exec, tmp_path: Path) -> None:
    with pytest.raises(ShellError, match="working directory does not exist"):
        run(cmd=["true"], cwd=str(tmp_path / "nope"))


def test_env_layers_over_the_node_environment(make_shell: Callable[..., Exec]) -> None:
    run = make_shell(env={"PB_A": "config", "PB_B": "config"})
    script = "import os; print(os.environ['PB_A'], os.environ['PB_B'], 'PATH' in os.environ)"
    result = run(cmd=[sys.executable, "-c", script], env={"PB_B": "call"})
    assert result["stdout"] == "config call True\n"


# -- failures -------------------------------------------------------------------------


def test_missing_program_is_a_clear_error(run: Exec) -> None:
    with pytest.raises(ProgramNotFound, match="'no-such-program-platybus' not found"):
        run(cmd=["no-such-program-platybus", "x"])


def test_non_executable_file_is_a_clear_error(run: Exec, tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("echo hi\n")
    with pytest.raises(ProgramNotFound, match="not executable"):
        run(cmd=[str(script)])


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ({"cmd": ["echo"], "timeout": "soon"}, "argument 'timeout'"),
        ({"cmd": 5}, "argument 'cmd'"),
        ({"cmd": ["echo", 5]}, "argument 'cmd"),
        ({"cmd": ["echo"], "env": {"A": 1}}, "argument 'env"),
        ({"cmd": ["echo"], "shel": True}, "unknown argument 'shel'; did you mean 'shell'"),
        ({}, "missing required argument 'cmd'"),
        ({"cmd": []}, "must name a program"),
        ({"cmd": ["echo"], "timeout": 0}, "timeout must be a positive number"),
        ({"cmd": ["echo"], "timeout": "nan"}, "timeout must be a positive number"),
    ],
)
def test_bad_arguments_raise_argument_error(run: Exec, args: dict[str, Any], match: str) -> None:
    with pytest.raises(ArgumentError, match=match):
        run(**args)


def test_string_arguments_are_converted(run: Exec) -> None:
    # Arguments from the CLI arrive as strings; non-strict validation converts them.
    result = run(cmd=["echo", "x"], timeout="5", shell="false")
    assert result["stdout"] == "x\n"


# -- timeouts -------------------------------------------------------------------------


def test_timeout_kills_the_whole_process_group(run: Exec, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = f"sleep 60 & echo $! > {pidfile}; wait"
    started = time.monotonic()
    with pytest.raises(CommandTimeout, match=r"timed out after 0\.5s") as caught:
        run(cmd=["sh", "-c", script], timeout=0.5)
    assert time.monotonic() - started < 5
    assert "sleep 60" in str(caught.value)
    child = int(pidfile.read_text())
    assert _gone(child), f"background child {child} survived the timeout"


def test_timeout_applies_when_the_command_closes_its_output(run: Exec) -> None:
    script = "exec >/dev/null 2>&1; sleep 60"
    with pytest.raises(CommandTimeout):
        run(cmd=["sh", "-c", script], timeout=0.3)


def test_timeout_from_config(make_shell: Callable[..., Exec]) -> None:
    run = make_shell(timeout=0.3)
    with pytest.raises(CommandTimeout, match=r"after 0\.3s"):
        run(cmd=["sleep", "30"])


def test_background_children_do_not_outlive_the_call(run: Exec) -> None:
    result = run(cmd=["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"])
    assert result["exit_code"] == 0
    assert _gone(int(result["stdout"]))


# -- allow-list -----------------------------------------------------------------------


def test_allow_list_permits_listed_programs(make_shell: Callable[..., Exec]) -> None:
    run = make_shell(allow=["echo", sys.executable])
    assert run(cmd=["echo", "ok"])["stdout"] == "ok\n"
    echo = shutil.which("echo")
    assert echo is not None
    assert run(cmd=[echo, "full"])["stdout"] == "full\n"
    assert run(cmd=[sys.executable, "-c", "print(1)"])["stdout"] == "1\n"


def test_allow_list_refuses_other_programs(make_shell: Callable[..., Exec]) -> None:
    run = make_shell(allow=["echo"])
    with pytest.raises(CommandNotAllowed, match="'ls' is not in the allow-list"):
        run(cmd=["ls"])


def test_allow_list_refuses_shell_commands(make_shell: Callable[..., Exec]) -> None:
    run = make_shell(allow=["echo", "sh"])
    with pytest.raises(CommandNotAllowed, match="shell: true is refused"):
        run(cmd="echo hi", shell=True)


def test_allow_list_is_not_fooled_by_a_same_named_program(
    make_shell: Callable[..., Exec], tmp_path: Path
) -> None:
    fake = tmp_path / "echo"
    fake.write_text("#!/bin/sh\ntouch pwned\n")
    fake.chmod(0o755)
    run = make_shell(allow=["echo"])
    with pytest.raises(CommandNotAllowed):
        run(cmd=["./echo"], cwd=str(tmp_path))
    with pytest.raises(CommandNotAllowed):
        run(cmd=[str(fake)])
    with pytest.raises(CommandNotAllowed):
        run(cmd=["echo"], env={"PATH": str(tmp_path)})
    assert not (tmp_path / "pwned").exists()


def test_allow_list_reports_missing_programs(make_shell: Callable[..., Exec]) -> None:
    run = make_shell(allow=["echo"])
    with pytest.raises(ProgramNotFound):
        run(cmd=["no-such-program-platybus"])


def test_action_is_listed_with_a_docstring(tmp_path: Path) -> None:
    ctx = NodeContext(node_id="test", bus=Bus("test"), codec=Codec(),
                      actions=ActionRegistry(), data_dir=tmp_path)
    plugin = ShellPlugin("shell", ShellPlugin.Config(), ctx)
    ctx.actions.add_plugin(plugin)
    spec = ctx.actions.get("shell.exec")
    assert spec.doc
    assert "cmd: list[str] | str" in spec.signature


def test_allow_list_refuses_loader_variables(make_shell: Callable[..., Exec]) -> None:
    run = make_shell(allow=["echo"])
    with pytest.raises(CommandNotAllowed, match="LD_PRELOAD"):
        run(cmd=["echo"], env={"LD_PRELOAD": "/tmp/evil.so"})
    assert run(cmd=["echo", "ok"], env={"HARMLESS": "1"})["stdout"] == "ok\n"


# -- lifecycle ------------------------------------------------------------------------


def test_stop_kills_running_commands(tmp_path: Path) -> None:
    ctx = NodeContext(node_id="test", bus=Bus("test"), codec=Codec(),
                      actions=ActionRegistry(), data_dir=tmp_path)
    plugin = ShellPlugin("shell", ShellPlugin.Config(), ctx)
    plugin.start()
    ctx.actions.add_plugin(plugin)
    pidfile = tmp_path / "child.pid"
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            ctx.actions.call("shell.exec", {
                "cmd": ["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], "timeout": 30})
        except BaseException as error:
            outcome.append(error)

    worker = threading.Thread(target=call)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while not (pidfile.exists() and pidfile.read_text().strip()):
            assert time.monotonic() < deadline, "the command never started"
            time.sleep(0.01)
        started = time.monotonic()
        plugin.stop()
        plugin.stop()
        worker.join(10)
    finally:
        plugin.stop()
        worker.join()
    assert time.monotonic() - started < 5
    assert len(outcome) == 1
    assert isinstance(outcome[0], ShellError)
    assert "plugin stopped" in str(outcome[0])
    assert _gone(int(pidfile.read_text()))
    with pytest.raises(ShellError, match="stopped"):
        ctx.actions.call("shell.exec", {"cmd": ["echo"]})

"""The transfer plugin between local directories: in a node, and through ``platybus transfer``."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from platybus.plugins.transfer.engine import TEMP_SUFFIX, TransferNotReady, UnknownJob
from transfer_support import run_cli

from platybus.config import load_config
from platybus.errors import ArgumentError, ConfigError
from platybus.messages import Event, Request
from platybus.node import Node

PLATYBUS = [sys.executable, "-m", "platybus"]


def write_config(tmp_path: Path, jobs: dict[str, Any], **options: Any) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "node": {"id": "mover", "data_dir": str(tmp_path / "data")},
        "plugins": {"transfer": {"jobs": jobs, **options}},
    }))
    return path


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    source, target = tmp_path / "outbox", tmp_path / "inbox"
    source.mkdir()
    target.mkdir()
    return source, target




def temp_files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.name.endswith(TEMP_SUFFIX)]


def tags(result: dict[str, Any]) -> dict[str, str]:
    return {item["path"]: item["tag"] for item in result["files"]}


def test_copies_matching_files_atomically_and_keeps_mtime(
        tmp_path: Path, dirs: tuple[Path, Path], start_node: Any) -> None:
    source, target = dirs
    (source / "a.csv").write_text("alpha")
    (source / "b.txt").write_text("bravo")
    (source / "skip.csv").write_text("no")
    (source / "deep").mkdir()
    (source / "deep" / "c.csv").write_bytes(os.urandom(300_000))
    (source / "cache").mkdir()
    (source / "cache" / "d.csv").write_text("ignored directory")
    os.utime(source / "a.csv", (1_600_000_000, 1_600_000_000))
    config = write_config(tmp_path, {"reports": {
        "source": str(source), "target": str(target), "patterns": ["*.csv"],
        "ignore_patterns": ["skip.*", "cache"], "recursive": True}}, chunk_size=4096)
    node = start_node(config)
    seen: list[Event] = []
    node.bus.subscribe("type=transfer.finished", seen.append)

    result = node.actions.call("transfer.run", {"job": "reports"})

    assert tags(result) == {"a.csv": "=", "deep/c.csv": "="}
    assert (result["transferred"], result["source_errors"], result["target_errors"]) == (2, 0, 0)
    assert result["status"] == "ok"
    assert result["bytes"] == 5 + 300_000
    assert (target / "a.csv").read_text() == "alpha"
    assert (target / "deep" / "c.csv").read_bytes() == (source / "deep" / "c.csv").read_bytes()
    assert not (target / "b.txt").exists()
    assert not (target / "skip.csv").exists()
    assert not (target / "cache").exists()
    assert (target / "a.csv").stat().st_mtime == 1_600_000_000
    assert temp_files(target) == []
    assert (source / "a.csv").exists()  # copied, not moved
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen[0].data.job == "reports"
    assert seen[0].data.transferred == 2


def test_not_recursive_takes_only_the_top_directory(
        tmp_path: Path, dirs: tuple[Path, Path], start_node: Any) -> None:
    source, target = dirs
    (source / "top.log").write_text("1")
    (source / "sub").mkdir()
    (source / "sub" / "low.log").write_text("2")
    node = start_node(write_config(tmp_path, {"logs": {
        "source": str(source), "target": str(target)}}))
    result = node.actions.call("transfer.run", {"job": "logs"})
    assert tags(result) == {"top.log": "="}
    assert sorted(p.name for p in target.iterdir()) == ["top.log"]


def test_overwrite_policies(tmp_path: Path, dirs: tuple[Path, Path], start_node: Any) -> None:
    source, target = dirs
    (source / "f.txt").write_text("fresh")
    (target / "f.txt").write_text("old")
    node = start_node(write_config(tmp_path, {"sync": {
        "source": str(source), "target": str(target)}}))

    def run(policy: str) -> dict[str, Any]:
        return node.actions.call("transfer.run", {"job": "sync", "overwrite": policy})

    skipped = run("skip")
    assert skipped["files"] == [{"path": "f.txt", "tag": "-", "reason": "exists on the target"}]
    assert (target / "f.txt").read_text() == "old"
    refused = run("error")
    assert tags(refused) == {"f.txt": "<"}
    assert refused["status"] == "errors"
    assert (target / "f.txt").read_text() == "old"
    assert tags(run("newer")) == {"f.txt": "="}  # the sizes differ
    assert (target / "f.txt").read_text() == "fresh"
    assert tags(run("newer")) == {"f.txt": "-"}  # same size, same mtime: up to date
    (target / "f.txt").write_text("FRESH")  # edited on the target since: newer than the source
    assert tags(run("newer")) == {"f.txt": "-"}
    assert tags(run("replace")) == {"f.txt": "="}
    assert (target / "f.txt").read_text() == "fresh"
    assert temp_files(target) == []


def test_delete_source_moves_files(tmp_path: Path, dirs: tuple[Path, Path],
                                   start_node: Any) -> None:
    source, target = dirs
    for name in ("1.dat", "2.dat"):
        (source / name).write_text(name)
    node = start_node(write_config(tmp_path, {"move": {
        "source": str(source), "target": str(target), "delete_source": True}}))
    result = node.actions.call("transfer.run", {"job": "move"})
    assert result["transferred"] == 2
    assert list(source.iterdir()) == []
    assert sorted(p.read_text() for p in target.iterdir()) == ["1.dat", "2.dat"]


def test_ready_file_gates_the_job(tmp_path: Path, dirs: tuple[Path, Path],
                                  start_node: Any) -> None:
    source, target = dirs
    (source / "data.csv").write_text("x")
    config = write_config(tmp_path, {"batch": {
        "source": str(source), "target": str(target), "ready_file": "DONE",
        "delete_source": True}})
    node = start_node(config)
    with pytest.raises(TransferNotReady, match="DONE is missing"):
        node.actions.call("transfer.run", {"job": "batch"})
    assert list(target.iterdir()) == []

    missing = run_cli(config, "batch")
    assert missing.returncode == 0, missing.stderr
    assert "not ready: DONE is missing" in missing.stdout

    (source / "DONE").write_text("")
    present = run_cli(config, "batch")
    assert present.returncode == 0, present.stderr
    assert "= data.csv" in present.stdout
    assert not (target / "DONE").exists()  # the marker is not data
    assert list(source.iterdir()) == []  # moved, and the marker removed with the batch


def test_ready_suffix_waits_for_each_files_marker(
        tmp_path: Path, dirs: tuple[Path, Path], start_node: Any) -> None:
    source, target = dirs
    (source / "a.csv").write_text("a")
    (source / "b.csv").write_text("b")
    node = start_node(write_config(tmp_path, {"feed": {
        "source": str(source), "target": str(target), "ready_suffix": ".ok"}}))
    with pytest.raises(TransferNotReady, match=r"none of the 2 .*\.ok marker"):
        node.actions.call("transfer.run", {"job": "feed"})
    (source / "a.csv.ok").write_text("")
    result = node.actions.call("transfer.run", {"job": "feed"})
    assert tags(result) == {"a.csv": "="}
    assert result["waiting"] == 1
    assert sorted(p.name for p in target.iterdir()) == ["a.csv"]


def test_unreadable_sources_are_source_errors(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    # As root, chmod 000 does not stop reads: a dangling symlink and a FIFO do fail.
    source, target = dirs
    (source / "good.csv").write_text("ok")
    (source / "gone.csv").symlink_to(tmp_path / "nowhere.csv")
    os.mkfifo(source / "pipe.csv")
    config = write_config(tmp_path, {"in": {"source": str(source), "target": str(target),
                                            "patterns": ["*.csv"]}})
    done = run_cli(config, "in")
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("= good.csv") for line in lines)
    assert any(line.startswith("> gone.csv") and "broken symbolic link" in line for line in lines)
    assert any(line.startswith("> pipe.csv") and "FIFO" in line for line in lines)
    assert "1 transferred" in lines[-1]
    assert "2 source errors" in lines[-1]
    assert sorted(p.name for p in target.iterdir()) == ["good.csv"]

    as_json = run_cli(config, "in", "--json")
    assert as_json.returncode == 1
    result = json.loads(as_json.stdout)
    assert result["source_errors"] == 2
    assert tags(result) == {"good.csv": "=", "gone.csv": ">", "pipe.csv": ">"}


def test_target_that_is_a_file_is_a_target_error(tmp_path: Path,
                                                 dirs: tuple[Path, Path]) -> None:
    source, _ = dirs
    (source / "x.txt").write_text("x")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    config = write_config(tmp_path, {"bad": {"source": str(source), "target": str(blocker)}})
    done = run_cli(config, "bad")
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines()[0].startswith("< x.txt")
    assert "Not a directory" in done.stdout
    assert "1 target errors" in done.stdout


def test_second_instance_is_refused(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    source, target = dirs
    (source / "x.txt").write_text("x")
    config = write_config(tmp_path, {"once": {"source": str(source), "target": str(target)}})
    lock = tmp_path / "data" / "transfer" / "once.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as held:
        held.write("4242")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        busy = run_cli(config, "once")
    assert busy.returncode == 0  # nothing to do: another instance runs it
    assert "'once' is already running (pid 4242)" in busy.stdout
    assert list(target.iterdir()) == []
    assert run_cli(config, "once").returncode == 0  # the lock is free again
    assert (target / "x.txt").exists()


def test_sigterm_mid_file_leaves_no_partial_file(tmp_path: Path,
                                                 dirs: tuple[Path, Path]) -> None:
    source, target = dirs
    (source / "big.bin").write_bytes(os.urandom(4 << 20))
    # 4 MiB at 256 KiB/s would take 16s: the signal always lands mid-file.
    config = write_config(tmp_path, {"slow": {"source": str(source), "target": str(target),
                                              "max_rate": 256 * 1024}}, chunk_size=16384)
    process = subprocess.Popen([*PLATYBUS, "transfer", "-c", str(config), "slow"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not temp_files(target):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the temporary file never appeared"
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 5, err
    assert "cancelled" in err
    assert list(target.iterdir()) == []


def test_stopping_the_node_cancels_a_running_transfer(
        tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    source, target = dirs
    (source / "big.bin").write_bytes(os.urandom(1 << 20))
    node = Node(load_config(write_config(tmp_path, {"slow": {
        "source": str(source), "target": str(target), "max_rate": 64 * 1024}},
        chunk_size=8192)))
    node.start(embedded=True)
    try:
        replies: list[Any] = []
        node.bus.publish(Request(action="transfer.run", args={"job": "slow"}, timeout=30),
                         on_reply=replies.append)
        deadline = time.monotonic() + 10
        while not temp_files(target):
            assert time.monotonic() < deadline, "the temporary file never appeared"
            time.sleep(0.02)
        assert node.actions.call("transfer.jobs")[0]["running"] is True
    finally:
        node.stop()
    assert list(target.iterdir()) == []


def test_adhoc_transfer_and_errors(tmp_path: Path, dirs: tuple[Path, Path],
                                   start_node: Any) -> None:
    source, target = dirs
    (source / "note.md").write_text("hi")
    node = start_node(write_config(tmp_path, {}))
    response = node.bus.request(Request(action="transfer.run", args={
        "source": str(source), "target": f"file://{target}", "patterns": ["*.md"]}), timeout=10)
    assert response.error is None
    assert response.output["transferred"] == 1
    assert (target / "note.md").read_text() == "hi"
    with pytest.raises(ArgumentError, match="missing target"):
        node.actions.call("transfer.run", {"source": str(source)})
    with pytest.raises(ArgumentError, match="unsupported scheme 'ftp'"):
        node.actions.call("transfer.run", {"source": str(source), "target": "ftp://h/x"})
    with pytest.raises(UnknownJob, match="no transfer job named 'nope'"):
        node.actions.call("transfer.run", {"job": "nope"})
    missing = node.bus.request(Request(action="transfer.run", args={
        "source": str(tmp_path / "absent"), "target": str(target)}), timeout=10)
    assert missing.error is not None
    assert missing.error.type == "TransferFailed"
    assert "cannot list the source" in missing.error.message


def test_config_errors_exit_3(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    source, target = dirs
    config = write_config(tmp_path, {"up": {"source": str(source),
                                            "target": "sftp://host:99999/x"}})
    with pytest.raises(ConfigError, match=r"plugins\.transfer\.jobs\.up\.target: .*invalid port"):
        Node(load_config(config))
    bad = run_cli(config, "up")
    assert bad.returncode == 3
    assert "plugins.transfer.jobs.up.target" in bad.stderr

    typo = write_config(tmp_path, {"up": {"source": str(source), "target": str(target),
                                          "pattern": ["*"]}})
    assert "did you mean 'patterns'" in run_cli(typo, "up").stderr

    good = write_config(tmp_path, {"up": {"source": str(source), "target": str(target)}})
    unknown = run_cli(good, "down")
    assert unknown.returncode == 3
    assert "no transfer job named 'down'" in unknown.stderr


def test_the_plugin_loads_without_asyncssh_until_a_job_uses_sftp(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"local": {"source": str(tmp_path), "target": "/tmp"}})
    check = subprocess.run([sys.executable, "-c", (
        "import sys\n"
        "from platybus.config import load_config\n"
        "from platybus.node import Node\n"
        f"node = Node(load_config({str(config)!r}))\n"
        "node.start(embedded=True)\n"
        "node.stop()\n"
        "assert 'transfer.run' in node.actions\n"
        "assert 'asyncssh' not in sys.modules, 'asyncssh was imported'\n")],
        capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stderr

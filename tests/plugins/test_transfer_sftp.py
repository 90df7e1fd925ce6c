"""The transfer plugin against a real SFTP server (asyncssh) on 127.0.0.1."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from platybus.plugins.transfer.engine import TEMP_SUFFIX, TransferFailed
from sftp_server import PASSWORD, SftpServer, closed_port
from transfer_support import run_cli

from platybus.config import load_config
from platybus.messages import Request
from platybus.node import Node


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SftpServer]:
    running = SftpServer(tmp_path_factory.mktemp("sftp")).start()
    yield running
    running.stop()


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    remote.mkdir()
    return local, remote


def endpoint(server: SftpServer, path: Path | str, **options: Any) -> dict[str, Any]:
    return {"url": server.url(path), "key_file": str(server.key_file),
            "known_hosts": str(server.known_hosts), **options}


def write_config(tmp_path: Path, jobs: dict[str, Any]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "node": {"id": "sftp-test", "data_dir": str(tmp_path / "data")},
        "plugins": {"transfer": {"jobs": jobs, "chunk_size": 8192}},
    }))
    return path




def tags(result: dict[str, Any]) -> dict[str, str]:
    return {item["path"]: item["tag"] for item in result["files"]}


def leftovers(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.name.endswith(TEMP_SUFFIX)]


def test_upload_with_a_key(server: SftpServer, tmp_path: Path, dirs: tuple[Path, Path],
                           start_node: Any) -> None:
    local, remote = dirs
    payload = os.urandom(200_000)
    (local / "big.bin").write_bytes(payload)
    (local / "note.txt").write_text("hello")
    (local / "skip.tmp").write_text("no")
    (local / "sub").mkdir()
    (local / "sub" / "deep.bin").write_text("deep")
    os.utime(local / "note.txt", (1_500_000_000, 1_500_000_000))
    (remote / "note.txt").write_text("old")
    node = start_node(write_config(tmp_path, {"upload": {
        "source": str(local), "target": endpoint(server, remote),
        "patterns": ["*.bin", "*.txt"], "recursive": True}}))

    result = node.actions.call("transfer.run", {"job": "upload"})

    assert tags(result) == {"big.bin": "=", "note.txt": "=", "sub/deep.bin": "="}
    assert result["target"] == f"sftp://tester@127.0.0.1:{server.port}{remote}"
    assert (remote / "big.bin").read_bytes() == payload
    assert (remote / "note.txt").read_text() == "hello"  # replaced through a rename
    assert (remote / "sub" / "deep.bin").read_text() == "deep"
    assert (remote / "note.txt").stat().st_mtime == 1_500_000_000
    assert not (remote / "skip.tmp").exists()
    assert leftovers(remote) == []


def test_download_with_a_password_and_move(server: SftpServer, tmp_path: Path,
                                           dirs: tuple[Path, Path], start_node: Any) -> None:
    local, remote = dirs
    (remote / "a.csv").write_text("a")
    (remote / "b.csv").write_text("b")
    (remote / "c.log").write_text("c")
    (remote / "dangling.csv").symlink_to(tmp_path / "nowhere")
    source = {"url": server.url(remote), "password": PASSWORD,
              "known_hosts": str(server.known_hosts)}
    node = start_node(write_config(tmp_path, {"download": {
        "source": source, "target": str(local), "patterns": ["*.csv"],
        "delete_source": True}}))

    result = node.actions.call("transfer.run", {"job": "download"})

    assert tags(result) == {"a.csv": "=", "b.csv": "=", "dangling.csv": ">"}
    assert result["source_errors"] == 1
    assert sorted(p.name for p in local.iterdir()) == ["a.csv", "b.csv"]
    assert sorted(p.name for p in remote.iterdir()) == ["c.log", "dangling.csv"]  # moved
    assert leftovers(local) == []


def test_missing_target_directory_is_a_target_error(
        server: SftpServer, tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    local, remote = dirs
    (local / "x.txt").write_text("x")
    config = write_config(tmp_path, {"up": {
        "source": str(local), "target": endpoint(server, remote / "absent")}})
    done = run_cli(config, "up", "--json")
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert tags(result) == {"x.txt": "<"}
    assert "No such file" in result["files"][0]["error"]
    assert result["target_errors"] == 1
    assert list(remote.iterdir()) == []


def test_cli_upload_prints_each_file(server: SftpServer, tmp_path: Path,
                                     dirs: tuple[Path, Path]) -> None:
    local, remote = dirs
    (local / "one.txt").write_text("1")
    (local / "two.txt").write_text("2")
    config = write_config(tmp_path, {"up": {"source": str(local),
                                            "target": endpoint(server, remote)}})
    done = run_cli(config, "up")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("= one.txt")
    assert lines[1].startswith("= two.txt")
    assert lines[2].startswith("up: 2 transferred, 0 skipped, 0 source errors, 0 target errors")
    assert sorted(p.read_text() for p in remote.iterdir()) == ["1", "2"]


def test_closed_port_exits_2(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    local, _ = dirs
    (local / "x.txt").write_text("x")
    config = write_config(tmp_path, {"up": {
        "source": str(local), "target": f"sftp://tester@127.0.0.1:{closed_port()}/in"}})
    done = run_cli(config, "up")
    assert done.returncode == 2
    assert "cannot connect to the target" in done.stderr


def test_unknown_host_key_is_refused(server: SftpServer, tmp_path: Path,
                                     dirs: tuple[Path, Path], start_node: Any) -> None:
    local, remote = dirs
    (local / "x.txt").write_text("x")
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    node = start_node(write_config(tmp_path, {"up": {
        "source": str(local), "target": endpoint(server, remote, known_hosts=str(empty))}}))
    with pytest.raises(TransferFailed, match=r"cannot connect to the target .*known_hosts"):
        node.actions.call("transfer.run", {"job": "up"})
    assert list(remote.iterdir()) == []


def test_stopping_mid_upload_removes_the_remote_temporary_file(
        server: SftpServer, tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    local, remote = dirs
    (local / "big.bin").write_bytes(os.urandom(1 << 20))
    node = Node(load_config(write_config(tmp_path, {"slow": {
        "source": str(local), "target": endpoint(server, remote), "max_rate": 64 * 1024}})))
    node.start(embedded=True)
    try:
        node.bus.publish(Request(action="transfer.run", args={"job": "slow"}, timeout=30))
        deadline = time.monotonic() + 10
        while not leftovers(remote):
            assert time.monotonic() < deadline, "the temporary file never appeared"
            time.sleep(0.02)
    finally:
        node.stop()
    assert list(remote.iterdir()) == []

"""A hostile SFTP server: names in its listing that try to leave the transfer's target.

The server is a real asyncssh server on 127.0.0.1 whose listing is forged: it
names ``../escape``, ``/abs``, ``a/../../b``, a name with a NUL, and a directory
that the target holds as a symlink to elsewhere. Every such file is refused with
a target error, nothing is written outside the target, the job's exit code says
it failed, the good file still arrives, and no traceback is logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import yaml
from sftp_server import SftpServer
from transfer_support import run_cli

from platybus.config import load_config
from platybus.node import Node

HOSTILE = [b"../escape", b"/abs", b"a/../../b", b"nul\x00name", b"C:evil", b"..\\up"]


class ForgedListing(asyncssh.SFTPServer):
    """Serves the real filesystem, but adds hostile names to every listing of a ``src`` dir."""

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        async for name in super().scandir(path):
            yield name
        if path.rstrip(b"/").endswith(b"/src"):
            for forged in HOSTILE:
                yield asyncssh.SFTPName(forged, attrs=asyncssh.SFTPAttrs(
                    type=asyncssh.FILEXFER_TYPE_REGULAR, size=5, mtime=1_700_000_000))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SftpServer]:
    running = SftpServer(tmp_path_factory.mktemp("hostile"), sftp_factory=ForgedListing).start()
    yield running
    running.stop()


def layout(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A remote ``src`` with a good file and a directory ``out``; a local target whose
    ``out`` is a symlink to a directory outside it."""
    remote = tmp_path / "remote" / "src"
    (remote / "out").mkdir(parents=True)
    (remote / "good.txt").write_text("good")
    (remote / "out" / "payload.txt").write_text("pwned")
    target = tmp_path / "deep" / "target"
    target.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (target / "out").symlink_to(outside)
    return remote, target, outside


def write_config(tmp_path: Path, server: SftpServer, remote: Path, target: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "node": {"id": "victim", "data_dir": str(tmp_path / "data")},
        "plugins": {"transfer": {"jobs": {"fetch": {
            "source": {"url": server.url(remote), "key_file": str(server.key_file),
                       "known_hosts": str(server.known_hosts)},
            "target": str(target), "recursive": True}}}},
    }))
    return path


def everything_under(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


def test_hostile_names_are_refused_and_nothing_is_written_outside(
        server: SftpServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    remote, target, outside = layout(tmp_path)
    before = everything_under(tmp_path)
    node = Node(load_config(write_config(tmp_path, server, remote, target)))
    node.start(embedded=True)
    try:
        result: dict[str, Any] = node.actions.call("transfer.run", {"job": "fetch"})
        files = {f["path"]: f for f in result["files"]}
        assert files["good.txt"]["tag"] == "="
        refused = {path: f for path, f in files.items() if f["tag"] == "<"}
        assert set(refused) == {"../escape", "/abs", "a/../../b", "nul\x00name", "C:evil",
                                "..\\up", "out/payload.txt"}
        assert all(f["error"].startswith("refused: ") for f in refused.values())
        assert "outside the target root" in refused["out/payload.txt"]["error"]
        assert result["status"] == "errors"
        assert result["target_errors"] == 7
        # Nothing but the good file was written anywhere.
        written = {p for p in everything_under(tmp_path) - before
                   if not p.startswith("data") and p != "config.yaml"}
        assert written == {"deep/target/good.txt"}
        assert list(outside.iterdir()) == []
        assert (target / "good.txt").read_text() == "good"
        # The node still serves.
        assert node.actions.call("node.ping", {})["pong"] is True
    finally:
        node.stop()
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.exc_info]


def test_the_command_line_exits_1_for_a_hostile_listing(
        server: SftpServer, tmp_path: Path) -> None:
    remote, target, outside = layout(tmp_path)
    done = run_cli(write_config(tmp_path, server, remote, target), "fetch", "--json")
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert result["target_errors"] == 7
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "deep" / "escape").exists()
    assert not (tmp_path / "b").exists()
    assert "Traceback" not in done.stderr

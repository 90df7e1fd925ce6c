"""The file transfer job API, translated: a job over the real SFTP test server, its exit codes."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from platybus.plugins.transfer import FileTags, configure, transfer

from tests.plugins.sftp_server import SftpServer, closed_port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SftpServer]:
    """A real SFTP server on 127.0.0.1."""
    running = SftpServer(tmp_path_factory.mktemp("sftp")).start()
    yield running
    running.stop()


def endpoint(server: SftpServer, path: Path) -> dict[str, Any]:
    """The target on the SFTP server, with the test key."""
    return {"url": server.url(path), "key_file": str(server.key_file),
            "known_hosts": str(server.known_hosts)}


def write_config(tmp_path: Path, server: SftpServer, **job: Any) -> Path:
    """A node config with one transfer job, ``upload``, and ``x:`` sections on both levels."""
    (tmp_path / "out").mkdir(exist_ok=True)
    (tmp_path / "remote").mkdir(exist_ok=True)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "node": {"id": "ft", "data_dir": str(tmp_path / "data")},
        "discovery": {"enabled": False},
        "plugins": {"transfer": {
            "x:app": {"owner": "ops", "level": 1},
            "jobs": {"upload": {"source": str(tmp_path / "out"),
                                "target": endpoint(server, tmp_path / "remote"),
                                "patterns": ["*.csv"], "x:app": {"level": 2},
                                "x:mail": {"to": "ops@example.org"}, **job}}}},
    }))
    return config


def test_a_configured_job_runs_with_its_extra_sections_and_exit_code(
        tmp_path: Path, server: SftpServer) -> None:
    config = write_config(tmp_path, server)
    (tmp_path / "out" / "a.csv").write_text("1,2\n")
    (tmp_path / "out" / "b.csv").write_text("3,4\n")
    (tmp_path / "out" / "notes.txt").write_text("stays")
    run, extra = configure(config, "upload")
    assert extra == {"app": {"owner": "ops", "level": 2}, "mail": {"to": "ops@example.org"}}
    result, exit_code = run()
    assert exit_code == 0
    assert result is not None
    assert (result.files_cnt, result.src_error_cnt, result.tgt_error_cnt) == (2, 0, 0)
    assert result.file_list is not None
    assert sorted((path, tag) for path, _, tag in result.file_list) == [
        ("a.csv", FileTags.TRANSFERRED), ("b.csv", FileTags.TRANSFERRED)]
    assert (tmp_path / "remote" / "a.csv").read_text() == "1,2\n"


def test_not_ready_and_already_running_exit_zero(tmp_path: Path, server: SftpServer) -> None:
    config = write_config(tmp_path, server, ready_file="DONE")
    (tmp_path / "out" / "a.csv").write_text("1,2\n")
    run, _ = configure(config, "upload")
    assert run() == (None, 0)  # DONE is missing: not ready

    (tmp_path / "out" / "DONE").touch()
    lock_dir = tmp_path / "data" / "transfer"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with (lock_dir / "upload.lock").open("a+") as held:  # another instance holds the job
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        run, _ = configure(config, "upload")
        assert run() == (None, 0)
    assert not (tmp_path / "remote" / "a.csv").exists()


def test_run_with_an_exception_reports_and_raises_it(tmp_path: Path, server: SftpServer) -> None:
    run, _ = configure(write_config(tmp_path, server), "upload")
    with pytest.raises(ValueError, match="the caller failed"):
        run(ValueError("the caller failed"))


def test_an_unreachable_server_exits_two(tmp_path: Path, server: SftpServer) -> None:
    config = write_config(tmp_path, server, target=f"sftp://tester@127.0.0.1:{closed_port()}/in")
    run, _ = configure(config, "upload")
    _, exit_code = run()
    assert exit_code == 2


def test_transfer_once_with_collected_data(tmp_path: Path, server: SftpServer) -> None:
    source, remote = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    remote.mkdir()
    (source / "x.bin").write_bytes(b"\0" * 100)
    result = transfer(str(source), endpoint(server, remote), collect_data=True)
    assert (result.files_cnt, result.src_error_cnt, result.tgt_error_cnt) == (1, 0, 0)
    assert result.file_list is not None
    [(path, info, tag)] = result.file_list
    assert (path, info["size"], tag) == ("x.bin", 100, FileTags.TRANSFERRED)
    (tmp_path / "local").mkdir()
    again = transfer({"source": str(source), "target": str(tmp_path / "local")})
    assert again.file_list is None
    assert again.files_cnt == 1


def test_sigterm_raises_terminated_and_exits_five(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import os, signal, sys
        from platybus.errors import exit_code_for
        from platybus.plugins.transfer import set_sigterm_handler
        set_sigterm_handler()
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        except Exception as error:
            print(type(error).__name__)
            sys.exit(exit_code_for(error))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 5
    assert done.stdout.strip() == "TransferTerminated"

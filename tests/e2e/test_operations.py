"""Operations as a user meets them: systemd's notify socket, init, backup and restore,
shell completion, --version. Real processes, a real datagram socket, real bash."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from node_process import wait_ready

from platybus.sdnotify import SystemdNotifier

PLATYBUS = [sys.executable, "-m", "platybus"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PLATYBUS, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


def node_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"node:\n  id: ops\n  data_dir: {tmp_path / 'data'}\n"
                    "plugins:\n  variable: {}\n")
    return path


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()
    if process.stderr is not None:
        process.stderr.close()


# -- systemd --------------------------------------------------------------------


def receive(sock: socket.socket, wanted: str, timeout: float = 30) -> list[str]:
    """Read datagrams until one holds the line ``wanted``; return every datagram read."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            seen.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if wanted in seen[-1].splitlines():
            return seen
    raise AssertionError(f"no {wanted!r} from the node; got {seen}")


def test_a_node_under_systemd_says_ready_pings_the_watchdog_and_says_stopping(
    tmp_path: Path,
) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"}
        process = subprocess.Popen([*PLATYBUS, "run", "-c", str(node_config(tmp_path))],
                                   cwd=tmp_path, stderr=subprocess.PIPE, text=True, env=env)
        try:
            wait_ready(process)
            ready = receive(sock, "READY=1")
            assert "STATUS=node ops ready" in ready[-1].splitlines()
            receive(sock, "WATCHDOG=1")
            receive(sock, "WATCHDOG=1")  # again: it keeps pinging while it serves
            process.send_signal(signal.SIGTERM)
            receive(sock, "STOPPING=1")
            assert process.wait(30) == 0
        finally:
            stop(process)


def test_the_notifier_speaks_to_abstract_sockets_and_is_silent_without_one() -> None:
    name = f"platybus-test-{os.getpid()}-{threading.get_ident()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        notifier = SystemdNotifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "1000000",
                                    "WATCHDOG_PID": str(os.getpid())})
        assert notifier.ready()
        assert sock.recv(100) == b"READY=1"
        assert notifier.ping_if_due(now=100.0)
        assert not notifier.ping_if_due(now=100.2)  # half of 1 s has not passed
        assert notifier.ping_if_due(now=100.6)
    quiet = SystemdNotifier({})
    assert not quiet.enabled
    assert not quiet.ready()
    assert not quiet.ping_if_due()
    # A watchdog meant for another process is not ours to feed.
    assert SystemdNotifier({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000000",
                            "WATCHDOG_PID": "1"}).watchdog_interval is None


def test_the_unit_file_is_of_type_notify() -> None:
    unit = (Path(__file__).resolve().parents[2] / "contrib" / "platybus.service").read_text()
    assert "Type=notify" in unit
    assert "WatchdogSec=" in unit
    assert "platybus run" in unit


# -- init -----------------------------------------------------------------------


def test_init_writes_a_starter_config_that_checks_and_never_overwrites(tmp_path: Path) -> None:
    made = run_cli("init", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    text = (tmp_path / "config.yaml").read_text()
    assert text.count("#") > 10  # commented for a newcomer
    checked = run_cli("check", "-c", "config.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    again = run_cli("init", cwd=tmp_path)
    assert again.returncode != 0
    assert "exists; not overwriting" in again.stderr
    assert "Traceback" not in again.stderr
    assert (tmp_path / "config.yaml").read_text() == text


# -- backup and restore -----------------------------------------------------------


def test_backup_is_consistent_while_writers_go_on_and_restore_refuses_a_running_node(
    tmp_path: Path,
) -> None:
    config = node_config(tmp_path)
    data = tmp_path / "data"
    process = subprocess.Popen([*PLATYBUS, "run", "-c", str(config)], cwd=tmp_path,
                               stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(process)
        # A database in WAL mode that keeps being written while the backup runs.
        db = sqlite3.connect(data / "store.sqlite3", check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE rows (n INTEGER PRIMARY KEY)")
        db.commit()
        (data / "notes.txt").write_text("kept\n")
        written = [0]
        writing = threading.Event()
        halt = threading.Event()

        def write() -> None:
            while not halt.is_set():
                db.execute("INSERT INTO rows (n) VALUES (?)", (written[0] + 1,))
                db.commit()
                written[0] += 1
                writing.set()

        writer = threading.Thread(target=write, name="test-sqlite-writer")
        writer.start()
        try:
            writing.wait(10)
            before = written[0]
            backup = run_cli("backup", str(tmp_path / "backup"), "-c", str(config),
                             cwd=tmp_path)
        finally:
            halt.set()
            writer.join(10)
            db.close()
        assert backup.returncode == 0, backup.stderr
        copy = sqlite3.connect(tmp_path / "backup" / "store.sqlite3")
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        count, top = copy.execute("SELECT count(*), max(n) FROM rows").fetchone()
        copy.close()
        assert count == top  # a snapshot: no row missing below the last one
        assert count >= before  # everything committed before the backup began is in it
        manifest = json.loads((tmp_path / "backup" / "platybus-backup.json").read_text())
        names = {f["path"] for f in manifest["files"]}
        assert {"store.sqlite3", "notes.txt"} <= names
        assert "ops.lock" not in names
        refused = run_cli("restore", str(tmp_path / "backup"), "-c", str(config), "--force",
                          cwd=tmp_path)
        assert refused.returncode == 4
        assert "is running" in refused.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        stop(process)
    # Stopped: a restore into an empty data dir brings back the same bytes.
    shutil.rmtree(data)
    restored = run_cli("restore", str(tmp_path / "backup"), "-c", str(config), cwd=tmp_path)
    assert restored.returncode == 0, restored.stderr
    assert (data / "notes.txt").read_text() == "kept\n"
    db = sqlite3.connect(data / "store.sqlite3")
    assert db.execute("SELECT count(*) FROM rows").fetchone()[0] == count
    db.close()
    # Files already there are not replaced without --force.
    again = run_cli("restore", str(tmp_path / "backup"), "-c", str(config), cwd=tmp_path)
    assert again.returncode != 0
    assert "--force" in again.stderr
    # A damaged backup restores nothing.
    (tmp_path / "backup" / "notes.txt").write_text("changed\n")
    damaged = run_cli("restore", str(tmp_path / "backup"), "-c", str(config), "--force",
                      cwd=tmp_path)
    assert damaged.returncode != 0
    assert "damaged" in damaged.stderr
    assert (data / "notes.txt").read_text() == "kept\n"


def test_backup_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    config = node_config(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    result = run_cli("backup", str(tmp_path / "full"), "-c", str(config), cwd=tmp_path)
    assert result.returncode != 0
    assert "not empty" in result.stderr
    assert "Traceback" not in result.stderr


# -- completion and version -----------------------------------------------------------


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_completes_commands_and_options_in_a_real_bash(
    tmp_path: Path, shell: str
) -> None:
    script = run_cli("completion", shell, cwd=tmp_path)
    assert script.returncode == 0, script.stderr
    (tmp_path / "complete.sh").write_text(script.stdout)
    if shell == "zsh":
        assert script.stdout.startswith("autoload -U +X bashcompinit")
        return  # the rest is the bash function, run below through bash
    probe = ("source complete.sh; "
             "COMP_WORDS=(platybus ba); COMP_CWORD=1; _platybus; echo \"${COMPREPLY[@]}\"; "
             "COMP_WORDS=(platybus exec --ti); COMP_CWORD=2; _platybus; "
             "echo \"${COMPREPLY[@]}\"")
    out = subprocess.run(["bash", "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                         timeout=30, check=True).stdout.splitlines()
    assert out[0].split() == ["backup"]
    assert out[1].split() == ["--timeout"]


def test_version_flag(tmp_path: Path) -> None:
    from platybus import __version__

    result = run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"platybus {__version__}"


def test_a_port_in_use_is_one_line_naming_the_key_and_exit_code_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "config.yaml"
        config.write_text(f"node: {{id: busy, data_dir: {tmp_path / 'data'}}}\n"
                          f"backends:\n  http: {{port: {port}}}\n")
        result = run_cli("run", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "cannot listen" in line]
    assert errors == [f"platybus: backends.http: cannot listen on 127.0.0.1:{port}: the address "
                      "is already in use; set backends.http.port to a free port (0 picks one) "
                      "or stop what holds it"]
    assert " ERROR " not in result.stderr

"""The file monitor inside a real node, its config errors, and bursts from other processes."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from platybus.backends.file_monitor import FileCreated
from platybus.backends.file_monitor.config import PathFilter, WatchedPath

from platybus.config import load_config
from platybus.errors import ConfigError
from platybus.messages import Event
from platybus.node import Node
from tests.backends.file_monitor.harness import Monitor

Build = Callable[..., Monitor]
ROOT = Path(__file__).resolve().parents[3]
CHILD = Path(__file__).with_name("file_monitor_child.py")


def write_config(tmp_path: Path, backend: str) -> Path:
    """A node config in ``tmp_path`` whose ``backends`` section is ``backend``."""
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(f"""\
        node:
          id: fm
          data_dir: {tmp_path / "data"}
        backends:
          file_monitor:
        """) + textwrap.indent(textwrap.dedent(backend), "    "))
    return path


@pytest.fixture
def node_from(tmp_path: Path) -> Iterator[Callable[[str], Node]]:
    """Build and start a node from a backend section; it is stopped after the test."""
    nodes: list[Node] = []

    def build(backend: str) -> Node:
        node = Node(load_config(write_config(tmp_path, backend)))
        nodes.append(node)
        node.start()
        return node

    yield build
    for node in nodes:
        node.stop()


def test_a_node_from_config_publishes_typed_file_events_and_logs_them(
        node_from: Callable[[str], Node], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="platybus.backends.file_monitor")
    watched = tmp_path / "watched"
    node = node_from(f"""\
        paths:
          - path: {watched}
            create: true
        """)
    got: list[Event] = []
    arrived = threading.Event()

    def record(event: Event) -> None:
        got.append(event)
        arrived.set()

    node.bus.subscribe("type=file.created and data.path=*.txt", record)
    (watched / "x.txt").write_text("hello")
    assert arrived.wait(5)

    assert isinstance(got[0], FileCreated)
    assert got[0].origin == "fm"
    assert node.codec.types.get("file.created") is FileCreated
    assert node.codec.decode(node.codec.encode(got[0])) == got[0]
    # The monitor logs an event once it is published: the line may follow the delivery.
    line = f"file.created {watched}/x.txt"
    deadline = time.monotonic() + 5
    while line not in (lines := [r.getMessage() for r in caplog.records]):
        assert time.monotonic() < deadline, lines
        time.sleep(0.01)
    assert node.health()["components"]["backends"]["file_monitor"] == "ready"


def test_event_log_lines_are_summarized_under_a_burst(
        monitor: Build, root: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="platybus.backends.file_monitor")
    m = monitor(paths=[str(root)], log_rate=3, events=["created"])
    for i in range(20):
        (root / f"f{i:02d}").write_text("x")
    m.events.wait(lambda: len(m.events.paths("file.created")) == 20)
    m.stop()
    lines = [r.getMessage() for r in caplog.records if r.name.endswith("file_monitor")]
    per_event = [line for line in lines if line.startswith("file.created ")]
    summaries = [line for line in lines if "more file events" in line]
    assert len(per_event) == 3
    assert summaries
    assert sum(int(s.split()[2]) for s in summaries) == 17


@pytest.mark.parametrize(("entry", "message"), [
    ("{path: ./w, patterns: ['*.txt'], regexes: ['x']}", "either patterns"),
    ("{path: ./w, regexes: ['(unclosed']}", "regexes[0]: '(unclosed' is not a valid regular"),
    ("{path: ./w, patterns: ['/abs/*.txt']}", "relative to the watched root"),
    ("{path: ./w, ignore_directories: ['a/b']}", "a directory name"),
    ("{path: ./w, ready: {suffix: ''}}", "paths[1].ready: suffix: '' must be"),
    ("{path: ./w, recursiv: false}", "paths[1].recursiv: unknown key"),
])
def test_a_bad_path_entry_is_a_config_error_naming_file_line_and_key(
        tmp_path: Path, entry: str, message: str) -> None:
    config = write_config(tmp_path, f"""\
        paths:
          - ./fine
          - {entry}
        """)
    with pytest.raises(ConfigError) as caught:
        Node(load_config(config))
    text = str(caught.value)
    assert text.startswith(f"{config}:8: backends.file_monitor.paths[1]")
    assert message in text


def test_the_same_root_twice_is_a_config_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, """\
        paths: [./w, {path: ./w/}]
        """)
    with pytest.raises(ConfigError, match=r"paths\[1\]: './w/' is already watched by paths\[0\]"):
        Node(load_config(config))


@pytest.mark.parametrize(("patterns", "path", "expected"), [
    (["*.txt"], "a.txt", True),
    (["*.txt"], "deep/er/a.txt", True),
    (["*.txt"], "a.txt.bak", False),
    (["reports/*.csv"], "reports/a.csv", True),
    (["reports/*.csv"], "reports/2024/a.csv", False),
    (["reports/**/*.csv"], "reports/2024/q1/a.csv", True),
    (["reports/**/*.csv"], "reports/a.csv", True),
    (["reports/**"], "reports/anything/at/all", True),
    (["reports/**"], "other/reports/x", False),
    (["data-??.json"], "data-01.json", True),
    (["data-[0-9]*.json"], "data-x.json", False),
    (["data-[!0-9]*.json"], "data-x.json", True),
])
def test_glob_patterns_match_relative_paths(patterns: list[str], path: str,
                                            expected: bool) -> None:
    assert PathFilter(WatchedPath(path=".", patterns=patterns)).allows(path) is expected


# -- bursts from another process ------------------------------------------------------

WRITER = """
import os, sys
root, count = sys.argv[1], int(sys.argv[2])
for i in range(count):
    with open(os.path.join(root, f"f{i:05d}.dat"), "w") as f:
        f.write("x")
"""


def write_files(root: Path, count: int) -> None:
    """Create ``count`` files in ``root`` from a separate Python process, as fast as it can."""
    subprocess.run([sys.executable, "-c", WRITER, str(root), str(count)], check=True,
                   timeout=60)


@pytest.mark.slow
def test_ten_thousand_files_from_another_process_are_each_reported_once(
        monitor: Build, root: Path) -> None:
    m = monitor(paths=[{"path": str(root), "ready": True}], log_events=False,
                events=["created", "closed"])
    write_files(root, 10_000)
    m.events.wait(lambda: len(m.events.count("file.ready")) == 10_000, timeout=60)
    expected = {f"f{i:05d}.dat" for i in range(10_000)}
    for type_ in ("file.created", "file.closed", "file.ready"):
        seen = m.events.count(type_)
        assert set(seen) == expected, type_
        assert set(seen.values()) == {1}, type_


@pytest.mark.slow
@pytest.mark.timeout(180)  # thousands of files through a stalled monitor: slow when loaded
def test_a_stalled_monitor_recovers_what_the_kernel_dropped(tmp_path: Path) -> None:
    root = tmp_path / "watched"
    root.mkdir()
    # Each file makes 3 inotify events: write half again as many as the kernel queue holds.
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    count = max(6_000, limit // 2)
    if count > 50_000:
        pytest.skip(f"the kernel inotify queue holds {limit} events: too many to overflow here")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, str(CHILD), str(root), str(count)],
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        # Stopped, the monitor reads nothing: the kernel queue overflows long before
        # the writer is done.
        os.kill(child.pid, signal.SIGSTOP)
        try:
            write_files(root, count)
        finally:
            os.kill(child.pid, signal.SIGCONT)
        report = json.loads(child.stdout.readline())
        assert child.wait(30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
    assert report["overflows"] >= 1
    assert report["rescans"] >= 1
    assert report["errors"] == 0
    expected = {f"f{i:05d}.dat" for i in range(count)}
    for type_ in ("file.created", "file.closed", "file.ready"):
        seen = Counter(report["seen"][type_])
        assert set(seen) == expected, type_
        assert set(seen.values()) == {1}, type_


def test_the_drop_folder_example_reports_a_file_moved_into_place(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    node = Node(load_config(ROOT / "docs" / "examples" / "drop_folder.yaml"))
    ready: list[Event] = []
    arrived = threading.Event()

    def record(event: Event) -> None:
        ready.append(event)
        arrived.set()

    node.bus.subscribe("type=file.ready and data.relative=*.csv", record)
    node.start()
    try:
        staging = tmp_path / "inbox" / ".tmp"
        staging.mkdir()
        (staging / "report.csv").write_text("a,b\n")
        os.rename(staging / "report.csv", tmp_path / "inbox" / "report.csv")
        assert arrived.wait(5)
    finally:
        node.stop()
    assert [e.data.path for e in ready] == [str(tmp_path / "inbox" / "report.csv")]

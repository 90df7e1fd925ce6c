"""The file monitor on a real file system: events, filters, roots, observers and ready files."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from platybus.backends.file_monitor import (
    FileClosed,
    FileCreated,
    FileDeleted,
    FileModified,
    FileMoved,
    FileReady,
)

from tests.backends.file_monitor.harness import Monitor

Build = Callable[..., Monitor]


def sentinel(root: Path, name: str = "zz-sentinel.txt") -> str:
    """Create a file whose event marks that everything done before it was processed."""
    (root / name).write_text("end")
    return name


# -- the events -----------------------------------------------------------------------


def test_a_new_file_is_created_modified_closed_then_deleted(monitor: Build, root: Path) -> None:
    m = monitor(paths=[str(root)])
    (root / "a.txt").write_text("hello")
    closed = m.events.wait_for("file.closed", "a.txt")
    (root / "a.txt").unlink()
    m.events.wait_for("file.deleted", "a.txt")

    created = m.events.find("file.created", "a.txt")
    assert isinstance(created, FileCreated)
    assert created.data.path == str(root / "a.txt")
    assert created.data.root == str(root)
    assert created.data.is_directory is False
    assert created.origin == "test"
    assert isinstance(m.events.find("file.modified", "a.txt"), FileModified)
    assert isinstance(closed, FileClosed)
    assert isinstance(m.events.find("file.deleted", "a.txt"), FileDeleted)
    assert [e.type for e in m.events.events] == [
        "file.created", "file.modified", "file.closed", "file.deleted"]


def test_directories_are_reported_with_is_directory(monitor: Build, root: Path) -> None:
    m = monitor(paths=[str(root)])
    (root / "sub").mkdir()
    (root / "sub" / "deeper").mkdir()
    (root / "sub" / "deeper" / "f.txt").write_text("x")
    m.events.wait_for("file.closed", "sub/deeper/f.txt")
    shutil.rmtree(root / "sub")
    deleted = m.events.wait_for("file.deleted", "sub")

    assert m.events.find("file.created", "sub").data.is_directory is True
    assert m.events.find("file.created", "sub/deeper").data.is_directory is True
    assert deleted.data.is_directory is True
    assert m.events.paths("file.deleted") == ["sub/deeper/f.txt", "sub/deeper", "sub"]


def test_a_rename_is_moved_with_new_path(monitor: Build, root: Path) -> None:
    (root / "old.txt").write_text("x")
    m = monitor(paths=[str(root)])
    os.rename(root / "old.txt", root / "new.txt")
    moved = m.events.wait_for("file.moved", "old.txt")

    assert isinstance(moved, FileMoved)
    assert moved.data.new_path == str(root / "new.txt")
    assert moved.data.new_relative == "new.txt"
    assert moved.data.is_directory is False
    assert m.events.paths("file.created") == []


def test_a_renamed_directory_moves_its_files_too(monitor: Build, root: Path) -> None:
    (root / "a").mkdir()
    (root / "a" / "f.txt").write_text("x")
    m = monitor(paths=[str(root)])
    os.rename(root / "a", root / "b")
    m.events.wait_for("file.moved", "a/f.txt")
    (root / "b" / "f.txt").unlink()
    m.events.wait_for("file.deleted", "b/f.txt")

    moves = {e.data.relative: e.data.new_relative for e in m.events.events
             if isinstance(e, FileMoved)}
    assert moves == {"a": "b", "a/f.txt": "b/f.txt"}


def test_moving_in_and_out_of_the_root_is_created_and_deleted(
        monitor: Build, root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "in.dat").write_text("x")
    (root / "out.dat").write_text("y")
    m = monitor(paths=[{"path": str(root), "ready": True}])
    os.rename(outside / "in.dat", root / "in.dat")
    os.rename(root / "out.dat", outside / "out.dat")
    m.events.wait_for("file.deleted", "out.dat")

    m.events.wait_for("file.created", "in.dat")
    # A file moved in arrives whole: ready at once, without a close.
    m.events.wait_for("file.ready", "in.dat")
    assert m.events.paths("file.moved") == []
    assert m.events.paths("file.closed") == []


def test_files_that_existed_at_start_are_not_reported_as_created(
        monitor: Build, root: Path) -> None:
    (root / "old.txt").write_text("x")
    m = monitor(paths=[str(root)])
    m.events.wait_for("file.closed", sentinel(root))
    assert m.events.paths("file.created") == ["zz-sentinel.txt"]


def test_the_events_option_limits_what_is_published(monitor: Build, root: Path) -> None:
    m = monitor(paths=[str(root)], events=["created", "deleted"])
    (root / "a.txt").write_text("x")
    (root / "a.txt").unlink()
    m.events.wait_for("file.deleted", "a.txt")
    assert [e.type for e in m.events.events] == ["file.created", "file.deleted"]


def test_non_recursive_watch_sees_only_the_top_level(monitor: Build, root: Path) -> None:
    (root / "sub").mkdir()
    m = monitor(paths=[{"path": str(root), "recursive": False}])
    (root / "sub" / "deep.txt").write_text("x")
    m.events.wait_for("file.closed", sentinel(root))
    assert "sub/deep.txt" not in m.events.paths("file.created")


# -- coalescing ---------------------------------------------------------------------


def test_a_burst_of_modifications_is_coalesced(monitor: Build, root: Path) -> None:
    (root / "log.txt").write_text("")
    m = monitor(paths=[str(root)], coalesce=2.0)
    with open(root / "log.txt", "a") as log:
        for i in range(200):
            log.write(f"line {i}\n")
            log.flush()
        m.events.wait_for("file.modified", "log.txt")
    m.events.wait_for("file.closed", "log.txt")
    # One event at the first write, at most one more for the rest of the window.
    assert 1 <= m.events.count("file.modified")["log.txt"] <= 2


def test_modifications_after_the_window_are_reported_again(monitor: Build, root: Path) -> None:
    (root / "log.txt").write_text("")
    m = monitor(paths=[str(root)], coalesce=0.2, events=["modified"])
    with open(root / "log.txt", "a") as log:
        log.write("one\n")
        log.flush()
        m.events.wait(lambda: m.events.count("file.modified")["log.txt"] == 1)
        for i in range(50):
            log.write(f"{i}\n")
            log.flush()
        # The trailing event of the window arrives without any further write or close.
        m.events.wait(lambda: m.events.count("file.modified")["log.txt"] == 2)


# -- filters ------------------------------------------------------------------------


def test_patterns_match_the_path_relative_to_the_root(monitor: Build, root: Path) -> None:
    (root / "reports" / "2024").mkdir(parents=True)
    (root / "other").mkdir()
    m = monitor(paths=[{"path": str(root), "patterns": ["*.txt", "reports/**/*.csv"],
                        "ignore_patterns": ["draft-*"]}])
    for name in ("a.txt", "other/b.txt", "draft-c.txt", "x.csv", "other/y.csv",
                 "reports/2024/z.csv", "reports/top.csv", "reports/2024/n.json"):
        (root / name).write_text("x")
    m.events.wait_for("file.closed", sentinel(root))

    assert sorted(m.events.paths("file.created")) == [
        "a.txt", "other/b.txt", "reports/2024/z.csv", "reports/top.csv", "zz-sentinel.txt"]


def test_patterns_can_ignore_case(monitor: Build, root: Path) -> None:
    m = monitor(paths=[{"path": str(root), "patterns": ["*.jpg", "*.txt"],
                        "case_sensitive": False}])
    (root / "PHOTO.JPG").write_text("x")
    m.events.wait_for("file.closed", sentinel(root))
    assert m.events.paths("file.created") == ["PHOTO.JPG", "zz-sentinel.txt"]


def test_regexes_match_the_path_relative_to_the_root(monitor: Build, root: Path) -> None:
    (root / "logs").mkdir()
    (root / "sub" / "logs").mkdir(parents=True)
    m = monitor(paths=[{"path": str(root), "regexes": [r"^logs/.*\.log$", r"sentinel"],
                        "ignore_regexes": [r"debug"]}])
    for name in ("logs/a.log", "sub/logs/b.log", "logs/debug.log", "logs/c.txt"):
        (root / name).write_text("x")
    m.events.wait_for("file.closed", sentinel(root))
    assert m.events.paths("file.created") == ["logs/a.log", "zz-sentinel.txt"]


def test_ignored_directories_are_skipped_at_any_depth(monitor: Build, root: Path) -> None:
    (root / ".git").mkdir()
    (root / "a" / "b" / ".git").mkdir(parents=True)
    m = monitor(paths=[{"path": str(root), "ignore_directories": [".git", "node_modules"]}])
    (root / ".git" / "HEAD").write_text("x")
    (root / "a" / "b" / ".git" / "index").write_text("x")
    (root / "a" / "node_modules" / "pkg").mkdir(parents=True)
    (root / "a" / "node_modules" / "pkg" / "i.js").write_text("x")
    (root / "a" / "b" / "keep.txt").write_text("x")
    m.events.wait_for("file.closed", sentinel(root))

    reported = [e.data.relative for e in m.events.events]
    assert not [p for p in reported if ".git" in p or "node_modules" in p]
    assert "a/b/keep.txt" in m.events.paths("file.created")


def test_a_file_renamed_into_the_filter_is_created_and_ready(monitor: Build, root: Path) -> None:
    m = monitor(paths=[{"path": str(root), "patterns": ["*.dat"], "ready": True}])
    (root / "upload.part").write_text("data")
    os.rename(root / "upload.part", root / "upload.dat")
    m.events.wait_for("file.ready", "upload.dat")
    assert m.events.paths("file.created") == ["upload.dat"]
    assert m.events.paths("file.moved") == []


# -- ready files --------------------------------------------------------------------


def test_ready_at_close_reports_each_written_file_once(monitor: Build, root: Path) -> None:
    m = monitor(paths=[{"path": str(root), "ready": True}])
    with open(root / "x.dat", "w") as f:
        f.write("part one")
        f.flush()
        m.events.wait_for("file.created", "x.dat")
        assert m.events.find("file.ready", "x.dat") is None
        f.write("part two")
    ready = m.events.wait_for("file.ready", "x.dat")
    m.events.wait_for("file.ready", sentinel(root))
    assert isinstance(ready, FileReady)
    assert ready.data.marker is None
    assert m.events.count("file.ready") == {"x.dat": 1, "zz-sentinel.txt": 1}


def test_ready_marker_announces_the_data_file(monitor: Build, root: Path) -> None:
    m = monitor(paths=[{"path": str(root), "ready": {"suffix": ".ready"},
                        "patterns": ["*.dat", "*.txt"]}])
    (root / "x.dat").write_text("data")
    m.events.wait_for("file.closed", "x.dat")
    m.events.wait_for("file.closed", sentinel(root, "before-marker.txt"))
    assert m.events.paths("file.ready") == []
    (root / "x.dat.ready").write_text("")
    ready = m.events.wait_for("file.ready", "x.dat")

    assert ready.data.path == str(root / "x.dat")
    assert ready.data.marker == str(root / "x.dat.ready")
    # The marker itself is not a *.dat or *.txt file: no file.* events of its own.
    assert "x.dat.ready" not in [e.data.relative for e in m.events.events]


def test_a_marker_before_its_data_file_waits_for_the_file(monitor: Build, root: Path) -> None:
    m = monitor(paths=[{"path": str(root), "ready": {"suffix": ".ok"}}])
    (root / "y.dat.ok").write_text("")
    m.events.wait_for("file.closed", "y.dat.ok")
    assert m.events.paths("file.ready") == []
    (root / "y.dat").write_text("data")
    ready = m.events.wait_for("file.ready", "y.dat")
    assert ready.data.marker == str(root / "y.dat.ok")
    assert m.events.paths("file.ready") == ["y.dat"]


# -- roots --------------------------------------------------------------------------


def test_a_missing_root_is_created_when_asked(monitor: Build, tmp_path: Path) -> None:
    root = tmp_path / "new" / "inbox"
    m = monitor(paths=[{"path": str(root), "create": True}])
    assert root.is_dir()
    (root / "a.txt").write_text("x")
    m.events.wait_for("file.closed", "a.txt")


def test_a_missing_root_is_waited_for(monitor: Build, tmp_path: Path,
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="platybus.backends.file_monitor")
    root = tmp_path / "later"
    m = monitor(paths=[str(root)])
    assert m.backend.is_alive()
    assert not root.exists()
    assert any("does not exist; waiting for it" in r.getMessage() for r in caplog.records)

    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "early.txt").write_text("x")
    os.rename(staging, root)
    # What the root holds when it appears is reported as created.
    m.events.wait_for("file.created", "early.txt")
    (root / "late.txt").write_text("y")
    m.events.wait_for("file.closed", "late.txt")


def test_a_removed_root_is_reported_and_watched_again(monitor: Build, root: Path) -> None:
    (root / "a.txt").write_text("x")
    m = monitor(paths=[str(root)])
    shutil.rmtree(root)
    m.events.wait_for("file.deleted", "a.txt")
    root.mkdir()
    m.events.wait(lambda: m.backend.roots[0].watch is not None)
    (root / "b.txt").write_text("y")
    m.events.wait_for("file.closed", "b.txt")
    assert m.backend.is_alive()


def test_several_roots_report_their_own_root(monitor: Build, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    m = monitor(paths=[str(one), {"path": str(two), "patterns": ["*.csv"]}])
    (one / "a.txt").write_text("x")
    (two / "b.csv").write_text("x")
    first = m.events.wait_for("file.created", "a.txt")
    second = m.events.wait_for("file.created", "b.csv")
    assert first.data.root == str(one)
    assert second.data.root == str(two)


# -- the polling observer -----------------------------------------------------------


def test_the_polling_observer_reports_every_kind(monitor: Build, root: Path) -> None:
    (root / "keep.txt").write_text("x")
    m = monitor(paths=[{"path": str(root), "ready": True}], observer="polling",
                poll_interval=0.1, settle=0.2, coalesce=0)
    (root / "a.txt").write_text("one")
    # Without close events, a file counts as closed once it stops changing.
    m.events.wait_for("file.closed", "a.txt")
    m.events.wait_for("file.ready", "a.txt")
    with open(root / "keep.txt", "a") as f:
        f.write("more")
    m.events.wait_for("file.modified", "keep.txt")
    os.rename(root / "a.txt", root / "b.txt")
    moved = m.events.wait_for("file.moved", "a.txt")
    (root / "b.txt").unlink()
    m.events.wait_for("file.deleted", "b.txt")

    assert moved.data.new_relative == "b.txt"
    assert m.backend.roots[0].polling
    assert m.events.count("file.closed")["a.txt"] == 1


# -- robustness ---------------------------------------------------------------------


def test_a_handler_that_raises_does_not_stop_events(
        monitor: Build, root: Path, caplog: pytest.LogCaptureFixture) -> None:
    m = monitor(paths=[str(root)])
    failures = []

    def broken(event: object) -> None:
        failures.append(event)
        raise RuntimeError("handler bug")

    m.bus.subscribe("file.created", broken, priority=1)
    with caplog.at_level(logging.ERROR, logger="platybus.bus"):
        for i in range(5):
            (root / f"f{i}.txt").write_text("x")
        m.events.wait(lambda: len(m.events.paths("file.closed")) == 5)
    assert len(failures) == 5
    assert m.events.paths("file.created") == [f"f{i}.txt" for i in range(5)]
    assert m.bus.stats().handler_errors == 5
    assert m.backend.is_alive()


def test_a_file_name_that_is_not_utf8_is_reported(monitor: Build, root: Path) -> None:
    m = monitor(paths=[str(root)])
    raw = os.path.join(os.fsencode(root), b"caf\xe9.txt")
    with open(raw, "wb") as f:
        f.write(b"x")
    m.events.wait_for("file.closed", sentinel(root))
    assert os.fsdecode(b"caf\xe9.txt") in m.events.paths("file.created")
    assert m.backend.errors == 0


def test_an_atomic_replace_is_a_modification_not_a_deletion(
        monitor: Build, root: Path, tmp_path: Path) -> None:
    (root / "config.txt").write_text("v1")
    m = monitor(paths=[{"path": str(root), "ignore_patterns": ["*.tmp"], "ready": True}])
    (root / "config.txt.tmp").write_text("v2")
    os.replace(root / "config.txt.tmp", root / "config.txt")
    m.events.wait_for("file.ready", "config.txt")
    (tmp_path / "v3").write_text("v3")
    os.replace(tmp_path / "v3", root / "config.txt")
    m.events.wait(lambda: m.events.count("file.ready")["config.txt"] == 2)

    assert [e.type for e in m.events.events] == [
        "file.modified", "file.ready", "file.modified", "file.ready"]


def test_a_coalesced_modification_is_not_lost_at_stop(monitor: Build, root: Path) -> None:
    (root / "log.txt").write_text("")
    m = monitor(paths=[str(root)], coalesce=30.0, events=["modified"])
    with open(root / "log.txt", "a") as log:
        log.write("one\n")
        log.flush()
        m.events.wait(lambda: m.events.count("file.modified")["log.txt"] == 1)
        log.write("two\n")
        log.flush()
        # The close would flush it too: stop while the file is still open.
        m.events.wait(lambda: "log.txt" in m.backend.roots[0].tracker.pending())
        m.stop()
    assert m.events.count("file.modified")["log.txt"] == 2

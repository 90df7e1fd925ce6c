"""Drop folders catch up: what changed while the node was stopped is reported once at start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

RECORDER = '''
import json
from pathlib import Path

from platybus.extensions import Plugin


class FileRecorder(Plugin):
    """Appends every file event (type, relative path, catch_up) to files.jsonl."""

    def start(self):
        self.out = open(Path(self.context.data_dir) / "files.jsonl", "a", encoding="utf-8")
        self.sub = self.context.bus.subscribe("type=file.*", self.record)

    def stop(self):
        self.sub.unsubscribe()
        self.out.close()

    def record(self, event):
        self.out.write(json.dumps({"type": event.type, "rel": event.data.relative,
                                   "catch_up": event.data.catch_up}) + "\\n")
        self.out.flush()
'''


class DropFolderNode:
    """A ``platybus run`` process watching one drop folder with ``catch_up: true``."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.drop = tmp_path / "drop"
        self.drop.mkdir()
        self.data = tmp_path / "data"
        ext = tmp_path / "ext"
        ext.mkdir()
        (ext / "file_recorder.py").write_text(RECORDER)
        self.config = tmp_path / "config.yaml"
        self.config.write_text(textwrap.dedent(f"""\
            node:
              id: dropper
              data_dir: {self.data}
              extensions_path: [{ext}]
            plugins:
              recorder:
                class: file_recorder:FileRecorder
            backends:
              file_monitor:
                paths:
                  - path: {self.drop}
                    catch_up: true
                events: [created, modified]
                settle: 0.3
            """))
        self.log = tmp_path / "node.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "platybus", "run", "-c", str(self.config)],
                cwd=self.dir, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 30
        while b" ready in " not in self.log.read_bytes()[offset:]:
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(5)
        self.proc = None

    def events(self) -> list[dict[str, Any]]:
        path = self.data / "files.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def wait_for(self, rel: str, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Wait until an event about ``rel`` was recorded; return every event so far."""
        deadline = time.monotonic() + timeout
        while not any(e["rel"] == rel for e in self.events()):
            assert time.monotonic() < deadline, self.events()
            time.sleep(0.05)
        return self.events()


@pytest.fixture
def dropper(tmp_path: Path) -> Iterator[DropFolderNode]:
    node = DropFolderNode(tmp_path)
    yield node
    node.stop()


@pytest.mark.slow
def test_files_dropped_while_the_node_is_stopped_are_reported_once_at_start(
        dropper: DropFolderNode) -> None:
    (dropper.drop / "before.txt").write_text("there at the first start")
    (dropper.drop / "edited.txt").write_text("v1")
    dropper.start()
    # The first start only builds the index: what is there is not news.
    (dropper.drop / "live-1.txt").write_text("while running")
    dropper.wait_for("live-1.txt")
    dropper.stop()
    first = len(dropper.events())
    assert {e["rel"] for e in dropper.events()} == {"live-1.txt"}
    assert not any(e["catch_up"] for e in dropper.events())

    (dropper.drop / "new.txt").write_text("dropped while stopped")
    (dropper.drop / "sub").mkdir()
    (dropper.drop / "sub" / "deep.csv").write_text("a,b")
    (dropper.drop / "edited.txt").write_text("v2, longer")
    dropper.start()
    (dropper.drop / "live-2.txt").write_text("after the start")
    later = dropper.wait_for("live-2.txt")[first:]
    caught = [(e["type"], e["rel"]) for e in later if e["catch_up"]]
    assert sorted(caught) == [("file.created", "new.txt"), ("file.created", "sub"),
                              ("file.created", "sub/deep.csv"),
                              ("file.modified", "edited.txt")]
    # Caught-up changes come before every live event, and are not reported live again.
    assert [e["catch_up"] for e in later[:4]] == [True] * 4
    assert {e["rel"] for e in later[4:]} == {"live-2.txt"}
    dropper.stop()

    # Not again at the next start, nor after a hard kill once a start is done.
    seen = len(dropper.events())
    dropper.start()
    dropper.kill()
    dropper.start()
    (dropper.drop / "live-3.txt").write_text("marker")
    events = dropper.wait_for("live-3.txt")
    assert {(e["rel"], e["catch_up"]) for e in events[seen:]} == {("live-3.txt", False)}
    assert os.path.exists(dropper.data / "file_monitor" / "file_monitor.json")

"""Platypush's file monitor and backend examples, translated, on a real node and file system."""

from __future__ import annotations

import os
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from platybus.config import load_config
from platybus.messages import Event
from platybus.node import Node


class Seen:
    """Every ``file.*`` event of a node, with a wait for the one a step expects."""

    def __init__(self, node: Node) -> None:
        self.events: list[Event] = []
        self._cond = threading.Condition()
        node.bus.subscribe("file.*", self._add)

    def _add(self, event: Event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait(self, type_: str, path: Path, after: int = 0, timeout: float = 10.0) -> int:
        """Wait for a ``type_`` event about ``path`` past index ``after``; return its index."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, event in enumerate(self.events[after:], after):
                    if event.type == type_ and event.data.path == str(path):
                        return i
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"no {type_} for {path}; got "
                                f"{[(e.type, e.data.path) for e in self.events]}")
                self._cond.wait(left)

    def about(self, path: Path) -> list[str]:
        """The types of the events about ``path``, in order."""
        with self._cond:
            return [e.type for e in self.events if e.data.path == str(path)]


@pytest.fixture
def node_with(tmp_path: Path) -> Iterator[Callable[[str], tuple[Node, Seen]]]:
    """Start a node whose ``backends.file_monitor`` section is the given YAML."""
    nodes: list[Node] = []

    def build(section: str) -> tuple[Node, Seen]:
        config = tmp_path / "config.yaml"
        config.write_text(f"node: {{id: seeds, data_dir: {tmp_path / 'data'}}}\n"
                          "discovery: {enabled: false}\nbackends:\n  file_monitor:\n"
                          + textwrap.indent(textwrap.dedent(section), "    "))
        node = Node(load_config(config))
        seen = Seen(node)
        nodes.append(node)
        node.start()
        return node, seen

    yield build
    for node in nodes:
        node.stop()


def test_a_single_file_is_watched_through_append_truncate_replace_and_recreate(
        node_with: Callable[[str], tuple[Node, Seen]], tmp_path: Path) -> None:
    watched = tmp_path / "passwd"
    watched.write_text("root:x:0:0\n")
    neighbour = tmp_path / "group"
    node, seen = node_with(f"""\
        paths: [{watched}]
        retry_interval: 0.1
        settle: 0.3
        """)
    assert node.health()["components"]["backends"]["file_monitor"] == "ready"

    with watched.open("a") as out:  # append
        out.write("daemon:x:1:1\n")
    step = seen.wait("file.closed", watched)
    watched.write_text("")  # truncate
    step = seen.wait("file.closed", watched, step + 1)
    temp = tmp_path / ".passwd.swp"  # atomic replace by rename, as editors save
    temp.write_text("root:x:0:0\n")
    os.replace(temp, watched)
    step = seen.wait("file.modified", watched, step + 1)
    watched.unlink()  # delete
    step = seen.wait("file.deleted", watched, step + 1)
    watched.write_text("back\n")  # re-create
    seen.wait("file.created", watched, step + 1)
    neighbour.write_text("not watched")
    sentinel_check = watched.open("a")
    sentinel_check.write("x")
    sentinel_check.close()
    seen.wait("file.closed", watched, step + 1)
    assert all(e.data.path == str(watched) for e in seen.events)
    assert all(e.data.root == str(tmp_path) and e.data.relative == "passwd"
               for e in seen.events)
    assert str(temp) not in [e.data.path for e in seen.events]


def test_missing_file_and_directory_roots_are_waited_for(
        node_with: Callable[[str], tuple[Node, Seen]], tmp_path: Path) -> None:
    later_file = tmp_path / "later.log"
    later_dir = tmp_path / "later"
    _node, seen = node_with(f"""\
        paths: [{later_file}, {later_dir}]
        retry_interval: 0.1
        settle: 0.3
        """)
    later_file.write_text("first line\n")
    seen.wait("file.created", later_file)
    later_dir.mkdir()
    inner = later_dir / "a.txt"
    inner.write_text("y")  # found by the check that finds the directory, or seen after it
    seen.wait("file.created", inner)


def test_the_regex_example_with_ignore_patterns_as_regexes(
        node_with: Callable[[str], tuple[Node, Seen]], tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    _node, seen = node_with(f"""\
        paths:
          - path: {photos}
            regexes: ['.*\\.jpe?g$']
            ignore_patterns: ['^tmp_.*']
            case_sensitive: false
        settle: 0.3
        """)
    for name in ("tmp_a.jpg", "b.txt", "C.JPG", "d.jpeg"):
        (photos / name).write_text("x")
    seen.wait("file.closed", photos / "C.JPG")
    seen.wait("file.closed", photos / "d.jpeg")
    (photos / "zz.jpg").write_text("end")
    seen.wait("file.closed", photos / "zz.jpg")
    assert seen.about(photos / "tmp_a.jpg") == []
    assert seen.about(photos / "b.txt") == []

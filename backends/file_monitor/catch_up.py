"""Catch-up for drop folders: what changed under a root while the node was not running.

For every root with ``catch_up: true`` the backend keeps an index (each tracked
path with its size and mtime) in ``<data_dir>/file_monitor/<backend>.json``. At
start the walk of the root is compared with the index: paths that are new are
reported as created, files whose size or mtime changed as modified, before any
live event. The index is written again at once, every few seconds while things
change, and at stop, so a path is caught up once: after a hard kill, changes of
the last seconds before it may be reported again (never lost).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import msgspec

from .tracker import DIR, Change, Sig

SAVE_INTERVAL = 2.0
_VERSION = 1


class _Index(msgspec.Struct, frozen=True):
    version: int
    roots: dict[str, dict[str, tuple[int, int]]]


def missed(known: Mapping[str, Sig], found: Mapping[str, Sig],
           reported: Callable[[str], bool]) -> list[Change]:
    """Return what appeared or changed between the ``known`` index and the ``found`` walk."""
    out: list[Change] = []
    for rel, sig in found.items():
        if not reported(rel):
            continue
        old = known.get(rel)
        if old is None:
            out.append(Change("created", rel, sig == DIR))
        elif old != sig and DIR not in (old, sig):
            out.append(Change("modified", rel))
    return out


class CatchUpIndex:
    """The catch-up index of one backend's roots, read at start and written as it changes."""

    def __init__(self, path: Path, log: logging.Logger) -> None:
        self.path = path
        self.log = log
        self.roots: dict[str, dict[str, Sig]] = {}
        self.dirty = False
        self._next_save = 0.0
        self._decoder = msgspec.json.Decoder(_Index)
        self._encoder = msgspec.json.Encoder()

    def load(self) -> None:
        """Read the index; a missing or unreadable one starts empty (with a warning)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as error:
            self.log.warning("cannot read the catch-up index %s: %s", self.path, error)
            return
        try:
            index = self._decoder.decode(data)
        except (msgspec.DecodeError, RecursionError) as error:
            self.log.warning("the catch-up index %s is damaged (%s): starting a new one",
                             self.path, error)
            return
        if index.version == _VERSION:
            self.roots = {root: dict(entries) for root, entries in index.roots.items()}

    def known(self, root: str) -> dict[str, Sig] | None:
        """The index of a root, or ``None`` if this is the first start that keeps one."""
        return self.roots.get(root)

    def update(self, root: str, entries: Mapping[str, Sig]) -> None:
        """Record the current state of a root (written at the next save)."""
        self.roots[root] = dict(entries)
        self.dirty = True

    def save_due(self, now: float) -> bool:
        """Whether the index has changed and was last written long enough ago."""
        return self.dirty and now >= self._next_save

    def save(self) -> None:
        """Write the index atomically (a crash leaves the old one or the new one)."""
        self._next_save = time.monotonic() + SAVE_INTERVAL
        self.dirty = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(self._encoder.encode(_Index(_VERSION, self.roots)))
        os.replace(tmp, self.path)

"""Shared fixtures: thread-leak detection and small node builders."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Threads owned by libraries for the whole process (not by any test).
_PROCESS_THREADS = ("asyncio_", "ThreadPoolExecutor", "pytest_timeout")


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail any test that leaves a thread running."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2.0
    while True:
        leaked = [
            t for t in threading.enumerate()
            if t not in before and t.is_alive() and not t.name.startswith(_PROCESS_THREADS)
        ]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not leaked, f"test left threads running: {[t.name for t in leaked]}"


def child_processes() -> set[int]:
    """Process ids whose parent is this process, zombies included."""
    me, found = os.getpid(), set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            found.add(int(stat.parent.name))
    return found


@pytest.fixture
def no_leaked_processes() -> Iterator[None]:
    """Fail a test that leaves a child process behind (running or unreaped)."""
    before = child_processes()
    yield
    deadline = time.monotonic() + 2.0
    while (left := child_processes() - before) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not left, f"test left child processes behind: {sorted(left)}"

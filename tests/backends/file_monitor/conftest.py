"""Fixtures of the file monitor tests: a monitor built from options, a directory to watch."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from platybus.backends.file_monitor import FileMonitorBackend, FileMonitorConfig

from platybus.actions import ActionRegistry
from platybus.bus import Bus
from platybus.codec import Codec
from platybus.extensions import NodeContext
from tests.backends.file_monitor.harness import Monitor, Recorder


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[Callable[..., Monitor]]:
    """Build and start a file monitor from config options; everything stops after the test."""
    started: list[Monitor] = []

    def build(**options: Any) -> Monitor:
        options.setdefault("retry_interval", 0.1)
        options.setdefault("settle", 0.3)
        config = msgspec.convert(options, FileMonitorConfig)
        bus = Bus("test")
        bus.start()
        recorder = Recorder(bus)
        context = NodeContext(node_id="test", bus=bus, codec=Codec(), actions=ActionRegistry(),
                              data_dir=tmp_path / "data")
        backend = FileMonitorBackend("file_monitor", config, context)
        handle = Monitor(backend, bus, recorder)
        started.append(handle)
        backend.start()
        assert backend.ready.wait(10)
        assert backend.failure is None
        return handle

    yield build
    for handle in started:
        handle.stop()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An existing, empty directory to watch."""
    path = tmp_path / "watched"
    path.mkdir()
    return path

"""File created → ``file.created`` on a bus subscriber, beside raw watchdog in the same run.

1. Latency: create one file, wait for its event, repeat. Baseline: a watchdog
   inotify ``Observer`` with a handler whose ``on_created`` records the time.
2. Burst: a separate Python process creates 10,000 files as fast as it can.
   Delivered = distinct files seen as ``file.created`` (and as ``file.closed``);
   time = writer start → last event. Baseline: the same burst seen by the raw
   watchdog handler (which is never told about a kernel queue overflow).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
from platybus.backends.file_monitor import FileMonitorBackend, FileMonitorConfig
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.inotify import InotifyObserver

from platybus.actions import ActionRegistry
from platybus.bus import Bus
from platybus.codec import Codec
from platybus.extensions import NodeContext

WRITER = """
import os, sys
root, count = sys.argv[1], int(sys.argv[2])
for i in range(count):
    with open(os.path.join(root, f"f{i:05d}.dat"), "w") as f:
        f.write("x")
"""

# (path → arrival time) for one kind of event, filled by the system under test.
Arrivals = dict[str, float]


class Sink:
    """Arrival times of created and closed notifications, with a way to wait for them."""

    def __init__(self) -> None:
        self.created: Arrivals = {}
        self.closed: Arrivals = {}
        self.cond = threading.Condition()

    def add(self, table: Arrivals, path: str) -> None:
        now = time.perf_counter()
        with self.cond:
            table.setdefault(path, now)
            self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.1))
        return True


@contextmanager
def raw_watchdog(root: Path) -> Iterator[Sink]:
    """A bare watchdog inotify observer on ``root``."""
    sink = Sink()

    class Handler(FileSystemEventHandler):
        def on_created(self, event: FileSystemEvent) -> None:
            sink.add(sink.created, os.fsdecode(event.src_path))

        def on_closed(self, event: FileSystemEvent) -> None:
            sink.add(sink.closed, os.fsdecode(event.src_path))

    observer = InotifyObserver()
    observer.schedule(Handler(), str(root), recursive=True)
    observer.start()
    try:
        yield sink
    finally:
        observer.stop()
        observer.join(10)


@contextmanager
def platybus_monitor(root: Path) -> Iterator[Sink]:
    """The file monitor backend on a started bus, with one subscriber."""
    sink = Sink()
    bus = Bus("bench")
    bus.start()
    bus.subscribe("file.created", lambda e: sink.add(sink.created, e.data.path))
    bus.subscribe("file.closed", lambda e: sink.add(sink.closed, e.data.path))
    config = msgspec.convert({"paths": [str(root)], "log_events": False}, FileMonitorConfig)
    context = NodeContext(node_id="bench", bus=bus, codec=Codec(), actions=ActionRegistry(),
                          data_dir=root.parent)
    backend = FileMonitorBackend("file_monitor", config, context)
    backend.start()
    backend.ready.wait(10)
    try:
        yield sink
    finally:
        backend.stop()
        backend.join(10)
        bus.stop()


def latency(system: Callable[[Path], Any], root: Path, rounds: int) -> list[float]:
    """Seconds from creating a file to its created notification, one file at a time."""
    samples = []
    with system(root) as sink:
        for i in range(rounds):
            path = str(root / f"lat{i:05d}")
            began = time.perf_counter()
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
            if not sink.wait(lambda p=path: p in sink.created, 5.0):
                continue
            samples.append(sink.created[path] - began)
    return samples


def burst(system: Callable[[Path], Any], root: Path, count: int) -> tuple[int, int, float]:
    """Files seen created, files seen closed, and seconds from writer start to the last one."""
    with system(root) as sink:
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", WRITER, str(root), str(count)], check=True,
                       timeout=120)
        sink.wait(lambda: len(sink.created) >= count and len(sink.closed) >= count, 20.0)
        # Anything still in flight gets a short grace period to arrive.
        time.sleep(0.2)
        last = max([*sink.created.values(), *sink.closed.values(), began])
        return len(sink.created), len(sink.closed), last - began


def pct(samples: list[float], p: float) -> float:
    """The ``p`` quantile of ``samples`` in milliseconds."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000 if ordered else 0.0


def main(argv: list[str] | None = None) -> None:
    """Measure latency and a 10,000-file burst for watchdog and for the file monitor."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--files", type=int, default=10_000)
    args = parser.parse_args(argv)
    rows: list[tuple[str, Callable[[Path], Any]]] = [
        ("raw watchdog (baseline)", raw_watchdog), ("platybus file_monitor", platybus_monitor)]
    with tempfile.TemporaryDirectory() as scratch:
        print(f"file created -> subscriber, {args.rounds} files one at a time (pid {os.getpid()})")
        print(f"  {'':26}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}")
        for label, system in rows:
            root = Path(scratch) / f"lat-{label.split()[0]}"
            root.mkdir()
            samples = latency(system, root, args.rounds)
            print(f"  {label:26}{pct(samples, 0.5):9.3f}{pct(samples, 0.99):9.3f}"
                  f"{statistics.fmean(samples) * 1000 if samples else 0.0:9.3f}"
                  f"{'' if len(samples) == args.rounds else f'  ({len(samples)} seen)'}")
        print("  target: platybus p50 <= 2 ms")
        print(f"\n{args.files} files created by a separate process")
        print(f"  {'':26}{'created':>9}{'closed':>9}{'seconds':>9}")
        for label, system in rows:
            root = Path(scratch) / f"burst-{label.split()[0]}"
            root.mkdir()
            created, closed, took = burst(system, root, args.files)
            print(f"  {label:26}{created:9d}{closed:9d}{took:9.2f}")
        print(f"  target: platybus delivers {args.files} of {args.files}")


if __name__ == "__main__":
    main()

"""The file monitor backend: watchdog observers feeding one thread that owns all state.

Watchdog's threads only append raw events to an inbox. The backend's own thread
drains it, runs each event through the root's :class:`RootTracker` (filters,
de-duplication, coalescing, ready files) and publishes typed events. The same
thread rescans a tree when the kernel's inotify queue overflowed, retries
missing roots and fires the tracker's timers, so no lock guards the state.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserver

from platybus.errors import PlatybusError
from platybus.extensions import Backend, NodeContext
from platybus.messages import Event

from .config import FileMonitorConfig, WatchedPath
from .events import (
    EVENT_TYPES,
    FileClosed,
    FileCreated,
    FileDeleted,
    FileEventData,
    FileModified,
    FileMoved,
    FileMovedData,
    FileReady,
    FileReadyData,
)
from .tracker import Change, RootTracker

# Watchdog reports a kernel queue overflow only as a log record of this logger family.
WATCHDOG_LOGGER = "watchdog.observers"
OVERFLOW_LOGGER = "watchdog.observers.inotify_c"
# Let events already read before an overflow drain before rescanning, within limits.
RESCAN_DELAY = 0.1
RESCAN_MAX_DELAY = 1.0
STOP_TIMEOUT = 5.0

_EVENT_CLASSES: dict[str, Callable[..., Event]] = {
    "created": FileCreated, "modified": FileModified, "deleted": FileDeleted,
    "closed": FileClosed,
}


class _Inbox:
    """Raw events from watchdog's threads to the backend's thread, drained in batches."""

    def __init__(self) -> None:
        self._items: deque[tuple[_Root, int, FileSystemEvent]] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._waiting = False
        self._woken = False

    def put(self, item: tuple[_Root, int, FileSystemEvent]) -> None:
        with self._cond:
            self._items.append(item)
            if self._waiting:
                self._cond.notify()

    def wake(self) -> None:
        with self._cond:
            self._woken = True
            self._cond.notify()

    def take(self, timeout: float) -> deque[tuple[_Root, int, FileSystemEvent]]:
        with self._cond:
            if not self._items and not self._woken and timeout > 0:
                self._waiting = True
                self._cond.wait(timeout)
                self._waiting = False
            self._woken = False
            items, self._items = self._items, deque()
        return items


class _Forward(FileSystemEventHandler):
    """The watchdog handler of one scheduled root: hands events to the inbox, nothing else."""

    def __init__(self, inbox: _Inbox, root: _Root, generation: int) -> None:
        self._inbox = inbox
        self._root = root
        self._generation = generation

    def dispatch(self, event: FileSystemEvent) -> None:
        """Queue the event; an exception here would end watchdog's observer thread."""
        try:
            self._inbox.put((self._root, self._generation, event))
        except Exception:
            logging.getLogger(__name__).exception("cannot queue %r", event)


class _OverflowWatch(logging.Handler):
    """Notices watchdog's 'Inotify queue overflowed' log record."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self._on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        """Call the overflow callback for an overflow record."""
        try:
            if record.name.startswith(OVERFLOW_LOGGER) and "overflow" in record.getMessage():
                self._on_overflow()
        except Exception:
            self.handleError(record)


class _Root:
    """One configured path (a directory, or a single file) and how it is watched right now.

    A single file is watched through its directory (top level only, that name
    only), so that an atomic replace by rename, a deletion and a re-creation are
    all seen: a watch on the file itself would end with its inode.
    """

    def __init__(self, spec: WatchedPath, config: FileMonitorConfig) -> None:
        self.spec = spec
        self.config = config
        self.target = os.path.abspath(os.path.expanduser(spec.path))
        self.label = _display(self.target)
        self.polling = config.observer == "polling"
        self.file_name: str | None = None
        self.path = self.target
        self.display = self.label
        self.tracker = self._tracker()
        self.observer: BaseObserver | None = None
        self.watch: ObservedWatch | None = None
        self.generation = 0
        self.problem: str | None = None
        self.rescan_due: float | None = None
        self.rescan_limit = 0.0

    def _tracker(self) -> RootTracker:
        return RootTracker(self.path, self.spec, coalesce=self.config.coalesce,
                           settle=self.config.settle, synthesize_close=self.polling,
                           only=self.file_name)

    def watch_file(self, is_file: bool) -> None:
        """Watch the target as a single file (through its directory) or as a directory."""
        name = os.path.basename(self.target) if is_file else None
        if name == self.file_name:
            return
        self.file_name = name
        self.path = os.path.dirname(self.target) if is_file else self.target
        self.display = _display(self.path)
        self.tracker = self._tracker()

    @property
    def recursive(self) -> bool:
        """Whether subdirectories are watched (never for a single file)."""
        return self.spec.recursive and self.file_name is None

    def rel(self, path: str) -> str | None:
        """The path relative to the root (``""`` for the root), or ``None`` if outside."""
        if path == self.path:
            return ""
        prefix = self.path + os.sep
        return path[len(prefix):] if path.startswith(prefix) else None


def _display(path: str) -> str:
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else path


class _EventLog:
    """One INFO line per event, up to ``rate`` a second; a summary line for the rest."""

    def __init__(self, log: logging.Logger, rate: int, enabled: bool) -> None:
        self._log = log
        self._rate = rate
        self._enabled = enabled
        self._window = 0.0
        self._lines = 0
        self._skipped: Counter[str] = Counter()

    def record(self, kind: str, text: str, now: float) -> None:
        if not self._enabled:
            return
        if now - self._window >= 1.0:
            self.summarize(now)
            self._window = now
            self._lines = 0
        if self._lines < self._rate:
            self._lines += 1
            self._log.info("%s %s", kind, text)
        else:
            self._skipped[kind] += 1

    def next_deadline(self) -> float | None:
        return self._window + 1.0 if self._skipped else None

    def tick(self, now: float) -> None:
        if self._skipped and now - self._window >= 1.0:
            self.summarize(now)
            self._window = now
            self._lines = 0

    def summarize(self, now: float) -> None:
        if not self._skipped:
            return
        total = sum(self._skipped.values())
        detail = ", ".join(f"{k} {n}" for k, n in sorted(self._skipped.items()))
        self._log.info("... and %d more file events in %.1fs (%s)", total,
                       max(now - self._window, 1.0), detail)
        self._skipped.clear()


class FileMonitorBackend(Backend):
    """Publishes ``file.*`` events for changes under the configured directories."""

    Config = FileMonitorConfig
    event_types = EVENT_TYPES

    def __init__(self, name: str, config: FileMonitorConfig, context: NodeContext) -> None:
        super().__init__(name, config, context)
        self.config: FileMonitorConfig = config
        self.roots = [_Root(spec, config) for spec in config.watched()]
        self._inbox = _Inbox()
        self._observers: dict[str, BaseObserver] = {}
        self._enabled = set(config.events) | {"ready"}
        self._event_log = _EventLog(self.log, config.log_rate, config.log_events)
        self._overflow_watch = _OverflowWatch(self._on_overflow)
        self._overflow_lock = threading.Lock()
        self._overflowed = False
        self._next_retry = 0.0
        self.overflows = 0
        self.rescans = 0
        self.errors = 0
        self.dropped = 0

    # -- lifecycle ---------------------------------------------------------

    def on_start(self) -> None:
        """Start watching every root that exists (or can be created)."""
        logging.getLogger(WATCHDOG_LOGGER).addHandler(self._overflow_watch)
        overflow_logger = logging.getLogger(OVERFLOW_LOGGER)
        if not overflow_logger.isEnabledFor(logging.WARNING):
            # A quiet log level must not hide the only overflow signal watchdog gives.
            overflow_logger.setLevel(logging.WARNING)
        for root in self.roots:
            if self._try_watch(root):
                # Walked before ready, so that everything after ready is reported
                # against the tree as it was then.
                self._guard(self._load, root)

    def loop(self) -> None:
        """Serve: drain the inbox, fire timers, rescan and retry until stopped."""
        self.mark_ready()
        while self.should_keep_running():
            batch = self._inbox.take(self._timeout(time.monotonic()))
            for root, generation, event in batch:
                if generation == root.generation:
                    self._guard(self._handle, root, event)
            self._guard(self._housekeep, time.monotonic(), bool(batch))

    def on_stop(self) -> None:
        """Report coalesced modifications still pending, then stop every observer."""
        for root in self.roots:
            self._guard(self._publish, root, root.tracker.flush())
        self._event_log.summarize(time.monotonic())
        for observer in self._observers.values():
            try:
                observer.stop()
                observer.join(STOP_TIMEOUT)
            except Exception:
                self.log.exception("stopping a file observer failed")
            if observer.is_alive():
                self.log.error("file observer did not stop within %.0fs", STOP_TIMEOUT)
        self._observers.clear()
        logging.getLogger(WATCHDOG_LOGGER).removeHandler(self._overflow_watch)

    def wake(self) -> None:
        """Wake the loop so it notices a stop request."""
        self._inbox.wake()

    # -- watching roots ----------------------------------------------------

    def _observer(self, kind: str) -> BaseObserver:
        observer = self._observers.get(kind)
        if observer is None:
            if kind == "polling":
                observer = PollingObserver(timeout=self.config.poll_interval)
            else:
                from watchdog.observers.inotify import InotifyObserver

                # Full events tell a file moved in from outside (complete) from a new one.
                observer = InotifyObserver(generate_full_events=True)
            observer.name = f"{self.name}-{kind}"
            observer.start()
            self._observers[kind] = observer
        return observer

    def _try_watch(self, root: _Root) -> bool:
        """Schedule a root if it is there (creating it if asked); return whether it is watched."""
        target = root.target
        if root.spec.create and not os.path.exists(target):
            try:
                os.makedirs(target, exist_ok=True)
                self.log.info("created watched directory %s", root.label)
            except OSError as error:
                return self._missing(root, f"cannot be created: {error.strerror}")
        if os.path.isdir(target):
            root.watch_file(False)
        elif os.path.exists(target):
            root.watch_file(True)
        else:
            return self._missing(root, "does not exist")
        path = root.path
        kinds = {"auto": ["inotify", "polling"], "inotify": ["inotify"],
                 "polling": ["polling"]}[self.config.observer]
        for kind in kinds:
            try:
                observer = self._observer(kind)
                root.generation += 1
                handler = _Forward(self._inbox, root, root.generation)
                root.watch = observer.schedule(handler, path, recursive=root.recursive,
                                               event_filter=self._event_filter(kind))
            except FileNotFoundError:
                return self._missing(root, "does not exist")
            except OSError as error:
                hint = (" (raise fs.inotify.max_user_watches or max_user_instances)"
                        if error.errno in (errno.ENOSPC, errno.EMFILE) else "")
                self.log.warning("cannot watch %s with %s: %s%s", root.label, kind,
                                 error.strerror or error, hint)
                continue
            root.observer = observer
            root.polling = kind == "polling"
            root.tracker.synthesize_close = root.polling
            what = ("file" if root.file_name is not None
                    else "directory" if root.spec.recursive else "directory, top level only")
            self.log.info("watching %s (%s, %s)", root.label, what, kind)
            root.problem = None
            return True
        return self._missing(root, "cannot be watched")

    def _missing(self, root: _Root, problem: str) -> bool:
        if root.problem != problem:
            self.log.warning("watched path %s %s; waiting for it (checking every %gs)",
                             root.label, problem, self.config.retry_interval)
            root.problem = problem
        root.watch = None
        return False

    def _event_filter(self, kind: str) -> list[type[FileSystemEvent]]:
        classes: list[type[FileSystemEvent]] = [
            FileCreatedEvent, DirCreatedEvent, FileDeletedEvent, DirDeletedEvent,
            FileMovedEvent, DirMovedEvent, FileClosedEvent,
        ]
        # IN_MODIFY comes once per write(); leave it out of the kernel mask unless needed.
        if "modified" in self._enabled or kind == "polling":
            classes.append(FileModifiedEvent)
        return classes

    def _unwatch(self, root: _Root) -> None:
        observer, watch = root.observer, root.watch
        root.watch = None
        root.generation += 1
        if observer is not None and watch is not None:
            # The emitter may already have stopped itself when the root went away.
            with contextlib.suppress(KeyError, RuntimeError):
                observer.unschedule(watch)

    def _root_gone(self, root: _Root, now: float) -> None:
        self._unwatch(root)
        self._publish(root, root.tracker.clear(), now)
        self.log.warning("watched %s %s was removed; waiting for it to come back",
                         "file" if root.file_name is not None else "directory", root.label)
        root.problem = "does not exist"

    # -- events ------------------------------------------------------------

    def _handle(self, root: _Root, event: FileSystemEvent) -> None:
        kind = event.event_type
        now = time.monotonic()
        src = os.fsdecode(event.src_path)
        rel = root.rel(src) if src else None
        tracker = root.tracker
        if kind == "moved":
            dest = os.fsdecode(event.dest_path)
            new = root.rel(dest) if dest else None
            changes = tracker.moved(rel or None, new or None, event.is_directory, now)
        elif rel is None:
            return
        elif rel == "":
            if kind == "deleted":
                self._root_gone(root, now)
            return
        elif kind == "created":
            changes = tracker.created(rel, event.is_directory, now, complete=event.is_synthetic)
        elif kind == "modified":
            if event.is_directory:
                return
            changes = tracker.modified(rel, now)
        elif kind == "closed":
            changes = tracker.closed(rel, now)
        elif kind == "deleted":
            changes = tracker.deleted(rel)
        else:
            return
        if changes:
            self._publish(root, changes, now)

    def _publish(self, root: _Root, changes: list[Change], now: float | None = None) -> None:
        when = time.monotonic() if now is None else now
        base = root.path + os.sep
        for change in changes:
            if change.kind not in self._enabled:
                continue
            path = base + change.rel
            event: Event
            if change.kind == "moved":
                assert change.new_rel is not None
                event = FileMoved(data=FileMovedData(
                    path=path, root=root.path, relative=change.rel,
                    is_directory=change.is_dir, new_path=base + change.new_rel,
                    new_relative=change.new_rel))
                text = f"{root.display}/{change.rel} -> {root.display}/{change.new_rel}"
            elif change.kind == "ready":
                marker = base + change.marker if change.marker else None
                event = FileReady(data=FileReadyData(
                    path=path, root=root.path, relative=change.rel, marker=marker))
                text = f"{root.display}/{change.rel}"
            else:
                event = _EVENT_CLASSES[change.kind](data=FileEventData(
                    path=path, root=root.path, relative=change.rel, is_directory=change.is_dir))
                text = f"{root.display}/{change.rel}" + ("/" if change.is_dir else "")
            try:
                self.send_event(event)
            except PlatybusError as error:
                self.dropped += 1
                self.log.warning("file event %s %s not published: %s", event.type, text, error)
                continue
            self._event_log.record(event.type, text, when)

    # -- housekeeping ------------------------------------------------------

    def _on_overflow(self) -> None:
        # Runs on watchdog's reading thread: only flag it and wake the loop.
        with self._overflow_lock:
            self._overflowed = True
        self._inbox.wake()

    def _timeout(self, now: float) -> float:
        deadlines = [self._next_retry]
        for root in self.roots:
            if root.rescan_due is not None:
                deadlines.append(root.rescan_due)
            due = root.tracker.next_deadline()
            if due is not None:
                deadlines.append(due)
        summary = self._event_log.next_deadline()
        if summary is not None:
            deadlines.append(summary)
        if not deadlines:
            return self.config.retry_interval
        return min(max(0.0, min(deadlines) - now), self.config.retry_interval)

    def _housekeep(self, now: float, busy: bool) -> None:
        with self._overflow_lock:
            overflowed, self._overflowed = self._overflowed, False
        if overflowed:
            self.overflows += 1
            for root in self.roots:
                if root.watch is not None and not root.polling and root.rescan_due is None:
                    root.rescan_due = now + RESCAN_DELAY
                    root.rescan_limit = now + RESCAN_MAX_DELAY
                    self.log.warning("kernel inotify queue overflowed: events under %s were "
                                     "lost; rescanning it", root.display)
        for root in self.roots:
            due = root.rescan_due
            if due is not None and now >= due and (not busy or now >= root.rescan_limit):
                root.rescan_due = None
                if root.watch is not None:
                    self._rescan(root, now, overflow=True)
            changes = root.tracker.tick(now)
            if changes:
                self._publish(root, changes, now)
        if now >= self._next_retry:
            self._next_retry = now + self.config.retry_interval
            for root in self.roots:
                if root.watch is None:
                    if self._try_watch(root):
                        self._rescan(root, now, overflow=False)
                elif not os.path.isdir(root.path):
                    self._root_gone(root, now)
        self._event_log.tick(now)

    def _rescan(self, root: _Root, now: float, overflow: bool) -> None:
        began = time.monotonic()
        changes = root.tracker.rescan(root.tracker.scan(), now)
        counts = Counter(c.kind for c in changes)
        if overflow:
            self.rescans += 1
        self.log.log(logging.INFO if overflow else logging.DEBUG,
                     "scanned %s in %.3fs: %d created, %d modified, %d deleted", root.display,
                     time.monotonic() - began, counts["created"], counts["modified"],
                     counts["deleted"])
        self._publish(root, changes, now)

    def _load(self, root: _Root) -> None:
        root.tracker.load(root.tracker.scan(), time.monotonic())

    def _guard(self, fn: Callable[..., object], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            # One bad event or unreadable directory must never stop the monitor.
            self.errors += 1
            self.log.exception("file monitor error (continuing)")

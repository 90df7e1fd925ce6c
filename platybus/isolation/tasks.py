"""What a process pool hands out and tracks: task futures, tasks, and its counters."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import msgspec

log = logging.getLogger("platybus.isolation")

__all__ = ["PoolStats", "Task", "TaskFuture"]


class TaskFuture(Future[Any]):
    """The future result of one task, with where and how long it ran."""

    def __init__(self, fn_ref: str, message_id: str) -> None:
        super().__init__()
        self.fn_ref = fn_ref
        self.message_id = message_id
        self.submitted = time.monotonic()
        self.started: float | None = None
        self.finished: float | None = None
        self.run_time: float | None = None
        self.worker_pid: int | None = None
        self._start_callbacks: list[Callable[[TaskFuture], None]] = []
        self._start_lock = threading.Lock()

    def add_start_callback(self, fn: Callable[[TaskFuture], None]) -> None:
        """Call ``fn(future)`` once a worker takes the task (at once if one already has)."""
        with self._start_lock:
            if self.worker_pid is None:
                self._start_callbacks.append(fn)
                return
        fn(self)

    def _started(self, pid: int) -> None:
        with self._start_lock:
            self.started = time.monotonic()
            self.worker_pid = pid
            callbacks, self._start_callbacks = self._start_callbacks, []
        for fn in callbacks:
            try:
                fn(self)
            except Exception:
                log.exception("a start callback of task %s failed", self.fn_ref)

    @property
    def duration(self) -> float:
        """Seconds from submission to the end (or until now)."""
        return (self.finished or time.monotonic()) - self.submitted


class PoolStats(msgspec.Struct):
    """What a process pool holds and has done."""

    size: int
    workers: int
    busy: int
    queued: int
    submitted: int
    completed: int
    failed: int
    timeouts: int
    crashes: int
    pids: list[int]


class Task:
    """One task as the pool tracks it: queued, running or done, with its deadline."""

    __slots__ = ("configuration", "deadline", "fn_ref", "future", "payload", "seq", "state")

    def __init__(self, seq: int, future: TaskFuture, fn_ref: str, *, configuration: bytes,
                 payload: bytes, deadline: float) -> None:
        self.seq = seq
        self.future = future
        self.fn_ref = fn_ref
        self.configuration = configuration
        self.payload = payload
        self.deadline = deadline
        self.state = "queued"

"""A small thread pool whose threads have an owner that stops and joins them."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from queue import SimpleQueue
from typing import Any

log = logging.getLogger("platybus.threads")

_STOP = object()


class WorkerPool:
    """Runs callables on a fixed number of threads; ``stop()`` is idempotent and bounded.

    Unlike ``ThreadPoolExecutor`` it never blocks interpreter exit on a hung task:
    ``stop()`` waits up to its timeout, logs the tasks still running, and returns.
    """

    def __init__(self, size: int, name: str) -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one thread")
        self._size = size
        self._name = name
        self._tasks: SimpleQueue[Any] = SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stopped = False
        self._idle = 0

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Queue ``fn(*args)`` and return a future of its result."""
        future: Future[Any] = Future()
        with self._lock:
            if self._stopped:
                raise RuntimeError(f"worker pool {self._name} is stopped")
            if self._idle == 0 and len(self._threads) < self._size:
                self._spawn()
            else:
                self._idle -= 1
        self._tasks.put((future, fn, args))
        return future

    def _spawn(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        tasks = self._tasks
        first = True
        while True:
            if not first:
                with self._lock:
                    self._idle += 1
            first = False
            item = tasks.get()
            if item is _STOP:
                return
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as error:  # the caller of the future decides
                future.set_exception(error)

    def stop(self, timeout: float = 5.0) -> None:
        """Let queued tasks finish, then stop every thread, waiting at most ``timeout``."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            threads = list(self._threads)
        for _ in threads:
            self._tasks.put(_STOP)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            log.error("worker pool %s: %d task(s) still running after %.1fs: %s",
                      self._name, len(stuck), timeout, ", ".join(stuck))

    @property
    def threads(self) -> list[threading.Thread]:
        """The pool's threads (for tests and diagnostics)."""
        return list(self._threads)

"""Threads with an owner: a stoppable thread base, one deadline for a group, a worker pool.

Every thread platybus starts is an :class:`OwnedThread` (or a subclass, such as
:class:`~platybus.extensions.Backend`). Its owner asks it to end with :meth:`OwnedThread.stop`,
which is idempotent and wakes the loop at once (the ``wake`` hook notifies the condition the
loop waits on, pushes a sentinel, or unblocks a socket), then joins a whole group of threads
by one deadline with :func:`join_all`, which logs each thread still alive by name.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from queue import SimpleQueue
from typing import Any

log = logging.getLogger("platybus.threads")

_STOP = object()

Wake = Callable[[], object] | threading.Condition


def deadline_after(timeout: float) -> float:
    """The monotonic time ``timeout`` seconds from now."""
    return time.monotonic() + max(0.0, timeout)


def time_left(deadline: float) -> float:
    """Seconds until ``deadline`` (a monotonic time), never negative."""
    return max(0.0, deadline - time.monotonic())


class OwnedThread(threading.Thread):
    """A thread its owner stops: ``stop()`` is idempotent and wakes a blocked loop at once.

    Give it a ``target`` whose loop checks :meth:`should_keep_running` (or waits in
    :meth:`wait_for_stop`) and a ``wake``: the condition the loop waits on (notified
    under its lock, so no wake-up is lost) or a callable that unblocks it. Subclasses
    may override :meth:`run` and :meth:`on_thread_stop` instead. ``label`` says what the
    thread is in the log line of a thread that did not stop in time.
    """

    def __init__(self, name: str, target: Callable[..., object] | None = None, *args: Any,
                 wake: Wake | None = None, label: str | None = None,
                 daemon: bool = True) -> None:
        super().__init__(name=name, daemon=daemon)
        self.label = label or name
        self._run_target = target
        self._run_args = args
        self._wake_hook = wake
        self._stop_lock = threading.Lock()
        self._stop_event = threading.Event()

    def run(self) -> None:
        """Run the target; an exception is logged with its traceback, never lost."""
        target = self._run_target
        if target is None:
            return
        try:
            target(*self._run_args)
        except Exception:
            log.exception("thread %s failed", self.name)
        finally:
            self._run_target = None
            self._run_args = ()

    def should_keep_running(self) -> bool:
        """Whether :meth:`stop` has not been called yet."""
        return not self._stop_event.is_set()

    def wait_for_stop(self, timeout: float | None = None) -> bool:
        """Sleep until :meth:`stop` is called or ``timeout`` passes; return whether it was."""
        return self._stop_event.wait(timeout)

    def on_thread_stop(self) -> None:
        """Wake the loop so it notices the stop at once (the ``wake`` hook by default)."""
        wake = self._wake_hook
        if wake is None:
            return
        if isinstance(wake, threading.Condition):
            with wake:
                wake.notify_all()
        else:
            wake()

    def stop(self) -> None:
        """Ask the thread to end and wake it; idempotent and non-blocking."""
        with self._stop_lock:
            if self._stop_event.is_set():
                return
            self._stop_event.set()
        try:
            self.on_thread_stop()
        except Exception:
            log.exception("waking thread %s for stop failed", self.name)


def join_all(threads: Iterable[threading.Thread], deadline: float, *,
             report: bool = True) -> list[threading.Thread]:
    """Join every thread by one monotonic ``deadline``; log and return those still alive.

    A thread never started, or the calling thread itself, counts as stopped. Each one
    still alive at the deadline gets one WARNING line naming it (unless ``report`` is
    false, when the caller names it better).
    """
    current = threading.current_thread()
    stuck: list[threading.Thread] = []
    for thread in threads:
        if thread.ident is None or thread is current:
            continue
        thread.join(time_left(deadline))
        if thread.is_alive():
            stuck.append(thread)
    if report:
        for thread in stuck:
            log.warning("%s did not stop in time", getattr(thread, "label", thread.name))
    return stuck


def stop_all(threads: Iterable[threading.Thread], deadline: float, *,
             report: bool = True) -> list[threading.Thread]:
    """Ask every owned thread to stop, then :func:`join_all` them by ``deadline``."""
    group = list(threads)
    for thread in group:
        if isinstance(thread, OwnedThread):
            thread.stop()
    return join_all(group, deadline, report=report)


class WorkerPool:
    """Runs callables on a fixed number of threads; ``stop()`` is idempotent and bounded.

    Unlike ``ThreadPoolExecutor`` it never blocks interpreter exit on a hung task:
    ``stop()`` waits up to its timeout, logs the threads whose task still runs, and returns.
    """

    def __init__(self, size: int, name: str) -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one thread")
        self._size = size
        self._name = name
        self._tasks: SimpleQueue[Any] = SimpleQueue()
        self._threads: list[OwnedThread] = []
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
        name = f"{self._name}-{len(self._threads)}"
        # The stop sentinel is queued once per thread by stop(), not by each wake.
        thread = OwnedThread(name, self._work, label=f"worker pool {self._name}: {name}")
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
        self.stop_by(deadline_after(timeout))

    def stop_by(self, deadline: float) -> list[threading.Thread]:
        """Like :meth:`stop`, bounded by a monotonic ``deadline``; return the threads left."""
        with self._lock:
            if self._stopped:
                return []
            self._stopped = True
            threads = list(self._threads)
        for thread in threads:
            thread.stop()
            self._tasks.put(_STOP)
        return join_all(threads, deadline)

    @property
    def threads(self) -> list[threading.Thread]:
        """The pool's threads (for tests and diagnostics)."""
        return list(self._threads)

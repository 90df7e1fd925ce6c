"""Process isolation: a pool of worker processes with a hard deadline per task.

:class:`ProcessPool` owns its worker processes (:mod:`platybus.isolation.worker`:
fresh interpreters, never forks), one pipe per worker and a supervisor thread
that schedules tasks (:mod:`platybus.isolation.tasks`) onto them. A task names
its function as an importable ``module:qualname`` that comes from the config,
never from the wire; the worker resolves it, decodes the message with the codec, calls
``fn(configuration, message)`` and sends the result back.

Tasks beyond the pool's size wait in a queue. The hard limit of a task covers
queueing plus running: past it the task fails with :class:`HandlerTimeout` and,
if it runs, its worker is terminated (then killed) and replaced. A worker that
dies fails its task with :class:`WorkerCrashed`; queued tasks are kept and go
to its replacement. See ``docs/handlers.md``.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import pickle
import re
import selectors
import subprocess
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from platybus.codec import Codec
from platybus.errors import (
    HandlerError,
    HandlerTimeout,
    IsolationError,
    NodeNotReady,
    PlatybusError,
    QueueFullError,
    WorkerCrashed,
)
from platybus.isolation.child import TaskFrame
from platybus.isolation.tasks import PoolStats, Task, TaskFuture
from platybus.isolation.worker import KILL_WAIT, TERM_GRACE, Worker, init_frame
from platybus.messages import Message

log = logging.getLogger("platybus.isolation")

__all__ = ["PoolStats", "ProcessPool", "TaskFuture"]

DEFAULT_TIMEOUT = 600.0
DEFAULT_QUEUE_SIZE = 10_000
_REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


class ProcessPool:
    """Runs ``fn(configuration, message)`` in worker processes, each task with a hard limit.

    Workers start on demand up to ``size`` (one per CPU by default) and are
    replaced when killed or dead. ``stop()`` is idempotent and leaves no process
    or thread behind.
    """

    def __init__(
        self,
        name: str,
        *,
        size: int | None = None,
        codec: Codec | None = None,
        search_path: Sequence[str | Path] = (),
        timeout: float = DEFAULT_TIMEOUT,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        self.name = name
        self.size = size if size else (os.cpu_count() or 1)
        if self.size < 1:
            raise ValueError("a process pool needs at least one worker")
        self.codec = codec if codec is not None else Codec()
        self.timeout = timeout
        self.queue_size = queue_size
        self._init = init_frame(self.codec, search_path)
        self._lock = threading.Lock()
        self._queue: deque[Task] = deque()
        self._deadlines: list[tuple[float, int, Task]] = []
        self._seq = itertools.count()
        self._workers: list[Worker] = []
        self._spawned = 0
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wake_pending = False
        self._stopping = False
        self._stop_grace = 0.0
        self._closed = False
        self.submitted = self.completed = self.failed = self.timeouts = self.crashes = 0

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Start the supervisor thread; workers start when work arrives."""
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._run, name=f"platybus-pool-{self.name}")
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Fail queued tasks, give running ones ``timeout`` seconds, then end every worker.

        Idempotent; waits at most about ``timeout`` plus the time to kill workers.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stopping = True
            self._stop_grace = time.monotonic() + timeout
            thread = self._thread
        if thread is None:
            self._fail_queued(NodeNotReady(f"process pool {self.name} stopped before it started"))
        else:
            self._wake()
            thread.join(timeout + TERM_GRACE + KILL_WAIT + 1.0)
            if thread.is_alive():
                log.error("process pool %s: supervisor did not stop in time", self.name)
                return
        os.close(self._wake_r)
        os.close(self._wake_w)

    # -- submitting --------------------------------------------------------

    def submit(
        self,
        fn_ref: str,
        configuration: Any,
        message: Message,
        timeout: float | None = None,
    ) -> TaskFuture:
        """Queue ``fn_ref(configuration, message)`` for a worker; return its future.

        ``fn_ref`` is ``module:qualname`` taken from the config. ``timeout`` (the
        pool's by default) bounds queueing plus running.
        """
        if not _REF.fullmatch(fn_ref):
            raise ValueError(f"expected 'module:qualname', got {fn_ref!r}")
        payload = self.codec.encode(message)
        blob = pickle.dumps(configuration, protocol=pickle.HIGHEST_PROTOCOL)
        limit = self.timeout if timeout is None else timeout
        future = TaskFuture(fn_ref, message.id)
        with self._lock:
            if self._stopping or self._thread is None:
                raise NodeNotReady(f"process pool {self.name} is not running",
                                   message_id=message.id)
            if len(self._queue) >= self.queue_size:
                raise QueueFullError(
                    f"process pool {self.name}: {self.queue_size} tasks already wait",
                    message_id=message.id)
            task = Task(next(self._seq), future, fn_ref, configuration=blob, payload=payload,
                         deadline=future.submitted + limit)
            self._queue.append(task)
            heapq.heappush(self._deadlines, (task.deadline, task.seq, task))
            self.submitted += 1
        self._wake()
        return future

    def _wake(self) -> None:
        if self._wake_pending:
            return
        self._wake_pending = True
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\0")

    # -- the supervisor ------------------------------------------------------

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            while True:
                self._assign(selector)
                if self._stopping and self._shutdown_due(selector):
                    break
                wait = self._next_wait()
                for key, _ in selector.select(wait):
                    if key.data is None:
                        # Drain first, then clear: a wake-up written in between is then
                        # either still in the pipe or covered by the next _assign.
                        # The other order can swallow one and leave the flag set, and
                        # every later wake-up (stop's included) would be skipped.
                        with contextlib.suppress(BlockingIOError, OSError):
                            os.read(self._wake_r, 4096)
                        self._wake_pending = False
                        continue
                    if key.data in self._workers:
                        self._receive(key.data, selector)
                self._expire(selector)
        except Exception:
            log.exception("process pool %s: supervisor failed", self.name)
        finally:
            self._terminate_all(selector)
            selector.close()

    def _assign(self, selector: selectors.BaseSelector) -> None:
        while True:
            with self._lock:
                if not self._queue or self._stopping:
                    return
                idle = next((w for w in self._workers if w.task is None), None)
                if idle is None and len(self._workers) >= self.size:
                    return
                task = self._queue.popleft()
            if idle is None:
                try:
                    idle = self._spawn(selector)
                except Exception as error:
                    log.exception("process pool %s: cannot start a worker", self.name)
                    self._finish(task, WorkerCrashed(
                        f"process pool {self.name}: cannot start a worker: {error}"))
                    continue
            self._send(idle, task, selector)

    def _spawn(self, selector: selectors.BaseSelector) -> Worker:
        self._spawned += 1
        worker = Worker.spawn(f"platybus-{self.name}-{self._spawned}", self._init)
        self._workers.append(worker)
        selector.register(worker.conn, selectors.EVENT_READ, worker)
        log.debug("process pool %s: worker %d started", self.name, worker.pid)
        return worker

    def _send(self, worker: Worker, task: Task, selector: selectors.BaseSelector) -> None:
        task.state = "running"
        worker.task = task
        future = task.future
        if not future.set_running_or_notify_cancel():
            worker.task = None
            task.state = "done"
            return
        future._started(worker.pid)
        frame = TaskFrame(task.seq, task.fn_ref, task.configuration, task.payload)
        try:
            worker.send(frame)
        except OSError:
            self._retire(worker, selector, died=True)

    def _receive(self, worker: Worker, selector: selectors.BaseSelector) -> None:
        try:
            frame = worker.receive()
        except (EOFError, OSError):
            self._retire(worker, selector, died=True)
            return
        except msgspec.DecodeError:
            log.exception("process pool %s: worker %d sent garbage", self.name, worker.pid)
            self._retire(worker, selector, died=True)
            return
        task = worker.task
        if task is None or task.seq != frame.seq:
            return
        worker.task = None
        task.future.run_time = frame.run_time
        if frame.ok:
            self._finish(task, None, frame.value)
            return
        remote_type, text, trace = frame.value
        self._finish(task, HandlerError(remote_type, text, trace, function=task.fn_ref))

    def _retire(self, worker: Worker, selector: selectors.BaseSelector, *, died: bool,
                error: IsolationError | None = None) -> None:
        """Take a worker out of the pool (it died, or it is killed); fail its task."""
        if worker not in self._workers:
            return
        self._workers.remove(worker)
        worker.unregister(selector)
        code = worker.end(TERM_GRACE if died else 0.0)
        task = worker.task
        worker.task = None
        if died:
            self.crashes += 1
            log.warning("process pool %s: worker %d died (exit code %s)%s", self.name,
                        worker.pid, code, f" running {task.fn_ref}" if task else "")
        if task is not None:
            self._finish(task, error or WorkerCrashed(
                f"worker process {worker.pid} died (exit code {code}) running {task.fn_ref}",
                pid=worker.pid, exit_code=code, function=task.fn_ref))

    def _finish(self, task: Task, error: BaseException | None, value: Any = None) -> None:
        if task.state == "done":
            return
        task.state = "done"
        future = task.future
        future.finished = time.monotonic()
        if error is None:
            self.completed += 1
        else:
            self.failed += 1
            if isinstance(error, HandlerTimeout):
                self.timeouts += 1
        if not future.running() and not future.set_running_or_notify_cancel():
            return
        try:
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)
        except Exception:
            log.exception("process pool %s: a callback of task %s failed", self.name,
                          task.fn_ref)

    def _expire(self, selector: selectors.BaseSelector) -> None:
        now = time.monotonic()
        expired: list[Task] = []
        with self._lock:
            while self._deadlines and (self._deadlines[0][2].state == "done"
                                       or self._deadlines[0][0] <= now):
                _, _, task = heapq.heappop(self._deadlines)
                if task.state == "done":
                    continue
                if task.state == "queued":
                    self._queue.remove(task)
                expired.append(task)
        for task in expired:
            limit = task.deadline - task.future.submitted
            if task.state == "queued":
                self._finish(task, HandlerTimeout(
                    f"{task.fn_ref} waited {limit:g}s in the queue of process pool "
                    f"{self.name} and never ran", function=task.fn_ref, limit=limit))
                continue
            worker = next((w for w in self._workers if w.task is task), None)
            pid = worker.pid if worker else None
            error = HandlerTimeout(
                f"{task.fn_ref} passed its hard limit of {limit:g}s; worker {pid} was killed",
                function=task.fn_ref, limit=limit, pid=pid)
            if worker is not None:
                log.warning("process pool %s: killing worker %d: %s passed %gs", self.name,
                            pid, task.fn_ref, limit)
                self._retire(worker, selector, died=False, error=error)
            self._finish(task, error)

    def _next_wait(self) -> float | None:
        waits: list[float] = []
        with self._lock:
            while self._deadlines and self._deadlines[0][2].state == "done":
                heapq.heappop(self._deadlines)
            if self._deadlines:
                waits.append(self._deadlines[0][0])
        if self._stopping:
            waits.append(self._stop_grace)
        if not waits:
            return None
        return max(0.0, min(waits) - time.monotonic())

    def _shutdown_due(self, selector: selectors.BaseSelector) -> bool:
        self._fail_queued(IsolationError(
            f"process pool {self.name} stopped before the task ran"))
        busy = any(w.task is not None for w in self._workers)
        return not busy or time.monotonic() >= self._stop_grace

    def _fail_queued(self, error: PlatybusError) -> None:
        with self._lock:
            queued = list(self._queue)
            self._queue.clear()
        for task in queued:
            self._finish(task, error)

    def _terminate_all(self, selector: selectors.BaseSelector) -> None:
        workers = list(self._workers)
        # Closing the pipe ends an idle worker's loop; a busy one is terminated.
        for worker in workers:
            if worker.task is None:
                worker.unregister(selector)
                worker.conn.close()
        deadline = time.monotonic() + TERM_GRACE
        for worker in workers:
            if worker.task is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.process.wait(max(0.0, deadline - time.monotonic()))
        for worker in workers:
            self._retire(worker, selector, died=False, error=IsolationError(
                f"process pool {self.name} stopped while the task ran; its worker was killed"))
        self._fail_queued(IsolationError(f"process pool {self.name} stopped"))

    # -- introspection -----------------------------------------------------

    def stats(self) -> PoolStats:
        """Return the pool's size, workers, queue and counters."""
        workers = list(self._workers)
        return PoolStats(
            size=self.size, workers=len(workers), busy=sum(w.task is not None for w in workers),
            queued=len(self._queue), submitted=self.submitted, completed=self.completed,
            failed=self.failed, timeouts=self.timeouts, crashes=self.crashes,
            pids=[w.pid for w in workers],
        )

    @property
    def pids(self) -> list[int]:
        """Process ids of the current workers."""
        return [w.pid for w in list(self._workers)]

"""Runs of hooks, procedures and cron jobs: cancellation, deadlines, concurrency lanes.

A :class:`Run` is one execution. It records the actions it calls and becomes a
trace when it finishes. A run is stopped cooperatively: between steps, and in
the middle of waits (``wait`` steps, requests to other nodes), which wake at
once. A :class:`Lane` enforces one hook's or job's concurrency mode;
the :class:`RunDeadlines` timer ends runs whose deadline passed, so a stuck action never
holds its lane.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from platybus.automation.trace import ActionRecord, Trace, TraceStore, clip
from platybus.messages import new_id

if TYPE_CHECKING:
    from platybus.journal import Journal

log = logging.getLogger("platybus.automation")

Mode = Literal["parallel", "queue", "skip", "restart"]

STOPPING = "the node is stopping"
# Runs kept waiting in memory per lane when its overflow goes to the journal.
IN_MEMORY = 1000


class RunStopped(Exception):
    """Internal: the run was cancelled or timed out; unwinds its steps."""

    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


class Return(Exception):
    """Internal: a ``return`` step ends the run with a value."""

    def __init__(self, value: Any) -> None:
        super().__init__("return")
        self.value = value


class Run:
    """One execution of a hook, procedure or cron job."""

    __slots__ = ("_finished", "_lock", "actions", "cond", "deadline", "id", "journal",
                 "kind", "lane", "message_id", "name", "note", "outcome", "parent", "seq",
                 "slot", "stop_reason", "store", "t0", "timeout", "ts", "variables")

    deadline: float | None
    parent: Run | None

    def __init__(
        self,
        kind: Literal["hook", "procedure", "cron"],
        name: str,
        store: TraceStore,
        *,
        message_id: str | None = None,
        parent: Run | None = None,
        timeout: float | None = None,
        slot: str | None = None,
        variables: dict[str, Any] | None = None,
        waitable: bool = True,
    ) -> None:
        self.id = new_id()
        self.kind = kind
        self.name = name
        self.store = store
        self.message_id = message_id
        self.parent = parent
        self.slot = slot
        self.variables = variables
        self.ts = time.time()
        self.t0 = time.perf_counter()
        self.timeout = timeout
        self.deadline = None
        if parent is not None:
            self.arm()
        # Every run of one tree shares one condition, so a stop anywhere wakes any wait.
        if parent is not None:
            self.cond: threading.Condition | None = parent.cond
        else:
            self.cond = threading.Condition() if waitable else None
        self.actions: list[ActionRecord] = []
        self.stop_reason: tuple[str, str] | None = None
        self.outcome: str | None = None
        self.lane: Lane | None = None
        # Set when the intake journal holds this run: its row is marked done at the end.
        self.journal: Journal | None = None
        self.seq = 0
        self.note: str | None = None
        self._finished = False
        self._lock = threading.Lock()

    def arm(self) -> None:
        """Start the run's clock: its timeout counts from now (not from when it queued)."""
        self.t0 = time.perf_counter()
        timeout = self.timeout
        deadline = time.monotonic() + timeout if timeout is not None else None
        parent = self.parent
        if parent is not None and parent.deadline is not None:
            deadline = parent.deadline if deadline is None else min(deadline, parent.deadline)
        self.deadline = deadline

    # -- stopping ------------------------------------------------------------

    def stopped(self) -> tuple[str, str] | None:
        """Why this run (or a run above it) must stop, if it must."""
        run: Run | None = self
        while run is not None:
            if run.stop_reason is not None:
                return run.stop_reason
            run = run.parent
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return ("timeout", "timed out")
        return None

    def check(self) -> None:
        """Raise :class:`RunStopped` if the run must stop (called between steps)."""
        if self.stop_reason is None and self.deadline is None and self.parent is None:
            return
        reason = self.stopped()
        if reason is not None:
            raise RunStopped(*reason)

    def stop(self, outcome: str, reason: str) -> None:
        """Stop the run: its waits wake, its next step does not start, its trace says why."""
        if self.stop_reason is None:
            self.stop_reason = (outcome, reason)
        if self.cond is not None:
            with self.cond:
                self.cond.notify_all()
        self.finish(outcome, reason)

    def wait_until(self, done: Callable[[], bool], seconds: float | None) -> bool:
        """Wait up to ``seconds`` for ``done()``; return it; raise RunStopped if stopped."""
        cond = self.cond
        if cond is None:
            raise RuntimeError("this run cannot wait")
        end = time.monotonic() + seconds if seconds is not None else None
        with cond:
            while True:
                if done():
                    return True
                reason = self.stopped()
                if reason is not None:
                    raise RunStopped(*reason)
                now = time.monotonic()
                limits = [t for t in (end, self.deadline) if t is not None]
                if end is not None and now >= end:
                    return False
                cond.wait(min(limits) - now if limits else None)

    def sleep(self, seconds: float) -> None:
        """Sleep, waking early (RunStopped) if the run is stopped or times out."""
        self.wait_until(lambda: False, seconds)

    def notify(self) -> None:
        """Wake the run's waits (a reply arrived)."""
        if self.cond is not None:
            with self.cond:
                self.cond.notify_all()

    # -- finishing -----------------------------------------------------------

    def finish(self, outcome: str, error: str | None = None) -> bool:
        """Record the outcome once (the first call wins); free the run's lane slot."""
        with self._lock:
            if self._finished:
                return False
            self._finished = True
        self.outcome = outcome
        journal = self.journal
        if journal is not None and not (outcome == "cancelled" and error == STOPPING):
            journal.done(self.seq)  # a run the node's stop cut short runs again at start
        if self.store.enabled:
            limit = self.store.limit
            self.store.add(Trace(
                id=self.id, kind=self.kind, name=self.name, ts=self.ts,
                message_id=self.message_id,
                parent=self.parent.id if self.parent is not None else None,
                slot=self.slot, outcome=outcome, error=error, note=self.note,
                duration=round(time.perf_counter() - self.t0, 6),
                variables=clip(self.variables, limit) if self.variables else {},
                actions=[_ended(a, outcome) for a in self.actions],
            ))
        if self.lane is not None:
            self.lane.release(self)
        return True

    @property
    def finished(self) -> bool:
        """Whether the run has its outcome."""
        return self._finished


Starter = Callable[[Run, dict[str, Any]], None]
# Called with a run to keep in the journal for lack of room, or (None, None) to ask for
# the runs waiting there to come back.
Spill = Callable[[Run | None, dict[str, Any] | None], None]


class Lane:
    """One hook's or job's concurrency: how a new run meets a run still going."""

    def __init__(self, name: str, mode: Mode, max_parallel: int, max_queued: int | None,
                 start: Starter, spill: Spill | None = None) -> None:
        self.name = name
        self.mode = mode
        self.limit = max_parallel if mode == "parallel" else 1
        # ``None``: never drop. With ``spill``, runs past IN_MEMORY wait in the journal.
        self.max_queued = max_queued
        self.spill = spill if max_queued is None else None
        self._room = max_queued if max_queued is not None else (
            IN_MEMORY if spill is not None else None)
        self._start = start
        self._lock = threading.Lock()
        self.active: set[Run] = set()
        self.pending: deque[tuple[Run, dict[str, Any]]] = deque()
        self.parked = 0
        self.dropped = 0
        self._refilling = False

    def offer(self, run: Run, scope: dict[str, Any], queue: bool | None = None) -> str:
        """Start, queue, skip or restart for ``run``; return what happened.

        ``queue=True`` queues ``run`` behind a busy lane whatever the mode.
        """
        run.lane = self
        cancel: list[Run] = []
        dropped: list[tuple[Run, str]] = []
        park = False
        room = self._room
        with self._lock:
            if len(self.active) < self.limit and not self.pending and not self.parked:
                self.active.add(run)
                start = True
            elif self.parked and self.mode not in ("skip", "restart"):
                start = False  # older runs wait in the journal: this one goes behind them
                park = True
            elif queue and (room is None or len(self.pending) < room):
                start = False
                self.pending.append((run, scope))
            elif self.mode == "skip":
                start = False
                dropped.append((run, "skipped: the previous run is still going"))
            elif self.mode == "restart":
                start = False
                cancel = list(self.active)
                dropped += [(r, "replaced by a newer run before it started")
                            for r, _ in self.pending]
                self.pending.clear()
                self.pending.append((run, scope))
            elif room is not None and len(self.pending) >= room:
                start = False
                if self.spill is not None:
                    park = True
                else:
                    self.dropped += 1
                    dropped.append((run, f"dropped: {self.max_queued} runs already waiting "
                                         "(max_queued)"))
            else:
                start = False
                self.pending.append((run, scope))
            if park:
                self.parked += 1
        if park:
            assert self.spill is not None
            run.lane = None
            self.spill(run, scope)
            return "parked"
        for old, reason in dropped:
            old.lane = None
            old.finish("skipped" if reason.startswith(("skipped", "replaced")) else "dropped",
                       reason)
        for old in cancel:
            old.stop("cancelled", "restarted by a newer run")
        if start:
            self._start(run, scope)
            return "started"
        if dropped and dropped[-1][0] is run:
            return run.outcome or "skipped"
        return "queued"

    def unpark(self, runs: list[tuple[Run, dict[str, Any]]], more: bool) -> None:
        """Take back runs that waited in the journal (oldest first); ``more`` if some still do."""
        starts: list[tuple[Run, dict[str, Any]]] = []
        with self._lock:
            self._refilling = False
            self.parked = max(0, self.parked - len(runs)) if more else 0
            for run, scope in runs:
                run.lane = self
                self.pending.append((run, scope))
            while self.pending and len(self.active) < self.limit:
                nxt = self.pending.popleft()
                self.active.add(nxt[0])
                starts.append(nxt)
        for run, scope in starts:
            self._start(run, scope)

    def add_parked(self, count: int) -> None:
        """Count runs that already wait in the journal (left by the last run of the node)."""
        with self._lock:
            self.parked += count

    def wants_refill(self) -> bool:
        """Whether runs wait in the journal and there is room for them in memory (once)."""
        with self._lock:
            if (self.parked and not self._refilling
                    and len(self.pending) <= IN_MEMORY // 2):
                self._refilling = True
                return True
            return False

    def release(self, run: Run) -> None:
        """A run finished (or was stopped): start the next waiting one, if any."""
        with self._lock:
            self.active.discard(run)
            refill = (self.parked and not self._refilling
                      and len(self.pending) <= IN_MEMORY // 2)
            if refill:
                self._refilling = True
            if not self.pending or len(self.active) >= self.limit:
                nxt = None
            else:
                nxt, scope = self.pending.popleft()
                self.active.add(nxt)
        if refill and self.spill is not None:
            self.spill(None, None)  # ask for the next runs waiting in the journal
        if nxt is not None:
            self._start(nxt, scope)

    def stop_all(self, reason: str) -> None:
        """Stop every active run and forget the waiting ones (the node is stopping)."""
        with self._lock:
            active = list(self.active)
            pending = list(self.pending)
            self.pending.clear()
        for run, _ in pending:
            run.lane = None
            run.finish("cancelled", reason)
        with self._lock:
            self.parked = 0
        for run in active:
            run.stop("cancelled", reason)


class RunDeadlines:
    """Stops runs when their deadline passes: one thread that sleeps until the earliest."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Run]] = []
        self._cond = threading.Condition()
        self._seq = 0
        self._thread: threading.Thread | None = None
        self._stopping = False

    def watch(self, run: Run) -> None:
        """Stop ``run`` at its deadline unless it finished before."""
        if run.deadline is None:
            return
        with self._cond:
            self._seq += 1
            if self._seq % 4096 == 0:
                # Runs that ended long before their deadline would pile up: drop them.
                self._heap = [item for item in self._heap if not item[2].finished]
                heapq.heapify(self._heap)
            heapq.heappush(self._heap, (run.deadline, self._seq, run))
            if self._heap[0][2] is run:
                self._cond.notify()

    def start(self) -> None:
        """Start the thread."""
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="platybus-run-deadlines")
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread; idempotent."""
        if self._thread is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)
        self._thread = None

    def _loop(self) -> None:
        while True:
            expired: list[Run] = []
            with self._cond:
                if self._stopping:
                    return
                now = time.monotonic()
                while self._heap and (self._heap[0][2].finished or self._heap[0][0] <= now):
                    _, _, run = heapq.heappop(self._heap)
                    if not run.finished:
                        expired.append(run)
                if not expired:
                    wait = self._heap[0][0] - now if self._heap else None
                    self._cond.wait(wait)
                    continue
            for run in expired:
                log.warning("%s %s (run %s) timed out", run.kind, run.name, run.id)
                run.stop("timeout", "timed out")


def _ended(record: ActionRecord, outcome: str) -> ActionRecord:
    """A record as the trace keeps it: an action still running when its run ended failed."""
    if record.duration is not None:
        return record
    return msgspec.structs.replace(record, ok=False, error=(
        f"{outcome} before it finished"))


def record_action(run: Run, step: str, action: str, args: Any,
                  target: str | None) -> ActionRecord | None:
    """Add an action record to a run's trace (``None`` when tracing is off)."""
    if not run.store.enabled:
        return None
    limit = run.store.limit
    record = ActionRecord(step=step, action=action, args=clip(args, limit), target=target,
                          ok=True)
    run.actions.append(record)
    return record

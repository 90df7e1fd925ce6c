"""Event hooks: every matching hook runs, in priority order, off the bus's dispatcher.

The bus hands each event to :class:`HookRunner` on the dispatcher, which only
appends it to a queue. The runner's own thread drains the queue in batches,
checks the candidate hooks in priority order (lower first, then config order),
records why each one matched or not, and starts the runs: a hook whose steps
never block (non-blocking actions, ``set``, ``if``, ``for``) runs right there,
without a thread hop; any other goes to its lane on the worker pool, which
applies the hook's concurrency mode.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgspec

from platybus.automation.backlog import Backlog
from platybus.automation.conditions import Condition, compile_hook_condition
from platybus.automation.engine import Engine
from platybus.automation.isolated import Isolation, has_run_steps
from platybus.automation.procedures import check_name
from platybus.automation.runs import STOPPING, Lane, Mode, Return, Run, RunStopped
from platybus.automation.steps import Step, StepCompiler, describe, run_steps
from platybus.automation.trace import Candidate, Trace, TraceStore
from platybus.bus import Bus, Receipt, Subscription
from platybus.config import KeyPath, SourceMap, convert
from platybus.errors import JournalError, NodeNotReady, StepFailed
from platybus.journal import Journal, Row
from platybus.messages import Event, caused_by

log = logging.getLogger("platybus.automation.hooks")

MAX_BACKLOG = 10_000


class HookOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One entry of the ``hooks`` section."""

    if_: Any = msgspec.field(name="if")
    then: list[Any]
    priority: int = 100
    stop: bool = False
    enabled: bool = True
    timeout: float | None = 60.0
    mode: Mode = "parallel"
    max_parallel: int = 10
    max_queued: int | None = None
    durable: bool = True
    description: str = ""
    isolation: Isolation = "thread"


@dataclass(eq=False)
class Hook:
    """A compiled hook."""

    name: str
    condition: Condition
    steps: list[Step]
    priority: int = 100
    stop: bool = False
    enabled: bool = True
    timeout: float | None = 60.0
    mode: Mode = "parallel"
    max_parallel: int = 10
    max_queued: int | None = None
    isolation: Isolation = "thread"
    durable: bool = True
    order: int = 0
    lane: Lane | None = field(default=None, repr=False)

    @property
    def inline(self) -> bool:
        """Whether its steps never block, so it runs without a thread hop."""
        return all(step.inline for step in self.steps)


def compile_hooks(raw: Any, engine: Engine, source: SourceMap) -> list[Hook]:
    """Compile the ``hooks`` section; raise ConfigError naming file, line and key."""
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise source.error(("hooks",), "expected a mapping of hook names to hooks")
    hooks = []
    for name, body in raw.items():
        path: KeyPath = ("hooks", name)
        check_name(name, path, source)
        options = convert(body, HookOptions, path, source)
        hooks.append(build_hook(name, options, path, engine=engine, source=source))
    return hooks


def build_hook(name: str, options: HookOptions, path: KeyPath, *, engine: Engine,
               source: SourceMap, steps: list[Step] | None = None) -> Hook:
    """Build one hook from its options (``steps`` given for Python hooks)."""
    if options.max_parallel < 1 or (options.max_queued is not None
                                    and options.max_queued < 0):
        raise source.error(path, "max_parallel must be >= 1 and max_queued >= 0")
    if options.timeout is not None and options.timeout <= 0:
        raise source.error((*path, "timeout"), "expected a number of seconds > 0, or null")
    condition = compile_hook_condition(options.if_, (*path, "if"), source.error)
    if steps is None:
        compiler = StepCompiler(source, engine, known={"event", *condition.capture_names},
                                isolation=options.isolation)
        steps = compiler.steps(options.then, (*path, "then"))
        compiler.check_names()
        if options.isolation == "process" and not has_run_steps(steps):
            raise source.error((*path, "isolation"), "isolation applies to Python code (a "
                               "'run: python:module:function' step, or a @hook function); "
                               "actions always run in the node, so this hook has nothing "
                               "to isolate")
    return Hook(name, condition, steps, options.priority, options.stop, options.enabled,
                options.timeout, options.mode, options.max_parallel, options.max_queued,
                options.isolation, options.durable)


class _Accepted:
    """A durable hook's run for an event, waiting for its journal row before it starts.

    ``scope`` is ``None`` for a run that already ended (a hook whose steps never block).
    """

    __slots__ = ("event", "hook", "run", "scope")

    def __init__(self, hook: Hook, event: Event, run: Run,
                 scope: dict[str, Any] | None) -> None:
        self.hook = hook
        self.event = event
        self.run = run
        self.scope = scope


class HookRunner:
    """Matches events against hooks and starts their runs, off the dispatcher.

    With a journal, a durable hook's runs are recorded (one commit per batch)
    before they start and before the receipt a source waits for is settled;
    runs that find no room wait in the journal; unfinished runs resume at start.
    """

    def __init__(self, hooks: list[Hook], engine: Engine, store: TraceStore,
                 journal: Journal | None = None) -> None:
        self.journal = journal
        self._cond = threading.Condition(threading.Lock())
        self.backlog = (Backlog(journal, engine.context.codec, store, self._new_run,
                                self._launch, self._wake) if journal is not None else None)
        for order, hook in enumerate(hooks):
            hook.order = order
            spill = None
            if self.backlog is not None and hook.mode in ("parallel", "queue"):
                spill = self.backlog.spiller(hook)
            hook.lane = Lane(hook.name, hook.mode, hook.max_parallel, hook.max_queued,
                             engine.submit(hook.steps), spill)
        self.hooks = sorted(hooks, key=lambda h: (h.priority, h.order))
        if self.backlog is not None:
            self.backlog.hooks = {hook.name: hook for hook in hooks}
        self.engine = engine
        self.store = store
        self.node_id = engine.node_id
        self.codec = engine.context.codec
        self.durable = journal is not None and any(h.durable for h in hooks)
        self._by_type: dict[str, list[Hook]] = {}
        self._queue: deque[Event | tuple[Event, Receipt]] = deque()
        self._waiting = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._subscription: Subscription | None = None
        self._bus: Bus | None = None
        self.events = 0
        self.throttled = 0
        self.runs = 0
        self.duplicates = 0

    def candidates(self, event_type: str) -> list[Hook]:
        """The enabled hooks whose type gate passes, in priority order (cached per type)."""
        hooks = self._by_type.get(event_type)
        if hooks is None:
            hooks = [h for h in self.hooks if h.enabled and h.condition.type_matches(event_type)]
            if len(self._by_type) > 4096:
                self._by_type.clear()
            self._by_type[event_type] = hooks
        return hooks

    # -- lifecycle -------------------------------------------------------------

    def start(self, bus: Bus) -> None:
        """Open the journal, subscribe to events, start the runner thread (it resumes first)."""
        if self._thread is not None or not self.hooks:
            return
        if self.journal is not None:
            self.journal.open()
            self.journal.on_done = self._wake
        self._bus = bus
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="platybus-hooks")
        self._thread.start()
        self._subscription = bus.subscribe("kind=event", self._intake, id="platybus.hooks",
                                           priority=10_000)

    def stop(self, timeout: float) -> None:
        """Unsubscribe, stop the thread, stop the runs still going. Idempotent.

        Runs cut short or still waiting stay unfinished in the journal: they run
        again at the next start.
        """
        if self._subscription is not None:
            self._subscription.unsubscribe()
            self._subscription = None
        thread = self._thread
        if thread is not None:
            with self._cond:
                self._stopping = True
                self._cond.notify()
            thread.join(timeout)
            if thread.is_alive():
                log.error("hook runner did not stop within %.1fs", timeout)
            self._thread = None
        with self._cond:
            left, self._queue = self._queue, deque()
        for item in left:
            if type(item) is tuple:
                item[1].set_exception(NodeNotReady("the node stopped before the event was "
                                                   "journaled", message_id=item[0].id))
        for hook in self.hooks:
            if hook.lane is not None:
                hook.lane.stop_all(STOPPING)
        if self.journal is not None:
            try:
                self.journal.close()
            except JournalError:
                log.exception("closing the journal failed")

    def _wake(self) -> None:
        with self._cond:
            if self._waiting:
                self._cond.notify()

    def _intake(self, event: Event) -> Receipt | None:
        # On the dispatcher: only queue, never match or run here. When matching falls
        # far behind, make the dispatcher wait for room: the bus queue then pushes back
        # on publishers under its own policy, and no event is lost here.
        receipt = self._bus.receipt() if self.durable and self._bus is not None else None
        with self._cond:
            if len(self._queue) >= MAX_BACKLOG and not self._stopping:
                self.throttled += 1
                if self.throttled % 10_000 == 1:
                    log.warning("hooks are %d events behind: holding the bus back",
                                len(self._queue))
                while len(self._queue) >= MAX_BACKLOG and not self._stopping:
                    self._cond.wait(0.1)
            self._queue.append(event if receipt is None else (event, receipt))
            if self._waiting:
                self._cond.notify()
        return receipt

    @property
    def resumed(self) -> int:
        """Unfinished runs taken up again from the journal at start."""
        return self.backlog.resumed if self.backlog is not None else 0

    def _loop(self) -> None:
        journal = self.journal
        backlog = self.backlog
        if backlog is not None:
            try:
                backlog.resume()
            except Exception:
                log.exception("resuming the runs the journal holds failed")
        cond = self._cond
        interval = journal.config.flush_interval if journal is not None else None
        while True:
            with cond:
                while (not self._queue and not self._stopping
                       and not (backlog is not None and backlog.requested)):
                    self._waiting = True
                    # Done marks wait a moment for company: one commit for many.
                    cond.wait(interval if journal is not None and journal.dirty else None)
                    self._waiting = False
                    if journal is not None and journal.dirty:
                        break
                if self._stopping:
                    return
                batch, self._queue = self._queue, deque()
                cond.notify_all()  # a dispatcher waiting for room
            try:
                self._handle(batch)
                if backlog is not None:
                    backlog.refill_requested()
                if journal is not None and journal.dirty:
                    journal.flush()
            except Exception:
                log.exception("handling a batch of %d events failed", len(batch))

    # -- matching --------------------------------------------------------------

    def _handle(self, batch: deque[Event | tuple[Event, Receipt]]) -> None:
        journal = self.journal
        receipts: list[Receipt] = []
        accepted: list[_Accepted] = []
        repeats = self._repeats(batch) if self.durable else None
        for item in batch:
            if type(item) is tuple:
                event, receipt = item
                receipts.append(receipt)
            else:
                event = item  # type: ignore[assignment]
            try:
                self.process(event, accepted, repeats)
            except Exception:
                log.exception("matching hooks for event %s failed", event.id)
        failure: JournalError | None = None
        if accepted:
            assert journal is not None
            bodies: dict[str, bytes] = {}
            encode = self.codec.encode
            rows: list[Row] = []
            for a in accepted:
                if a.scope is None:
                    rows.append((a.event.id, "hook", a.hook.name, None, True, True))
                    continue
                body = bodies.get(a.event.id)
                if body is None:
                    body = bodies[a.event.id] = encode(a.event)
                rows.append((a.event.id, "hook", a.hook.name, body, True, False))
            try:
                seqs = journal.accept(rows)
            except JournalError as error:
                log.error("%s: %d runs start without a journal row", error, len(rows))
                failure = error
            else:
                for a, seq in zip(accepted, seqs, strict=True):
                    a.run.journal = journal if a.scope is not None else None
                    a.run.seq = seq
        for receipt in receipts:
            if failure is not None:
                receipt.set_exception(failure)
            else:
                receipt.set_result(None)
        for a in accepted:
            if a.scope is not None:
                self._launch(a.hook, a.run, a.scope)
        if self.backlog is not None:
            self.backlog.write_spilled()

    def _repeats(self, batch: deque[Event | tuple[Event, Receipt]]) -> set[str] | None:
        # Only another node's message can come twice (its stream redelivers it after a crash).
        assert self.journal is not None
        me = self.node_id
        ids = []
        for item in batch:
            event = item[0] if type(item) is tuple else item
            origin = event.origin  # type: ignore[union-attr]
            if origin is not None and origin != me and any(
                    h.durable for h in self.candidates(event.type)):  # type: ignore[union-attr]
                ids.append(event.id)  # type: ignore[union-attr]
        if not ids:
            return None
        try:
            return self.journal.seen(ids)
        except JournalError as error:
            log.error("%s: repeats cannot be recognised", error)
            return None

    def process(self, event: Event, accepted: list[_Accepted] | None = None,
                repeats: set[str] | None = None) -> None:
        """Match one event against the hooks and start the runs of those that match.

        A durable hook's run goes to ``accepted`` (it starts once journaled).
        """
        self.events += 1
        hooks = self.candidates(event.type)
        if not hooks:
            return
        tracing = self.store.enabled
        found: list[Candidate] | None = [] if tracing else None
        stopped_by: str | None = None
        repeat = repeats is not None and event.id in repeats
        for hook in hooks:
            if stopped_by is not None:
                if found is not None:
                    found.append(Candidate(hook=hook.name, matched=False,
                                           reason=f"not reached: hook {stopped_by!r} stops "
                                                  "the event"))
                continue
            captures = hook.condition.match(event)
            if captures is None:
                if found is not None:
                    found.append(Candidate(hook=hook.name, matched=False,
                                           reason=hook.condition.why(event)))
                continue
            if hook.stop:
                stopped_by = hook.name
            durable = hook.durable and accepted is not None and self.journal is not None
            if durable and repeat:
                self.duplicates += 1
                if found is not None:
                    found.append(Candidate(hook=hook.name, matched=True,
                                           reason="already accepted: its message id is in "
                                                  "the journal"))
                continue
            run, scope = self._new_run(hook, event, captures)
            self.runs += 1
            if found is not None:
                found.append(Candidate(hook=hook.name, matched=True, run=run.id))
            if durable and hook.inline:
                # Steps that never block end right here, before any row could be written:
                # there is nothing to resume. Another node's message gets a row (as done,
                # no body) so that a redelivery is recognised; the node dying before that
                # commit is the run being in flight: it may run again. This node's own
                # events are never delivered twice, so they need no row at all.
                self._launch(hook, run, scope)
                if event.origin is not None and event.origin != self.node_id:
                    assert accepted is not None
                    accepted.append(_Accepted(hook, event, run, None))
            elif durable:
                assert accepted is not None
                accepted.append(_Accepted(hook, event, run, scope))
            else:
                self._launch(hook, run, scope)
        if found is not None:
            matched = sum(1 for c in found if c.matched)
            self.store.add(Trace(id=f"{event.id}.match", kind="event", name=event.type,
                                 ts=event.ts, message_id=event.id,
                                 outcome=f"{matched} of {len(found)} matched",
                                 candidates=found))

    def _new_run(self, hook: Hook, event: Event,
                 captures: dict[str, Any] | None) -> tuple[Run, dict[str, Any]]:
        scope: dict[str, Any] = {**captures, "event": event} if captures else {"event": event}
        variables = dict(captures) if captures else None
        if hook.inline:
            run = Run("hook", hook.name, self.store, message_id=event.id, variables=variables,
                      waitable=False)
        else:
            run = Run("hook", hook.name, self.store, message_id=event.id,
                      timeout=hook.timeout, variables=variables)
        return run, scope

    def _launch(self, hook: Hook, run: Run, scope: dict[str, Any]) -> None:
        if not hook.inline:
            assert hook.lane is not None
            hook.lane.offer(run, scope)
            return
        try:
            with caused_by(run.message_id):
                run_steps(hook.steps, run, scope)
        except Return:
            pass
        except StepFailed as error:
            log.warning("hook %s failed: %s", hook.name, error)
            run.finish("error", str(error))
            return
        except RunStopped as stopped:
            run.finish(stopped.outcome, stopped.reason)
            return
        except Exception as error:  # a bug in an action must not cost the other hooks
            log.exception("hook %s failed", hook.name)
            run.finish("error", f"{type(error).__name__}: {error}")
            return
        run.finish("ok")

def explain(hooks: list[Hook], event: Event) -> list[dict[str, Any]]:
    """Say which hooks would fire for ``event``, with their rendered actions, and why not."""
    out: list[dict[str, Any]] = []
    stopped_by: str | None = None
    for hook in sorted(hooks, key=lambda h: (h.priority, h.order)):
        entry: dict[str, Any] = {"hook": hook.name, "priority": hook.priority}
        out.append(entry)
        if not hook.enabled:
            entry.update(fires=False, reason="disabled")
            continue
        if stopped_by is not None and hook.condition.type_matches(event.type):
            entry.update(fires=False, reason=f"not reached: hook {stopped_by!r} stops the event")
            continue
        captures = (hook.condition.match(event)
                    if hook.condition.type_matches(event.type) else None)
        if captures is None:
            entry.update(fires=False, reason=hook.condition.why(event))
            continue
        scope = {**captures, "event": event}
        entry.update(fires=True, captures=dict(captures),
                     steps=[describe(step, scope) for step in hook.steps])
        if hook.stop:
            stopped_by = hook.name
    return out

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

from platybus.automation.conditions import Condition, compile_hook_condition
from platybus.automation.engine import Engine
from platybus.automation.isolated import Isolation, has_run_steps
from platybus.automation.procedures import check_name
from platybus.automation.runs import Lane, Mode, Return, Run, RunStopped
from platybus.automation.steps import Step, StepCompiler, describe, run_steps
from platybus.automation.trace import Candidate, Trace, TraceStore
from platybus.bus import Bus, Subscription
from platybus.config import KeyPath, SourceMap, convert
from platybus.errors import StepFailed
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
    max_queued: int = 1000
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
    max_queued: int = 1000
    isolation: Isolation = "thread"
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
    if options.max_parallel < 1 or options.max_queued < 0:
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
                options.isolation)


class HookRunner:
    """Matches events against hooks and starts their runs, off the dispatcher."""

    def __init__(self, hooks: list[Hook], engine: Engine, store: TraceStore) -> None:
        for order, hook in enumerate(hooks):
            hook.order = order
            hook.lane = Lane(hook.name, hook.mode, hook.max_parallel, hook.max_queued,
                             engine.submit(hook.steps))
        self.hooks = sorted(hooks, key=lambda h: (h.priority, h.order))
        self.engine = engine
        self.store = store
        self._by_type: dict[str, list[Hook]] = {}
        self._queue: deque[Event] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._waiting = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._subscription: Subscription | None = None
        self.events = 0
        self.throttled = 0
        self.runs = 0

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
        """Subscribe to events and start the runner thread."""
        if self._thread is not None or not self.hooks:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="platybus-hooks")
        self._thread.start()
        self._subscription = bus.subscribe("kind=event", self._intake, id="platybus.hooks",
                                           priority=10_000)

    def stop(self, timeout: float) -> None:
        """Unsubscribe, stop the thread, stop the runs still going. Idempotent."""
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
        for hook in self.hooks:
            if hook.lane is not None:
                hook.lane.stop_all("the node is stopping")

    def _intake(self, event: Event) -> None:
        # On the dispatcher: only queue, never match or run here. When matching falls
        # far behind, make the dispatcher wait for room: the bus queue then pushes back
        # on publishers under its own policy, and no event is lost here.
        with self._cond:
            if len(self._queue) >= MAX_BACKLOG and not self._stopping:
                self.throttled += 1
                if self.throttled % 10_000 == 1:
                    log.warning("hooks are %d events behind: holding the bus back",
                                len(self._queue))
                while len(self._queue) >= MAX_BACKLOG and not self._stopping:
                    self._cond.wait(0.1)
            self._queue.append(event)
            if self._waiting:
                self._cond.notify()

    def _loop(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while not self._queue and not self._stopping:
                    self._waiting = True
                    cond.wait()
                    self._waiting = False
                if self._stopping:
                    return
                batch, self._queue = self._queue, deque()
                cond.notify_all()  # a dispatcher waiting for room
            for event in batch:
                try:
                    self.process(event)
                except Exception:
                    log.exception("matching hooks for event %s failed", event.id)

    # -- matching --------------------------------------------------------------

    def process(self, event: Event) -> None:
        """Match one event against the hooks and start the runs of those that match."""
        self.events += 1
        hooks = self.candidates(event.type)
        if not hooks:
            return
        tracing = self.store.enabled
        found: list[Candidate] | None = [] if tracing else None
        stopped_by: str | None = None
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
            run = self._start(hook, event, captures)
            if found is not None:
                found.append(Candidate(hook=hook.name, matched=True, run=run.id))
            if hook.stop:
                stopped_by = hook.name
        if found is not None:
            matched = sum(1 for c in found if c.matched)
            self.store.add(Trace(id=f"{event.id}.match", kind="event", name=event.type,
                                 ts=event.ts, message_id=event.id,
                                 outcome=f"{matched} of {len(found)} matched",
                                 candidates=found))

    def _start(self, hook: Hook, event: Event, captures: dict[str, Any]) -> Run:
        self.runs += 1
        scope: dict[str, Any] = {**captures, "event": event} if captures else {"event": event}
        if hook.inline:
            run = Run("hook", hook.name, self.store, message_id=event.id,
                      variables=dict(captures) if captures else None, waitable=False)
            try:
                with caused_by(event.id):
                    run_steps(hook.steps, run, scope)
            except Return:
                pass
            except StepFailed as error:
                log.warning("hook %s failed: %s", hook.name, error)
                run.finish("error", str(error))
                return run
            except RunStopped as stopped:
                run.finish(stopped.outcome, stopped.reason)
                return run
            except Exception as error:  # a bug in an action must not cost the other hooks
                log.exception("hook %s failed", hook.name)
                run.finish("error", f"{type(error).__name__}: {error}")
                return run
            run.finish("ok")
            return run
        run = Run("hook", hook.name, self.store, message_id=event.id, timeout=hook.timeout,
                  variables=dict(captures) if captures else None)
        assert hook.lane is not None
        hook.lane.offer(run, scope)
        return run


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

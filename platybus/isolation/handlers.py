"""Extension handlers: code named in the config that handles events in worker processes.

``handlers: NAME: {entry_point: "python:pkg.module.Class", configuration: ..., if: ...}``.
The class is built once in the node's process, where its ``on_start(configuration)``
and ``on_stop()`` run (each start and stop of the handler); its
``@staticmethod handle(configuration, event)`` runs in a :class:`ProcessPool`
of its own, under a hard limit. Outcomes come back as ``handler.done``,
``handler.failed`` and ``handler.timeout`` events whose ``parent_id`` is the
triggering event. See ``docs/handlers.md``.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from platybus.actions import ActionSpec
from platybus.automation.conditions import Condition, compile_hook_condition
from platybus.errors import (
    DecodeError,
    ExtensionError,
    HandlerError,
    HandlerTimeout,
    NodeNotReady,
    PlatybusError,
    QueueFullError,
    WorkerCrashed,
)
from platybus.extensions import NodeContext, load_class
from platybus.isolation.pool import (
    DEFAULT_QUEUE_SIZE,
    DEFAULT_TIMEOUT,
    ProcessPool,
    Slots,
    TaskFuture,
)
from platybus.messages import ErrorInfo, Event

if TYPE_CHECKING:
    from platybus.bus import Subscription
    from platybus.config import Config

log = logging.getLogger("platybus.isolation.handlers")

__all__ = [
    "Handler",
    "HandlerConfig",
    "HandlerDone",
    "HandlerFailed",
    "HandlerResult",
    "HandlerSet",
    "HandlerTimedOut",
    "Trace",
]

HANDLER_GROUP = "platybus.handlers"
TRACE_LIMIT = 200
_PREFIX = "python:"


class HandlerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One entry of the ``handlers`` section."""

    entry_point: str
    configuration: Any = None
    condition: Any = msgspec.field(default=None, name="if")
    timeout: float = DEFAULT_TIMEOUT
    workers: int = 0
    queue_size: int = DEFAULT_QUEUE_SIZE
    enabled: bool = True
    allow_long: bool = False


# The hard limit guards against misconfiguration: longer needs ``allow_long: true``.
LONG_LIMIT = 600.0
# The folder next to the config where handler modules are looked up by default.
DEFAULT_EXTENSIONS = "extensions"


class Handler:
    """Optional base of handler classes: ``handle`` runs in a worker, the rest in the node."""

    def on_start(self, configuration: Any) -> None:
        """Prepare in the node's process; called each time the handler starts."""

    def on_stop(self) -> None:
        """Clean up in the node's process; called each time the handler stops."""

    @staticmethod
    def handle(configuration: Any, event: Event) -> Any:
        """Handle one event in a worker process; the result must be plain data."""
        raise NotImplementedError


class HandlerResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Data of ``handler.*`` events: which handler, which event, what came of it."""

    handler: str
    event_id: str
    event_type: str
    duration: float
    run_time: float | None = None
    worker_pid: int | None = None
    result: Any = None
    error: ErrorInfo | None = None


class HandlerDone(Event, tag="event", frozen=True, kw_only=True):
    """A handler returned; ``data.result`` holds what it returned."""

    type: str = "handler.done"
    data: HandlerResult


class HandlerFailed(Event, tag="event", frozen=True, kw_only=True):
    """A handler raised, or its worker died; ``data.error`` says why."""

    type: str = "handler.failed"
    data: HandlerResult


class HandlerTimedOut(Event, tag="event", frozen=True, kw_only=True):
    """A handler passed its hard limit; its worker was killed and replaced."""

    type: str = "handler.timeout"
    data: HandlerResult


class Trace(msgspec.Struct, frozen=True, kw_only=True):
    """A record of a handler run that went wrong."""

    ts: float
    handler: str
    outcome: str
    event_id: str
    event_type: str
    duration: float
    worker_pid: int | None
    error: ErrorInfo


class HandlerRunner:
    """One configured handler: its object in the node, its process pool, its subscription."""

    def __init__(self, name: str, cls: type[Any], settings: HandlerConfig, *,
                 condition: Condition | None, context: NodeContext, search_path: list[Path],
                 record: Callable[[Trace], None], slots: Slots | None = None) -> None:
        self.name = name
        self.slots = slots
        self.cls = cls
        self.settings = settings
        self.condition = condition
        # A selector filters on the bus; a mapping condition is checked per event below.
        self.filter = condition if condition is not None and condition.selector is None else None
        self.context = context
        self.search_path = search_path
        self.fn_ref = f"{cls.__module__}:{cls.__qualname__}.handle"
        # Built here, in the node's process: the worker only ever sees ``handle``.
        self.instance = cls()
        self.pool: ProcessPool | None = None
        self._subscription: Subscription | None = None
        self._record = record
        self.done = self.failed = self.timeouts = 0

    def start(self) -> None:
        """Run ``on_start``, start the worker pool and subscribe."""
        condition = self.condition
        if self.pool is not None:
            return
        on_start = _hook(self.instance, "on_start", "onStart")
        if on_start is not None:
            on_start(self.settings.configuration)
        pool = ProcessPool(self.name, size=self.settings.workers or None,
                           codec=self.context.codec, search_path=self.search_path,
                           timeout=self.settings.timeout, queue_size=self.settings.queue_size,
                           slots=self.slots)
        pool.start()
        self.pool = pool
        self._subscription = self.context.bus.subscribe(
            condition.source if condition is not None and condition.selector is not None
            else "kind=event", self._on_event, id=f"handler.{self.name}")

    def stop(self, timeout: float) -> None:
        """Unsubscribe, stop the pool (running work gets ``timeout``), run ``on_stop``."""
        if self.pool is None:
            return
        if self._subscription is not None:
            self._subscription.unsubscribe()
            self._subscription = None
        pool, self.pool = self.pool, None
        try:
            pool.stop(timeout)
        finally:
            on_stop = _hook(self.instance, "on_stop", "onStop")
            if on_stop is not None:
                on_stop()

    def _on_event(self, event: Any) -> None:
        if not isinstance(event, Event):
            return
        # Never feed a handler its own outcomes: that would loop forever.
        if event.type.startswith("handler.") and event.get("handler") == self.name:
            return
        test = self.filter
        if test is not None and (not test.type_matches(event.type)
                                 or test.match(event) is None):
            return
        pool = self.pool
        if pool is None:
            return
        try:
            future = pool.submit(self.fn_ref, self.settings.configuration, event)
        except (QueueFullError, NodeNotReady, DecodeError) as error:
            self._report(event, error, None)  # logged there, with its trace
            return
        future.add_done_callback(lambda _: self._report(event, future.exception(), future))

    def _report(self, event: Event, error: BaseException | None,
                future: TaskFuture | None) -> None:
        data: dict[str, Any] = {
            "handler": self.name, "event_id": event.id, "event_type": event.type,
            "duration": round(future.duration, 6) if future else 0.0,
            "run_time": round(future.run_time, 6) if future and future.run_time else None,
            "worker_pid": future.worker_pid if future else None,
        }
        node_id = self.context.node_id
        result: Event
        if error is None:
            assert future is not None
            self.done += 1
            result = HandlerDone(origin=node_id, parent_id=event.id,
                                 data=HandlerResult(result=future.result(), **data))
        else:
            info = _error_info(error)
            outcome = ("timeout" if isinstance(error, HandlerTimeout)
                       else "crashed" if isinstance(error, WorkerCrashed) else "failed")
            if outcome == "timeout":
                self.timeouts += 1
                result = HandlerTimedOut(origin=node_id, parent_id=event.id,
                                         data=HandlerResult(error=info, **data))
            else:
                self.failed += 1
                result = HandlerFailed(origin=node_id, parent_id=event.id,
                                       data=HandlerResult(error=info, **data))
            trace = Trace(ts=time.time(), handler=self.name, outcome=outcome,
                          event_id=event.id, event_type=event.type,
                          duration=data["duration"], worker_pid=data["worker_pid"], error=info)
            self._record(trace)
        try:
            self.context.bus.publish(result)
        except PlatybusError as failure:
            log.error("handler %s: cannot publish %s for event %s: %s", self.name,
                      result.type, event.id, failure)

    def status(self) -> dict[str, Any]:
        """Return this handler's settings, counters and pool state."""
        pool = self.pool
        return {
            "entry_point": self.settings.entry_point,
            "if": self.settings.condition,
            "timeout": self.settings.timeout,
            "running": pool is not None,
            "done": self.done,
            "failed": self.failed,
            "timeouts": self.timeouts,
            "pool": msgspec.to_builtins(pool.stats()) if pool is not None else None,
        }


def _hook(instance: Any, name: str, camel: str) -> Callable[..., Any] | None:
    """The ``on_start``/``on_stop`` hook, also under its camelCase name ``onStart``/``onStop``."""
    found: Callable[..., Any] | None = getattr(instance, camel, None)
    return found if callable(found) else getattr(instance, name, None)


def _error_info(error: BaseException) -> ErrorInfo:
    if isinstance(error, HandlerError):
        return ErrorInfo(type=error.remote_type, message=error.remote_message,
                         details={"traceback": error.traceback})
    return ErrorInfo.from_exception(error)


class HandlerSet:
    """Every configured handler of a node, started and stopped together."""

    event_types: ClassVar[tuple[type[Event], ...]] = (HandlerDone, HandlerFailed, HandlerTimedOut)

    def __init__(self, runners: list[HandlerRunner] | None = None,
                 trace_limit: int = TRACE_LIMIT, parallel: int | None = None) -> None:
        self.runners: dict[str, HandlerRunner] = {r.name: r for r in runners or []}
        # One limit for every handler together: at most this many events at once.
        self.slots = Slots(parallel)
        self.traces: deque[Trace] = deque(maxlen=trace_limit)
        self._lock = threading.Lock()

    def record(self, trace: Trace) -> None:
        """Keep a trace of a run that went wrong and log it as a structured record."""
        with self._lock:
            self.traces.append(trace)
        entry = msgspec.to_builtins(trace)
        log.warning("handler %s %s on %s %s after %.3fs: %s: %s", trace.handler, trace.outcome,
                    trace.event_type, trace.event_id, trace.duration, trace.error.type,
                    trace.error.message, extra={"trace": entry})

    @classmethod
    def from_config(cls, config: Config, context: NodeContext) -> HandlerSet:
        """Validate the ``handlers`` section, load each class and register the status action."""
        section = config.section("handlers") or {}
        if not isinstance(section, dict):
            raise config.source.error(("handlers",), "expected a mapping of handler names")
        search = [Path(p) for p in config.node.extensions_path]
        if not search:
            search = [Path(config.file).resolve().parent / DEFAULT_EXTENSIONS]
        parallel = config.node.handlers_parallel
        if parallel < 0:
            raise config.source.error(("node", "handlers_parallel"),
                                      "must be 0 (one per CPU) or more")
        handlers = cls(parallel=parallel or None)
        for name, raw in section.items():
            path = ("handlers", str(name))
            settings = config.convert(raw if raw is not None else {}, HandlerConfig, path)
            if not settings.enabled:
                continue
            if settings.timeout <= 0:
                raise config.source.error((*path, "timeout"), "must be more than 0 seconds")
            if settings.timeout > LONG_LIMIT and not settings.allow_long:
                raise config.source.error(
                    (*path, "timeout"), f"{settings.timeout:g}s is over the {LONG_LIMIT:g}s hard "
                    "limit that guards against a misconfigured handler; set allow_long: true "
                    "beside it if the handler really needs longer")
            if settings.workers < 0:
                raise config.source.error((*path, "workers"), "must be 0 (one per CPU) or more")
            handler_cls = _load_handler(str(name), settings.entry_point, search, config, path)
            condition = None
            if settings.condition is not None:
                condition = compile_hook_condition(settings.condition, (*path, "if"),
                                                   config.source.error)
            try:
                runner = HandlerRunner(str(name), handler_cls, settings, condition=condition,
                                       context=context, search_path=search,
                                       record=handlers.record, slots=handlers.slots)
            except Exception as error:
                raise config.source.error(
                    path, f"cannot create {settings.entry_point}: {error}") from error
            handlers.runners[runner.name] = runner
        if handlers.runners:
            for event_type in cls.event_types:
                context.codec.types.register(event_type)
            context.actions.add(ActionSpec.from_function(
                "handlers.status", handlers.status, blocking=False))
        return handlers

    def start(self) -> None:
        """Start every handler; if one fails, stop those started and raise."""
        started: list[HandlerRunner] = []
        try:
            for runner in self.runners.values():
                runner.start()
                started.append(runner)
        except Exception as error:
            for runner in reversed(started):
                runner.stop(1.0)
            raise ExtensionError(f"handler {runner.name} failed to start: {error}",
                                 name=runner.name) from error

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every handler in reverse order; idempotent."""
        running = [r for r in self.runners.values() if r.pool is not None]
        if running:  # events published before the stop still reach the handlers
            running[0].context.bus.flush(timeout)
        for runner in reversed(list(self.runners.values())):
            try:
                runner.stop(timeout)
            except Exception:
                log.exception("handler %s failed to stop", runner.name)

    def status(self) -> dict[str, Any]:
        """Return each handler's state and counters, and the recent failures, newest last."""
        with self._lock:
            traces = [msgspec.to_builtins(t) for t in self.traces]
        return {"handlers": {name: r.status() for name, r in self.runners.items()},
                "parallel": {"limit": self.slots.limit, "running": self.slots.running,
                             "peak": self.slots.peak},
                "traces": traces}


def _load_handler(name: str, entry_point: str, search: list[Path], config: Config,
                  path: tuple[str, ...]) -> type[Any]:
    key = (*path, "entry_point")
    if not entry_point.startswith(_PREFIX):
        raise config.source.error(key, f"expected 'python:package.module.Class', "
                                       f"got {entry_point!r}")
    target = entry_point[len(_PREFIX):]
    module, sep, qualname = target.partition(":")
    if not sep:
        module, _, qualname = target.rpartition(".")
    if not module or not qualname:
        raise config.source.error(key, f"expected 'python:package.module.Class', "
                                       f"got {entry_point!r}")
    try:
        cls = load_class(HANDLER_GROUP, name, object, spec=f"{module}:{qualname}",
                         search_path=search)
    except PlatybusError as error:
        hint = ""
        if "cannot import" in str(error):
            hint = ("; put the module in one of those folders, or name its folder in "
                    "node.extensions_path")
        raise config.source.error(key, f"{error}{hint}") from None
    if "<locals>" in cls.__qualname__:
        raise config.source.error(key, f"{cls.__qualname__} must be defined at module level")
    if not isinstance(inspect.getattr_static(cls, "handle", None), staticmethod):
        raise config.source.error(
            key, f"{cls.__qualname__}.handle must be a @staticmethod "
                 "handle(configuration, event): it runs in a worker process, without the object")
    return cls

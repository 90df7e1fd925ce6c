"""Extension handlers: code named in the config that handles events in worker processes.

``handlers: NAME: {class: "pkg.module:Class", if: ..., timeout: ..., OPTION: ...}``: the
class is loaded as every extension's (an installed name, ``module:Class``, or SFTPPlus's
``python:pkg.module.Class``) and built once, as ``cls(name, config, context)``, in the
node's process, where its ``on_start(config)`` and ``on_stop()`` run (each start and stop
of the handler); its ``@staticmethod handle(config, event)`` runs in a
:class:`ProcessPool` of its own, under a hard limit. Outcomes come back as ``handler.done``,
``handler.failed`` and ``handler.timeout`` events whose ``parent_id`` is the
triggering event. See ``docs/handlers.md``.
"""

from __future__ import annotations

import difflib
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
from platybus.config import COMMON_KEYS, ExtensionConfig, extension_section
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
from platybus.extensions import NodeContext
from platybus.isolation.pool import (
    DEFAULT_QUEUE_SIZE,
    DEFAULT_TIMEOUT,
    ProcessPool,
    TaskFuture,
)
from platybus.isolation.slots import Slots
from platybus.loader import load_class
from platybus.messages import ErrorInfo, Event

if TYPE_CHECKING:
    from platybus.bus import Subscription
    from platybus.config import Config

log = logging.getLogger("platybus.isolation.handlers")

__all__ = [
    "Handler",
    "HandlerDone",
    "HandlerFailed",
    "HandlerIncident",
    "HandlerResult",
    "HandlerSet",
    "HandlerSettings",
    "HandlerTimedOut",
]

HANDLER_GROUP = "platybus.handlers"
TRACE_LIMIT = 200
# The keys of a ``handlers`` entry that the node reads; the others are the handler's options.
HANDLER_SETTINGS = ("if", "timeout", "workers", "queue_size", "allow_long")


class HandlerSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What the node reads of a ``handlers`` entry, beside ``class`` and the options."""

    condition: Any = msgspec.field(default=None, name="if")
    timeout: float = DEFAULT_TIMEOUT
    workers: int = 0
    queue_size: int = DEFAULT_QUEUE_SIZE
    allow_long: bool = False


# The hard limit guards against misconfiguration: longer needs ``allow_long: true``.
LONG_LIMIT = 600.0
# The folder next to the config where handler modules are looked up by default.
DEFAULT_EXTENSIONS = "extensions"


class Handler:
    """Base of handler classes: ``handle`` runs in a worker, the rest in the node.

    ``Config``, when a class sets it, is the msgspec struct its options are checked
    against; without it a handler gets its options as a plain mapping.
    """

    Config: ClassVar[type[msgspec.Struct] | None] = None

    def __init__(self, name: str, config: Any, context: NodeContext) -> None:
        self.name = name
        self.config = config
        self.context = context
        self.log = logging.getLogger(f"platybus.handlers.{name}")

    def on_start(self, config: Any) -> None:
        """Prepare in the node's process; called each time the handler starts."""

    def on_stop(self) -> None:
        """Clean up in the node's process; called each time the handler stops."""

    @staticmethod
    def handle(config: Any, event: Event) -> Any:
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


class HandlerIncident(msgspec.Struct, frozen=True, kw_only=True):
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

    def __init__(self, name: str, cls: type[Any], settings: HandlerSettings, config: Any, *,
                 spec: str, condition: Condition | None, context: NodeContext,
                 search_path: list[Path], record: Callable[[HandlerIncident], None],
                 slots: Slots | None = None) -> None:
        self.name = name
        self.slots = slots
        self.cls = cls
        self.spec = spec
        self.settings = settings
        self.config = config
        self.condition = condition
        # A selector filters on the bus; a mapping condition is checked per event below.
        self.filter = condition if condition is not None and condition.selector is None else None
        self.context = context
        self.search_path = search_path
        self.fn_ref = f"{cls.__module__}:{cls.__qualname__}.handle"
        # Built here, in the node's process: the worker only ever sees ``handle``.
        self.instance = cls(name, config, context)
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
            on_start(self.config)
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
            future = pool.submit(self.fn_ref, self.config, event)
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
            trace = HandlerIncident(ts=time.time(), handler=self.name, outcome=outcome,
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
            "class": self.spec,
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
        self.traces: deque[HandlerIncident] = deque(maxlen=trace_limit)
        self._lock = threading.Lock()

    def record(self, trace: HandlerIncident) -> None:
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
        entries = extension_section(config.section("handlers"), "handlers", config.source,
                                    settings=HANDLER_SETTINGS, refuse_old=True)
        search = [Path(p) for p in config.node.extensions_path]
        if not search:
            search = [Path(config.file).resolve().parent / DEFAULT_EXTENSIONS]
        parallel = config.node.handlers_parallel
        if parallel < 0:
            raise config.source.error(("node", "handlers_parallel"),
                                      "must be 0 (one per CPU) or more")
        handlers = cls(parallel=parallel or None)
        for name, ext in entries.items():
            if not ext.enabled:
                continue
            path = ext.path
            settings = config.convert(ext.settings, HandlerSettings, path)
            if settings.timeout <= 0:
                raise config.source.error((*path, "timeout"), "must be more than 0 seconds")
            if settings.timeout > LONG_LIMIT and not settings.allow_long:
                raise config.source.error(
                    (*path, "timeout"), f"{settings.timeout:g}s is over the {LONG_LIMIT:g}s hard "
                    "limit that guards against a misconfigured handler; set allow_long: true "
                    "beside it if the handler really needs longer")
            if settings.workers < 0:
                raise config.source.error((*path, "workers"), "must be 0 (one per CPU) or more")
            handler_cls = _load_handler(ext, search, config)
            options = _handler_options(handler_cls, ext, config)
            condition = None
            if settings.condition is not None:
                condition = compile_hook_condition(settings.condition, (*path, "if"),
                                                   config.source.error)
            spec = ext.class_spec or name
            try:
                runner = HandlerRunner(name, handler_cls, settings, options, spec=spec,
                                       condition=condition, context=context,
                                       search_path=search, record=handlers.record,
                                       slots=handlers.slots)
            except Exception as error:
                raise config.source.error(path, f"cannot create {spec}: "
                                                f"{type(error).__name__}: {error}") from error
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


def _load_handler(ext: ExtensionConfig, search: list[Path], config: Config) -> type[Any]:
    key = ext.class_path
    try:
        cls = load_class(HANDLER_GROUP, ext.name, object, spec=ext.class_spec,
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
                 "handle(config, event): it runs in a worker process, without the object")
    try:
        inspect.signature(cls).bind("name", None, None)
    except TypeError:
        raise config.source.error(
            key, f"{cls.__qualname__} must be built as {cls.__qualname__}(name, config, "
                 "context), as every extension: subclass platybus.isolation.handlers.Handler"
        ) from None
    except ValueError:  # no signature to read (a class built in C): let the call tell
        pass
    return cls


def _handler_options(cls: type[Any], ext: ExtensionConfig, config: Config) -> Any:
    """The handler's options: checked against its ``Config``, or a plain mapping."""
    known = COMMON_KEYS + HANDLER_SETTINGS
    config_type = getattr(cls, "Config", None)
    if isinstance(config_type, type) and issubclass(config_type, msgspec.Struct):
        return config.convert(ext.options, config_type, ext.path, also_known=known)
    # Untyped options take any key, so a mistyped setting would pass as an option.
    for key in ext.options:
        hint = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
        if hint:
            raise config.source.error(
                (*ext.path, key), f"unknown key; did you mean {hint[0]!r}? (to take an "
                                  f"option named {key!r}, give the handler a Config)")
    return dict(ext.options)

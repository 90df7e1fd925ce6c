"""Actions: named callables with validated arguments, and the runner that serves requests."""

from __future__ import annotations

import difflib
import inspect
import logging
import re
import threading
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, overload

import msgspec

from platybus.errors import (
    ActionError,
    ActionFailed,
    ActionNotAllowed,
    ArgumentError,
    UnknownActionError,
)
from platybus.messages import ErrorInfo, Request, Response, caused_by
from platybus.threads import WorkerPool

if typing.TYPE_CHECKING:
    from platybus.bus import Bus, Subscription

log = logging.getLogger("platybus.actions")


F = TypeVar("F", bound=Callable[..., Any])
_RST_LITERAL = re.compile(r"``([^`]+)``")


class Named(Protocol):
    """What the registry needs of a plugin: its name (its actions are its marked methods)."""

    name: str


@dataclass(frozen=True)
class ActionMark:
    """What ``@action`` records on a method."""

    name: str | None
    blocking: bool


@overload
def action(fn: F) -> F: ...
@overload
def action(*, name: str | None = None, blocking: bool = True) -> Callable[[F], F]: ...


def action(
    fn: F | None = None, *, name: str | None = None, blocking: bool = True
) -> F | Callable[[F], F]:
    """Mark a plugin method as an action callable as ``<plugin>.<name>``.

    Arguments are validated against the signature and type hints before the
    call. ``blocking=False`` is a promise that the action returns at once.
    """

    def mark(func: F) -> F:
        func.__platybus_action__ = ActionMark(name, blocking)  # type: ignore[attr-defined]
        return func

    return mark(fn) if fn is not None else mark


@dataclass
class ActionStats:
    """Calls, failures and total time of one action."""

    calls: int = 0
    errors: int = 0
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, seconds: float, failed: bool) -> None:
        """Count one call; actions run on several threads at once, so under a lock."""
        with self._lock:
            self.calls += 1
            self.errors += failed
            self.seconds += seconds


@dataclass
class ActionSpec:
    """One callable action: its name, function, argument schema and doc."""

    name: str
    fn: Callable[..., Any]
    doc: str = ""
    signature: str = ""
    blocking: bool = True
    args_type: type[msgspec.Struct] | None = None
    extra_kwargs: bool = False
    stats: ActionStats = field(default_factory=ActionStats)

    @classmethod
    def from_function(
        cls, name: str, fn: Callable[..., Any], *, blocking: bool = True
    ) -> ActionSpec:
        """Build a spec whose argument schema comes from ``fn``'s signature and hints."""
        sig = inspect.signature(fn, eval_str=True)
        try:
            hints = typing.get_type_hints(fn)
        except Exception as error:
            raise ActionError(f"action {name}: cannot read its type hints: {error}",
                              action=name) from error
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        extra = False
        for param in sig.parameters.values():
            if param.kind is param.VAR_KEYWORD:
                extra = True
                continue
            if param.kind is param.VAR_POSITIONAL:
                continue
            hint = hints.get(param.name, Any)
            if param.default is param.empty:
                fields.append((param.name, hint))
            else:
                fields.append((param.name, hint, param.default))
        args_type = msgspec.defstruct(
            f"{name}.args", fields, kw_only=True, forbid_unknown_fields=not extra
        )
        doc = (inspect.getdoc(fn) or "").strip().splitlines()
        shown = sig.replace(return_annotation=inspect.Signature.empty)
        # What people read (platybus actions, /actions, the console): plain type names
        # and no reST markup.
        signature = str(shown).replace("typing.", "")
        summary = _RST_LITERAL.sub(r"\1", doc[0]) if doc else ""
        return cls(name=name, fn=fn, doc=summary, signature=signature,
                   blocking=blocking, args_type=args_type, extra_kwargs=extra)

    def bind(self, args: dict[str, Any]) -> dict[str, Any]:
        """Validate ``args`` against the schema; return keyword arguments for the call."""
        if not isinstance(args, dict):
            raise ArgumentError(f"{self.name}: args must be an object, got "
                                f"{type(args).__name__}", action=self.name)
        if self.args_type is None:
            return args
        try:
            bound = msgspec.convert(args, self.args_type, strict=False)
        except msgspec.ValidationError as error:
            text, argument = self._explain(error, args)
            raise ArgumentError(text, action=self.name, argument=argument) from None
        kwargs = {f: getattr(bound, f) for f in self.args_type.__struct_fields__}
        if self.extra_kwargs:
            for key, value in args.items():
                kwargs.setdefault(key, value)
        return kwargs

    def _explain(self, error: msgspec.ValidationError,
                 args: dict[str, Any]) -> tuple[str, str | None]:
        # The text, and the argument it is about (a form shows it next to that field).
        text = str(error)
        assert self.args_type is not None
        known = list(self.args_type.__struct_fields__)
        if text.startswith("Object contains unknown field"):
            unknown = text.split("`")[1]
            hint = difflib.get_close_matches(unknown, known, n=1)
            tail = f"; did you mean {hint[0]!r}?" if hint else ""
            return (f"{self.name}: unknown argument {unknown!r}{tail} "
                    f"(takes {', '.join(known) or 'no arguments'})"), unknown
        if text.startswith("Object missing required field"):
            missing = text.split("`")[1]
            return f"{self.name}: missing required argument {missing!r}", missing
        if " - at `$." in text:
            reason, _, where = text.partition(" - at `$.")
            arg = where.rstrip("`")
            return f"{self.name}: argument {arg!r}: {reason[0].lower()}{reason[1:]}", \
                arg.split(".")[0].split("[")[0]
        return f"{self.name}: invalid arguments: {text}", None

    def params(self) -> list[dict[str, Any]]:
        """Describe each argument for a form: name, JSON type, required, default."""
        if self.args_type is None:
            return []
        schema = msgspec.json.schema(self.args_type)
        body = next(iter(schema.get("$defs", {}).values()), schema)
        required = set(body.get("required", []))
        found = []
        for name, prop in body.get("properties", {}).items():
            types = [p.get("type") for p in prop.get("anyOf", [prop])]
            kinds = [t for t in types if t and t != "null"]
            entry: dict[str, Any] = {"name": name, "type": kinds[0] if len(kinds) == 1 else "any",
                                     "required": name in required,
                                     "nullable": "null" in types}
            if "default" in prop:
                entry["default"] = prop["default"]
            found.append(entry)
        return found


class ActionRegistry:
    """Every action of a node, by ``plugin.action`` name."""

    def __init__(self) -> None:
        self._actions: dict[str, ActionSpec] = {}
        self._lock = threading.Lock()

    def add(self, spec: ActionSpec) -> ActionSpec:
        """Register an action; its name must be new."""
        with self._lock:
            if spec.name in self._actions:
                raise ActionError(f"action {spec.name!r} is already registered", action=spec.name)
            self._actions[spec.name] = spec
        return spec

    def remove(self, name: str) -> None:
        """Unregister an action if present."""
        with self._lock:
            self._actions.pop(name, None)

    def add_plugin(self, plugin: Named, prefix: str | None = None) -> list[ActionSpec]:
        """Register every ``@action`` method of an instance as ``<prefix or name>.<action>``."""
        added = []
        for attr, member in inspect.getmembers(type(plugin)):
            mark = getattr(member, "__platybus_action__", None)
            if mark is None:
                continue
            name = f"{prefix or plugin.name}.{mark.name or attr}"
            added.append(self.add(ActionSpec.from_function(
                name, getattr(plugin, attr), blocking=mark.blocking)))
        return added

    def get(self, name: str) -> ActionSpec:
        """Return an action, or raise :class:`UnknownActionError` with a suggestion."""
        spec = self._actions.get(name)
        if spec is None:
            hint = difflib.get_close_matches(name, list(self._actions), n=1)
            tail = f"; did you mean {hint[0]!r}?" if hint else ""
            raise UnknownActionError(f"unknown action {name!r}{tail}", action=name)
        return spec

    def find(self, name: str) -> ActionSpec | None:
        """Return an action, or ``None`` if there is none of that name."""
        return self._actions.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._actions

    def specs(self) -> list[ActionSpec]:
        """Return every action, sorted by name."""
        return [self._actions[k] for k in sorted(self._actions)]

    def call(self, name: str, args: dict[str, Any] | None = None) -> Any:
        """Validate and run an action in this thread; raise an :class:`ActionError` on failure."""
        spec = self.get(name)
        kwargs = spec.bind(args or {})
        started = time.perf_counter()
        failed = True
        try:
            result = spec.fn(**kwargs)
            failed = False
            return result
        except ActionError:
            raise
        except Exception as error:
            raise ActionFailed(f"{name} failed: {type(error).__name__}: {error}",
                               action=name, exception=type(error).__name__) from error
        finally:
            spec.stats.record(time.perf_counter() - started, failed)

    def execute(self, request: Request, node_id: str | None = None) -> Response:
        """Run a request's action and return its response, never raising."""
        started = time.perf_counter()
        output: Any = None
        error: ErrorInfo | None = None
        try:
            output = self.call(request.action, request.args)
        except ActionFailed as failure:
            cause = failure.__cause__
            log.warning("action %s (request %s) failed", request.action, request.id,
                        exc_info=cause)
            error = (ErrorInfo(type=type(cause).__name__, message=str(cause),
                               details={"action": request.action})
                     if cause is not None else ErrorInfo.from_exception(failure))
        except ActionError as failure:
            log.info("request %s refused: %s", request.id, failure)
            error = ErrorInfo.from_exception(failure)
        return Response(
            request_id=request.id,
            origin=node_id,
            target=request.origin,
            parent_id=request.id,
            output=output,
            error=error,
            duration=time.perf_counter() - started,
        )


RemotePolicy = Callable[[Request], bool]


class ActionRunner:
    """Serves requests for this node from the bus and publishes their responses.

    An action marked ``blocking=False`` promises to return at once, so it runs
    on the dispatcher itself: no thread hand-off on the way in or out. Every
    other action runs on the runner's worker pool.
    """

    def __init__(self, bus: Bus, registry: ActionRegistry, workers: int = 16) -> None:
        self.bus = bus
        self.registry = registry
        self.remote_allowed: RemotePolicy = lambda request: False
        self._workers = workers
        self._pool: WorkerPool | None = None
        self._subscription: Subscription | None = None

    def start(self) -> None:
        """Subscribe to requests for this node."""
        if self._subscription is None:
            self._pool = WorkerPool(self._workers, "platybus-action")
            self._subscription = self.bus.subscribe(
                "kind=request", self._route, id="platybus.actions", priority=1000
            )

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving requests, letting running actions finish within ``timeout``; idempotent."""
        if self._subscription is not None:
            self._subscription.unsubscribe()
            self._subscription = None
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop(timeout)

    def _route(self, request: Request) -> None:
        spec = self.registry.find(request.action)
        if spec is None or not spec.blocking:  # an unknown action is refused at once too
            self._serve(request)
            return
        pool = self._pool
        if pool is None:  # stopped between subscription and delivery
            return
        try:
            pool.submit(self._serve, request)
        except RuntimeError:
            log.warning("request %s for %s arrived while stopping", request.id, request.action)

    def _serve(self, request: Request) -> None:
        node_id = self.bus.node_id
        if request.origin not in (None, node_id) and not self.remote_allowed(request):
            error = ActionNotAllowed(
                f"node {node_id!r} does not allow remote calls to {request.action!r}",
                action=request.action, origin=request.origin,
            )
            response = Response(request_id=request.id, origin=node_id, target=request.origin,
                                parent_id=request.id, error=ErrorInfo.from_exception(error))
        else:
            # What the action publishes was caused by this request.
            with caused_by(request.id):
                response = self.registry.execute(request, node_id)
        self.bus.publish(response)

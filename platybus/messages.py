"""Typed, immutable messages: :class:`Event`, :class:`Request`, :class:`Response`.

Every message has an ``id``, a ``ts`` (epoch seconds), an ``origin`` node id, a
``target`` (a node id, ``"*"`` for every node, or ``None`` for local) and a
``parent_id``: the id of the message that caused it, so a chain can be traced.
Code that works on behalf of a message runs inside :func:`caused_by`; what it
publishes without a ``parent_id`` of its own gets that message's id (the bus
stamps it).

Known event types are classes whose ``data`` is a typed struct; an
:class:`EventTypes` registry maps their stable dotted names (``file.created``)
to the class. Unknown types stay generic :class:`Event` objects that keep their
type and ``data`` mapping.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, ClassVar

import msgspec

from platybus.errors import BusError

__all__ = [
    "ErrorInfo",
    "Event",
    "EventTypes",
    "Message",
    "NodeEventData",
    "NodeStarted",
    "NodeStopped",
    "Request",
    "Response",
    "caused_by",
    "current_cause",
    "new_id",
]

_ID_PREFIX = os.urandom(6).hex()
_id_counter = itertools.count()


def new_id() -> str:
    """Return a message id unique across processes and restarts."""
    return f"{_ID_PREFIX}{next(_id_counter):010x}"


def _reseed_ids() -> None:
    """Give a forked child its own id prefix so ids never collide."""
    global _ID_PREFIX, _id_counter  # noqa: PLW0603 - a forked child must not repeat ids
    _ID_PREFIX = os.urandom(6).hex()
    _id_counter = itertools.count()


os.register_at_fork(after_in_child=_reseed_ids)

# The message the current thread works on behalf of (a hook's event, a served request).
_cause: ContextVar[str | None] = ContextVar("platybus_cause", default=None)


@contextlib.contextmanager
def caused_by(message_id: str | None) -> Iterator[None]:
    """Within this block, this thread's messages without a ``parent_id`` get ``message_id``."""
    token = _cause.set(message_id)
    try:
        yield
    finally:
        _cause.reset(token)


def current_cause() -> str | None:
    """The id of the message this thread works on behalf of, if any."""
    return _cause.get()


# Which event the current thread is dispatching: lets ``Event.stop()`` end the
# handler chain without making the immutable event mutable.
_dispatch = threading.local()


class Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    """Base of every message on the bus."""

    id: str = msgspec.field(default_factory=new_id)
    ts: float = msgspec.field(default_factory=time.time)
    origin: str | None = None
    target: str | None = None
    parent_id: str | None = None

    kind: ClassVar[str]

    def replace(self, **changes: Any) -> Any:
        """Return a copy with some fields changed."""
        return msgspec.structs.replace(self, **changes)


class Event(Message, tag="event", frozen=True, kw_only=True):
    """Something that happened: a dotted ``type`` and its ``data``."""

    type: str
    data: Any = msgspec.field(default_factory=dict)

    kind: ClassVar[str] = "event"

    def stop(self) -> None:
        """End the handler chain: handlers after the current one do not see this event."""
        state = getattr(_dispatch, "state", None)
        if state is None or state.event is not self:
            raise BusError("Event.stop() only works inside a handler run by the dispatcher")
        state.stopped = True

    def get(self, path: str, default: Any = None) -> Any:
        """Look up a dotted path in ``data`` (``"a.b"``), returning ``default`` if absent."""
        value: Any = self.data
        for part in path.split("."):
            if isinstance(value, dict):
                if part not in value:
                    return default
                value = value[part]
            elif isinstance(value, msgspec.Struct):
                if not hasattr(value, part):
                    return default
                value = getattr(value, part)
            else:
                return default
        return value


class Request(Message, tag="request", frozen=True, kw_only=True):
    """Ask a node to run ``action`` (``plugin.action``) with ``args``."""

    action: str
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    timeout: float | None = None

    kind: ClassVar[str] = "request"


class ErrorInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    """What went wrong: the error's type name and message."""

    type: str
    message: str
    details: dict[str, Any] = msgspec.field(default_factory=dict)

    @classmethod
    def from_exception(cls, error: BaseException) -> ErrorInfo:
        """Describe an exception."""
        details = getattr(error, "details", None)
        clean = {k: v for k, v in details.items() if v is not None} if details else {}
        return cls(type=type(error).__name__, message=str(error), details=clean)


class Response(Message, tag="response", frozen=True, kw_only=True):
    """The answer to a :class:`Request`: its ``output`` or an ``error``."""

    request_id: str
    output: Any = None
    error: ErrorInfo | None = None
    duration: float = 0.0

    kind: ClassVar[str] = "response"

    @property
    def ok(self) -> bool:
        """Whether the action succeeded."""
        return self.error is None


class NodeEventData(msgspec.Struct, frozen=True, omit_defaults=True):
    """Data of ``node.*`` events."""

    node_id: str
    version: str = ""


class NodeStarted(Event, tag="event", frozen=True, kw_only=True):
    """The node is ready: every component has started."""

    type: str = "node.started"
    data: NodeEventData


class NodeStopped(Event, tag="event", frozen=True, kw_only=True):
    """The node is stopping."""

    type: str = "node.stopped"
    data: NodeEventData


class EventTypes:
    """Registry of known event types: dotted name → event class.

    One registry belongs to one codec; extensions add their own types through
    :meth:`register` when they are loaded, never at import time.
    """

    def __init__(self) -> None:
        self._types: dict[str, type[Event]] = {}
        self.register(NodeStarted)
        self.register(NodeStopped)

    def register(self, cls: type[Event]) -> type[Event]:
        """Add an event class under the name given by its ``type`` default."""
        name = _type_name_of(cls)
        known = self._types.get(name)
        if known is not None and known is not cls:
            raise BusError(f"event type {name!r} is already registered by {known.__name__}")
        self._types[name] = cls
        return cls

    def get(self, name: str) -> type[Event] | None:
        """Return the class registered for a type name, if any."""
        return self._types.get(name)

    def names(self) -> list[str]:
        """Return every registered type name, sorted."""
        return sorted(self._types)

    def __contains__(self, name: object) -> bool:
        return name in self._types


def _type_name_of(cls: type[Event]) -> str:
    for field in msgspec.structs.fields(cls):
        if field.name == "type" and isinstance(field.default, str):
            return field.default
    raise BusError(f"{cls.__name__} has no default for its 'type' field")

"""Extension points: :class:`Plugin` with ``@action`` methods, :class:`Backend` threads.

Extensions are *marked*, not registered at import: a plugin class marks its
actions with :func:`action`; the node finds classes with :func:`~platybus.loader.load_class`
(an entry-point name of ``platybus.plugins`` or ``platybus.backends``, or a
``module:Class`` spec) and builds each as ``cls(name, config, context)``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from platybus.actions import action
from platybus.errors import BusError, DecodeError, ExtensionError, LinkError, PlatybusError
from platybus.loader import available, load_class
from platybus.messages import Event, Message, Request, Response
from platybus.threads import OwnedThread

if TYPE_CHECKING:
    from platybus.actions import ActionRegistry, ActionRunner
    from platybus.bus import Bus
    from platybus.codec import Codec
    from platybus.replies import ReplyCallback

# What the ``send_*`` methods of a backend accept: a typed message, a dict, JSON text or bytes.
MessageLike = Message | Mapping[str, Any] | str | bytes | bytearray

__all__ = [
    "BACKEND_GROUP",
    "PLUGIN_GROUP",
    "Backend",
    "EmptyConfig",
    "MessageLike",
    "NodeContext",
    "Plugin",
    "ServiceInfo",
    "action",
    "as_message",
    "available",
    "load_class",
    "service_label",
    "service_problem",
]

PLUGIN_GROUP = "platybus.plugins"
BACKEND_GROUP = "platybus.backends"

class EmptyConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Config of an extension that takes no options."""


@dataclass
class NodeContext:
    """What an extension may use of its node, passed explicitly at construction."""

    node_id: str
    bus: Bus
    codec: Codec
    actions: ActionRegistry
    data_dir: Path
    version: str = ""
    health: Callable[[], dict[str, Any]] = field(default=dict)
    metrics: Callable[[], str] = field(default=lambda: "")
    runner: ActionRunner | None = None
    # The node's Redis link settings (a ``LinkConfig``: extensions sit below the link
    # layer, so untyped here), if it has one: where ``Backend.send_message`` puts messages.
    link: Any = None
    # Withdraws services from zeroconf while the node runs (set by the node).
    withdraw_services: Callable[[Sequence[ServiceInfo]], None] | None = None

    @classmethod
    def detached(cls, node_id: str, data_dir: Path, codec: Codec | None = None) -> NodeContext:
        """A context for extensions built outside a running node (a command, a child process).

        Its bus is never started: what is published on it goes nowhere.
        """
        from platybus.actions import ActionRegistry
        from platybus.bus import Bus
        from platybus.codec import Codec

        return cls(node_id=node_id, bus=Bus(node_id), codec=codec or Codec(),
                   actions=ActionRegistry(), data_dir=data_dir)


class Plugin:
    """Base class of plugins: a named object whose ``@action`` methods are actions."""

    Config: ClassVar[type[msgspec.Struct]] = EmptyConfig
    event_types: ClassVar[tuple[type[Event], ...]] = ()

    def __init__(self, name: str, config: Any, context: NodeContext) -> None:
        self.name = name
        self.config = config
        self.context = context
        self.log = logging.getLogger(f"platybus.plugins.{name}")

    @classmethod
    def prepare_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Reshape the raw options before they are checked against ``Config`` (as is here)."""
        return options

    def start(self) -> None:
        """Acquire resources; called once before any action runs."""

    def stop(self) -> None:
        """Release resources; must be idempotent."""

    def send_event(self, event: Event) -> None:
        """Publish an event from this plugin."""
        self.context.bus.publish(_with_origin(event, self.context.node_id))


@dataclass(frozen=True)
class ServiceInfo:
    """A zeroconf service that a backend asks the node to announce."""

    port: int
    name: str
    srv_type: str
    srv_name: str
    udp: bool = False
    properties: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problem = service_problem(self)
        if problem is not None:
            raise ExtensionError(f"service {self.name!r}: {problem}", name=self.name)


# RFC 6335 service names: letters, digits and single hyphens, at most 15 bytes.
_SERVICE_LABEL = re.compile(r"[A-Za-z0-9]+(-[A-Za-z0-9]+)*")
SERVICE_LABEL_LIMIT = 15
TXT_ENTRY_LIMIT = 255


def service_problem(info: ServiceInfo) -> str | None:
    """Return why a declared service cannot be announced over zeroconf, or ``None``."""
    if not info.name or "=" in info.name:
        return "a service name must be non-empty and hold no '='"
    trailer = "._udp.local." if info.udp else "._tcp.local."
    if not info.srv_type.endswith(trailer):
        return f"type {info.srv_type!r} must end with {trailer!r}"
    label = info.srv_type[: -len(trailer)]
    if not label.startswith("_") or "." in label:
        return f"type {info.srv_type!r} must be '_<service>{trailer}'"
    size = len(label[1:].encode())
    if size > SERVICE_LABEL_LIMIT:
        return (f"type {info.srv_type!r}: the label {label[1:]!r} is {size} bytes, zeroconf "
                f"allows at most {SERVICE_LABEL_LIMIT} ('_platybus-<name>' leaves 6 bytes for "
                f"the name); declare the service with a shorter name")
    if not _SERVICE_LABEL.fullmatch(label[1:]) or not re.search("[A-Za-z]", label):
        return (f"type {info.srv_type!r}: the label {label[1:]!r} may only hold letters, "
                f"digits and single inner hyphens, with at least one letter")
    if not info.srv_name or len(info.srv_name.encode()) > 63 or any(
            ord(c) < 32 or ord(c) == 127 for c in info.srv_name):
        return f"instance name {info.srv_name!r} must be 1-63 bytes without control characters"
    if not 0 <= info.port <= 65535:
        return f"port {info.port} is not between 0 and 65535"
    for key, value in info.properties.items():
        if not key or "=" in key:
            return f"property name {key!r} must be non-empty and hold no '='"
        if len(f"{key}={value}".encode()) > TXT_ENTRY_LIMIT:
            return f"property {key!r} is longer than {TXT_ENTRY_LIMIT} bytes with its name"
    return None


class Backend(OwnedThread):
    """A thread that turns the outside world into messages on the bus.

    Subclasses override :meth:`loop` (or :meth:`on_start`/:meth:`on_stop`) and
    call :meth:`mark_ready` once they serve; a loop that blocks overrides
    :meth:`wake`. :meth:`stop` is idempotent; the node joins every backend by
    one deadline and logs one that did not stop in time.
    """

    Config: ClassVar[type[msgspec.Struct]] = EmptyConfig
    event_types: ClassVar[tuple[type[Event], ...]] = ()
    # A transport carries messages to other nodes: the node starts it before the
    # other backends (and stops it after them), so nothing they publish misses it.
    transport: ClassVar[bool] = False

    def __init__(self, name: str, config: Any, context: NodeContext) -> None:
        super().__init__(f"backend-{name}", label=f"backend {name}")
        self.backend_name = name
        self.config = config
        self.context = context
        self.log = logging.getLogger(f"platybus.backends.{name}")
        self.services: list[ServiceInfo] = []
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self.events_sent = 0

    # -- lifecycle ---------------------------------------------------------

    def run(self) -> None:
        """Run the backend until stopped; a failure is kept in ``failure``."""
        try:
            self.on_start()
            self.loop()
        except PlatybusError as error:
            # Expected (a port in use, a refused connection): the node reports it in one
            # line; the traceback is only for debugging.
            self.failure = error
            self.log.debug("backend %s failed", self.backend_name, exc_info=True)
        except BaseException as error:
            self.failure = error
            self.log.exception("backend %s failed", self.backend_name)
        finally:
            try:
                self.on_stop()
            except Exception:
                self.log.exception("backend %s failed while stopping", self.backend_name)
            self.ready.set()

    def on_start(self) -> None:
        """Set up inside the backend's thread, before :meth:`loop`."""

    def loop(self) -> None:
        """Serve until :meth:`stop`; the default marks ready and waits."""
        self.mark_ready()
        self.wait_for_stop()

    def on_stop(self) -> None:
        """Clean up inside the backend's thread, after :meth:`loop` returned."""

    def wake(self) -> None:
        """Make :meth:`loop` notice a stop request (override for event loops)."""

    def mark_ready(self) -> None:
        """Tell the node this backend serves."""
        self.ready.set()

    def render_metrics(self) -> str:
        """Return this backend's own counters in the Prometheus text format ("" for none)."""
        return ""

    def health(self) -> dict[str, Any]:
        """Return this backend's ``state`` (and any details) for the node's health."""
        state = ("failed" if self.failure else "ready" if self.ready.is_set() and self.is_alive()
                 else "stopped" if self.ident and not self.is_alive() else "starting")
        return {"state": state}

    @property
    def _stop_requested(self) -> threading.Event:
        # Backends written before wait_for_stop() waited on this event directly.
        return self._stop_event

    def on_thread_stop(self) -> None:
        """Wake the loop through :meth:`wake` when :meth:`stop` is called."""
        self.wake()

    # -- messages ----------------------------------------------------------

    def send_event(self, event: MessageLike) -> None:
        """Publish an event (typed, a dict, JSON text or UTF-8 JSON bytes) on the bus."""
        message = as_message(self.context.codec, event, Event)
        self.events_sent += 1
        self.context.bus.publish(_with_origin(message, self.context.node_id))

    def send_request(
        self,
        request: MessageLike,
        on_response: ReplyCallback | None = None,
        response_timeout: float = 5.0,
    ) -> Response | None:
        """Publish a request; with ``on_response``, wait for the response and pass it on.

        The wait lasts at most ``response_timeout`` seconds (then the response is a
        timeout error), and the response is also returned. It blocks the calling
        thread, so call it from the backend's own thread, not from a bus callback.
        """
        message = _with_origin(as_message(self.context.codec, request, Request),
                               self.context.node_id)
        if on_response is None:
            self.context.bus.publish(message)
            return None
        if self.context.bus.in_dispatcher():
            raise BusError("send_request with on_response waits for the response and would "
                           "block the bus: call it from the backend's thread")
        response = self.context.bus.request(message, timeout=response_timeout)
        on_response(response)
        return response

    def send_response(self, response: MessageLike, request: MessageLike | None = None) -> None:
        """Publish a response; with ``request``, its id and origin fill in the reply's fields."""
        asked = as_message(self.context.codec, request, Request) if request is not None else None
        if asked is not None and isinstance(response, Mapping):
            filled = dict(response)
            filled.setdefault("request_id", asked.id)
            filled.setdefault("target", asked.origin)
            response = filled
        message = as_message(self.context.codec, response, Response)
        if asked is not None:
            message = message.replace(request_id=asked.id,
                                      target=message.target or asked.origin)
        self.context.bus.publish(_with_origin(message, self.context.node_id))

    def on_message(self, msg: MessageLike) -> None:
        """Take a message from outside (typed, a dict, JSON text or bytes) onto the bus."""
        message = as_message(self.context.codec, msg, Message)
        if isinstance(message, Request):
            self.send_request(message)
        elif isinstance(message, Response):
            self.send_response(message)
        else:
            self.send_event(message)

    def send_message(self, msg: MessageLike, queue_name: str | None = None) -> str:
        """Push a message's JSON onto a Redis list for other consumers; return the list's name.

        The Redis is the node's link (``backends.redis``); the list is
        ``<prefix>:queue`` unless ``queue_name`` is given. Consumers pop from it
        (``BLPOP``) and may decode each entry with the codec.
        """
        link = self.context.link
        if link is None:
            raise LinkError("send_message needs a Redis: configure backends.redis")
        message = _with_origin(as_message(self.context.codec, msg, Message),
                               self.context.node_id)
        name = queue_name or f"{link.prefix}:queue"
        import redis

        client = redis.Redis.from_url(link.url, socket_timeout=link.connect_timeout,
                                      socket_connect_timeout=link.connect_timeout)
        try:
            client.rpush(name, self.context.codec.encode(message))
        except redis.RedisError as error:
            raise LinkError(f"cannot put a message on {name}: {error}", url=link.url) from None
        finally:
            client.close()
        return name

    def register_service(
        self,
        *,
        port: int,
        name: str | None = None,
        srv_type: str | None = None,
        srv_name: str | None = None,
        udp: bool = False,
        properties: dict[str, str] | None = None,
    ) -> ServiceInfo:
        """Declare a zeroconf service for the node to announce while it runs.

        Without ``srv_type``, a name too long for a zeroconf label gets a derived
        short one (``_platybus-<name>`` would not fit): see ``service_label``.
        """
        label = name or self.backend_name
        info = ServiceInfo(
            port=port,
            name=label,
            srv_type=srv_type or f"_{service_label(label)}._{'udp' if udp else 'tcp'}.local.",
            srv_name=srv_name or f"{self.context.node_id}",
            udp=udp,
            properties=dict(properties or {}),
        )
        self.services.append(info)
        return info

    def unregister_service(self, name: str | None = None) -> list[ServiceInfo]:
        """Withdraw this backend's services (only ``name``'s if given) from zeroconf; return them.

        While the node runs they are unannounced at once; before it starts they are
        simply not announced.
        """
        gone = [s for s in self.services if name is None or s.name == name]
        self.services = [s for s in self.services if s not in gone]
        withdraw = self.context.withdraw_services
        if gone and withdraw is not None:
            withdraw(gone)
        return gone


def service_label(name: str) -> str:
    """The zeroconf service label of a backend's service: ``platybus-<name>``, made to fit.

    A label holds at most 15 bytes of letters, digits and inner hyphens. A name
    that gives a longer or invalid label gets ``pb-<start>-<hash>``: the start of
    the name and four hex digits of its SHA-1, so two long names stay apart.
    """
    full = f"platybus-{name}"
    if len(full.encode()) <= SERVICE_LABEL_LIMIT and _SERVICE_LABEL.fullmatch(full):
        return full
    digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:4]
    start = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")[:SERVICE_LABEL_LIMIT - 8].strip("-")
    return f"pb-{start}-{digest}" if start else f"pb-{digest}"


def as_message(codec: Codec, value: Any, kind: type[Any]) -> Any:
    """Turn a typed message, a dict, JSON text or UTF-8 JSON bytes into a message of ``kind``.

    Plain data goes through the codec, so it is validated like anything on the
    wire; a dict without ``kind`` gets the one ``kind`` names (``event`` for any
    message). Raises
    :class:`DecodeError` saying what was wrong.
    """
    wanted = getattr(kind, "kind", None) if kind is not Message else None
    default = wanted if isinstance(wanted, str) else "event"
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as error:
            raise DecodeError(f"message bytes are not UTF-8: {error}") from None
    if isinstance(value, str):
        if len(value) > codec.max_size:
            raise DecodeError(f"message of {len(value)} bytes exceeds the maximum of "
                              f"{codec.max_size} bytes")
        try:
            value = msgspec.json.decode(value)
        except msgspec.DecodeError as error:
            raise DecodeError(f"malformed JSON: {error}") from None
        if not isinstance(value, dict):
            raise DecodeError(f"expected a JSON object, got {type(value).__name__}")
    if isinstance(value, Message):
        message: Message = value
    elif isinstance(value, Mapping):
        data = dict(value)
        data.setdefault("kind", default)
        try:
            message = codec.from_builtins(data)
        except (TypeError, ValueError) as error:
            raise DecodeError(f"cannot encode the dict as a message: {error}") from None
    else:
        raise DecodeError(f"expected a message, a dict, JSON text or UTF-8 JSON bytes, got "
                          f"{type(value).__name__}")
    if not isinstance(message, kind):
        raise DecodeError(f"expected {'an' if wanted == 'event' else 'a'} {wanted}, got a "
                          f"{message.kind}")
    return message


def _with_origin(message: Any, node_id: str) -> Any:
    if isinstance(message, Message) and message.origin is None:
        return message.replace(origin=node_id)
    return message

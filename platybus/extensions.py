"""Extension points: :class:`Plugin` with ``@action`` methods, :class:`Backend` threads.

Extensions are *marked*, not registered at import: a plugin class marks its
actions with :func:`action`; the node finds classes with :func:`~platybus.loader.load_class`
(an entry-point name of ``platybus.plugins`` or ``platybus.backends``, or a
``module:Class`` spec) and builds each as ``cls(name, config, context)``.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from platybus.actions import action
from platybus.errors import ExtensionError, PlatybusError
from platybus.loader import available, load_class
from platybus.messages import Event, Message, Request, Response

if TYPE_CHECKING:
    from platybus.actions import ActionRegistry, ActionRunner
    from platybus.bus import Bus
    from platybus.codec import Codec
    from platybus.replies import ReplyCallback

__all__ = [
    "BACKEND_GROUP", "PLUGIN_GROUP", "Backend", "EmptyConfig", "NodeContext", "Plugin",
    "ServiceInfo", "action", "available", "load_class", "service_problem",
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


class Backend(threading.Thread):
    """A thread that turns the outside world into messages on the bus.

    Subclasses override :meth:`loop` (or :meth:`on_start`/:meth:`on_stop`) and
    call :meth:`mark_ready` once they serve. :meth:`stop` is idempotent; the
    node joins the thread with a timeout.
    """

    Config: ClassVar[type[msgspec.Struct]] = EmptyConfig
    event_types: ClassVar[tuple[type[Event], ...]] = ()
    # A transport carries messages to other nodes: the node starts it before the
    # other backends (and stops it after them), so nothing they publish misses it.
    transport: ClassVar[bool] = False

    def __init__(self, name: str, config: Any, context: NodeContext) -> None:
        super().__init__(name=f"backend-{name}", daemon=True)
        self.backend_name = name
        self.config = config
        self.context = context
        self.log = logging.getLogger(f"platybus.backends.{name}")
        self.services: list[ServiceInfo] = []
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self._stop_requested = threading.Event()
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
        self._stop_requested.wait()

    def on_stop(self) -> None:
        """Clean up inside the backend's thread, after :meth:`loop` returned."""

    def wake(self) -> None:
        """Make :meth:`loop` notice a stop request (override for event loops)."""

    def mark_ready(self) -> None:
        """Tell the node this backend serves."""
        self.ready.set()

    def health(self) -> dict[str, Any]:
        """Return this backend's ``state`` (and any details) for the node's health."""
        state = ("failed" if self.failure else "ready" if self.ready.is_set() and self.is_alive()
                 else "stopped" if self.ident and not self.is_alive() else "starting")
        return {"state": state}

    def should_keep_running(self) -> bool:
        """Whether :meth:`stop` has not been called yet."""
        return not self._stop_requested.is_set()

    def stop(self) -> None:
        """Ask the backend to stop; idempotent and non-blocking."""
        if self._stop_requested.is_set():
            return
        self._stop_requested.set()
        try:
            self.wake()
        except Exception:
            self.log.exception("backend %s failed to wake for stop", self.backend_name)

    # -- messages ----------------------------------------------------------

    def send_event(self, event: Event) -> None:
        """Publish an event on the bus."""
        self.events_sent += 1
        self.context.bus.publish(_with_origin(event, self.context.node_id))

    def send_request(
        self,
        request: Request,
        on_response: ReplyCallback | None = None,
        timeout: float | None = None,
    ) -> None:
        """Publish a request; ``on_response`` gets the response or a timeout error."""
        self.context.bus.publish(
            _with_origin(request, self.context.node_id), on_reply=on_response, timeout=timeout
        )

    def send_response(self, response: Response) -> None:
        """Publish a response."""
        self.context.bus.publish(_with_origin(response, self.context.node_id))

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
        """Declare a zeroconf service for the node to announce while it runs."""
        label = name or self.backend_name
        info = ServiceInfo(
            port=port,
            name=label,
            srv_type=srv_type or f"_platybus-{label}._{'udp' if udp else 'tcp'}.local.",
            srv_name=srv_name or f"{self.context.node_id}",
            udp=udp,
            properties=dict(properties or {}),
        )
        self.services.append(info)
        return info


def _with_origin(message: Any, node_id: str) -> Any:
    if isinstance(message, Message) and message.origin is None:
        return message.replace(origin=node_id)
    return message

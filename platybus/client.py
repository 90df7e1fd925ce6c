"""The client library: join the nodes' bus through Redis from a script, without a node.

A :class:`Client` has its own small bus (so selectors, priorities, reply
matching and timeouts behave exactly as on a node) whose transport is the same
:class:`~platybus.link.StreamLink` that nodes use. See ``docs/client.md``.

::

    with Client("redis://127.0.0.1:6379/0", secret=os.environ["PLATYBUS_SECRET"]) as client:
        client.subscribe("type=sensor.*", print)
        print(client.request("garden", "node.ping").output)
        client.wait(10)
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from platybus.bus import Bus, BusConfig
from platybus.codec import Codec
from platybus.errors import (
    ArgumentError,
    DecodeError,
    DuplicateSubscriberError,
    LinkError,
    NodeNotReady,
    PlatybusError,
    QueueFullError,
)
from platybus.expr import Selector, parse_selector
from platybus.link.protocol import LinkConfig, LinkDown, LinkUp, valid_id
from platybus.link.stream_link import StreamLink
from platybus.messages import Event, EventTypes, Message, Request, Response
from platybus.replies import ReplyCallback

__all__ = ["Client", "Subscriber"]

log = logging.getLogger("platybus.client")

ErrorPolicy = Literal["raise", "log", "ignore"] | Callable[[PlatybusError], Any]


@dataclass(frozen=True)
class Subscriber:
    """A subscription of a client: its id, selector, priority and the metadata given with it."""

    id: str
    selector: Selector
    callback: Callable[[Any], Any]
    priority: int
    blocking: bool
    metadata: Mapping[str, Any]


class Client:
    """A script's seat on the bus: subscribe, publish and request over Redis."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "platybus",
        secret: str | None = None,
        client_id: str | None = None,
        timeout: float = 30.0,
        max_queued: int = 10_000,
        event_types: Iterable[type[Event]] = (),
        config: LinkConfig | None = None,
    ) -> None:
        """Describe a client; nothing connects before :meth:`connect`.

        With a ``client_id`` the client is durable: Redis keeps its place in the
        event stream while it is away. Without one it gets a throwaway id and its
        streams are removed by :meth:`disconnect`. ``config`` gives every link
        setting at once (then ``url``, ``prefix`` and ``secret`` are ignored).
        """
        if client_id is not None and not valid_id(client_id):
            raise ArgumentError(f"client_id {client_id!r} must be 1-63 letters, digits, "
                                "'.', '_' or '-'")
        self.id = client_id or f"client-{os.urandom(6).hex()}"
        self.durable = client_id is not None
        self.timeout = timeout
        self.max_queued = max_queued
        try:
            self.config = config or LinkConfig(url=url, prefix=prefix, secret=secret)
        except (TypeError, ValueError) as error:
            raise ArgumentError(f"invalid client settings: {error}") from None
        types = EventTypes()
        known: list[type[Event]] = [LinkDown, LinkUp, *event_types]
        for cls in known:
            types.register(cls)
        self.codec = Codec(types)
        self._link = StreamLink(self.id, self.config, self.codec)
        self._bus: Bus | None = None
        self._subscribers: dict[str, Subscriber] = {}
        self._queued: deque[tuple[Message, ReplyCallback | None]] = deque()
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._disconnected = threading.Event()
        self._disconnected.set()
        self._closer: threading.Thread | None = None
        self._local = threading.local()

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    @property
    def connected(self) -> bool:
        """Whether the client is connected and its link to Redis is up."""
        return self._bus is not None and self._link.state == "up"

    # -- connection --------------------------------------------------------

    def connect(self, timeout: float | None = None) -> None:
        """Connect to Redis and start delivering; raise :class:`LinkError` if it is unreachable.

        Messages published while disconnected are sent now.
        """
        with self._lock:
            if self._bus is not None:
                return
            bus = Bus(self.id, BusConfig(workers=4, request_timeout=self.timeout))
            for sub in self._subscribers.values():
                bus.subscribe(sub.selector, sub.callback, priority=sub.priority, id=sub.id,
                              blocking=sub.blocking)
            bus.start()
            try:
                up = self._link.start(bus, wait=timeout)
            except BaseException:
                bus.stop()
                raise
            if not up:
                self._link.stop()
                bus.stop()
                raise LinkError(f"cannot reach Redis at {self._link.url}: "
                                f"{self._link.last_error or 'no answer'}", url=self._link.url)
            self._bus = bus
            self._disconnected.clear()
            queued, self._queued = self._queued, deque()
        for message, on_reply in queued:
            bus.publish(message, on_reply=on_reply)
        log.debug("client %s connected to %s", self.id, self._link.url)

    def disconnect(self) -> None:
        """Deliver what is queued, stop every thread and close the connections; idempotent.

        From inside a callback the client stops once the callback has returned.
        """
        with self._lock:
            bus = self._bus
            if bus is None:
                return
            if bus.in_dispatcher() or getattr(self._local, "in_callback", False):
                if self._closer is None:
                    self._closer = threading.Thread(target=self.disconnect,
                                                    name="platybus-client-close")
                    self._closer.start()
                return
            self._bus = None
        bus.stop()  # first, so that its last messages still reach the link
        self._link.stop()
        if not self.durable:
            self._link.forget()
        self._closer = None
        self._disconnected.set()
        log.debug("client %s disconnected", self.id)

    def reconnect(self, attempts: int = 3, delay: float = 1.0) -> None:
        """Get connected now: try ``attempts`` times, ``delay`` s each; raise LinkError if all fail.

        A connected client whose link is down skips its backoff and waits for the
        link to come back (subscriptions and pending requests are kept); one whose
        link is up returns at once; a disconnected one connects.
        """
        if attempts < 1:
            raise ArgumentError("reconnect needs at least one attempt")
        if self._bus is not None:
            for _ in range(attempts):
                if self._link.state == "up":
                    return
                self._link.retry_now()
                if self._link.wait_up(delay):
                    return
            raise LinkError(f"Redis at {self._link.url} did not come back after {attempts} "
                            f"attempts: {self._link.last_error}", url=self._link.url)
        error: LinkError | None = None
        for attempt in range(attempts):
            try:
                self.connect(timeout=delay)
                return
            except LinkError as failure:
                error = failure
                log.info("client %s: attempt %d of %d failed: %s", self.id, attempt + 1,
                         attempts, failure)
        assert error is not None
        raise error

    def wait(self, duration: float | None = None) -> bool:
        """Let callbacks run for ``duration`` s (forever if ``None``) or until disconnected.

        Returns whether the client was disconnected meanwhile.
        """
        return self._disconnected.wait(duration)

    # -- subscriptions -----------------------------------------------------

    def subscribe(
        self,
        selector: str,
        callback: Callable[[Any], Any],
        subscriber: str | Mapping[str, Any] | None = None,
        priority: int = 100,
        *,
        blocking: bool = False,
    ) -> str:
        """Call ``callback(message)`` for each message ``selector`` matches; return its id.

        ``subscriber`` is the subscription's id, or a mapping of metadata whose ``id``
        (generated if missing) names it; :meth:`get_subscriber_by_identifier` gives it
        back. Lower ``priority`` runs first. Callbacks run in order on one thread;
        pass ``blocking=True`` for one that may block (or call :meth:`request`): it
        then runs on a worker thread.
        """
        parsed = parse_selector(selector)
        metadata: dict[str, Any] = {}
        if isinstance(subscriber, Mapping):
            metadata = dict(subscriber)
            given = metadata.get("id")
            if given is not None and not isinstance(given, str):
                raise ArgumentError(f"subscriber id must be a string, got {given!r}")
            subscriber = given
        with self._lock:
            sub_id = subscriber if subscriber is not None else f"sub-{next(self._ids)}"
            if sub_id in self._subscribers:
                raise DuplicateSubscriberError(f"a subscriber with id {sub_id!r} already exists",
                                               subscriber=sub_id)
            metadata["id"] = sub_id
            sub = Subscriber(sub_id, parsed, self._marked(callback), priority, blocking,
                             metadata)
            if self._bus is not None:
                self._bus.subscribe(parsed, sub.callback, priority=priority, id=sub_id,
                                    blocking=blocking)
            self._subscribers[sub_id] = sub
        return sub_id

    def get_subscriber_by_identifier(self, identifier: str) -> Subscriber | None:
        """Return the subscription of that id (with its metadata), or ``None``."""
        with self._lock:
            return self._subscribers.get(identifier)

    def _marked(self, callback: Callable[[Any], Any]) -> Callable[[Any], Any]:
        # Lets disconnect() know it was called from a callback, whose thread it must not join.
        local = self._local

        def run(message: Any) -> Any:
            local.in_callback = True
            try:
                return callback(message)
            finally:
                local.in_callback = False

        return run

    def unsubscribe(self, subscriber: str) -> bool:
        """Remove a subscription; return whether it existed."""
        with self._lock:
            if self._subscribers.pop(subscriber, None) is None:
                return False
            if self._bus is not None:
                self._bus.unsubscribe(subscriber)
        return True

    # -- sending -----------------------------------------------------------

    def publish(
        self,
        event: Message,
        on_reply: ReplyCallback | None = None,
        on_error: ErrorPolicy = "raise",
        *,
        synchronous: bool = False,
    ) -> Any:
        """Publish an event (or a request, whose response goes to ``on_reply``); return its id.

        While disconnected, messages are queued (up to ``max_queued``) and sent on
        connect. ``on_error`` says what a refused message does: ``"raise"``,
        ``"log"``, ``"ignore"``, or a callable given the error. With
        ``synchronous=True`` the event only runs this client's own subscribers, now,
        and their results come back as a list; it is not sent to Redis.
        """
        message = event if event.origin is not None else event.replace(origin=self.id)
        if synchronous:
            return self._publish_locally(message, on_error)
        if on_reply is not None:
            on_reply = self._marked(on_reply)
        try:
            self._check(message, on_reply)
            with self._lock:
                bus = self._bus
                if bus is None:
                    if len(self._queued) >= self.max_queued:
                        raise QueueFullError(f"{self.max_queued} messages are already queued "
                                             "while disconnected", message_id=message.id)
                    self._queued.append((message, on_reply))
                    return message.id
            bus.publish(message, on_reply=on_reply)
        except PlatybusError as error:
            self._failed(error, on_error)
        return message.id

    def _publish_locally(self, message: Message, on_error: ErrorPolicy) -> list[Any]:
        try:
            if not isinstance(message, Event):
                raise ArgumentError("synchronous=True publishes events only")
            with self._lock:
                subscribers = sorted(self._subscribers.values(), key=lambda s: s.priority)
        except PlatybusError as error:
            self._failed(error, on_error)
            return []
        # In the caller's thread, lowest priority first, as the bus orders them.
        return [sub.callback(message) for sub in subscribers if sub.selector.matches(message)]

    def _check(self, message: Message, on_reply: ReplyCallback | None) -> None:
        if on_reply is not None and not isinstance(message, Request):
            raise ArgumentError("on_reply only applies to requests")
        if isinstance(message, Request) and message.target in (None, "*", self.id):
            raise ArgumentError("a client's request needs the id of the node to run it "
                                "(target)", action=message.action)
        try:
            self.codec.check(message)
        except DecodeError as error:
            raise ArgumentError(f"cannot send {message.kind}: {error}") from None

    def _failed(self, error: PlatybusError, on_error: ErrorPolicy) -> None:
        if on_error == "raise":
            raise error
        if on_error == "log":
            log.error("publish failed: %s", error)
        elif callable(on_error):
            on_error(error)

    def request(
        self,
        target: str,
        action: str,
        args: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Response:
        """Run ``action`` on node ``target`` and return its response (or a timeout error)."""
        bus = self._bus
        if bus is None:
            raise NodeNotReady("the client is not connected: call connect() first")
        request = Request(action=action, args=args or {}, target=target, origin=self.id,
                          timeout=timeout if timeout is not None else self.timeout)
        self._check(request, None)
        return bus.request(request, timeout=request.timeout)

    # -- introspection -----------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Return the link's state and counters, and the client's own bus counters."""
        bus = self._bus
        return {
            "id": self.id,
            "queued": len(self._queued),
            **self._link.health(),
            "bus": msgspec.to_builtins(bus.stats()) if bus is not None else None,
        }

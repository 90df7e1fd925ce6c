"""An in-memory link: nodes in one process exchange messages without Redis.

:class:`LoopbackHub` stands where Redis stands: one event stream and one inbox
per node, with a consumer group per node on the event stream. A
:class:`LoopbackLink` has the interface the node uses of the Redis link
(:class:`~platybus.link.stream_link.StreamLink`): it is the bus's transport, it
fans this node's events out through its ``outgoing`` selector, and what it
receives passes the same code as what the Redis link receives (envelopes and
signatures of :mod:`~platybus.link.protocol`, the checks, de-duplication and
``accept`` filter of :mod:`~platybus.link.inbound`) before it is published on
the local bus. Messages are encoded on the way out and decoded on the way in,
so they cross as they would cross Redis.

It has no thread: ``send`` delivers at once on the sending thread. Entries for
a node that is not linked at the moment wait in the hub, as they would in
Redis, and are delivered when it links (its first link starts at the end of
the event stream, as a new consumer group does). Used by the tests to join
two in-process nodes::

    hub = LoopbackHub()
    LoopbackLink("a", hub, a.codec).start(a.bus)
    LoopbackLink("b", hub, b.codec).start(b.bus)
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from typing import Any, Literal

from platybus.bus import Bus, Subscription
from platybus.codec import Codec
from platybus.errors import DecodeError, LinkError, PlatybusError
from platybus.expr import Selector, parse_selector
from platybus.link.inbound import Inbound, LinkStats, Throttle
from platybus.link.protocol import Envelope, LinkConfig, StreamKeys
from platybus.messages import Event, Message

log = logging.getLogger("platybus.link")

State = Literal["stopped", "up"]
Entry = tuple[bytes, dict[bytes, bytes]]

URL = "memory://loopback"


class LoopbackHub:
    """The in-memory streams that loopback links share: what Redis is to the real link."""

    def __init__(self, prefix: str = "platybus") -> None:
        self.keys = StreamKeys(prefix)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._links: dict[str, LoopbackLink] = {}
        # Entries waiting for a node that is not linked: its inbox and its event-group backlog.
        self._waiting: dict[str, deque[tuple[str, Entry]]] = {}
        self._groups: set[str] = set()

    def _entry_id(self) -> bytes:
        return f"{int(time.time() * 1000)}-{next(self._ids)}".encode()

    def attach(self, link: LoopbackLink) -> list[tuple[str, Entry]]:
        """Link a node; return the entries that waited for it."""
        with self._lock:
            if link.node_id in self._links:
                raise LinkError(f"node {link.node_id!r} is already linked to this hub")
            self._links[link.node_id] = link
            self._groups.add(link.node_id)
            return list(self._waiting.pop(link.node_id, ()))

    def detach(self, node_id: str) -> None:
        """Unlink a node; entries for it wait from now on."""
        with self._lock:
            self._links.pop(node_id, None)

    def forget(self, node_id: str) -> None:
        """Remove a node's group and inbox, with what waited there."""
        with self._lock:
            self._groups.discard(node_id)
            self._waiting.pop(node_id, None)

    def add(self, stream: str, fields: dict[bytes, bytes]) -> None:
        """Append an entry to a stream and hand it to each reader of that stream."""
        entry: Entry = (self._entry_id(), fields)
        with self._lock:
            if stream == self.keys.events:
                readers = list(self._groups)
            else:
                readers = [stream.removeprefix(self.keys.inbox(""))]
            deliver: list[LoopbackLink] = []
            for node_id in readers:
                link = self._links.get(node_id)
                if link is None:
                    self._waiting.setdefault(node_id, deque()).append((stream, entry))
                else:
                    deliver.append(link)
        # Outside the lock: receiving publishes on a bus, whose handlers may send again.
        for link in deliver:
            link.receive(stream, [entry])


class LoopbackLink:
    """Carries messages between a bus and a :class:`LoopbackHub`; restartable."""

    def __init__(
        self,
        node_id: str,
        hub: LoopbackHub,
        codec: Codec | None = None,
        *,
        config: LinkConfig | None = None,
        outgoing: Selector | None = None,
        accept: Selector | None = None,
    ) -> None:
        self.node_id = node_id
        self.hub = hub
        self.config = config or LinkConfig(prefix=hub.keys.prefix)
        self.codec = codec or Codec()
        self.keys = hub.keys
        self.envelope = Envelope(self.codec, self.config.secret)
        self.outgoing = outgoing or parse_selector("*")
        self.stats = LinkStats()
        self.inbound = Inbound(node_id, self.keys, self.envelope, self.config,
                               accept or parse_selector("*"), self.stats, Throttle())
        self.dedup = self.inbound.dedup
        self.url = URL
        self.state: State = "stopped"
        self.last_error = ""
        self.down_since = 0.0
        self._bus: Bus | None = None
        self._subscription: Subscription | None = None
        self._up = threading.Event()

    # -- lifecycle ---------------------------------------------------------

    def start(self, bus: Bus, wait: float | None = None) -> bool:
        """Attach to ``bus`` and to the hub, and deliver what waited; always up at once."""
        if self._bus is not None:
            raise LinkError("the link is already started")
        self._bus = bus
        bus.attach_transport(self)
        self._subscription = bus.subscribe(
            "kind=event", self._fan_out, priority=-1_000_000, id=f"platybus.link.{self.node_id}")
        waiting = self.hub.attach(self)
        self.state = "up"
        self._up.set()
        for stream, entry in waiting:
            self.receive(stream, [entry])
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Detach from the bus and the hub; entries for this node wait in the hub. Idempotent."""
        bus, self._bus = self._bus, None
        if bus is None:
            return
        self.hub.detach(self.node_id)
        bus.attach_transport(None)
        if self._subscription is not None:
            self._subscription.unsubscribe()
            self._subscription = None
        self._up.clear()
        self.state = "stopped"

    def wait_up(self, timeout: float | None = None) -> bool:
        """Wait until the link is up; return whether it is."""
        return self._up.wait(timeout)

    def retry_now(self) -> None:
        """Nothing to retry: an in-memory link is never down."""

    def forget(self) -> None:
        """Remove this node's group and inbox from the hub (for throwaway ids)."""
        self.hub.forget(self.node_id)

    @property
    def buffered(self) -> int:
        """Messages waiting to be written: none, sending is immediate."""
        return 0

    def health(self) -> dict[str, Any]:
        """Return the link's state and its counters, as the Redis link reports them."""
        return {"link": self.state, "url": self.url, "prefix": self.keys.prefix,
                "signed": self.envelope.signed, "buffered": 0, "down_since": None,
                "last_error": None, **self.stats.as_dict()}

    # -- sending -----------------------------------------------------------

    def send(self, message: Message) -> None:
        """Hand a message for other nodes to the hub (the bus's transport interface)."""
        if self._bus is None:
            log.debug("link stopped: %s %s not sent", message.kind, message.id)
            return
        if message.origin is None:
            message = message.replace(origin=self.node_id)
        try:
            data = self.codec.encode(message)
        except DecodeError as failure:
            self.stats.write_errors += 1
            log.error("cannot send %s %s: %s", message.kind, message.id, failure)
            return
        stream = self.keys.stream_for(message)
        for fields in self.envelope.entries(stream, self.node_id, [data], 1):
            self.hub.add(stream, fields)
            self.stats.entries_written += 1
        self.stats.sent += 1

    def _fan_out(self, event: Event) -> None:
        origin = event.origin
        if origin is not None and origin != self.node_id:
            return
        target = event.target
        if target == "*" or (target is None and self.outgoing.matches(event)):
            self.send(event)

    # -- receiving ---------------------------------------------------------

    def receive(self, stream: str, entries: list[Entry]) -> None:
        """Check, de-duplicate and filter entries as the Redis link does; publish the rest."""
        bus = self._bus
        if bus is None:
            return
        messages, _ = self.inbound.sort(stream, entries, time.time() * 1000)
        for message in messages:
            try:
                bus.publish(message)
            except PlatybusError as error:
                log.warning("bus refused %s %s from %s: %s", message.kind, message.id,
                            message.origin, error)
                continue
            self.stats.delivered += 1

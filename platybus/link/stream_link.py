"""The link between a local bus and Redis streams: one reader thread, one writer thread.

The bus hands the link (its transport) the messages for other nodes; the link
also sends this node's events that its ``outgoing`` selector picks. The writer
takes what waits in the buffer (:mod:`platybus.link.outgoing`) and batches it into one
pipeline: several messages per stream
entry, ``XADD ... MAXLEN ~`` per stream and the pending ``XACK``\\ s. The reader
blocks in one ``XREADGROUP`` over the event stream and this node's inbox,
checks and decodes entries, drops duplicates (:mod:`platybus.link.inbound`) and
publishes what is left on the bus; an entry is acknowledged once its messages
are safe (:meth:`~platybus.bus.Bus.deliver`: dispatched, and written to the
intake journal by the hooks that will run for them).
After every (re)connection the reader first takes back the entries left
pending by a previous run (``XAUTOCLAIM``). See ``docs/multi-node.md``.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from concurrent.futures import Future
from typing import Any, Literal

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from platybus.bus import Bus, Subscription
from platybus.codec import Codec
from platybus.errors import DecodeError, LinkError, PlatybusError, QueueFullError
from platybus.expr import Selector, parse_selector
from platybus.link.inbound import Inbound, LinkStats, Throttle
from platybus.link.outgoing import Outgoing
from platybus.link.protocol import (
    Envelope,
    LinkConfig,
    LinkDown,
    LinkEventData,
    LinkUp,
    StreamKeys,
    mask_url,
)
from platybus.messages import ErrorInfo, Event, Message, Request, Response

log = logging.getLogger("platybus.link")

State = Literal["stopped", "connecting", "up", "down"]

_NETWORK_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)


class StreamLink:
    """Carries messages between a bus and Redis; restartable, so a client can reconnect."""

    def __init__(
        self,
        node_id: str,
        config: LinkConfig,
        codec: Codec,
        *,
        outgoing: Selector | None = None,
        accept: Selector | None = None,
    ) -> None:
        self.node_id = node_id
        self.config = config
        self.codec = codec
        self.keys = StreamKeys(config.prefix)
        self.inbox = self.keys.inbox(node_id)
        self.envelope = Envelope(codec, config.secret)
        self.outgoing = outgoing or parse_selector("*")
        self.stats = LinkStats()
        self._throttle = Throttle()
        self.inbound = Inbound(node_id, self.keys, self.envelope, config,
                               accept or parse_selector("*"), self.stats, self._throttle)
        self.dedup = self.inbound.dedup
        self.url = mask_url(config.url)
        self.state: State = "stopped"
        self.last_error = ""
        self.down_since = 0.0
        self._streams = {key.encode(): key for key in (self.keys.events, self.inbox)}
        self._buffer = Outgoing(config, self.stats)
        self._last_ids: dict[str, bytes] = {}
        self._state_lock = threading.Lock()
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._bus: Bus | None = None
        self._subscription: Subscription | None = None
        self._reader: threading.Thread | None = None
        self._writer: threading.Thread | None = None
        self._rclient: redis.Redis | None = None
        self._wclient: redis.Redis | None = None
        self._reader_id: int | None = None
        self._clock_offset_ms = 0.0
        self._inflight: set[Future[Any]] = set()

    # -- lifecycle ---------------------------------------------------------

    def start(self, bus: Bus, wait: float | None = None) -> bool:
        """Attach to ``bus`` and start the threads; wait up to ``wait`` s for Redis.

        Returns whether the link is up. Down or not, it keeps reconnecting.
        """
        if self._reader is not None:
            raise LinkError("the link is already started")
        self._bus = bus
        self._stop.clear()
        self._wake.clear()
        self._connected.clear()
        self._buffer.open()
        self.state = "connecting"
        self._rclient = self._client(self.config.block + self.config.connect_timeout, True)
        self._wclient = self._client(self.config.connect_timeout, False)
        bus.attach_transport(self)
        self._subscription = bus.subscribe(
            "kind=event", self._fan_out, priority=-1_000_000, id=f"platybus.link.{self.node_id}")
        self._reader = threading.Thread(target=self._read_loop, name="platybus-link-reader")
        self._writer = threading.Thread(target=self._write_loop, name="platybus-link-writer")
        self._reader.start()
        self._writer.start()
        return self._connected.wait(self.config.connect_timeout if wait is None else wait)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading, let handled entries be acknowledged, flush, stop the threads.

        Idempotent. Messages that could not be written stay buffered for the next
        :meth:`start` (they are lost if the process ends).
        """
        if self._reader is None or self._writer is None:
            return
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        bus = self._bus
        if bus is not None:
            bus.attach_transport(None)
        if self._subscription is not None:
            self._subscription.unsubscribe()
            self._subscription = None
        while self._reader.is_alive() and time.monotonic() < deadline:
            self._unblock_reader()
            self._reader.join(0.1)
        # Entries already on the bus get acknowledged once they are safe (journaled).
        for future in list(self._inflight):
            with contextlib.suppress(Exception):  # a timeout only means no ack: read again later
                future.exception(max(0.0, min(1.0, deadline - time.monotonic())))
        self._buffer.close()
        self._writer.join(max(0.1, deadline - time.monotonic()))
        for name, thread in (("reader", self._reader), ("writer", self._writer)):
            if thread.is_alive():
                log.error("link %s thread did not stop within %.1fs", name, timeout)
        left = len(self._buffer)
        if left:
            log.warning("link stopped with %d message(s) not yet written to Redis", left)
        for client in (self._rclient, self._wclient):
            if client is not None:
                try:
                    client.close()
                except Exception:
                    log.debug("closing a Redis client failed", exc_info=True)
        self._reader = self._writer = None
        self._rclient = self._wclient = None
        self._inflight.clear()
        self.state = "stopped"

    def _client(self, socket_timeout: float, single: bool) -> redis.Redis:
        # Reconnection is ours (backoff, buffering, events), so redis-py must not retry.
        return redis.Redis.from_url(
            self.config.url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=min(socket_timeout, self.config.connect_timeout),
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),
            # The reader keeps one connection, so CLIENT UNBLOCK can reach its blocked read.
            max_connections=1 if single else None,
            client_name=f"platybus-{self.node_id}",
        )

    def _unblock_reader(self) -> None:
        if self._reader_id is None or self._wclient is None:
            return
        try:
            self._wclient.client_unblock(self._reader_id)
        except Exception:
            log.debug("could not unblock the link reader", exc_info=True)

    def wait_up(self, timeout: float | None = None) -> bool:
        """Wait until the link is up; return whether it is."""
        return self._connected.wait(timeout)

    def retry_now(self) -> None:
        """Cut short the reconnection backoff: both threads try Redis again at once."""
        self._wake.set()
        self._buffer.wake()

    def forget(self) -> None:
        """Remove this id's group on the event stream and its inbox (for throwaway ids)."""
        client = self._client(min(1.0, self.config.connect_timeout), False)
        try:
            client.xgroup_destroy(self.keys.events, self.node_id)
            client.delete(self.inbox)
        except (*_NETWORK_ERRORS, redis.ResponseError) as error:
            log.info("could not remove the streams of %s: %s", self.node_id, error)
        finally:
            client.close()

    @property
    def buffered(self) -> int:
        """Messages waiting to be written to Redis."""
        return len(self._buffer)

    def health(self) -> dict[str, Any]:
        """Return the link's state, where it points and its counters."""
        return {
            "link": self.state,
            "url": self.url,
            "prefix": self.config.prefix,
            "signed": self.envelope.signed,
            "buffered": self.buffered,
            "down_since": self.down_since or None,
            "last_error": self.last_error or None,
            **self.stats.as_dict(),
        }

    # -- state -------------------------------------------------------------

    def _set_up(self) -> None:
        with self._state_lock:
            previous = self.state
            if previous in ("up", "stopped"):
                return
            self.state = "up"
            down_for = time.time() - self.down_since if self.down_since else 0.0
            self.down_since = 0.0
        self._connected.set()
        self._buffer.wake()
        if previous == "down":
            log.info("link to %s is back after %.1fs", self.url, down_for)
        else:
            log.info("link to %s is up (prefix %s)", self.url, self.config.prefix)
        self._announce(LinkUp(origin=self.node_id, data=LinkEventData(
            node_id=self.node_id, url=self.url, down_for=round(down_for, 3))))

    def _set_down(self, error: BaseException) -> None:
        reason = f"{type(error).__name__}: {error}"
        with self._state_lock:
            self.last_error = reason
            if self.state in ("down", "stopped") or self._stop.is_set():
                return
            was = self.state
            self.state = "down"
            self.down_since = time.time()
            self.stats.reconnects += 1
        self._connected.clear()
        log.warning("link to %s is %s: %s; reconnecting with backoff", self.url,
                    "down" if was == "up" else "not connected", reason)
        self._announce(LinkDown(origin=self.node_id, data=LinkEventData(
            node_id=self.node_id, url=self.url, reason=reason)))

    def _announce(self, event: Event) -> None:
        if self._bus is None:
            return
        try:
            self._bus.publish(event)
        except PlatybusError:
            log.debug("could not publish %s", event.type, exc_info=True)

    def _backoff(self, delay: float) -> float:
        self._wake.wait(delay * (0.5 + random.random() / 2))  # noqa: S311 - jitter only
        if not self._stop.is_set():
            self._wake.clear()
        return min(delay * 2, self.config.reconnect_max)

    # -- sending -----------------------------------------------------------

    def send(self, message: Message) -> None:
        """Queue a message for Redis (the bus's transport interface); never blocks for long."""
        if message.origin is None:
            message = message.replace(origin=self.node_id)
        if self._reader is None:
            log.debug("link stopped: %s %s not sent", message.kind, message.id)
            return
        taken, dropped = self._buffer.put(message, self.state == "up")
        if not taken:
            log.debug("link stopped: %s %s not sent", message.kind, message.id)
        if dropped is not None:
            self._on_dropped(dropped)

    def _on_dropped(self, message: Message) -> None:
        if self._throttle.allow("dropped"):
            log.warning("link buffer full (%d messages, policy %s): dropped %s %s",
                        self.config.buffer_size, self.config.buffer_policy, message.kind,
                        message.id)
        if isinstance(message, Request) and message.origin == self.node_id and self._bus:
            # Its caller would otherwise wait for a timeout that says nothing of why.
            error = LinkError(f"request {message.id} for node {message.target!r} dropped: the "
                              "link to Redis is down and its outgoing buffer is full")
            try:
                self._bus.publish(Response(request_id=message.id, origin=self.node_id,
                                           parent_id=message.id,
                                           error=ErrorInfo.from_exception(error)))
            except PlatybusError:
                log.debug("could not publish the drop error", exc_info=True)

    def _fan_out(self, event: Event) -> None:
        origin = event.origin
        if origin is not None and origin != self.node_id:
            return
        target = event.target
        if target == "*" or (target is None and self.outgoing.matches(event)):
            self.send(event)

    def _write_loop(self) -> None:
        delay = self.config.reconnect_min
        outgoing = self._buffer
        while True:
            taken = outgoing.take()
            if taken is None:
                return
            batch, acks = taken
            try:
                try:
                    self._write(batch, acks)
                except _NETWORK_ERRORS:
                    if self.state != "up":
                        raise
                    # Likely an idle connection that the server closed: one fresh try.
                    self._write(batch, acks)
                delay = self.config.reconnect_min
                if self.state == "down" and self._reader_id is not None:
                    self._set_up()
            except _NETWORK_ERRORS as error:
                for message in outgoing.put_back(batch, acks):
                    self._on_dropped(message)
                if outgoing.closed:
                    return
                self._set_down(error)
                # Woken early when the reader reconnects.
                outgoing.wait(delay * (0.5 + random.random() / 2))  # noqa: S311 - jitter
                delay = min(delay * 2, self.config.reconnect_max)
            except Exception:
                log.exception("link writer failed on a batch of %d messages", len(batch))
                self.stats.write_errors += 1

    def _write(self, batch: list[Message], acks: dict[str, list[bytes]]) -> None:
        assert self._wclient is not None
        streams: dict[str, list[bytes]] = {}
        stream_for = self.keys.stream_for
        encode = self.codec.encode
        for message in batch:
            try:
                data = encode(message)
            except DecodeError as failure:
                self.stats.write_errors += 1
                log.error("cannot send %s %s: %s", message.kind, message.id, failure)
                continue
            streams.setdefault(stream_for(message), []).append(data)
        pipe = self._wclient.pipeline(transaction=False)
        entries = 0
        events = self.keys.events
        for stream, items in streams.items():
            maxlen = self.config.events_maxlen if stream == events else self.config.inbox_maxlen
            for fields in self.envelope.entries(stream, self.node_id, items,
                                                self.config.entry_messages):
                pipe.xadd(stream, fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
                entries += 1
        for stream, ids in acks.items():
            pipe.xack(stream, self.node_id, *ids)
        results = pipe.execute(raise_on_error=False)
        failed = [r for r in results if isinstance(r, Exception)]
        for problem in failed:
            if isinstance(problem, _NETWORK_ERRORS):
                raise problem
        if failed:
            self.stats.write_errors += len(failed)
            log.error("Redis refused %d of %d commands: %s", len(failed), len(results), failed[0])
        self.stats.sent += sum(len(items) for items in streams.values())
        self.stats.entries_written += entries

    # -- receiving ---------------------------------------------------------

    def _read_loop(self) -> None:
        delay = self.config.reconnect_min
        ready = False
        while not self._stop.is_set():
            try:
                if not ready:
                    self._setup()
                    ready = True
                    delay = self.config.reconnect_min
                    self._set_up()
                self._read_once()
            except _NETWORK_ERRORS as error:
                ready = False
                self._reader_id = None
                if self._stop.is_set():
                    break
                self._set_down(error)
                delay = self._backoff(delay)
            except redis.ResponseError as error:
                ready = False
                if "NOGROUP" in str(error):
                    log.warning("link: a stream or group was removed (%s); creating it again",
                                error)
                    continue
                self._set_down(error)
                delay = self._backoff(delay)
            except Exception as error:  # never lose the reader
                ready = False
                log.exception("link reader failed")
                self._set_down(error)
                delay = self._backoff(delay)

    def _setup(self) -> None:
        client = self._rclient
        assert client is not None
        client.ping()
        seconds, micros = client.time()
        self._clock_offset_ms = seconds * 1000 + micros / 1000 - time.time() * 1000
        # A group lost with its stream (Redis restarted without persistence) resumes after
        # the last entry this run has read, not at the end, so nothing between is skipped.
        for stream, start in ((self.keys.events, self._last_ids.get(self.keys.events, b"$")),
                              (self.inbox, self._last_ids.get(self.inbox, b"0"))):
            try:
                client.xgroup_create(stream, self.node_id, id=start, mkstream=True)
            except redis.ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise
        self._reader_id = int(client.client_id())
        for stream in (self.keys.events, self.inbox):
            self._reclaim(stream)

    def _reclaim(self, stream: str) -> None:
        client = self._rclient
        assert client is not None
        cursor: bytes | str = "0-0"
        for _ in range(100_000):
            reply = client.xautoclaim(stream, self.node_id, self.node_id, 0, cursor,
                                      count=self.config.read_count)
            cursor, entries = reply[0], reply[1]
            if entries:
                self.stats.reclaimed += len(entries)
                self._handle(stream, entries)
            if cursor in (b"0-0", "0-0"):
                return

    def _read_once(self) -> None:
        client = self._rclient
        assert client is not None
        reply: Any = client.xreadgroup(
            self.node_id, self.node_id, {self.keys.events: ">", self.inbox: ">"},
            count=self.config.read_count, block=int(self.config.block * 1000))
        if not reply:
            return
        for stream, entries in reply:
            name = self._streams.get(stream) if isinstance(stream, bytes) else stream
            if name is not None:
                self._handle(name, entries)

    def _handle(self, stream: str, entries: list[Any]) -> None:
        redis_now = time.time() * 1000 + self._clock_offset_ms
        messages, ack = self.inbound.sort(stream, entries, redis_now)
        if ack:
            self._last_ids[stream] = ack[-1]
        self._deliver(stream, messages, ack)

    def _deliver(self, stream: str, messages: list[Message], ack: list[bytes]) -> None:
        bus = self._bus
        if not messages or bus is None:
            if ack:
                self._buffer.ack(stream, ack)
            return
        last = len(messages) - 1
        future: Future[Any] | None = None
        for index, message in enumerate(messages):
            accepted, future = self._publish(bus, message, tracked=index == last)
            if not accepted:
                return  # not acknowledged: read again after the next (re)connection
        self.stats.delivered += len(messages)
        if future is None:
            self._buffer.ack(stream, ack)
            return
        self._inflight.add(future)

        def acknowledge(done: Future[Any]) -> None:
            self._inflight.discard(done)
            if done.exception() is None:
                self._buffer.ack(stream, ack)
            # else: not safe with this node (it stopped first): left pending, read again

        future.add_done_callback(acknowledge)

    def _publish(self, bus: Bus, message: Message,
                 tracked: bool) -> tuple[bool, Future[Any] | None]:
        # The bus may push back (queue full): wait and retry rather than lose the message.
        delay = 0.005
        while True:
            try:
                if tracked:
                    return True, bus.deliver(message)
                bus.publish(message)
                return True, None
            except QueueFullError:
                if self._stop.wait(delay):
                    return False, None
                delay = min(delay * 2, 0.5)
            except PlatybusError as error:
                log.warning("bus refused %s %s from %s: %s", message.kind, message.id,
                            message.origin, error)
                return False, None

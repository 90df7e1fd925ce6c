"""Live streams of the HTTP backend (``GET /events`` as SSE, ``GET /ws``).

Each client gets one bounded buffer between the bus and its socket.

The bus dispatcher must never wait for a network client. Each stream client
subscribes with its own selector; its bus handler only appends to a bounded
buffer and, at most once per batch, schedules a wake-up on the server's event
loop with ``call_soon_threadsafe``. A client whose buffer overflows is dropped:
its subscription is removed at once and its connection aborted, so a stalled
reader costs the bus one ``len()`` check per event and nothing more.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
from collections import deque
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from platybus.errors import (
    BusError,
    DecodeError,
    NodeNotReady,
    PlatybusError,
    ScopeMissing,
    SelectorError,
)
from platybus.expr import Selector, parse_selector
from platybus.messages import Event, Message

from .access import Identity
from .gate import IDENTITY, Gate

if TYPE_CHECKING:
    from collections.abc import Callable

    from platybus.bus import Bus, Subscription

log = logging.getLogger("platybus.backends.http")

# Streams watch before handlers can end the chain with Event.stop(): an observer
# should see every event its filter matches.
STREAM_PRIORITY = -1000

QUEUE_FULL = "queue_full"
SHUTDOWN = "shutdown"
WRITE_ERROR = "write_error"
DROP_REASONS = (QUEUE_FULL, WRITE_ERROR, SHUTDOWN)

# What may stand in an SSE "id:" or "event:" field without breaking the framing.
_SSE_FIELD = re.compile(r"[^\r\n\x00]+")

# Without a filter a stream carries events only; "*" adds requests and responses.
DEFAULT_FILTER = "kind=event"


class StreamClient:
    """One live stream: a bus subscription feeding a bounded buffer drained by the loop."""

    def __init__(
        self,
        bus: Bus,
        selector: Selector,
        loop: asyncio.AbstractEventLoop,
        limit: int,
        abort: Callable[[], None],
    ) -> None:
        self.bus = bus
        self.selector = selector
        self.loop = loop
        self.limit = limit
        self._abort = abort
        self._buffer: deque[Message] = deque()
        self._signal = asyncio.Event()
        self._scheduled = False
        self.closed = False
        self.drop_reason: str | None = None
        self._subscription: Subscription | None = None

    def subscribe(self) -> None:
        """Start receiving matching messages from the bus."""
        self._subscription = self.bus.subscribe(
            self.selector, self.offer, priority=STREAM_PRIORITY
        )

    def offer(self, message: Message) -> None:
        """Buffer a message for the client; runs on the bus dispatcher and never waits."""
        if self.closed:
            return
        if len(self._buffer) >= self.limit:
            self.closed = True
            self.drop_reason = QUEUE_FULL
            self._unsubscribe()
            self._schedule()
            return
        self._buffer.append(message)
        if not self._scheduled:
            self._schedule()

    def put(self, message: Message) -> None:
        """Buffer a message from the loop thread itself (a websocket reply)."""
        if not self.closed:
            self._buffer.append(message)
            self._signal.set()

    def _schedule(self) -> None:
        self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the loop is closed: the server is gone, nothing to wake
            self.closed = True

    def _wake(self) -> None:
        self._scheduled = False
        if self.drop_reason == QUEUE_FULL:
            # The writer may be parked in a drain that a stalled reader never
            # releases: cut the connection so the handler returns.
            self._abort()
        self._signal.set()

    async def next_batch(self, timeout: float) -> list[Message] | None:
        """Wait up to ``timeout`` for messages; ``[]`` on a quiet timeout, ``None`` once closed."""
        if not self._buffer and not self.closed:
            self._signal.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._signal.wait()
            except TimeoutError:
                return []
        if self.closed and self.drop_reason is not None:
            return None
        batch = list(self._buffer)
        self._buffer.clear()
        if not batch and self.closed:
            return None
        return batch

    def close(self, reason: str | None = None) -> None:
        """End the stream (``reason`` if it is a drop); idempotent; loop thread only."""
        if reason is not None and self.drop_reason is None:
            self.drop_reason = reason
        self.closed = True
        self._unsubscribe()
        self._signal.set()

    def _unsubscribe(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            try:
                subscription.unsubscribe()
            except BusError:
                log.debug("stream unsubscribe failed", exc_info=True)


def sse_frame(message: Message, payload: bytes) -> bytes:
    """Render one message as a Server-Sent Events frame."""
    name = getattr(message, "type", None) or message.kind
    if not _SSE_FIELD.fullmatch(name):  # a foreign type must not break the framing
        name = message.kind
    if _SSE_FIELD.fullmatch(message.id):
        return b"id: %s\nevent: %s\ndata: %s\n\n" % (
            message.id.encode(), name.encode(), payload)
    return b"event: %s\ndata: %s\n\n" % (name.encode(), payload)



class StreamRoutes:
    """The ``GET /events`` (SSE) and ``GET /ws`` (websocket) handlers of an http backend."""

    def __init__(self, gate: Gate, send_event: Callable[[Event], None],
                 log: logging.Logger) -> None:
        self.gate = gate
        self.send_event = send_event
        self.log = log
        self.clients: set[StreamClient] = set()
        self.dropped: collections.Counter[str] = collections.Counter()

    def close_all(self) -> None:
        """End every stream: the server is shutting down."""
        for client in list(self.clients):
            client.close(SHUTDOWN)

    def _selector(self, request: web.Request) -> Selector:
        text = request.query.get("filter", "").strip() or DEFAULT_FILTER
        return parse_selector(text)

    async def sse(self, request: web.Request) -> web.StreamResponse:
        """Serve ``GET /events``: matching messages as Server-Sent Events until closed."""
        denied = self.gate.denied(request, "/events", needs_ready=False)
        if denied is not None:
            return denied
        try:
            selector = self._selector(request)
        except SelectorError as error:
            return self.gate.error("/events", 400, error)
        transport = request.transport
        client = StreamClient(self.gate.context.bus, selector, asyncio.get_running_loop(),
                              self.gate.config.stream_queue,
                              transport.abort if transport is not None else _nothing)
        self.clients.add(client)
        self.gate.requests["/events", 200] += 1
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no"})
        try:
            client.subscribe()
            await response.prepare(request)
            await response.write(b": connected\n\n")
            encode = self.gate.context.codec.encode
            while True:
                batch = await client.next_batch(self.gate.config.heartbeat)
                if batch is None:
                    break
                if not batch:
                    await response.write(b": ping\n\n")
                    continue
                await response.write(b"".join(sse_frame(m, encode(m)) for m in batch))
        except (ConnectionError, RuntimeError):
            # A reader that went away is not a drop; a write that failed otherwise is.
            if client.drop_reason is None and not client.closed:
                client.close(WRITE_ERROR if not _gone(request) else None)
        finally:
            self._end_stream(client)
        return response

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        """Serve ``GET /ws``: stream matching messages, and take events and requests in."""
        denied = self.gate.denied(request, "/ws", needs_ready=False)
        if denied is not None:
            return denied
        try:
            selector = self._selector(request)
        except SelectorError as error:
            return self.gate.error("/ws", 400, error)
        ws = web.WebSocketResponse(heartbeat=self.gate.config.heartbeat,
                                   max_msg_size=self.gate.config.max_body)
        transport = request.transport
        client = StreamClient(self.gate.context.bus, selector, asyncio.get_running_loop(),
                              self.gate.config.stream_queue,
                              transport.abort if transport is not None else _nothing)
        self.clients.add(client)
        self.gate.requests["/ws", 101] += 1
        reader: asyncio.Task[None] | None = None
        try:
            client.subscribe()
            await ws.prepare(request)
            reader = asyncio.create_task(self._read_websocket(ws, client, request))
            encode = self.gate.context.codec.encode
            while True:
                batch = await client.next_batch(3600.0)
                if batch is None:
                    break
                for message in batch:
                    await ws.send_str(encode(message).decode())
        except (ConnectionError, RuntimeError):
            if client.drop_reason is None and not client.closed:
                client.close(WRITE_ERROR)
        finally:
            self._end_stream(client)
            if reader is not None:
                reader.cancel()
            if client.drop_reason is None or client.drop_reason == SHUTDOWN:
                await ws.close()
        return ws

    async def _read_websocket(self, ws: web.WebSocketResponse, client: StreamClient,
                              request: web.Request) -> None:
        """Publish events and run requests that a websocket client sends."""
        try:
            async for frame in ws:
                if frame.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                reply = await self._inbound(frame.data, request)
                if reply is not None:
                    client.put(reply)
        finally:
            client.close()

    async def _inbound(self, data: str | bytes, upgrade: web.Request) -> Message | None:
        gate = self.gate
        try:
            raw = gate.context.codec.bounded(data)
            kind = gate.decode(gate.kind_decoder, raw).kind
            caller: Identity = upgrade[IDENTITY]
            if kind == "event":
                if not caller.covers("publish"):
                    raise ScopeMissing(f"publishing needs the 'publish' scope; token "
                                       f"{caller.name!r} has {caller.scope!r}",
                                       needed="publish", token=caller.name)
                if not gate.ready():
                    raise NodeNotReady("the node is starting or stopping; retry shortly")
                self.send_event(gate.event_from(gate.decode(gate.event_decoder, raw)))
                return None
            if kind != "request":
                raise DecodeError(f"expected a message of kind 'event' or 'request', got {kind!r}")
            request = gate.request_from(gate.decode(gate.execute_decoder, raw))
        except PlatybusError as error:
            if isinstance(error, DecodeError):
                # A bad frame is answered with an error frame; the connection stays open.
                self.log.warning("http websocket frame from %s refused: %s",
                                 gate.access.peer(upgrade), error)
            return gate.error_response(error)
        if not gate.ready():
            return gate.error_response(NodeNotReady("the node is starting; retry shortly"),
                                       request.id)
        refusal = gate.may_execute(upgrade, request.action)
        if refusal is not None:
            return gate.error_response(refusal, request.id)
        return await gate.submit(request)

    def _end_stream(self, client: StreamClient) -> None:
        client.close()
        self.clients.discard(client)
        if client.drop_reason is not None:
            self.dropped[client.drop_reason] += 1
            if client.drop_reason != SHUTDOWN:
                self.log.warning("dropped a stream client (%s)", client.drop_reason)


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _nothing() -> None:
    return None

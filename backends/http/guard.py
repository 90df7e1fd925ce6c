"""Bounds on slow and many clients: a read timeout (slow-loris) and a cap on connections.

aiohttp has no limit on the time a client takes to send a request's head, nor
on the number of open connections. The guard adds both around the server:

- a connection that is not busy with a request (still sending its head, or idle
  between requests) for ``read_timeout`` seconds is closed; a sweep runs a few
  times per ``read_timeout``;
- a connection beyond ``max_connections`` is answered ``503`` and closed at once.

Bodies are bounded by the gate (``Gate.read_body``, the same timeout). Streams
(SSE, websocket) are busy for as long as they are open, so they are never swept.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

_BUSY_BODY = b'{"error": {"type": "TooManyConnections", "message": "too many open connections"}}'
_BUSY_REPLY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
               b"Connection: close\r\nRetry-After: 1\r\nContent-Length: "
               + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY)


class ConnectionGuard:
    """Closes connections that are too slow, and refuses those over the cap."""

    def __init__(self, read_timeout: float, max_connections: int, log: logging.Logger) -> None:
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.log = log
        self.closed: collections.Counter[str] = collections.Counter()
        self._busy: dict[Any, int] = {}
        self._idle_since: dict[Any, float] = {}
        self._server: Any = None
        self._sweeper: asyncio.Task[None] | None = None

    def attach(self, server: Any) -> None:
        """Watch the connections of an aiohttp ``web.Server`` (``runner.server``)."""
        self._server = server
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def protocol_for(self, server: Any) -> asyncio.Protocol:
        """The protocol of a new connection: aiohttp's, or a refusal when over the cap."""
        if len(server.connections) < self.max_connections:
            handler: asyncio.Protocol = server()
            return handler
        self.closed["max_connections"] += 1
        return _Refusal(self.log, len(server.connections))

    def detach(self) -> None:
        """Stop sweeping (the server is stopping)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        """Mark the connection busy while a request is being handled."""
        protocol = request.protocol
        self._busy[protocol] = self._busy.get(protocol, 0) + 1
        try:
            return await handler(request)
        finally:
            left = self._busy.pop(protocol, 1) - 1
            if left > 0:
                self._busy[protocol] = left
            self._idle_since[protocol] = time.monotonic()

    async def _sweep(self) -> None:
        interval = min(1.0, self.read_timeout / 4)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            connections = self._server.connections
            for handler in connections:
                if handler in self._busy:
                    continue
                since = self._idle_since.setdefault(handler, now)
                if now - since >= self.read_timeout:
                    self.closed["read_timeout"] += 1
                    transport = handler.transport
                    self.log.warning("http: closed a connection from %s: nothing complete "
                                     "within read_timeout (%gs)", _peer(transport),
                                     self.read_timeout)
                    handler.force_close()
                    if transport is not None:
                        transport.close()
            live = set(connections)
            for gone in [h for h in self._idle_since if h not in live]:
                del self._idle_since[gone]


class _Refusal(asyncio.Protocol):
    """Answers 503 and closes: a connection over ``max_connections``."""

    def __init__(self, log: logging.Logger, open_count: int) -> None:
        self.log = log
        self.open_count = open_count

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.log.warning("http: refused a connection from %s: %d open (max_connections)",
                         _peer(transport), self.open_count)
        assert isinstance(transport, asyncio.Transport)
        transport.write(_BUSY_REPLY)
        transport.close()


class GuardedSite(web.TCPSite):
    """A TCP site whose connections over the guard's cap are refused before aiohttp sees them."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int,
                 guard: ConnectionGuard) -> None:
        super().__init__(runner, host, port)
        self.guard = guard

    async def start(self) -> None:
        """Listen, handing each connection to :meth:`ConnectionGuard.protocol_for`."""
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: self.guard.protocol_for(server), self._host, self._port,
            backlog=self._backlog, reuse_address=self._reuse_address,
            reuse_port=self._reuse_port)


def _peer(transport: asyncio.BaseTransport | None) -> str:
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown peer"

"""What every route of the ``http`` backend shares: the gate between a client and the bus.

:class:`Gate` decides whether a request may pass (token, readiness, allowed actions),
builds error bodies, counts requests, turns bodies into messages, and submits
requests to the bus without blocking the event loop: ``submit`` publishes with an
``on_reply`` callback that runs on the bus dispatcher and hands the response back
to the loop with ``call_soon_threadsafe``, at most one wake-up per batch.

The routes (:mod:`.backend`) and the streams (:mod:`.streams`) both use a gate, so
neither touches the other's state.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fnmatch
import hmac
import re
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

from platybus.errors import (
    ActionNotAllowed,
    ArgumentError,
    DecodeError,
    NodeNotReady,
    PlatybusError,
    http_status_for,
)
from platybus.extensions import NodeContext
from platybus.messages import ErrorInfo, Event, Request, Response

from .config import EventBody, ExecuteBody, HttpConfig, InboundKind

JSON = "application/json"


class Gate:
    """Auth, readiness, error bodies, counters and bus submission for one http backend."""

    def __init__(self, config: HttpConfig, context: NodeContext) -> None:
        self.config = config
        self.context = context
        self.token = config.token.encode() if config.token is not None else None
        self.allow = compile_globs(config.allow)
        self.public = frozenset(config.public)
        self.node_ready = False
        self.stopping = False
        self.aio: asyncio.AbstractEventLoop | None = None
        self.encoder = msgspec.json.Encoder()
        self.execute_decoder = msgspec.json.Decoder(ExecuteBody)
        self.event_decoder = msgspec.json.Decoder(EventBody)
        self.kind_decoder = msgspec.json.Decoder(InboundKind)
        self.requests: collections.Counter[tuple[str, int]] = collections.Counter()
        self._waiting: dict[str, asyncio.Future[Response]] = {}
        self._replies: deque[Response] = deque()
        self._reply_wake = False

    # -- checks --------------------------------------------------------------

    def ready(self) -> bool:
        """Whether the node is ready and this server is not stopping."""
        if self.node_ready:
            return not self.stopping
        if self.stopping:
            return False
        # Only asked until the node first says it is ready; then cached.
        self.node_ready = bool(self.context.health().get("ready"))
        return self.node_ready

    def authorized(self, request: web.Request, route: str) -> bool:
        """Whether the request carries the token, or the route is public."""
        if self.token is None or route in self.public:
            return True
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), self.token)

    def denied(self, request: web.Request, route: str,
               needs_ready: bool = True, needs: str = "read") -> web.Response | None:
        """Return the refusal of a request that may not pass, else ``None``."""
        # ``needs`` names the scope a route asks for (read, publish, execute, admin); with
        # the one configured token every scope is granted, so it is not consulted yet.
        if not self.authorized(request, route):
            return self.error(route, 401, ErrorInfo(
                type="Unauthorized", message="missing or invalid bearer token"))
        if needs_ready and not self.ready():
            return self.error(route, 503, NodeNotReady(
                "the node is starting or stopping; retry shortly"))
        return None

    def allowed(self, action: str) -> bool:
        """Whether ``action`` may be called over HTTP (the ``allow`` option)."""
        return self.allow is None or bool(self.allow(action))

    def not_allowed(self, action: str) -> ActionNotAllowed:
        """The error of an action that ``allow`` keeps out."""
        return ActionNotAllowed(
            f"{action!r} may not be called over HTTP (see the http 'allow' option)",
            action=action)

    # -- answers -------------------------------------------------------------

    def json(self, route: str, status: int, body: bytes,
             headers: dict[str, str] | None = None) -> web.Response:
        """Count and return a JSON answer."""
        self.requests[route, status] += 1
        return web.Response(body=body, status=status, content_type=JSON, headers=headers)

    def error(self, route: str, status: int, error: BaseException | ErrorInfo) -> web.Response:
        """Return an error answer: a ``Response`` on /execute, ``{"error": ...}`` elsewhere."""
        info = error if isinstance(error, ErrorInfo) else ErrorInfo.from_exception(error)
        if route == "/execute":
            # /execute always answers with a Response, even when no request was made.
            body = self.encoder.encode(Response(
                request_id="", origin=self.context.node_id, error=info))
        else:
            body = self.encoder.encode({"error": info})
        return self.json(route, status, body, headers_for(status))

    def too_large(self, route: str) -> web.Response:
        """The answer to a body over ``max_body``."""
        return self.error(route, 413, ErrorInfo(
            type="PayloadTooLarge",
            message=f"the body exceeds max_body ({self.config.max_body} bytes)"))

    def error_response(self, error: BaseException, request_id: str = "") -> Response:
        """A ``Response`` that carries ``error`` (for websocket clients)."""
        return Response(request_id=request_id, origin=self.context.node_id,
                        error=ErrorInfo.from_exception(error))

    # -- bodies to messages --------------------------------------------------

    def request_from(self, spec: ExecuteBody) -> Request:
        """Build the request an /execute body (or websocket frame) asks for."""
        if spec.timeout is not None and spec.timeout <= 0:
            raise ArgumentError(f"timeout must be positive, got {spec.timeout}",
                                action=spec.action)
        return Request(action=spec.action, args=spec.args, target=spec.target or None,
                       timeout=spec.timeout, parent_id=spec.parent_id,
                       origin=self.context.node_id)

    def event_from(self, spec: EventBody) -> Event:
        """Build the event a /events body (or websocket frame) asks for."""
        # The codec checks the type's name, a typed event's data and the size limit.
        return self.context.codec.event(spec.type, spec.data, origin=self.context.node_id,
                                        target=spec.target or None, parent_id=spec.parent_id)

    # -- submitting requests -------------------------------------------------

    async def submit(self, message: Request) -> Response:
        """Publish a request and wait, without blocking the loop, for its response."""
        future: asyncio.Future[Response] = self.aio.create_future()  # type: ignore[union-attr]
        waiting = self._waiting
        waiting[message.id] = future
        try:
            self.context.bus.publish(message, on_reply=self._on_reply,
                                     timeout=message.timeout or self.config.request_timeout)
        except PlatybusError as error:
            del waiting[message.id]
            return Response(request_id=message.id, origin=self.context.node_id,
                            parent_id=message.id, error=ErrorInfo.from_exception(error))
        try:
            return await future
        finally:
            waiting.pop(message.id, None)

    def _on_reply(self, response: Response) -> None:
        # Runs on the bus dispatcher: hand over, and wake the loop once per batch.
        self._replies.append(response)
        if not self._reply_wake:
            self._reply_wake = True
            with contextlib.suppress(RuntimeError):  # the loop closed: the server stopped
                self.aio.call_soon_threadsafe(self.deliver_replies)  # type: ignore[union-attr]

    def deliver_replies(self) -> None:
        """Resolve the futures of the responses handed over since the last call."""
        self._reply_wake = False
        replies, waiting = self._replies, self._waiting
        while replies:
            response = replies.popleft()
            future = waiting.get(response.request_id)
            if future is not None and not future.done():
                future.set_result(response)

    def shut_down(self) -> None:
        """Refuse new requests and answer the waiting ones: the node is stopping."""
        self.stopping = True
        self.deliver_replies()
        for future in list(self._waiting.values()):
            if not future.done():
                future.set_result(Response(
                    request_id="", origin=self.context.node_id,
                    error=ErrorInfo.from_exception(NodeNotReady("the node is stopping"))))


def status_of(response: Response) -> int:
    """The HTTP status of an /execute answer: chosen by the error's class."""
    return 200 if response.error is None else http_status_for(response.error.type)


def compile_globs(patterns: list[str]) -> Callable[[str], Any] | None:
    """Return a matcher of action names, or ``None`` when every action is allowed."""
    if "*" in patterns:
        return None
    regex = re.compile("|".join(fnmatch.translate(p) for p in patterns) or r"(?!)")
    return regex.fullmatch


def headers_for(status: int) -> dict[str, str] | None:
    """Headers an error status asks for (``WWW-Authenticate``, ``Retry-After``)."""
    if status == 401:
        return {"WWW-Authenticate": 'Bearer realm="platybus"'}
    if status == 503:
        return {"Retry-After": "1"}
    return None


def decode_error(error: msgspec.DecodeError) -> DecodeError:
    """Say whether a body was not JSON at all or not the expected shape."""
    if isinstance(error, msgspec.ValidationError):
        return DecodeError(f"invalid body: {error}")
    return DecodeError(f"malformed JSON: {error}")

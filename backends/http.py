"""The ``http`` backend: the node's HTTP API on aiohttp, in the backend's own thread and loop.

Routes: ``POST /execute`` (run an action, locally or on another node through the
bus), ``POST /events`` (publish), ``GET /events`` (Server-Sent Events),
``GET /ws`` (websocket), ``GET /health``, ``GET /metrics``, ``GET /actions``.
See ``docs/backends/http.md``.

Requests never block the event loop on the bus: ``/execute`` publishes with an
``on_reply`` callback that runs on the bus dispatcher and hands the response
back to the loop with ``call_soon_threadsafe``, at most one wake-up per batch.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fnmatch
import hmac
import ipaddress
import re
from collections import deque
from typing import Any, Literal

import msgspec
from aiohttp import web

from backends.http_streams import (
    DROP_REASONS,
    SHUTDOWN,
    StreamClient,
    StreamRoutes,
    decode_error,
)
from platybus.errors import (
    ActionError,
    ActionNotAllowed,
    ArgumentError,
    DecodeError,
    NodeError,
    NodeNotReady,
    PlatybusError,
)
from platybus.extensions import Backend, NodeContext
from platybus.messages import ErrorInfo, Event, Request, Response

ROUTES = ("/execute", "/events", "/ws", "/health", "/metrics", "/actions", "/traces")

# Error type → HTTP status of a failed /execute; anything else an action raised is a 500.
STATUS_OF_ERROR = {
    "DecodeError": 400,
    "ArgumentError": 400,
    "ActionNotAllowed": 403,
    "UnknownActionError": 404,
    "NoRouteError": 502,
    "NodeNotReady": 503,
    "QueueFullError": 503,
    "RequestTimeout": 504,
}

_EVENT_TYPE = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_JSON = "application/json"


class HttpConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Options of the ``http`` backend."""

    host: str = "127.0.0.1"
    port: int = 8008
    token: str | None = None
    max_body: int = 1 << 20
    stream_queue: int = 1000
    heartbeat: float = 15.0
    request_timeout: float | None = None
    allow: list[str] = msgspec.field(default_factory=lambda: ["*"])
    public: list[str] = msgspec.field(default_factory=lambda: ["/health"])
    cors: list[str] = msgspec.field(default_factory=list)
    access_log: bool = False

    def __post_init__(self) -> None:
        # ValueError here becomes a ConfigError naming the file, line and section.
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0-65535 (0 picks a free port), got {self.port}")
        if self.max_body < 1 or self.stream_queue < 1:
            raise ValueError("max_body and stream_queue must be at least 1")
        if self.heartbeat <= 0 or (self.request_timeout is not None and self.request_timeout <= 0):
            raise ValueError("heartbeat and request_timeout must be positive")
        if self.token is not None and not self.token.strip():
            raise ValueError("token is empty (leave it out to serve loopback without a token)")
        unknown = [p for p in self.public if p not in ROUTES]
        if unknown:
            raise ValueError(f"public: unknown route {unknown[0]!r} (routes: {', '.join(ROUTES)})")
        if self.token is None and not is_loopback(self.host):
            raise ValueError(
                f"token is required when host is {self.host!r}, which is not a loopback "
                "address: set token (e.g. token: ${PLATYBUS_TOKEN}) or bind 127.0.0.1"
            )


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only the local machine (a name other than localhost is not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _ExecuteBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    action: str
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    target: str | None = None
    timeout: float | None = None
    parent_id: str | None = None
    kind: Literal["request"] = "request"


class _EventBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    type: str
    data: Any = msgspec.field(default_factory=dict)
    target: str | None = None
    parent_id: str | None = None
    kind: Literal["event"] = "event"


class _Inbound(msgspec.Struct):
    kind: str = ""


class HttpBackend(Backend):
    """Serves the node's HTTP API; ``port`` is the bound port once ready."""

    Config = HttpConfig

    def __init__(self, name: str, config: HttpConfig, context: NodeContext) -> None:
        super().__init__(name, config, context)
        self.config: HttpConfig = config
        self.port = config.port
        self._token = config.token.encode() if config.token is not None else None
        self._allow = _compile_globs(config.allow)
        self._public = frozenset(config.public)
        self._node_ready = False
        self._stopping = False
        self._aio: asyncio.AbstractEventLoop | None = None
        self._stop_signal: asyncio.Event | None = None
        self._waiting: dict[str, asyncio.Future[Response]] = {}
        self._replies: deque[Response] = deque()
        self._reply_wake = False
        self._clients: set[StreamClient] = set()
        self._encoder = msgspec.json.Encoder()
        self._execute_decoder = msgspec.json.Decoder(_ExecuteBody)
        self._event_decoder = msgspec.json.Decoder(_EventBody)
        self._inbound_decoder = msgspec.json.Decoder(_Inbound)
        self.requests: collections.Counter[tuple[str, int]] = collections.Counter()
        self.dropped: collections.Counter[str] = collections.Counter()
        self.streams = StreamRoutes(self)

    # -- thread and loop ---------------------------------------------------

    def loop(self) -> None:
        """Run the server's event loop in this thread until stopped."""
        aio = asyncio.new_event_loop()
        self._aio = aio
        try:
            # A full bus answers 503 at once rather than stall every client of the loop.
            with self.context.bus.never_wait():
                aio.run_until_complete(self._serve())
        finally:
            try:
                aio.run_until_complete(aio.shutdown_asyncgens())
                aio.run_until_complete(aio.shutdown_default_executor())
            finally:
                aio.close()

    def wake(self) -> None:
        """Make the event loop notice the stop request."""
        aio, signal = self._aio, self._stop_signal
        if aio is not None and signal is not None:
            with contextlib.suppress(RuntimeError):  # the loop already finished
                aio.call_soon_threadsafe(signal.set)

    async def _serve(self) -> None:
        self._stop_signal = asyncio.Event()
        if not self.should_keep_running():
            return
        runner = web.AppRunner(
            self._build_app(), handle_signals=False, shutdown_timeout=1.0,
            access_log=self.log.getChild("access") if self.config.access_log else None,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.host, self.config.port)
            try:
                await site.start()
            except OSError as error:
                raise NodeError(
                    f"http: cannot listen on {self.config.host}:{self.config.port}: "
                    f"{error.strerror or error}", host=self.config.host, port=self.config.port,
                ) from error
            server = getattr(site, "_server", None)
            sockets = getattr(server, "sockets", None) or []
            if sockets:
                self.port = sockets[0].getsockname()[1]
            self.register_service(port=self.port, name="http", properties={"path": "/"})
            self.log.info("http API on http://%s:%d/%s", self.config.host, self.port,
                          "" if self._token is None else " (token required)")
            self.mark_ready()
            await self._stop_signal.wait()
        finally:
            self._shut_down()
            await runner.cleanup()

    def _shut_down(self) -> None:
        self._stopping = True
        for client in list(self._clients):
            client.close(SHUTDOWN)
        self._deliver_replies()
        for future in list(self._waiting.values()):
            if not future.done():
                future.set_result(Response(
                    request_id="", origin=self.context.node_id,
                    error=ErrorInfo.from_exception(NodeNotReady("the node is stopping"))))

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body)
        app.router.add_post("/execute", self._execute)
        app.router.add_post("/events", self._publish)
        app.router.add_get("/events", self.streams.sse)
        app.router.add_get("/ws", self.streams.websocket)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/actions", self._actions)
        app.router.add_get("/traces", self._traces)
        app.router.add_route("*", "/{tail:.*}", self._fallback)
        if self.config.cors:
            app.on_response_prepare.append(self._add_cors)
        return app

    # -- shared checks -----------------------------------------------------

    def _ready(self) -> bool:
        if self._node_ready:
            return not self._stopping
        if self._stopping:
            return False
        # Only asked until the node first says it is ready; then cached.
        self._node_ready = bool(self.context.health().get("ready"))
        return self._node_ready

    def _authorized(self, request: web.Request, route: str) -> bool:
        if self._token is None or route in self._public:
            return True
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), self._token)

    def _json(self, route: str, status: int, body: bytes,
              headers: dict[str, str] | None = None) -> web.Response:
        self.requests[route, status] += 1
        return web.Response(body=body, status=status, content_type=_JSON, headers=headers)

    def _error(self, route: str, status: int, error: BaseException | ErrorInfo) -> web.Response:
        info = error if isinstance(error, ErrorInfo) else ErrorInfo.from_exception(error)
        headers = _headers_for(status)
        if route == "/execute":
            # /execute always answers with a Response, even when no request was made.
            body = self._encoder.encode(Response(
                request_id="", origin=self.context.node_id, error=info))
        else:
            body = self._encoder.encode({"error": info})
        return self._json(route, status, body, headers)

    def _denied(self, request: web.Request, route: str,
                needs_ready: bool = True) -> web.Response | None:
        if not self._authorized(request, route):
            return self._error(route, 401, ErrorInfo(
                type="Unauthorized", message="missing or invalid bearer token"))
        if needs_ready and not self._ready():
            return self._error(route, 503, NodeNotReady(
                "the node is starting or stopping; retry shortly"))
        return None

    # -- /execute ----------------------------------------------------------

    async def _execute(self, request: web.Request) -> web.Response:
        if self._token is not None or not self._node_ready or self._stopping:
            denied = self._denied(request, "/execute")
            if denied is not None:
                return denied
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._too_large("/execute")
        try:
            spec = self._execute_decoder.decode(body)
        except msgspec.DecodeError as error:
            return self._error("/execute", 400, decode_error(error))
        if self._allow is not None and not self._allow(spec.action):
            return self._error("/execute", 403, ActionNotAllowed(
                f"{spec.action!r} may not be called over HTTP (see the http 'allow' option)",
                action=spec.action))
        if spec.timeout is not None and spec.timeout <= 0:
            return self._error("/execute", 400, ArgumentError(
                f"timeout must be positive, got {spec.timeout}", action=spec.action))
        response = await self._submit(Request(
            action=spec.action, args=spec.args, target=spec.target or None,
            timeout=spec.timeout, parent_id=spec.parent_id, origin=self.context.node_id))
        status = 200 if response.error is None else STATUS_OF_ERROR.get(response.error.type, 500)
        try:
            payload = self._encoder.encode(response)
        except (TypeError, ValueError, OverflowError) as error:
            self.log.warning("cannot encode the output of %s: %s", spec.action, error)
            return self._error("/execute", 500, ErrorInfo(
                type="EncodeError", message=f"the output of {spec.action} is not JSON: {error}"))
        self.requests["/execute", status] += 1
        return web.Response(body=payload, status=status, content_type=_JSON,
                            headers=_headers_for(status) if status != 200 else None)

    async def _submit(self, message: Request) -> Response:
        """Publish a request and wait, without blocking the loop, for its response."""
        future: asyncio.Future[Response] = self._aio.create_future()  # type: ignore[union-attr]
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
                self._aio.call_soon_threadsafe(self._deliver_replies)  # type: ignore[union-attr]

    def _deliver_replies(self) -> None:
        self._reply_wake = False
        replies, waiting = self._replies, self._waiting
        while replies:
            response = replies.popleft()
            future = waiting.get(response.request_id)
            if future is not None and not future.done():
                future.set_result(response)

    # -- /events -----------------------------------------------------------

    async def _publish(self, request: web.Request) -> web.Response:
        denied = self._denied(request, "/events")
        if denied is not None:
            return denied
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._too_large("/events")
        try:
            event = self._event_from(self._event_decoder.decode(body))
            self.send_event(event)
        except msgspec.DecodeError as error:
            return self._error("/events", 400, decode_error(error))
        except (DecodeError, ArgumentError) as error:
            return self._error("/events", 400, error)
        except PlatybusError as error:
            return self._error("/events", 503, error)
        return self._json("/events", 202, self._encoder.encode(
            {"id": event.id, "type": event.type}))

    def _event_from(self, spec: _EventBody) -> Event:
        if not _EVENT_TYPE.fullmatch(spec.type):
            raise ArgumentError(
                f"event type {spec.type!r} must be dotted words such as 'garden.watered'")
        origin = self.context.node_id
        codec = self.context.codec
        if codec.types.get(spec.type) is not None:
            # Typed events go through the codec so their data is validated.
            message = codec.from_builtins({
                "kind": "event", "type": spec.type, "data": spec.data, "target": spec.target,
                "parent_id": spec.parent_id, "origin": origin})
            assert isinstance(message, Event)
            return message
        return Event(type=spec.type, data=spec.data, target=spec.target or None,
                     parent_id=spec.parent_id, origin=origin)

    # -- /health, /metrics, /actions, fallback -----------------------------

    async def _health(self, request: web.Request) -> web.Response:
        denied = self._denied(request, "/health", needs_ready=False)
        if denied is not None:
            return denied
        health = self.context.health()
        status = 200 if health.get("ready") and not self._stopping else 503
        return self._json("/health", status, self._encoder.encode(health), _headers_for(status))

    async def _metrics(self, request: web.Request) -> web.Response:
        denied = self._denied(request, "/metrics", needs_ready=False)
        if denied is not None:
            return denied
        self.requests["/metrics", 200] += 1
        text = self.context.metrics() + self.render_metrics()
        return web.Response(text=text, content_type="text/plain",
                            headers={"X-Content-Type-Options": "nosniff"},
                            charset="utf-8")

    def render_metrics(self) -> str:
        """Render the HTTP counters in the Prometheus text format."""
        lines = [
            "# HELP platybus_http_requests_total HTTP requests by route and status.",
            "# TYPE platybus_http_requests_total counter",
        ]
        for (route, status), count in sorted(self.requests.items()):
            lines.append(f'platybus_http_requests_total{{route="{route}",status="{status}"}} '
                         f"{count}")
        lines += [
            "# HELP platybus_http_stream_clients Connected event stream clients.",
            "# TYPE platybus_http_stream_clients gauge",
            f"platybus_http_stream_clients {len(self._clients)}",
            "# HELP platybus_http_stream_dropped_total Stream clients dropped, by reason.",
            "# TYPE platybus_http_stream_dropped_total counter",
        ]
        lines += [f'platybus_http_stream_dropped_total{{reason="{reason}"}} '
                  f"{self.dropped[reason]}" for reason in DROP_REASONS]
        return "\n".join(lines) + "\n"

    async def _actions(self, request: web.Request) -> web.Response:
        denied = self._denied(request, "/actions", needs_ready=False)
        if denied is not None:
            return denied
        listing = [{"name": s.name, "signature": s.signature, "doc": s.doc}
                   for s in self.context.actions.specs()
                   if self._allow is None or self._allow(s.name)]
        return self._json("/actions", 200, self._encoder.encode(listing))

    async def _traces(self, request: web.Request) -> web.Response:
        # The automation's trace.list action, with its arguments from the query string.
        denied = self._denied(request, "/traces", needs_ready=False)
        if denied is not None:
            return denied
        if self._allow is not None and not self._allow("trace.list"):
            return self._error("/traces", 403, ActionNotAllowed(
                "'trace.list' may not be called over HTTP (see the http 'allow' option)",
                action="trace.list"))
        query = request.query
        args: dict[str, Any] = {k: query[k] for k in ("hook", "name", "kind") if k in query}
        try:
            args["last"] = int(query.get("last", "20"))
            traces = self.context.actions.call("trace.list", args)
        except ValueError:
            return self._error("/traces", 400, ArgumentError(
                f"last must be an integer, got {query.get('last')!r}", action="trace.list"))
        except ActionError as error:
            return self._error("/traces", 400, error)
        return self._json("/traces", 200, self._encoder.encode(traces))

    async def _fallback(self, request: web.Request) -> web.Response:
        path = request.path
        if request.method == "OPTIONS" and self.config.cors:
            self.requests["other", 204] += 1
            return web.Response(status=204)
        if path in ROUTES:
            allowed = {"/execute": "POST", "/events": "GET, POST"}.get(path, "GET")
            response = self._error("other", 405, ErrorInfo(
                type="MethodNotAllowed", message=f"{request.method} {path}: use {allowed}"))
            response.headers["Allow"] = allowed
            return response
        return self._error("other", 404, ErrorInfo(
            type="NotFound", message=f"no route {path!r} (routes: {', '.join(ROUTES)})"))

    def _too_large(self, route: str) -> web.Response:
        return self._error(route, 413, ErrorInfo(
            type="PayloadTooLarge",
            message=f"the body exceeds max_body ({self.config.max_body} bytes)"))

    async def _add_cors(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin is None:
            return
        if "*" in self.config.cors or origin in self.config.cors:
            response.headers["Access-Control-Allow-Origin"] = (
                "*" if "*" in self.config.cors else origin)
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Vary"] = "Origin"


def _compile_globs(patterns: list[str]) -> Any:
    """Return a matcher of action names, or ``None`` when every action is allowed."""
    if "*" in patterns:
        return None
    regex = re.compile("|".join(fnmatch.translate(p) for p in patterns) or r"(?!)")
    return regex.fullmatch


def _headers_for(status: int) -> dict[str, str] | None:
    if status == 401:
        return {"WWW-Authenticate": 'Bearer realm="platybus"'}
    if status == 503:
        return {"Retry-After": "1"}
    return None

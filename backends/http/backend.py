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
from typing import Any

import msgspec
from aiohttp import web

from platybus.errors import (
    ActionError,
    ArgumentError,
    DecodeError,
    ListenError,
    PlatybusError,
)
from platybus.extensions import Backend, NodeContext
from platybus.messages import ErrorInfo
from platybus.metrics import PrometheusText

from .api import NodeApi
from .config import ROUTES, HttpConfig
from .gate import JSON, Gate, decode_error, headers_for, status_of
from .static import ConsoleFiles
from .streams import DROP_REASONS, StreamRoutes


class HttpBackend(Backend):
    """Serves the node's HTTP API; ``port`` is the bound port once ready."""

    Config = HttpConfig

    def __init__(self, name: str, config: HttpConfig, context: NodeContext) -> None:
        super().__init__(name, config, context)
        self.config: HttpConfig = config
        self.port = config.port
        self.gate = Gate(config, context)
        self._stop_signal: asyncio.Event | None = None
        self.streams = StreamRoutes(self.gate, self.send_event, self.log)
        self.api = NodeApi(self.gate)
        self.console = ConsoleFiles(config.console_rows) if config.console else None

    @property
    def requests(self) -> collections.Counter[tuple[str, int]]:
        """Requests answered, by route and status."""
        return self.gate.requests

    # -- thread and loop ---------------------------------------------------

    def loop(self) -> None:
        """Run the server's event loop in this thread until stopped."""
        aio = asyncio.new_event_loop()
        self.gate.aio = aio
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
        aio, signal = self.gate.aio, self._stop_signal
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
                reason = error.strerror or str(error)
                if "address already in use" in str(error).lower():
                    reason = "the address is already in use"
                raise ListenError(
                    f"backends.{self.backend_name}: cannot listen on {self.config.host}:"
                    f"{self.config.port}: {reason}; set backends.{self.backend_name}.port to a "
                    "free port (0 picks one) or stop what holds it",
                    host=self.config.host, port=self.config.port) from None
            server = getattr(site, "_server", None)
            sockets = getattr(server, "sockets", None) or []
            if sockets:
                self.port = sockets[0].getsockname()[1]
            self.register_service(port=self.port, name="http", properties={"path": "/"})
            self.log.info("http API on http://%s:%d/%s", self.config.host, self.port,
                          "" if self.gate.token is None else " (token required)")
            if self.console is not None:
                self.log.info("console on http://%s:%d/ (sign in with a token: "
                              "platybus console)", self.config.host, self.port)
            self.mark_ready()
            await self._stop_signal.wait()
        finally:
            self.streams.close_all()
            self.gate.shut_down()
            await runner.cleanup()

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
        self.api.add_routes(app)
        app.router.add_route("*", "/{tail:.*}", self._fallback)
        if self.config.cors:
            app.on_response_prepare.append(self._add_cors)
        return app

    # -- /execute ----------------------------------------------------------

    async def _execute(self, request: web.Request) -> web.Response:
        gate = self.gate
        if gate.token is not None or not gate.node_ready or gate.stopping:
            denied = gate.denied(request, "/execute")
            if denied is not None:
                return denied
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return gate.too_large("/execute")
        try:
            spec = gate.execute_decoder.decode(body)
        except msgspec.DecodeError as error:
            return gate.error("/execute", 400, decode_error(error))
        if not gate.allowed(spec.action):
            return gate.error("/execute", 403, gate.not_allowed(spec.action))
        try:
            message = gate.request_from(spec)
        except ArgumentError as error:
            return gate.error("/execute", 400, error)
        response = await gate.submit(message)
        status = status_of(response)
        try:
            payload = gate.encoder.encode(response)
        except (TypeError, ValueError, OverflowError) as error:
            self.log.warning("cannot encode the output of %s: %s", spec.action, error)
            return gate.error("/execute", 500, ErrorInfo(
                type="EncodeError", message=f"the output of {spec.action} is not JSON: {error}"))
        gate.requests["/execute", status] += 1
        return web.Response(body=payload, status=status, content_type=JSON,
                            headers=headers_for(status) if status != 200 else None)

    # -- /events -----------------------------------------------------------

    async def _publish(self, request: web.Request) -> web.Response:
        gate = self.gate
        denied = gate.denied(request, "/events")
        if denied is not None:
            return denied
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return gate.too_large("/events")
        try:
            event = gate.event_from(gate.event_decoder.decode(body))
            self.send_event(event)
        except msgspec.DecodeError as error:
            return gate.error("/events", 400, decode_error(error))
        except (DecodeError, ArgumentError) as error:
            return gate.error("/events", 400, error)
        except PlatybusError as error:
            return gate.error("/events", 503, error)
        return gate.json("/events", 202, gate.encoder.encode(
            {"id": event.id, "type": event.type}))

    # -- /health, /metrics, /actions, fallback -----------------------------

    async def _health(self, request: web.Request) -> web.Response:
        denied = self.gate.denied(request, "/health", needs_ready=False)
        if denied is not None:
            return denied
        health = self.context.health()
        status = 200 if health.get("ready") and not self.gate.stopping else 503
        return self.gate.json("/health", status, self.gate.encoder.encode(health),
                              headers_for(status))

    async def _metrics(self, request: web.Request) -> web.Response:
        denied = self.gate.denied(request, "/metrics", needs_ready=False)
        if denied is not None:
            return denied
        self.gate.requests["/metrics", 200] += 1
        text = self.context.metrics() + self.render_metrics()
        return web.Response(text=text, content_type="text/plain",
                            headers={"X-Content-Type-Options": "nosniff"},
                            charset="utf-8")

    def render_metrics(self) -> str:
        """Render the HTTP counters in the Prometheus text format."""
        out = PrometheusText()
        out.metric("http_requests_total", "counter", "HTTP requests by route and status.",
                   [({"route": route, "status": status}, count)
                    for (route, status), count in sorted(self.gate.requests.items())])
        out.value("http_stream_clients", "gauge", "Connected event stream clients.",
                  len(self.streams.clients))
        out.metric("http_stream_dropped_total", "counter", "Stream clients dropped, by reason.",
                   [({"reason": reason}, self.streams.dropped[reason])
                    for reason in DROP_REASONS])
        return out.text()

    async def _actions(self, request: web.Request) -> web.Response:
        denied = self.gate.denied(request, "/actions", needs_ready=False)
        if denied is not None:
            return denied
        listing = [{"name": s.name, "signature": s.signature, "doc": s.doc,
                    "params": s.params()}
                   for s in self.context.actions.specs()
                   if self.gate.allowed(s.name)]
        return self.gate.json("/actions", 200, self.gate.encoder.encode(listing))

    async def _traces(self, request: web.Request) -> web.Response:
        # The automation's trace.list action, with its arguments from the query string.
        denied = self.gate.denied(request, "/traces", needs_ready=False)
        if denied is not None:
            return denied
        if not self.gate.allowed("trace.list"):
            return self.gate.error("/traces", 403, self.gate.not_allowed("trace.list"))
        query = request.query
        args: dict[str, Any] = {k: query[k] for k in ("hook", "name", "kind") if k in query}
        try:
            args["last"] = int(query.get("last", "20"))
            traces = self.context.actions.call("trace.list", args)
        except ValueError:
            return self.gate.error("/traces", 400, ArgumentError(
                f"last must be an integer, got {query.get('last')!r}", action="trace.list"))
        except ActionError as error:
            return self.gate.error("/traces", 400, error)
        return self.gate.json("/traces", 200, self.gate.encoder.encode(traces))

    async def _fallback(self, request: web.Request) -> web.Response:
        path = request.path
        if self.console is not None and request.method in ("GET", "HEAD"):
            # The console's files need no token: they are the sign-in page.
            found = self.console.response(request)
            if found is not None:
                self.gate.requests["/ui", found.status] += 1
                return found
        if request.method == "OPTIONS" and self.config.cors:
            self.gate.requests["other", 204] += 1
            return web.Response(status=204)
        if path in ROUTES:
            allowed = {"/execute": "POST", "/events": "GET, POST", "/explain": "POST",
                       "/variables": "GET, POST", "/outbox": "GET, POST"}.get(path, "GET")
            response = self.gate.error("other", 405, ErrorInfo(
                type="MethodNotAllowed", message=f"{request.method} {path}: use {allowed}"))
            response.headers["Allow"] = allowed
            return response
        return self.gate.error("other", 404, ErrorInfo(
            type="NotFound", message=f"no route {path!r} (routes: {', '.join(ROUTES)})"))

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

"""Routes that show a node's state and change what an admin may change.

``GET /node`` (this node), ``GET /peers`` (discovery and the link), ``GET /runs``
(hooks, cron jobs, procedures and their recent runs), ``POST /explain``,
``GET``/``POST /variables``, ``GET``/``POST /outbox``. Each answers from the
node's own actions (``node.info``, ``trace.list``, ``variable.*``, ``outbox.*``,
...) so that an HTTP client and a hook see the same thing; each route asks for
a scope: reading needs ``read``, changing needs ``admin``.

Actions that may block (SQLite, files, a notifier's network send) run in the
loop's executor, never on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import msgspec
from aiohttp import web

from platybus.errors import ActionError, ArgumentError, PlatybusError, UnknownActionError
from platybus.messages import ErrorInfo

from .gate import Gate

READ, ADMIN = "read", "admin"


class VariableBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The body of ``POST /variables``: set ``name`` to ``value``, or delete it."""

    name: str
    value: Any = None
    delete: bool = False


class OutboxBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The body of ``POST /outbox``: retry or drop one kept event."""

    op: str
    notifier: str
    event_id: str


class ExplainBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The body of ``POST /explain``: the event to explain (``{type, data}``)."""

    event: dict[str, Any]


class NodeApi:
    """The ``/node``, ``/peers``, ``/runs``, ``/explain``, ``/variables``, ``/outbox`` routes."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.actions = gate.context.actions

    def add_routes(self, app: web.Application) -> None:
        """Register the routes on ``app``."""
        app.router.add_get("/node", self.node)
        app.router.add_get("/peers", self.peers)
        app.router.add_get("/runs", self.runs)
        app.router.add_post("/explain", self.explain)
        app.router.add_get("/variables", self.variables)
        app.router.add_post("/variables", self.set_variable)
        app.router.add_get("/outbox", self.outbox)
        app.router.add_post("/outbox", self.change_outbox)

    # -- helpers -------------------------------------------------------------

    def _denied(self, request: web.Request, route: str, scope: str) -> web.Response | None:
        return self.gate.denied(request, route, needs=scope, needs_ready=False)

    def has(self, name: str) -> bool:
        """Whether this node has an action of that name."""
        try:
            self.actions.get(name)
        except UnknownActionError:
            return False
        return True

    async def call(self, name: str, args: dict[str, Any] | None = None) -> Any:
        """Run an action off the event loop; raise its :class:`ActionError`."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(
            self.actions.call, name, args or {}))

    async def answer(self, route: str, name: str, args: dict[str, Any] | None = None,
                     default: Any = None) -> web.Response:
        """Answer with an action's output (``default`` when the node lacks the action)."""
        if not self.has(name):
            return self.gate.json(route, 200, self.gate.encoder.encode(default))
        try:
            output = await self.call(name, args)
        except ActionError as error:
            return self.gate.error(route, 400 if isinstance(error, ArgumentError) else 500,
                                   error)
        return self.gate.json(route, 200, self.gate.encoder.encode(output))

    async def body(self, request: web.Request, route: str,
                   type_: type[Any]) -> Any | web.Response:
        """Decode a JSON body into ``type_``, or return the error answer."""
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self.gate.too_large(route)
        try:
            return msgspec.json.decode(raw, type=type_)
        except msgspec.ValidationError as error:
            return self.gate.error(route, 400, ErrorInfo(
                type="DecodeError", message=f"invalid body: {error}"))
        except msgspec.DecodeError as error:
            return self.gate.error(route, 400, ErrorInfo(
                type="DecodeError", message=f"malformed JSON: {error}"))

    # -- reading -------------------------------------------------------------

    async def node(self, request: web.Request) -> web.Response:
        """``GET /node``: id, version, uptime, config hash, components, bus counters."""
        denied = self._denied(request, "/node", READ)
        if denied is not None:
            return denied
        health = self.gate.context.health()
        stats: dict[str, Any] = self.actions.call("node.stats") if self.has("node.stats") else {}
        body = {**health, "pid": self.actions.call("node.info")["pid"]
                if self.has("node.info") else None, "stats": stats}
        return self.gate.json("/node", 200, self.gate.encoder.encode(body))

    async def peers(self, request: web.Request) -> web.Response:
        """``GET /peers``: nodes seen by discovery, and the state of each link."""
        denied = self._denied(request, "/peers", READ)
        if denied is not None:
            return denied
        peers = self.actions.call("discovery.peers") if self.has("discovery.peers") else []
        details = self.gate.context.health().get("components", {}).get("details", {})
        links = {name: report for name, report in details.items() if "link" in report}
        body = {"discovery": msgspec.to_builtins(peers), "links": links}
        return self.gate.json("/peers", 200, self.gate.encoder.encode(body))

    async def runs(self, request: web.Request) -> web.Response:
        """``GET /runs``: the automation's status and its newest traces (``last``, 200)."""
        denied = self._denied(request, "/runs", READ)
        if denied is not None:
            return denied
        try:
            last = int(request.query.get("last", "200"))
        except ValueError:
            return self.gate.error("/runs", 400, ArgumentError(
                f"last must be an integer, got {request.query.get('last')!r}"))
        if not self.has("trace.list"):
            return self.gate.json("/runs", 200, self.gate.encoder.encode(
                {"status": None, "traces": []}))
        body = {"status": self.actions.call("automation.status"),
                "traces": self.actions.call("trace.list", {"last": max(0, last)})}
        return self.gate.json("/runs", 200, self.gate.encoder.encode(body))

    async def explain(self, request: web.Request) -> web.Response:
        """``POST /explain``: which hooks would run for an event, and why the others not."""
        denied = self._denied(request, "/explain", READ)
        if denied is not None:
            return denied
        spec = await self.body(request, "/explain", ExplainBody)
        if isinstance(spec, web.Response):
            return spec
        try:
            result = self.actions.call("automation.explain", {"event": spec.event})
        except PlatybusError as error:
            return self.gate.error("/explain", 400, error)
        return self.gate.json("/explain", 200, self.gate.encoder.encode(result))

    async def variables(self, request: web.Request) -> web.Response:
        """``GET /variables``: every variable (``prefix`` to narrow)."""
        denied = self._denied(request, "/variables", READ)
        if denied is not None:
            return denied
        return await self.answer("/variables", "variable.list",
                                 {"prefix": request.query.get("prefix", "")}, default={})

    async def outbox(self, request: web.Request) -> web.Response:
        """``GET /outbox``: the events notifiers failed to send, expired ones too."""
        denied = self._denied(request, "/outbox", READ)
        if denied is not None:
            return denied
        return await self.answer("/outbox", "outbox.list", default=[])

    # -- changing ------------------------------------------------------------

    async def set_variable(self, request: web.Request) -> web.Response:
        """``POST /variables``: set (or, with ``delete``, remove) one variable."""
        denied = self._denied(request, "/variables", ADMIN)
        if denied is not None:
            return denied
        spec = await self.body(request, "/variables", VariableBody)
        if isinstance(spec, web.Response):
            return spec
        if not self.has("variable.set"):
            return self.gate.error("/variables", 404, ErrorInfo(
                type="NotFound", message="this node has no variable plugin"))
        if spec.delete:
            return await self.answer("/variables", "variable.delete", {"name": spec.name})
        return await self.answer("/variables", "variable.set",
                                 {"name": spec.name, "value": spec.value})

    async def change_outbox(self, request: web.Request) -> web.Response:
        """``POST /outbox``: ``{"op": "retry"|"drop", "notifier", "event_id"}``."""
        denied = self._denied(request, "/outbox", ADMIN)
        if denied is not None:
            return denied
        spec = await self.body(request, "/outbox", OutboxBody)
        if isinstance(spec, web.Response):
            return spec
        if spec.op not in ("retry", "drop"):
            return self.gate.error("/outbox", 400, ArgumentError(
                f"op must be 'retry' or 'drop', got {spec.op!r}"))
        if not self.has(f"outbox.{spec.op}"):
            return self.gate.error("/outbox", 404, ErrorInfo(
                type="NotFound", message="this node has no notifiers, so no outbox"))
        return await self.answer("/outbox", f"outbox.{spec.op}",
                                 {"notifier": spec.notifier, "event_id": spec.event_id})

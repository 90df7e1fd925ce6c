"""The ``redis`` backend: links this node to other nodes through Redis streams.

It is the bus's transport: requests, responses and targeted events for other
nodes leave through it, and this node's events that the ``outgoing`` selector
picks fan out to every node. What arrives is checked (signature, form,
routing), de-duplicated, filtered by ``accept`` and published on the local bus.
Remote origins may call only the actions that ``allow_actions`` names.
See ``docs/multi-node.md``.
"""

from __future__ import annotations

import fnmatch
import threading
from typing import Any

import msgspec
import redis

from platybus.actions import ActionSpec
from platybus.errors import LinkError, SelectorError
from platybus.expr import parse_selector
from platybus.extensions import Backend, NodeContext
from platybus.link.dead_letter import DeadLetters
from platybus.link.protocol import LinkConfig, LinkDeadLetter, LinkDown, LinkUp
from platybus.link.stream_link import StreamLink
from platybus.messages import Request
from platybus.metrics import PrometheusText

DEFAULT_ALLOWED = ("node.ping", "node.info")
START_WAIT = 5.0


class RedisConfig(LinkConfig, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The ``backends.redis`` section: the link settings plus what goes out and comes in."""

    outgoing: str = "*"
    accept: str = "*"
    allow_actions: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_ALLOWED))

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("outgoing", "accept"):
            try:
                parse_selector(getattr(self, name))
            except SelectorError as error:
                raise ValueError(f"{name}: {error}") from None
        for pattern in self.allow_actions:
            if not pattern or pattern.strip() != pattern:
                raise ValueError(f"allow_actions: invalid pattern {pattern!r}")

    def link_config(self) -> LinkConfig:
        """Return the link part of this config."""
        return LinkConfig(**{name: getattr(self, name) for name in LinkConfig.__struct_fields__})


class RedisBackend(Backend):
    """Carries this node's traffic with other nodes over Redis streams."""

    Config = RedisConfig
    event_types = (LinkDown, LinkUp, LinkDeadLetter)
    transport = True

    def __init__(self, name: str, config: RedisConfig, context: NodeContext) -> None:
        super().__init__(name, config, context)
        self.allowed = tuple(config.allow_actions)
        self.link = StreamLink(
            context.node_id, config.link_config(), context.codec,
            outgoing=parse_selector(config.outgoing), accept=parse_selector(config.accept),
        )
        self._dead: DeadLetters | None = None
        self._dead_lock = threading.Lock()
        for verb, fn in (("list", self.dlq_list), ("show", self.dlq_show),
                         ("retry", self.dlq_retry), ("drop", self.dlq_drop)):
            context.actions.add(ActionSpec.from_function(f"dlq.{verb}", fn))

    def allows(self, request: Request) -> bool:
        """Whether a remote origin may call the request's action (``allow_actions`` globs)."""
        return any(fnmatch.fnmatchcase(request.action, pattern) for pattern in self.allowed)

    def on_start(self) -> None:
        """Set the remote-call policy and connect; a Redis that is away is retried."""
        config: RedisConfig = self.config
        if self.context.runner is not None:
            self.context.runner.remote_allowed = self.allows
        if config.secret is None:
            self.log.warning("backends.redis has no secret: anything that can write to this "
                             "Redis can send messages to this node")
        # Bounded, so a slow Redis never holds the node's start past its ready timeout.
        if not self.link.start(self.context.bus, wait=min(config.connect_timeout, START_WAIT)):
            self.log.warning("Redis at %s is not reachable yet: the node starts and keeps "
                             "trying; messages for other nodes wait in a buffer", self.link.url)

    def on_stop(self) -> None:
        """Flush and close the link; remote calls are refused again."""
        self.link.stop()
        with self._dead_lock:
            if self._dead is not None:
                self._dead.client.close()
                self._dead = None
        if self.context.runner is not None:
            self.context.runner.remote_allowed = _deny

    def health(self) -> dict[str, Any]:
        """Return the backend state (``degraded`` while Redis is away) and the link's counters."""
        report = {**super().health(), **self.link.health()}
        if report["state"] == "ready" and self.link.state != "up":
            report["state"] = "degraded"
        return report


    def render_metrics(self) -> str:
        """Render the link's counters in the Prometheus text format."""
        stats = self.link.stats
        config = self.link.config
        name = {"backend": self.backend_name}
        out = PrometheusText()
        out.metric("link_up", "gauge", "1 while the link to Redis is up, else 0.",
                   [(name, int(self.link.state == "up"))])
        out.metric("link_sent_total", "counter", "Messages written to Redis.",
                   [(name, stats.sent)])
        out.metric("link_delivered_total", "counter", "Messages from Redis handed to the bus.",
                   [(name, stats.delivered)])
        out.metric("link_reconnects_total", "counter", "Times the link was lost.",
                   [(name, stats.reconnects)])
        out.metric("link_buffered", "gauge", "Outgoing messages waiting in memory for Redis.",
                   [(name, self.link.buffered)])
        out.metric("link_buffer_size", "gauge",
                   "Most outgoing messages held while Redis is away (buffer_size).",
                   [(name, config.buffer_size)])
        out.metric("link_dropped_total", "counter",
                   "Outgoing messages dropped by a full buffer, by buffer_policy.",
                   [({**name, "policy": config.buffer_policy}, stats.dropped)])
        out.metric("link_rejected_total", "counter",
                   "Entries or messages from Redis refused, by reason.",
                   [({**name, "reason": reason}, count)
                    for reason, count in sorted(stats.rejected.items())])
        out.metric("link_dead_lettered_total", "counter",
                   "Entries moved to the dead-letter stream.", [(name, stats.dead_lettered)])
        return out.text()

    # -- the dead-letter stream ---------------------------------------------

    def dead_letters(self) -> DeadLetters:
        """Return the reader of this node's dead-letter stream (connecting on first use)."""
        with self._dead_lock:
            if self._dead is None:
                config = self.link.config
                client = redis.Redis.from_url(config.url, socket_timeout=config.connect_timeout,
                                              socket_connect_timeout=config.connect_timeout)
                self._dead = DeadLetters(client, self.link.keys, self.context.node_id)
            return self._dead

    def _redis_call(self, call: Any) -> Any:
        try:
            return call(self.dead_letters())
        except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
            raise LinkError(f"cannot reach Redis at {self.link.url}: {error}") from None

    def dlq_list(self, last: int = 20) -> dict[str, Any]:
        """List the newest entries of this node's dead-letter stream."""
        def listing(dead: DeadLetters) -> dict[str, Any]:
            return {"node": dead.node_id, "stream": dead.key, "count": dead.count(),
                    "entries": dead.listing(last)}
        result: dict[str, Any] = self._redis_call(listing)
        return result

    def dlq_show(self, id: str) -> dict[str, Any]:
        """Show one dead entry with its original fields."""
        result: dict[str, Any] = self._redis_call(lambda dead: dead.show(id))
        return result

    def dlq_retry(self, ids: list[str] | None = None,
                  all: bool = False) -> list[dict[str, Any]]:
        """Write dead entries back to the stream they came from, to be handled again."""
        result: list[dict[str, Any]] = self._redis_call(lambda dead: dead.retry(ids, all))
        return result

    def dlq_drop(self, ids: list[str] | None = None, all: bool = False) -> int:
        """Remove dead entries for good; return how many were removed."""
        result: int = self._redis_call(lambda dead: dead.drop(ids, all))
        return result


def _deny(request: Request) -> bool:
    return False

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
from typing import Any

import msgspec

from platybus.errors import SelectorError
from platybus.expr import parse_selector
from platybus.extensions import Backend, NodeContext
from platybus.link.protocol import LinkConfig, LinkDown, LinkUp
from platybus.link.stream_link import StreamLink
from platybus.messages import Request

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
    event_types = (LinkDown, LinkUp)
    transport = True

    def __init__(self, name: str, config: RedisConfig, context: NodeContext) -> None:
        super().__init__(name, config, context)
        self.allowed = tuple(config.allow_actions)
        self.link = StreamLink(
            context.node_id, config.link_config(), context.codec,
            outgoing=parse_selector(config.outgoing), accept=parse_selector(config.accept),
        )

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
        if self.context.runner is not None:
            self.context.runner.remote_allowed = _deny

    def health(self) -> dict[str, Any]:
        """Return the backend state (``degraded`` while Redis is away) and the link's counters."""
        report = {**super().health(), **self.link.health()}
        if report["state"] == "ready" and self.link.state != "up":
            report["state"] = "degraded"
        return report


def _deny(request: Request) -> bool:
    return False

"""Options of the ``http`` backend and the shapes of the bodies it accepts."""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

import msgspec

ROUTES = ("/execute", "/events", "/ws", "/health", "/metrics", "/actions", "/traces",
          "/whoami", "/node", "/peers", "/runs", "/explain", "/variables", "/outbox", "/dlq",
          "/dlq/retry", "/dlq/drop")

# Routes that may be served without a token (the ``public`` option): read-only ones.
MAY_BE_PUBLIC = ("/health", "/metrics")

Scope = Literal["read", "publish", "execute", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "publish", "execute", "admin")

_TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


class TokenSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One entry of ``tokens``: a named token and what it may do."""

    token: str
    scope: Scope = "read"
    execute: list[str] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.token.strip():
            raise ValueError("token is empty")
        if self.execute and self.scope != "execute":
            raise ValueError(f"execute: action globs belong to scope 'execute', not {self.scope!r}"
                             " ('admin' may call every action; 'read' and 'publish' none)")
        if self.scope == "execute" and not self.execute:
            raise ValueError("scope 'execute' needs the actions it may call, "
                             'e.g. execute: ["node.*", "variable.*"]')


class HttpConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Options of the ``http`` backend."""

    host: str = "127.0.0.1"
    port: int = 8008
    auth: Literal["token", "none"] = "token"
    token: str | None = None
    tokens: dict[str, TokenSpec] = msgspec.field(default_factory=dict)
    hosts: list[str] = msgspec.field(default_factory=list)
    trusted_proxies: list[str] = msgspec.field(default_factory=list)
    read_timeout: float = 30.0
    max_connections: int = 256
    max_body: int = 1 << 20
    stream_queue: int = 1000
    heartbeat: float = 15.0
    request_timeout: float | None = None
    allow: list[str] = msgspec.field(default_factory=lambda: ["*"])
    public: list[str] = msgspec.field(default_factory=lambda: ["/health"])
    cors: list[str] = msgspec.field(default_factory=list)
    access_log: bool = False
    console: bool = True
    console_rows: int = 500

    def __post_init__(self) -> None:
        # ValueError here becomes a ConfigError naming the file, line and section.
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0-65535 (0 picks a free port), got {self.port}")
        if self.max_body < 1 or self.stream_queue < 1:
            raise ValueError("max_body and stream_queue must be at least 1")
        if not 10 <= self.console_rows <= 100_000:
            raise ValueError(f"console_rows must be 10-100000, got {self.console_rows}")
        if self.heartbeat <= 0 or (self.request_timeout is not None and self.request_timeout <= 0):
            raise ValueError("heartbeat and request_timeout must be positive")
        if self.read_timeout <= 0 or self.max_connections < 1:
            raise ValueError("read_timeout must be positive and max_connections at least 1")
        if self.token is not None and not self.token.strip():
            raise ValueError("token is empty (leave it out to have the node generate one)")
        unknown = [p for p in self.public if p not in MAY_BE_PUBLIC]
        if unknown:
            raise ValueError(f"public: {unknown[0]!r} cannot be public (only "
                             f"{', '.join(MAY_BE_PUBLIC)}; every other route needs a token)")
        if self.auth == "none":
            if not is_loopback(self.host):
                raise ValueError(
                    f"auth: none is only allowed on a loopback address, not {self.host!r}: "
                    "remove auth: none (the node then generates a token) or bind 127.0.0.1")
            if self.token is not None or self.tokens:
                raise ValueError("auth: none contradicts token/tokens: remove one of them")
        seen: dict[str, str] = {}
        for name, spec in self.tokens.items():
            if not _TOKEN_NAME.fullmatch(name):
                raise ValueError(f"tokens: {name!r} must be 1-63 letters, digits, '.', '_', '-'")
            if spec.token in seen or spec.token == self.token:
                raise ValueError(f"tokens: {name!r} has the same token as "
                                 f"{seen.get(spec.token, 'token')!r}; each needs its own")
            seen[spec.token] = name
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {proxy!r} is not an IP address or network"
                                 ) from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only the local machine (a name other than localhost is not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ExecuteBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The body of ``POST /execute``."""

    action: str
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    target: str | None = None
    timeout: float | None = None
    parent_id: str | None = None
    kind: Literal["request"] = "request"


class DeadLetterBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The body of ``POST /dlq/retry`` and ``POST /dlq/drop``: entry ids, or every entry."""

    ids: list[str] = msgspec.field(default_factory=list)
    all: bool = False


class EventBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The body of ``POST /events``."""

    type: str
    data: Any = msgspec.field(default_factory=dict)
    target: str | None = None
    parent_id: str | None = None
    kind: Literal["event"] = "event"


class InboundKind(msgspec.Struct):
    """Just the ``kind`` of a websocket frame, to pick its decoder."""

    kind: str = ""

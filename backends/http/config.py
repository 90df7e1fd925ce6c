"""Options of the ``http`` backend and the shapes of the bodies it accepts."""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

import msgspec

ROUTES = ("/execute", "/events", "/ws", "/health", "/metrics", "/actions", "/traces",
          "/node", "/peers", "/runs", "/explain", "/variables", "/outbox")


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


class ExecuteBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The body of ``POST /execute``."""

    action: str
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    target: str | None = None
    timeout: float | None = None
    parent_id: str | None = None
    kind: Literal["request"] = "request"


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

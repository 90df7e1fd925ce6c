"""Who may call the HTTP API: tokens and their scopes, and the browser and proxy checks.

Every request passes the same checks, in this order, before anything runs
(:meth:`Access.check`, called by the gate for routes and streams alike):

1. ``Host`` is an IP address, ``localhost``, the bind address or one of ``hosts``
   (a DNS-rebinding page sends its own name).
2. An ``Origin`` is this server's own or listed in ``cors``; ``Sec-Fetch-Site:
   cross-site`` passes only with such an origin (a page elsewhere cannot drive the API).
3. A ``POST`` body is ``application/json`` (a cross-site "simple" request cannot be).
4. A bearer token names an :class:`Identity` whose scope covers what the route needs.
   A route whose need is :data:`PUBLIC` skips this step only.

With ``auth: none`` step 4 lets only this machine in: a request from another
address, or one that a proxy forwarded (``Forwarded``, ``X-Forwarded-*``) unless
``trusted_proxies`` names that proxy and the client it names is local, is refused.
"""

from __future__ import annotations

import fnmatch
import hashlib
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from platybus.errors import (
    AccessDenied,
    RequestForbidden,
    ScopeMissing,
    Unauthorized,
    UnsupportedMediaType,
)

from .config import HttpConfig, Scope, is_loopback

# The need of a route anyone may call without a token (``/health``, the console's files).
# Public routes still pass the Host, Origin and Sec-Fetch-Site checks.
PUBLIC = "public"
DEFAULT_TOKEN_NAME = "default"  # noqa: S105 - the name of the node's own token, not a secret
LEVELS: dict[str, int] = {"read": 0, "publish": 1, "execute": 2, "admin": 3}
FORWARD_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto",
                   "X-Real-IP")
JSON = "application/json"


@dataclass(frozen=True)
class Identity:
    """The caller a token names: its name, scope and (for ``execute``) its action globs."""

    name: str
    scope: Scope
    execute: tuple[str, ...] = ()
    _match: Callable[[str], Any] | None = field(default=None, repr=False, compare=False)

    def covers(self, needed: str) -> bool:
        """Whether this scope includes ``needed`` (read < publish < execute < admin)."""
        return needed == PUBLIC or LEVELS[self.scope] >= LEVELS[needed]

    def may_execute(self, action: str) -> bool:
        """Whether this caller may run ``action``."""
        if self.scope == "admin":
            return True
        return self.scope == "execute" and self._match is not None and bool(self._match(action))

    def describe(self) -> dict[str, Any]:
        """What ``GET /whoami`` answers."""
        execute = ["*"] if self.scope == "admin" else list(self.execute)
        return {"name": self.name, "scope": self.scope, "execute": execute}


def identity(name: str, scope: Scope, execute: list[str] | tuple[str, ...] = ()) -> Identity:
    """Build an identity, compiling its action globs once."""
    globs = tuple(execute)
    matcher = compile_globs(list(globs)) if globs else None
    if globs and matcher is None:  # "*": every action
        matcher = _every
    return Identity(name, scope, globs, matcher)


def _every(_action: str) -> bool:
    return True


def compile_globs(patterns: list[str]) -> Callable[[str], Any] | None:
    """Return a matcher of action names, or ``None`` when every action is allowed."""
    if "*" in patterns:
        return None
    regex = re.compile("|".join(fnmatch.translate(p) for p in patterns) or r"(?!)")
    return regex.fullmatch


ANONYMOUS = Identity("anonymous", "admin")


def _digest(token: str) -> bytes:
    # Tokens are looked up by their hash: a dict lookup on a digest leaks nothing of the token.
    return hashlib.sha256(token.encode()).digest()


@dataclass
class Access:
    """The checks every request passes; see the module's docstring."""

    config: HttpConfig
    tokens: dict[bytes, Identity] = field(default_factory=dict)

    def __post_init__(self) -> None:
        config = self.config
        self.none = config.auth == "none"
        self.bind = config.host.lower().strip("[]")
        self.hosts = frozenset(h.lower().rstrip(".") for h in config.hosts)
        self.cors = frozenset(config.cors)
        self.proxies = [ipaddress.ip_network(p, strict=False) for p in config.trusted_proxies]

    def set_tokens(self, default: str | None) -> None:
        """Name the tokens that open the API: the node's own (admin) and those of ``tokens``."""
        table: dict[bytes, Identity] = {}
        if default is not None:
            table[_digest(default)] = Identity(DEFAULT_TOKEN_NAME, "admin")
        for name, spec in self.config.tokens.items():
            table[_digest(spec.token)] = identity(name, spec.scope, spec.execute)
        self.tokens = table

    # -- the checks ------------------------------------------------------------

    def check(self, request: web.Request, needs: str) -> Identity | AccessDenied:
        """Return the caller's identity, or the error that refuses the request."""
        refusal = self.browser_refusal(request)
        if refusal is not None:
            return refusal
        if request.method == "POST" and request.content_type != JSON:
            return UnsupportedMediaType(
                f"POST bodies must be {JSON} (got {request.content_type or 'none'}); "
                "send the header Content-Type: application/json")
        if needs == PUBLIC:
            return ANONYMOUS if self.none else Identity("public", "read")
        caller = self.identify(request)
        if isinstance(caller, AccessDenied):
            return caller
        if not caller.covers(needs):
            return ScopeMissing(
                f"{request.method} {request.path} needs the {needs!r} scope; token "
                f"{caller.name!r} has {caller.scope!r}", needed=needs, token=caller.name)
        return caller

    def identify(self, request: web.Request) -> Identity | AccessDenied:
        """The identity of the request's bearer token (``auth: none``: a local caller)."""
        if self.none:
            if self.local(request):
                return ANONYMOUS
            return Unauthorized(
                "this node serves without a token (auth: none) to this machine only; "
                "a request from another address or through a proxy is refused")
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return Unauthorized("missing bearer token (header Authorization: Bearer <token>; "
                                "`platybus token` prints the node's)")
        found = self.tokens.get(_digest(value.strip()))
        if found is None:
            return Unauthorized("invalid bearer token")
        return found

    def browser_refusal(self, request: web.Request) -> AccessDenied | None:
        """The Host, Origin and Sec-Fetch-Site checks; ``None`` when they pass."""
        headers = request.headers
        host_header = headers.get("Host")
        if host_header is not None and not self.host_allowed(split_host(host_header)[0]):
            return RequestForbidden(
                f"Host {host_header!r} is not this server's (add the name to the http "
                "'hosts' option if it is)")
        origin = headers.get("Origin")
        if origin is not None and not self.origin_allowed(origin, host_header):
            return RequestForbidden(
                f"Origin {origin!r} is not allowed (see the http 'cors' option)")
        if headers.get("Sec-Fetch-Site") == "cross-site" and (
                origin is None or not self.origin_listed(origin)):
            return RequestForbidden("a cross-site browser request is not allowed "
                                    "(see the http 'cors' option)")
        return None

    def host_allowed(self, name: str) -> bool:
        """Whether ``name`` (the Host header without its port) names this server."""
        name = name.lower().rstrip(".")
        if name in ("localhost", self.bind) or name in self.hosts:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True  # an address literal cannot be rebound to another machine

    def origin_listed(self, origin: str) -> bool:
        """Whether ``origin`` is in ``cors``."""
        return "*" in self.cors or origin in self.cors

    def origin_allowed(self, origin: str, host_header: str | None) -> bool:
        """Whether ``origin`` is listed, or is this server's own (the console's pages)."""
        if self.origin_listed(origin):
            return True
        parts = urlsplit(origin)
        return (parts.scheme in ("http", "https") and host_header is not None
                and parts.netloc.lower() == host_header.lower())

    def local(self, request: web.Request) -> bool:
        """Whether the request comes from this machine, not through an untrusted proxy."""
        peer = request.remote or ""
        forwarded = any(h in request.headers for h in FORWARD_HEADERS)
        if not forwarded:
            return is_loopback(peer)
        if not self.trusted(peer):
            return False  # a proxy on this host would make every client look local
        client = forwarded_client(request)
        return client is not None and is_loopback(client)

    def trusted(self, peer: str) -> bool:
        """Whether ``peer`` is one of ``trusted_proxies``."""
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.proxies)

    def peer(self, request: web.Request) -> str:
        """The client's address for log lines: the forwarded one behind a trusted proxy."""
        peer = request.remote or "unknown peer"
        if self.proxies and self.trusted(peer):
            client = forwarded_client(request)
            if client is not None:
                return f"{client} (via {peer})"
        return peer


def forwarded_client(request: web.Request) -> str | None:
    """The client address the nearest proxy reports (last ``X-Forwarded-For``/``for=``)."""
    headers = request.headers
    chain = headers.get("X-Forwarded-For")
    if chain:
        return chain.split(",")[-1].strip() or None
    forwarded = headers.get("Forwarded")
    if forwarded:
        last = forwarded.split(",")[-1]
        for part in last.split(";"):
            key, _, value = part.strip().partition("=")
            if key.lower() == "for":
                value = value.strip('"')
                return split_host(value)[0] if value else None
    real = headers.get("X-Real-IP")
    return real.strip() if real else None


def split_host(value: str) -> tuple[str, str]:
    """Split ``host[:port]`` (``[v6]:port`` too) into the host and the port text."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, rest.lstrip(":")
    if value.count(":") == 1:
        host, _, port = value.partition(":")
        return host, port
    return value, ""

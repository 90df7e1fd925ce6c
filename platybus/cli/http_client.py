"""A small stdlib client of a running node's HTTP API, for the command line.

It uses ``http.client`` only, so commands that talk to a node start fast. See
``docs/backends/http.md`` for the API it speaks.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from platybus.credentials import read_secret, token_path
from platybus.errors import LinkError, RemoteError
from platybus.messages import Response

if TYPE_CHECKING:
    from platybus.config import Config

DEFAULT_URL = "http://127.0.0.1:8008"
URL_ENV = "PLATYBUS_URL"
TOKEN_ENV = "PLATYBUS_TOKEN"  # noqa: S105 - the name of the variable, not a secret


@dataclass(frozen=True)
class StreamItem:
    """One Server-Sent Events frame: its event name and decoded data."""

    event: str
    data: Any


class RemoteNode:
    """Talks to one node over HTTP: execute, publish, stream."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0) -> None:
        parsed = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise LinkError(f"not an http(s) URL: {url!r}")
        self.url = url
        self.scheme = parsed.scheme
        self.host = parsed.hostname
        self.port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.base = parsed.path.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _connect(self, timeout: float | None) -> http.client.HTTPConnection:
        cls = (http.client.HTTPSConnection if self.scheme == "https"
               else http.client.HTTPConnection)
        return cls(self.host, self.port, timeout=timeout)

    def _headers(self, body: bool) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if body:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _call(self, method: str, path: str, payload: Any = None,
              timeout: float | None = None) -> tuple[int, bytes]:
        body = None if payload is None else json.dumps(payload).encode()
        conn = self._connect(timeout if timeout is not None else self.timeout)
        try:
            conn.request(method, self.base + path, body=body,
                         headers=self._headers(body is not None))
            reply = conn.getresponse()
            return reply.status, reply.read()
        except OSError as error:
            raise LinkError(f"cannot reach {self.url}: {error}") from None
        finally:
            conn.close()

    def execute(self, action: str, args: dict[str, Any] | None = None, *,
                target: str | None = None, timeout: float | None = None) -> Response:
        """Run an action on the node (or, with ``target``, on a node linked to it)."""
        payload: dict[str, Any] = {"action": action, "args": args or {}}
        if target:
            payload["target"] = target
        if timeout is not None:
            payload["timeout"] = timeout
        wait = (timeout if timeout is not None else self.timeout) + 5.0
        status, body = self._call("POST", "/execute", payload, timeout=wait)
        try:
            return msgspec.json.decode(body, type=Response)
        except msgspec.DecodeError:
            raise _error_of(status, body) from None

    def publish(self, type: str, data: dict[str, Any] | None = None, *,
                target: str | None = None) -> dict[str, Any]:
        """Publish an event; return its id and type."""
        payload: dict[str, Any] = {"type": type, "data": data or {}}
        if target:
            payload["target"] = target
        status, body = self._call("POST", "/events", payload)
        if status != 202:
            raise _error_of(status, body)
        result: dict[str, Any] = json.loads(body)
        return result

    def get(self, path: str) -> tuple[int, Any]:
        """GET a JSON route (``/health``, ``/actions``); return the status and decoded body."""
        status, body = self._call("GET", path)
        try:
            return status, json.loads(body)
        except ValueError:
            raise _error_of(status, body) from None

    def get_ok(self, path: str) -> Any:
        """GET a JSON route; return its decoded body, or raise RemoteError unless 200."""
        status, body = self._call("GET", path)
        if status != 200:
            raise _error_of(status, body)
        return json.loads(body)

    def post_ok(self, path: str, payload: Any) -> Any:
        """POST JSON to a route; return its decoded body, or raise RemoteError unless 200."""
        status, body = self._call("POST", path, payload)
        if status != 200:
            raise _error_of(status, body)
        return json.loads(body)

    def stream(self, selector: str = "") -> Iterator[StreamItem]:
        """Follow ``GET /events`` and yield each frame until the node closes the stream."""
        query = f"?{urllib.parse.urlencode({'filter': selector})}" if selector else ""
        # No read timeout: a quiet stream is normal, and the node sends heartbeats.
        conn = self._connect(None)
        try:
            conn.request("GET", f"{self.base}/events{query}", headers={
                **self._headers(False), "Accept": "text/event-stream"})
            reply = conn.getresponse()
            if reply.status != 200:
                raise _error_of(reply.status, reply.read())
            event, data = "message", list[str]()
            while True:
                line = reply.readline()
                if not line:
                    return
                text = line.decode("utf-8", "replace").rstrip("\r\n")
                if not text:
                    if data:
                        yield StreamItem(event, json.loads("\n".join(data)))
                    event, data = "message", []
                elif text.startswith(":"):
                    continue
                else:
                    name, _, value = text.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "event":
                        event = value
                    elif name == "data":
                        data.append(value)
        except (OSError, http.client.HTTPException) as error:
            raise LinkError(f"lost the stream from {self.url}: {error}") from None
        finally:
            conn.close()


def _error_of(status: int, body: bytes) -> RemoteError:
    try:
        error = msgspec.json.decode(body).get("error") or {}
        type_, message = str(error.get("type", "HTTPError")), str(error.get("message", ""))
    except (msgspec.DecodeError, AttributeError):
        type_, message = "HTTPError", body[:200].decode("utf-8", "replace")
    return RemoteError(f"HTTP {status}: {type_}: {message}", status=status, type=type_)


def http_options_of(config: Config) -> dict[str, Any] | None:
    """A config's ``backends.http`` options, with the token the node keeps if none is given."""
    http = config.backends.get("http")
    if http is None:
        return None
    options = dict(http.options)
    if options.get("token") is None and options.get("auth") != "none":
        path = token_path(config.data_dir)
        if path.is_file():
            with contextlib.suppress(ValueError):
                options["token"] = read_secret(path)
    return options


def resolve(url: str | None, token: str | None, http_options: dict[str, Any] | None
            ) -> tuple[str, str | None]:
    """Pick the URL and token: the flag, else the environment, else the config, else defaults."""
    options = http_options or {}
    if not url:
        url = os.environ.get(URL_ENV)
    if not url and http_options is not None:
        host = str(options.get("host", "127.0.0.1"))
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a wildcard bind is reached on loopback
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        url = f"http://{host}:{options.get('port', 8008)}"
    if token is None:
        token = os.environ.get(TOKEN_ENV)
    if token is None and options.get("token"):
        token = str(options["token"])
    return url or DEFAULT_URL, token

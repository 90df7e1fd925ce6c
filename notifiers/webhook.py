"""The ``webhook`` notifier: POST each event as JSON to a URL, with retries and timeouts."""

from __future__ import annotations

import http.client
import ssl
from typing import Literal
from urllib.parse import urlsplit

import msgspec

from platybus.errors import ExtensionError
from platybus.extensions import NodeContext
from platybus.messages import Event
from platybus.notify.manager import Notifier
from platybus.notify.records import event_to_document

# Worth trying again: the receiver is overloaded or briefly broken.
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class WebhookConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where and how to send."""

    url: str
    method: Literal["POST", "PUT"] = "POST"
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    timeout: float = 5.0
    retries: int = 2
    retry_delay: float = 0.5


class WebhookNotifier(Notifier):
    """Sends the event document as the JSON body; a 2xx answer means sent."""

    Config = WebhookConfig
    shorthand = "url"

    def __init__(self, name: str, config: WebhookConfig, context: NodeContext) -> None:
        super().__init__(name, config, context)
        parts = urlsplit(config.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ExtensionError(f"notifier {name}: url must be http(s)://host/..., "
                                 f"got {config.url!r}", name=name)
        self._parts = parts

    def send_event(self, event: Event) -> bool:
        """POST the event, retrying connection errors and 5xx answers with backoff."""
        body = msgspec.json.encode(event_to_document(event))
        delay = self.config.retry_delay
        for attempt in range(self.config.retries + 1):
            if attempt:
                if self.cancelled.wait(delay):
                    return False
                delay *= 2
            try:
                status = self._post(body, event.id)
            except (OSError, http.client.HTTPException) as error:
                self.log.info("webhook %s: try %d for event %s failed: %s", self.config.url,
                              attempt + 1, event.id, error)
                continue
            if 200 <= status < 300:
                return True
            self.log.info("webhook %s answered %d to event %s", self.config.url, status,
                          event.id)
            if status not in _RETRY_STATUS:
                return False
        return False

    def _post(self, body: bytes, event_id: str) -> int:
        parts = self._parts
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(parts.hostname or "", parts.port,
                                               timeout=self.config.timeout,
                                               context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port,
                                              timeout=self.config.timeout)
        path = parts.path or "/"
        if parts.query:
            path += f"?{parts.query}"
        headers = {"Content-Type": "application/json", "X-Platybus-Event-Id": event_id,
                   **self.config.headers}
        try:
            conn.request(self.config.method, path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

"""The ``log`` notifier: write each event as one log line."""

from __future__ import annotations

import logging
from typing import Literal

import msgspec

from platybus.messages import Event
from platybus.notify.manager import Notifier
from platybus.notify.records import event_to_document


class LogConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The level and logger name of the lines."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    logger: str = "platybus.notify"


class LogNotifier(Notifier):
    """Logs ``<type> <id> <event as JSON>``."""

    Config = LogConfig
    shorthand = "level"

    def send_event(self, event: Event) -> bool:
        """Log the event; always succeeds."""
        body = msgspec.json.encode(event_to_document(event)).decode()
        logging.getLogger(self.config.logger).log(
            logging.getLevelName(self.config.level.upper()), "%s %s %s", event.type, event.id,
            body)
        return True

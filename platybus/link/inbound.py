"""What arrives from Redis: checked, de-duplicated, filtered, before it reaches the bus.

:class:`Inbound` sorts the entries of one read into the messages to deliver and
the entry ids to acknowledge; it does no I/O. Rejections are counted by reason
in :class:`LinkStats` and logged, a few per minute per reason.
"""

from __future__ import annotations

import logging
import time
from typing import Any, NamedTuple

from platybus.expr import Selector
from platybus.link.protocol import (
    DedupWindow,
    Envelope,
    LinkConfig,
    Rejected,
    StreamKeys,
    entry_ms,
    expired,
)
from platybus.messages import Event, Message, Request

log = logging.getLogger("platybus.link")

_LOG_BURST = 10
_LOG_PERIOD = 60.0


class Failed(NamedTuple):
    """An entry the link could not handle: it goes to the dead-letter stream."""

    entry_id: bytes
    fields: dict[bytes, bytes]
    reason: str


class LinkStats:
    """Counters of one link; ``rejected`` counts refused entries or messages by reason."""

    def __init__(self) -> None:
        self.sent = 0
        self.entries_written = 0
        self.received = 0
        self.delivered = 0
        self.duplicates = 0
        self.filtered = 0
        self.expired = 0
        self.dropped = 0
        self.write_errors = 0
        self.reclaimed = 0
        self.reconnects = 0
        self.dead_lettered = 0
        self.rejected: dict[str, int] = {}

    def as_dict(self) -> dict[str, Any]:
        """Return the counters as plain data."""
        out = {k: v for k, v in vars(self).items() if k != "rejected"}
        out["rejected"] = dict(self.rejected)
        out["rejected_total"] = sum(self.rejected.values())
        return out


class Throttle:
    """Lets a warning through at most ``burst`` times per period per key."""

    def __init__(self) -> None:
        self._windows: dict[str, tuple[float, int]] = {}

    def allow(self, key: str) -> bool:
        """Count one occurrence of ``key``; return whether it may be logged."""
        now = time.monotonic()
        start, count = self._windows.get(key, (now, 0))
        if now - start > _LOG_PERIOD:
            start, count = now, 0
        self._windows[key] = (start, count + 1)
        return count < _LOG_BURST


class Inbound:
    """Turns read entries into messages for the bus, rejecting what may not pass."""

    def __init__(self, node_id: str, keys: StreamKeys, envelope: Envelope, config: LinkConfig,
                 accept: Selector, stats: LinkStats, throttle: Throttle) -> None:
        self.node_id = node_id
        self.keys = keys
        self.envelope = envelope
        self.config = config
        self.accept = accept
        self.stats = stats
        self.dedup = DedupWindow(config.dedup_window)
        self._throttle = throttle
        self._me = node_id.encode()

    def sort(self, stream: str, entries: list[Any],
             redis_now: float) -> tuple[list[Message], list[bytes], list[Failed]]:
        """Sort read entries: messages to deliver, entry ids to acknowledge, entries that failed.

        Nothing an entry holds can make this raise: an entry that breaks the
        sorting itself is returned as failed (for the dead-letter stream), with
        the error as its reason, and counted as rejected (``error``).
        """
        is_events = stream == self.keys.events
        ack: list[bytes] = []
        failed: list[Failed] = []
        messages: list[Message] = []
        for entry_id, fields in entries:
            if entry_id is None:
                continue
            if not fields:  # trimmed away while pending
                ack.append(entry_id)
                continue
            mark = len(messages)
            try:
                self._sort_entry(stream, is_events, entry_id, fields, redis_now, messages)
            except Exception as error:
                del messages[mark:]  # an entry is delivered whole or not at all
                reason = f"{type(error).__name__}: {error}"[:500]
                self._reject(Rejected("error", reason), stream, entry_id)
                log.debug("entry %r of %s broke the link's checks", entry_id, stream,
                          exc_info=True)
                failed.append(Failed(entry_id, fields, reason))
                continue
            ack.append(entry_id)
        return messages, ack, failed

    def _sort_entry(self, stream: str, is_events: bool, entry_id: bytes,
                    fields: dict[bytes, bytes], redis_now: float,
                    messages: list[Message]) -> None:
        origin = fields.get(b"o")
        if is_events and origin == self._me:
            return
        stats = self.stats
        try:
            raws = self.envelope.open(stream, fields)
        except Rejected as rejected:
            self._reject(rejected, stream, entry_id)
            return
        seen = self.dedup.seen
        for raw in raws:
            stats.received += 1
            try:
                message = self.envelope.decode(raw)
                self._check(message, origin, is_events)
            except Rejected as rejected:
                self._reject(rejected, stream, entry_id)
                continue
            if seen(message.id):
                stats.duplicates += 1
                continue
            if isinstance(message, Event):
                if not self.accept.matches(message):
                    stats.filtered += 1
                    continue
            elif isinstance(message, Request) and expired(
                    message, self.config.request_expiry, entry_ms(entry_id), redis_now):
                stats.expired += 1
                if self._throttle.allow("expired"):
                    log.warning("request %s from %s for %s arrived after its deadline: "
                                "not run", message.id, message.origin, message.action)
                continue
            messages.append(message)

    def _check(self, message: Message, origin: bytes | None, is_events: bool) -> None:
        if message.origin is None or message.origin.encode() != origin:
            raise Rejected("origin_mismatch", f"{message.kind} {message.id} claims origin "
                                              f"{message.origin!r} in an entry from {origin!r}")
        target = message.target
        if is_events:
            if message.kind != "event" or target not in (None, "*"):
                raise Rejected("misrouted", f"{message.kind} {message.id} for {target!r} "
                                            "on the event stream")
        elif target != self.node_id:
            raise Rejected("misrouted", f"{message.kind} {message.id} for {target!r} in the "
                                        f"inbox of {self.node_id!r}")

    def count_rejection(self, reason: str) -> None:
        """Count one refused entry or message under ``reason``."""
        counts = self.stats.rejected
        counts[reason] = counts.get(reason, 0) + 1

    def _reject(self, rejected: Rejected, stream: str, entry_id: bytes) -> None:
        counts = self.stats.rejected
        counts[rejected.reason] = counts.get(rejected.reason, 0) + 1
        if self._throttle.allow(rejected.reason):
            log.warning("rejected entry %s of %s (%s): %s", entry_id.decode(), stream,
                        rejected.reason, rejected.detail)

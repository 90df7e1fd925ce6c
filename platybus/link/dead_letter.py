"""The dead-letter stream of a node: entries its link set aside, to look at, retry or drop.

An entry lands in ``<prefix>:dead:<node>`` when the node's link could not handle
it: it was delivered ``max_deliveries`` times without being acknowledged (the
node crashed on it, or could not hand it to its bus), or checking it failed in a
way no valid entry can. The dead entry keeps the original fields (``f.<name>``)
beside where it came from and why it was set aside::

    stream      the stream it was read from (the event stream or the node's inbox)
    entry       its id there
    reason      why it was set aside
    deliveries  how often it had been delivered
    node        the node that set it aside

:class:`DeadLetterWriter` moves entries there for the link's reader;
:class:`DeadLetters` reads and changes the stream for the node's ``dlq.*``
actions and for ``platybus dlq --redis``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis

from platybus.errors import ArgumentError
from platybus.link.inbound import Failed, LinkStats
from platybus.link.protocol import DeadLetterData, LinkConfig, LinkDeadLetter, StreamKeys
from platybus.messages import Event

__all__ = ["DeadLetterWriter", "DeadLetters", "bury"]

log = logging.getLogger("platybus.link")

_FIELD = b"f."
_META = (b"stream", b"entry", b"reason", b"deliveries", b"node")
SHOW_BYTES = 64 * 1024  # ``show`` prints at most this much of a message payload


def bury(pipe: Any, keys: StreamKeys, node_id: str, stream: str, entry_id: bytes,
         fields: dict[bytes, bytes], reason: str, deliveries: int, maxlen: int) -> None:
    """Queue on a pipeline: copy an entry to the dead-letter stream, then acknowledge it."""
    dead: dict[bytes, bytes] = {
        b"stream": stream.encode(), b"entry": entry_id, b"reason": reason.encode(),
        b"deliveries": str(deliveries).encode(), b"node": node_id.encode(),
    }
    for name, value in fields.items():
        dead[_FIELD + name] = value
    pipe.xadd(keys.dead(node_id), dead, maxlen=maxlen, approximate=True)
    pipe.xack(stream, node_id, entry_id)


class DeadLetterWriter:
    """The reader's side: moves entries it cannot handle aside, counts, logs and announces it."""

    def __init__(self, node_id: str, keys: StreamKeys, config: LinkConfig, stats: LinkStats,
                 announce: Callable[[Event], None]) -> None:
        self.node_id = node_id
        self.keys = keys
        self.config = config
        self.stats = stats
        self._announce = announce

    def bury_redelivered(self, client: redis.Redis, stream: str) -> None:
        """Move aside the pending entries already delivered ``max_deliveries`` times."""
        # Such an entry would come back after every restart (it may be what crashes the
        # node): it is set aside instead of being delivered once more.
        limit = self.config.max_deliveries
        count = self.config.read_count
        start = "-"
        while True:
            pending: list[dict[str, Any]] = client.xpending_range(
                stream, self.node_id, min=start, max="+", count=count)
            if not pending:
                return
            for item in pending:
                times = item["times_delivered"]
                if times < limit:
                    continue
                entry_id: bytes = item["message_id"]
                found: Any = client.xrange(stream, entry_id, entry_id)
                fields = found[0][1] if found else {}
                self.bury(client, stream, [Failed(entry_id, fields, (
                    f"delivered {times} times without being handled "
                    f"(max_deliveries {limit})"))], times)
            if len(pending) < count:
                return
            start = "(" + pending[-1]["message_id"].decode()

    def bury(self, client: redis.Redis, stream: str, failed: list[Failed],
             deliveries: int = 1) -> None:
        """Move entries to the dead-letter stream and acknowledge them, in one transaction."""
        pipe = client.pipeline(transaction=True)
        for entry in failed:
            bury(pipe, self.keys, self.node_id, stream, entry.entry_id, entry.fields,
                 entry.reason, deliveries, self.config.dead_maxlen)
        results = pipe.execute()
        dead_key = self.keys.dead(self.node_id)
        for index, entry in enumerate(failed):
            self.stats.dead_lettered += 1
            dead_id = results[2 * index].decode()
            origin = entry.fields.get(b"o", b"").decode("utf-8", "replace")
            log.warning("entry %s of %s (from %r) moved to %s as %s: %s",
                        entry.entry_id.decode(), stream, origin, dead_key, dead_id,
                        entry.reason)
            self._announce(LinkDeadLetter(origin=self.node_id, data=DeadLetterData(
                node_id=self.node_id, stream=stream, entry_id=entry.entry_id.decode(),
                dead_id=dead_id, reason=entry.reason, deliveries=deliveries,
                origin=origin)))


class DeadLetters:
    """Lists, shows, retries and drops the entries of one node's dead-letter stream."""

    def __init__(self, client: redis.Redis, keys: StreamKeys, node_id: str) -> None:
        self.client = client
        self.keys = keys
        self.node_id = node_id
        self.key = keys.dead(node_id)

    def count(self) -> int:
        """Return how many entries the dead-letter stream holds."""
        return int(self.client.xlen(self.key))

    def listing(self, last: int = 20) -> list[dict[str, Any]]:
        """Return a summary of the newest ``last`` dead entries, oldest first."""
        if last < 1:
            raise ArgumentError(f"last must be at least 1, got {last}")
        entries: Any = self.client.xrevrange(self.key, count=last)
        return [_summary(entry_id, fields) for entry_id, fields in reversed(entries)]

    def show(self, dead_id: str) -> dict[str, Any]:
        """Return one dead entry with its original fields (as text)."""
        entry_id, fields = self._get(dead_id)
        info = _summary(entry_id, fields)
        info["fields"] = {name[len(_FIELD):].decode("utf-8", "replace"):
                          _text(value) for name, value in fields.items()
                          if name.startswith(_FIELD)}
        return info

    def retry(self, ids: list[str] | None = None, every: bool = False) -> list[dict[str, Any]]:
        """Write dead entries back to the stream they came from; return where each went.

        The entry is written unchanged (its signature still holds) and removed
        from the dead-letter stream once written.
        """
        done: list[dict[str, Any]] = []
        for dead_id in self._ids(ids, every):
            entry_id, fields = self._get(dead_id)
            stream = fields.get(b"stream", b"").decode("utf-8", "replace")
            original = {name[len(_FIELD):]: value for name, value in fields.items()
                        if name.startswith(_FIELD)}
            if not stream or not original:
                raise ArgumentError(f"dead entry {dead_id} names no stream to retry into")
            pipe = self.client.pipeline(transaction=True)
            pipe.xadd(stream, original)  # type: ignore[arg-type]
            pipe.xdel(self.key, entry_id)
            new_id, _ = pipe.execute()
            done.append({"id": dead_id, "stream": stream, "entry_id": _text(new_id)})
        return done

    def drop(self, ids: list[str] | None = None, every: bool = False) -> int:
        """Remove dead entries for good; return how many were removed."""
        if every:
            count = self.count()
            self.client.delete(self.key)
            return count
        wanted = self._ids(ids, every)
        return int(self.client.xdel(self.key, *wanted)) if wanted else 0

    def _ids(self, ids: list[str] | None, every: bool) -> list[str]:
        if every:
            if ids:
                raise ArgumentError("give entry ids or --all, not both")
            entries: Any = self.client.xrange(self.key)
            return [_text(entry_id) for entry_id, _ in entries]
        if not ids:
            raise ArgumentError("give the ids of dead entries (see 'dlq list'), or --all")
        return list(ids)

    def _get(self, dead_id: str) -> tuple[bytes, dict[bytes, bytes]]:
        try:
            found: Any = self.client.xrange(self.key, dead_id, dead_id)
        except redis.ResponseError:
            raise ArgumentError(f"{dead_id!r} is not a stream entry id (such as "
                                "1700000000000-0)") from None
        if not found:
            raise ArgumentError(f"no dead entry {dead_id} in {self.key}", missing=dead_id)
        entry_id, fields = found[0]
        return bytes(entry_id), dict(fields)


def _text(value: bytes | str) -> str:
    if isinstance(value, str):
        return value
    text = value[:SHOW_BYTES].decode("utf-8", "replace")
    if len(value) > SHOW_BYTES:
        text += f"... ({len(value)} bytes)"
    return text


def _summary(entry_id: bytes, fields: dict[bytes, bytes]) -> dict[str, Any]:
    info: dict[str, Any] = {"id": _text(entry_id)}
    for name in _META:
        info[name.decode()] = _text(fields.get(name, b""))
    info["entry_id"] = info.pop("entry")
    try:
        info["deliveries"] = int(info["deliveries"] or 0)
    except ValueError:
        info["deliveries"] = 0
    info["origin"] = _text(fields.get(_FIELD + b"o", b""))
    info["size"] = len(fields.get(_FIELD + b"m", b""))
    info["dead_at"] = int(entry_id.split(b"-", 1)[0]) / 1000
    return info

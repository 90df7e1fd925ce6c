"""The Redis stream protocol shared by the node's link and the client library.

Layout under a key prefix (``platybus`` by default), so that several
installations can share one Redis:

- ``<prefix>:events``: one event stream. Every node (and client) reads it
  through its own consumer group, named after its id, so each one gets every
  entry and resumes where it left off after a restart.
- ``<prefix>:node:<id>``: one inbox stream per node or client, read through a
  group of the same name. It carries requests for that node, the responses to
  its requests, and events targeted at it alone.

One stream entry carries one or more messages written together by one origin::

    v  protocol version (b"1")
    o  origin id
    m  a JSON array of messages in the codec's wire format
    s  HMAC-SHA256 over version, stream key, origin and ``m`` (when a secret is set)

Binding the stream key into the signature stops an entry being copied from one
stream to another; duplicates are dropped by message id, not by entry id.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterator
from typing import Literal

import msgspec

from platybus.codec import Codec, nesting_depth_over
from platybus.errors import DecodeError
from platybus.messages import Event, Message, Request

__all__ = [
    "PROTOCOL",
    "DeadLetterData",
    "DedupWindow",
    "Envelope",
    "LinkConfig",
    "LinkDeadLetter",
    "LinkDown",
    "LinkEventData",
    "LinkUp",
    "Rejected",
    "StreamKeys",
    "mask_url",
]

PROTOCOL = b"1"
ENTRY_BYTES = 512 * 1024  # an entry holds fewer messages rather than grow past this

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_SCHEMES = ("redis://", "rediss://", "unix://")


class LinkConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How a node or client reaches Redis and tunes its streams."""

    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "platybus"
    secret: str | None = None
    events_maxlen: int = 100_000
    inbox_maxlen: int = 10_000
    buffer_size: int = 10_000
    buffer_policy: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    read_count: int = 1000
    entry_messages: int = 64
    block: float = 2.0
    connect_timeout: float = 5.0
    reconnect_min: float = 0.1
    reconnect_max: float = 5.0
    dedup_window: int = 100_000
    request_expiry: float = 30.0
    max_deliveries: int = 5
    dead_maxlen: int = 10_000

    def __post_init__(self) -> None:
        if not self.url.startswith(_SCHEMES):
            raise ValueError(f"url must start with redis://, rediss:// or unix://, got "
                             f"{mask_url(self.url)!r}")
        if not _PREFIX.fullmatch(self.prefix):
            raise ValueError("prefix must be 1-64 letters, digits, '_', '.', ':' or '-'")
        if self.secret is not None and len(self.secret) < 16:
            raise ValueError("secret must be at least 16 characters")
        for name in ("events_maxlen", "inbox_maxlen", "buffer_size", "read_count",
                     "entry_messages", "dedup_window", "max_deliveries", "dead_maxlen"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("block", "connect_timeout", "reconnect_min", "reconnect_max",
                     "request_expiry"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive number of seconds")
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must not be below reconnect_min")


def mask_url(url: str) -> str:
    """Return a Redis url with its password replaced by ``***`` (safe to log)."""
    return re.sub(r"(://[^:@/]*:)[^@/]*@", r"\1***@", url)


def valid_id(text: str) -> bool:
    """Whether ``text`` is a valid node or client id."""
    return _ID.fullmatch(text) is not None


class StreamKeys:
    """The Redis key names under one prefix."""

    __slots__ = ("events", "prefix")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.events = f"{prefix}:events"

    def inbox(self, node_id: str) -> str:
        """Return the inbox stream of a node or client."""
        return f"{self.prefix}:node:{node_id}"

    def dead(self, node_id: str) -> str:
        """Return the dead-letter stream of a node or client."""
        return f"{self.prefix}:dead:{node_id}"

    def stream_for(self, message: Message) -> str:
        """Return the stream a message leaves through: an inbox, or the event stream."""
        target = message.target
        if target is None or target == "*":
            return self.events
        return self.inbox(target)


class LinkEventData(msgspec.Struct, frozen=True, omit_defaults=True):
    """Data of ``node.link.*`` events."""

    node_id: str
    url: str
    reason: str = ""
    down_for: float = 0.0


class LinkDown(Event, tag="event", kw_only=True, frozen=True):
    """The link to Redis is lost; outgoing messages wait in the buffer."""

    type: str = "node.link.down"
    data: LinkEventData


class LinkUp(Event, tag="event", kw_only=True, frozen=True):
    """The link to Redis is (again) established."""

    type: str = "node.link.up"
    data: LinkEventData


class DeadLetterData(msgspec.Struct, frozen=True, omit_defaults=True):
    """Data of ``node.link.dead_letter``: which entry was set aside, where, and why."""

    node_id: str
    stream: str
    entry_id: str
    dead_id: str
    reason: str
    deliveries: int = 0
    origin: str = ""


class LinkDeadLetter(Event, tag="event", kw_only=True, frozen=True):
    """An entry that could not be handled was moved to the node's dead-letter stream."""

    type: str = "node.link.dead_letter"
    data: DeadLetterData


class Rejected(Exception):
    """An entry or message refused by the receiving side; ``reason`` is the counter name."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# The codec's reasons that are counters of their own; a message too large is "invalid".
_REASONS = frozenset(("malformed", "unknown_kind", "invalid"))
_raw_list = msgspec.json.Decoder(list[msgspec.Raw])


class Envelope:
    """Packs messages into stream entries and checks and unpacks them on the way in."""

    def __init__(self, codec: Codec, secret: str | None) -> None:
        self.codec = codec
        self._key = secret.encode() if secret else None

    @property
    def signed(self) -> bool:
        """Whether entries are signed and signatures required."""
        return self._key is not None

    def _mac(self, stream: bytes, origin: bytes, payload: bytes) -> bytes:
        assert self._key is not None
        return hmac.digest(self._key, b"\n".join((PROTOCOL, stream, origin, payload)), "sha256")

    def pack(self, stream: str, origin: str, encoded: list[bytes]) -> dict[bytes, bytes]:
        """Return the fields of one entry carrying already encoded messages."""
        payload = b"[" + b",".join(encoded) + b"]"
        origin_b = origin.encode()
        fields = {b"v": PROTOCOL, b"o": origin_b, b"m": payload}
        if self._key is not None:
            fields[b"s"] = self._mac(stream.encode(), origin_b, payload)
        return fields

    def entries(self, stream: str, origin: str, encoded: list[bytes],
                limit: int) -> Iterator[dict[bytes, bytes]]:
        """Pack encoded messages, in order, into entries of at most ``limit`` messages."""
        chunk: list[bytes] = []
        size = 0
        for data in encoded:
            if chunk and (len(chunk) >= limit or size + len(data) > ENTRY_BYTES):
                yield self.pack(stream, origin, chunk)
                chunk, size = [], 0
            chunk.append(data)
            size += len(data)
        if chunk:
            yield self.pack(stream, origin, chunk)

    def open(self, stream: str, fields: dict[bytes, bytes]) -> list[msgspec.Raw]:
        """Check an entry's form and signature; return its raw messages or raise Rejected."""
        origin = fields.get(b"o")
        payload = fields.get(b"m")
        if fields.get(b"v") != PROTOCOL or not origin or payload is None:
            raise Rejected("malformed", "entry lacks the v/o/m fields of protocol 1")
        if self._key is not None:
            signature = fields.get(b"s")
            if not signature:
                raise Rejected("unsigned", f"unsigned entry from {origin!r}")
            if not hmac.compare_digest(signature, self._mac(stream.encode(), origin, payload)):
                raise Rejected("bad_signature", f"entry from {origin!r} has a wrong signature")
        # The entry's list adds one level to its messages' depth.
        if nesting_depth_over(payload, self.codec.max_depth + 1):
            raise Rejected("malformed", f"entry from {origin!r}: JSON nested deeper than "
                           f"the maximum of {self.codec.max_depth} levels")
        try:
            return _raw_list.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as error:
            raise Rejected("malformed", f"entry from {origin!r}: malformed JSON: {error}") \
                from None

    def decode(self, raw: msgspec.Raw) -> Message:
        """Decode one message of an entry; raise Rejected naming why it is invalid."""
        try:
            return self.codec.decode(raw)
        except DecodeError as error:
            reason = error.details.get("reason")
            raise Rejected(reason if reason in _REASONS else "invalid", str(error)) from None


def entry_ms(entry_id: bytes) -> int:
    """Return the Redis server time (ms) at which a stream entry was added."""
    return int(entry_id.split(b"-", 1)[0])


def expired(request: Request, default_timeout: float, added_ms: int, redis_now_ms: float) -> bool:
    """Whether a request is past its deadline, so that its caller has given up.

    Both times are Redis server times (the entry id and the server clock), so
    clocks that differ between machines do not matter.
    """
    timeout = request.timeout if request.timeout is not None else default_timeout
    return redis_now_ms - added_ms > timeout * 1000


class DedupWindow:
    """Remembers the last ``size`` to ``2 * size`` message ids, in O(1) per id."""

    __slots__ = ("_current", "_previous", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._current: set[str] = set()
        self._previous: set[str] = set()

    def seen(self, message_id: str) -> bool:
        """Record an id; return whether it was already recorded."""
        if message_id in self._current or message_id in self._previous:
            return True
        current = self._current
        current.add(message_id)
        if len(current) >= self.size:
            self._previous = current
            self._current = set()
        return False

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

"""The wire format: the only place where plain data becomes messages.

A message on the wire is one JSON object with a ``kind`` field (``event``,
``request`` or ``response``). Events whose ``type`` is registered decode into
their typed class; other events decode into a generic :class:`Event`. Nothing
named in the data is ever imported.

Every way in goes through the same size and shape checks: bytes
(:meth:`Codec.decode`), decoded JSON (:meth:`Codec.from_builtins`), Python
objects restored from a file (:meth:`Codec.convert`), and an event asked for by
type and data (:meth:`Codec.event`). A :class:`DecodeError` says why in one line
and names the kind of problem in ``details["reason"]``: ``malformed`` (not JSON,
or text that is not valid Unicode), ``unknown_kind``, ``too_large``, ``too_deep``
or ``invalid``.

Decoding is bounded: input over ``max_size`` bytes or nested deeper than
``max_depth`` arrays/objects is refused before it is parsed, so no input, however
hostile, raises anything but :class:`DecodeError` (no ``RecursionError``,
``UnicodeEncodeError`` or ``TypeError``). Surfaces that parse JSON of their own
shape (HTTP bodies, websocket frames) use :meth:`Codec.decode_json`, which has
the same bounds.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from platybus.errors import DecodeError
from platybus.messages import Event, EventTypes, Message, Request, Response

DEFAULT_MAX_SIZE = 1 << 20
DEFAULT_MAX_DEPTH = 64

# JSON strings (with their escapes) may hold brackets that are not structure.
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = re.compile(rb"[^\[\]{}]+")
_INNERMOST = re.compile(rb"\[\]|\{\}")

Data = bytes | bytearray | memoryview | str

EVENT_TYPE = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


class _Head(msgspec.Struct):
    kind: Any = None
    type: Any = None


_KINDS: dict[str, type[Message]] = {"event": Event, "request": Request, "response": Response}


def nesting_depth_over(data: bytes | bytearray, limit: int) -> bool:
    """Whether JSON ``data`` nests arrays/objects deeper than ``limit``."""
    # Cheap and exact in the common case: fewer opening brackets than the
    # limit cannot nest deeper than it.
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    skeleton = _NOT_BRACKETS.sub(b"", _STRINGS.sub(b"", data))
    # Each pass removes the innermost pairs, so it takes as many passes as the depth.
    for _ in range(limit):
        skeleton, removed = _INNERMOST.subn(b"", skeleton)
        if not skeleton or not removed:
            return False
    return bool(skeleton)


def as_bytes(data: Data) -> bytes | bytearray | memoryview:
    """Return ``data`` as bytes; a ``str`` that is not valid Unicode is a :class:`DecodeError`."""
    if not isinstance(data, str):
        return data
    try:
        return data.encode()
    except UnicodeEncodeError as error:
        raise DecodeError(f"invalid text at character {error.start}: {error.reason}",
                          reason="malformed") from None


class Codec:
    """Encodes messages to JSON bytes and builds them back from data, validating types."""

    def __init__(self, types: EventTypes | None = None, max_size: int = DEFAULT_MAX_SIZE,
                 max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        self.types = types if types is not None else EventTypes()
        self.max_size = max_size
        self.max_depth = max_depth
        self._encoder = msgspec.json.Encoder()
        self._head = msgspec.json.Decoder(_Head)
        self._decoders: dict[type[Message], msgspec.json.Decoder[Any]] = {}

    def encode(self, message: Message) -> bytes:
        """Return the JSON bytes of a message."""
        try:
            return self._encoder.encode(message)
        except (TypeError, ValueError, OverflowError) as error:
            raise DecodeError(f"cannot encode {message.kind} {message.id}: {error}") from error

    def check(self, message: Message) -> int:
        """Return a message's encoded size; raise :class:`DecodeError` if it cannot be sent."""
        size = len(self.encode(message))
        self._check_size(size, message.kind)
        return size

    def _check_size(self, size: int, what: str = "message") -> None:
        if size > self.max_size:
            raise DecodeError(
                f"{what} of {size} bytes exceeds the maximum of {self.max_size} bytes",
                reason="too_large")

    def bounded(self, data: Data) -> bytes | bytearray:
        """Return ``data`` as bytes if within the size and depth limits, else raise DecodeError."""
        raw = as_bytes(data)
        # Other buffers (memoryview, msgspec.Raw) are small messages: a copy is cheap.
        flat = raw if isinstance(raw, bytes | bytearray) else bytes(memoryview(raw))
        self._check_size(len(flat))
        if nesting_depth_over(flat, self.max_depth):
            raise DecodeError(f"JSON nested deeper than the maximum of {self.max_depth} levels",
                              reason="too_deep")
        return flat

    def decode_json(self, data: Data, decoder: msgspec.json.Decoder[Any] | None = None) -> Any:
        """Decode any JSON document within the limits; raise only :class:`DecodeError`."""
        raw = self.bounded(data)
        try:
            return decoder.decode(raw) if decoder is not None else msgspec.json.decode(raw)
        except msgspec.ValidationError as error:
            raise DecodeError(f"invalid body: {error}", reason="invalid") from error
        except (msgspec.DecodeError, RecursionError) as error:
            raise DecodeError(f"malformed JSON: {error}", reason="malformed") from error

    def _class_of(self, kind: Any, type_: Any) -> type[Message]:
        """The class a message of ``kind`` (and event ``type_``) becomes: the shape check."""
        cls = _KINDS.get(kind) if isinstance(kind, str) else None
        if kind is None:
            raise DecodeError("invalid message: it has no 'kind' (event, request or response)",
                              reason="unknown_kind")
        if cls is None:
            raise DecodeError(
                f"unknown message kind {kind!r}: expected event, request or response",
                reason="unknown_kind")
        if cls is Event:
            if not isinstance(type_, str) or not type_:
                raise DecodeError("invalid event: 'type' must be a non-empty string",
                                  reason="invalid")
            cls = self.types.get(type_) or Event
        return cls

    def decode(self, data: bytes | bytearray | memoryview | str) -> Message:
        """Turn JSON bytes into a typed message; raise :class:`DecodeError` if invalid."""
        data = self.bounded(data)
        try:
            head = self._head.decode(data)
        except msgspec.ValidationError as error:
            raise DecodeError(f"invalid message: {error}", reason="invalid") from error
        except (msgspec.DecodeError, RecursionError) as error:
            raise DecodeError(f"malformed JSON: {error}", reason="malformed") from error
        cls = self._class_of(head.kind, head.type)
        decoder = self._decoders.get(cls)
        if decoder is None:
            decoder = self._decoders[cls] = msgspec.json.Decoder(cls)
        try:
            message: Message = decoder.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as error:
            what = f"{head.kind} {head.type}" if cls is not Request else head.kind
            raise DecodeError(f"invalid {what}: {error}", reason="invalid") from error
        except (TypeError, ValueError) as error:
            # A typed event's own __post_init__ may refuse its data.
            raise DecodeError(f"invalid {head.kind} {head.type}: {error}",
                              reason="invalid") from error
        return message

    def to_builtins(self, message: Message) -> dict[str, Any]:
        """Return a message as plain JSON-compatible Python objects."""
        result: dict[str, Any] = msgspec.to_builtins(message)
        return result

    def from_builtins(self, obj: Any) -> Message:
        """Build a message from plain Python objects (a decoded JSON object)."""
        try:
            data = self._encoder.encode(obj)
        except (TypeError, ValueError, OverflowError, RecursionError) as error:
            raise DecodeError(f"invalid message: {error}", reason="invalid") from None
        return self.decode(data)

    def convert(self, obj: Any, size: int) -> Message:
        """Build a message from Python objects JSON cannot tell apart (times, bytes, tuples).

        ``size`` is the length of the document they were read from; the checks are
        those of :meth:`decode`. Event records read back from files come this way.
        """
        self._check_size(size)
        if not isinstance(obj, dict):
            raise DecodeError("invalid message: expected a JSON object", reason="invalid")
        cls = self._class_of(obj.get("kind"), obj.get("type"))
        try:
            message: Message = msgspec.convert(obj, cls)
        except (msgspec.ValidationError, ValueError, TypeError, RecursionError) as error:
            raise DecodeError(f"invalid {obj.get('kind')}: {error}", reason="invalid") from None
        return message

    def event(
        self,
        type: str,
        data: Any = None,
        *,
        origin: str | None = None,
        target: str | None = None,
        parent_id: str | None = None,
    ) -> Event:
        """Build the event a user asks for by ``type`` and ``data`` (an action, an HTTP body).

        The type must be dotted words; a registered type's data is validated
        against its class; the event must fit the size limit.
        """
        if not isinstance(type, str) or not EVENT_TYPE.fullmatch(type):
            raise DecodeError(
                f"event type {type!r} must be dotted words such as 'garden.watered'",
                reason="invalid")
        message = self.from_builtins({
            "kind": "event", "type": type, "data": {} if data is None else data,
            "origin": origin, "target": target, "parent_id": parent_id})
        assert isinstance(message, Event)
        return message

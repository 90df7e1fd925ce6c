"""The wire format: the only place where bytes become messages.

A message on the wire is one JSON object with a ``kind`` field (``event``,
``request`` or ``response``). Events whose ``type`` is registered decode into
their typed class; other events decode into a generic :class:`Event`. Nothing
named in the data is ever imported.

Decoding is bounded: input over ``max_size`` bytes or nested deeper than
``max_depth`` arrays/objects is refused with :class:`DecodeError` before it is
parsed, so no input, however hostile, raises anything else (no
``RecursionError``, ``UnicodeEncodeError`` or ``TypeError``). Every surface that
takes JSON from outside (HTTP bodies, websocket frames, stream entries, stored
records) goes through :meth:`Codec.check` or :meth:`Codec.decode`.
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


class _Head(msgspec.Struct):
    kind: str
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
        raise DecodeError(
            f"invalid text at character {error.start}: {error.reason}") from None


class Codec:
    """Encodes messages to JSON bytes and decodes them back, validating types."""

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

    def check(self, data: Data) -> bytes | bytearray | memoryview:
        """Return ``data`` as bytes if within the size and depth limits, else raise DecodeError."""
        raw = as_bytes(data)
        # Other buffers (memoryview, msgspec.Raw) are small messages: a copy is cheap.
        flat = raw if isinstance(raw, bytes | bytearray) else bytes(memoryview(raw))
        if len(flat) > self.max_size:
            raise DecodeError(
                f"message of {len(flat)} bytes exceeds the maximum of {self.max_size} bytes")
        if nesting_depth_over(flat, self.max_depth):
            raise DecodeError(f"JSON nested deeper than the maximum of {self.max_depth} levels")
        return raw

    def decode_json(self, data: Data, decoder: msgspec.json.Decoder[Any] | None = None) -> Any:
        """Decode any JSON document within the limits; raise only :class:`DecodeError`."""
        raw = self.check(data)
        try:
            return decoder.decode(raw) if decoder is not None else msgspec.json.decode(raw)
        except msgspec.ValidationError as error:
            raise DecodeError(f"invalid body: {error}") from error
        except (msgspec.DecodeError, RecursionError) as error:
            raise DecodeError(f"malformed JSON: {error}") from error

    def decode(self, data: Data) -> Message:
        """Turn JSON bytes into a typed message; raise :class:`DecodeError` if invalid."""
        data = self.check(data)
        try:
            head = self._head.decode(data)
        except msgspec.ValidationError as error:
            raise DecodeError(f"invalid message: {error}") from error
        except (msgspec.DecodeError, RecursionError) as error:
            raise DecodeError(f"malformed JSON: {error}") from error
        cls = _KINDS.get(head.kind)
        if cls is None:
            raise DecodeError(
                f"unknown message kind {head.kind!r}: expected event, request or response"
            )
        if cls is Event:
            if not isinstance(head.type, str) or not head.type:
                raise DecodeError("invalid event: 'type' must be a non-empty string")
            cls = self.types.get(head.type) or Event
        decoder = self._decoders.get(cls)
        if decoder is None:
            decoder = self._decoders[cls] = msgspec.json.Decoder(cls)
        try:
            message: Message = decoder.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as error:
            what = f"{head.kind} {head.type}" if cls is not Request else head.kind
            raise DecodeError(f"invalid {what}: {error}") from error
        except (TypeError, ValueError) as error:
            # A typed event's own __post_init__ may refuse its data.
            raise DecodeError(f"invalid {head.kind} {head.type}: {error}") from error
        return message

    def to_builtins(self, message: Message) -> dict[str, Any]:
        """Return a message as plain JSON-compatible Python objects."""
        result: dict[str, Any] = msgspec.to_builtins(message)
        return result

    def from_builtins(self, obj: Any) -> Message:
        """Build a message from plain Python objects (a decoded JSON object)."""
        try:
            data = msgspec.json.encode(obj)
        except (TypeError, ValueError, OverflowError, RecursionError) as error:
            raise DecodeError(f"cannot encode the message: {error}") from error
        return self.decode(data)

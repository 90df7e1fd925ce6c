"""The wire format: the only place where bytes become messages.

A message on the wire is one JSON object with a ``kind`` field (``event``,
``request`` or ``response``). Events whose ``type`` is registered decode into
their typed class; other events decode into a generic :class:`Event`. Nothing
named in the data is ever imported.
"""

from __future__ import annotations

from typing import Any

import msgspec

from platybus.errors import DecodeError
from platybus.messages import Event, EventTypes, Message, Request, Response

DEFAULT_MAX_SIZE = 1 << 20


class _Head(msgspec.Struct):
    kind: str
    type: Any = None


_KINDS: dict[str, type[Message]] = {"event": Event, "request": Request, "response": Response}


class Codec:
    """Encodes messages to JSON bytes and decodes them back, validating types."""

    def __init__(self, types: EventTypes | None = None, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.types = types if types is not None else EventTypes()
        self.max_size = max_size
        self._encoder = msgspec.json.Encoder()
        self._head = msgspec.json.Decoder(_Head)
        self._decoders: dict[type[Message], msgspec.json.Decoder[Any]] = {}

    def encode(self, message: Message) -> bytes:
        """Return the JSON bytes of a message."""
        try:
            return self._encoder.encode(message)
        except (TypeError, ValueError, OverflowError) as error:
            raise DecodeError(f"cannot encode {message.kind} {message.id}: {error}") from error

    def decode(self, data: bytes | bytearray | memoryview | str) -> Message:
        """Turn JSON bytes into a typed message; raise :class:`DecodeError` if invalid."""
        if len(data) > self.max_size:
            raise DecodeError(
                f"message of {len(data)} bytes exceeds the maximum of {self.max_size} bytes"
            )
        try:
            head = self._head.decode(data)
        except msgspec.ValidationError as error:
            raise DecodeError(f"invalid message: {error}") from error
        except msgspec.DecodeError as error:
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
        except (msgspec.ValidationError, msgspec.DecodeError) as error:
            what = f"{head.kind} {head.type}" if cls is not Request else head.kind
            raise DecodeError(f"invalid {what}: {error}") from error
        return message

    def to_builtins(self, message: Message) -> dict[str, Any]:
        """Return a message as plain JSON-compatible Python objects."""
        result: dict[str, Any] = msgspec.to_builtins(message)
        return result

    def from_builtins(self, obj: Any) -> Message:
        """Build a message from plain Python objects (a decoded JSON object)."""
        return self.decode(msgspec.json.encode(obj))

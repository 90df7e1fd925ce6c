"""Pure MQTT topic and payload rules: filters, named captures, payload decoding.

No I/O here: the backend feeds bytes and topics in and gets plain values out.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

PayloadFormat = Literal["json", "text", "base64"]

_CAPTURE = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def topic_problem(topic: str) -> str | None:
    """Return why ``topic`` cannot be published to, or ``None`` (no wildcards, no NUL)."""
    if not topic:
        return "a topic must not be empty"
    if "+" in topic or "#" in topic:
        return f"topic {topic!r} holds a wildcard ('+' or '#'): only subscriptions may"
    if "\0" in topic:
        return f"topic {topic!r} holds a NUL character"
    if len(topic.encode()) > 65535:
        return "a topic is at most 65535 bytes"
    return None


@dataclass(frozen=True)
class TopicPattern:
    """A ``subscribe:`` topic: its MQTT filter and the names captured from its levels."""

    source: str
    filter: str
    captures: tuple[tuple[int, str], ...]

    @classmethod
    def parse(cls, source: str) -> TopicPattern:
        """Read ``zigbee2mqtt/{device}``-style topics; raise ``ValueError`` when invalid."""
        if not source:
            raise ValueError("a topic filter must not be empty")
        levels = source.split("/")
        filters, captures = [], []
        for index, level in enumerate(levels):
            named = _CAPTURE.match(level)
            if named:
                captures.append((index, named.group(1)))
                filters.append("+")
                continue
            if "{" in level or "}" in level:
                raise ValueError(f"topic {source!r}: a capture is a whole level, as "
                                 "'zigbee2mqtt/{device}'")
            if level == "#" and index != len(levels) - 1:
                raise ValueError(f"topic {source!r}: '#' may only be the last level")
            if ("#" in level or "+" in level) and level not in ("#", "+"):
                raise ValueError(f"topic {source!r}: a wildcard is a whole level")
            filters.append(level)
        names = [name for _, name in captures]
        if len(set(names)) != len(names):
            raise ValueError(f"topic {source!r}: a capture name is used twice")
        return cls(source, "/".join(filters), tuple(captures))

    def captured(self, topic: str) -> dict[str, str]:
        """Return the named levels of a topic that matched this filter."""
        if not self.captures:
            return {}
        levels = topic.split("/")
        return {name: levels[i] for i, name in self.captures if i < len(levels)}


def matches(filter_: str, topic: str) -> bool:
    """Whether an MQTT topic filter (``+``, ``#``) matches a topic."""
    fl, tl = filter_.split("/"), topic.split("/")
    if topic.startswith("$") and fl[0] in ("+", "#"):
        return False  # $SYS and friends never match a leading wildcard (MQTT 4.7.2)
    for i, level in enumerate(fl):
        if level == "#":
            return True
        if i >= len(tl) or (level != "+" and level != tl[i]):
            return False
    return len(fl) == len(tl)


def decode_payload(payload: bytes) -> tuple[Any, PayloadFormat]:
    """Return the payload as JSON when it is JSON, else as text, else as base64."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(payload).decode("ascii"), "base64"
    stripped = text.strip()
    if stripped and stripped[0] in '{["-0123456789tfn':
        try:
            return json.loads(stripped), "json"
        except ValueError:
            pass
    return text, "text"


def encode_payload(value: Any, payload_format: PayloadFormat | None = None) -> bytes:
    """Turn an action's or rule's payload into bytes: text as is, other values as JSON."""
    if payload_format == "base64":
        if not isinstance(value, str):
            raise ValueError("a base64 payload must be a string")
        return base64.b64decode(value, validate=True)
    if isinstance(value, bytes):
        return value
    if value is None:
        return b""
    if isinstance(value, str) and payload_format != "json":
        return value.encode()
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

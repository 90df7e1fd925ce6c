"""Event records: build an event step by step, close it, dump it and load it back.

An :class:`EventRecord` is mutable until :meth:`EventRecord.close`; it holds
values, attached files (path and SHA-1 taken when attached) and a begin and
end time, and produces an ordinary immutable :class:`Event` whose ``data`` is a
:class:`RecordData`. :func:`dump_event` writes any event to a JSON file and
:func:`load_event` reads it back equal: the file is the event's wire form plus
a ``value_types`` list naming the values JSON cannot tell apart (times, bytes,
tuples, ...). See ``docs/notifiers.md``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import os
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import msgspec

from platybus.atomic import write_atomic
from platybus.codec import Codec
from platybus.errors import DecodeError, RecordClosed
from platybus.messages import Event, new_id

__all__ = [
    "Attachment",
    "EventRecord",
    "RecordData",
    "dump_event",
    "event_from_document",
    "event_to_document",
    "load_event",
]

FORMAT = "platybus.event/1"
_CHUNK = 1 << 20


class Attachment(msgspec.Struct, frozen=True, kw_only=True):
    """A file attached to an event: where it is and its SHA-1 when it was attached."""

    name: str
    path: str
    sha1: str
    size: int

    def verify(self) -> bool:
        """Whether the file is still there with the content it had when attached."""
        try:
            return sha1_of(Path(self.path)) == self.sha1
        except OSError:
            return False


class RecordData(msgspec.Struct, frozen=True, kw_only=True):
    """The ``data`` of a recorded event: its values, attachments and time span."""

    values: dict[str, Any] = msgspec.field(default_factory=dict)
    attachments: tuple[Attachment, ...] = ()
    begin: dt.datetime | None = None
    end: dt.datetime | None = None
    closed: bool = False

    def attachment(self, name: str) -> Attachment | None:
        """Return the attachment of that name, if any."""
        return next((a for a in self.attachments if a.name == name), None)


def sha1_of(path: Path) -> str:
    """Return the hex SHA-1 of a file's content."""
    digest = hashlib.sha1(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def as_time(value: dt.datetime | float | int) -> dt.datetime:
    """Return a timezone-aware datetime (naive means local time; numbers are epoch seconds)."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is not None else value.astimezone()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, tz=dt.UTC)
    raise TypeError(f"expected a datetime or epoch seconds, got {type(value).__name__}")


def human_time(value: dt.datetime | None) -> str | None:
    """A time as people read it in a report: ``2024-05-01 12:00:00 UTC``."""
    if value is None:
        return None
    return value.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


# The record's own attributes; any other attribute name is one of its values.
_OWN = frozenset(("type", "id", "ts", "origin", "target", "parent_id"))


class EventRecord:
    """Builds an event: values, attachments, begin and end; immutable once closed.

    ``record.build = 42`` sets the value ``build`` and ``record.build`` reads it.
    As a context manager the record closes on exit, keeping the ``error`` of an
    exception that escaped the block (which still propagates).
    """

    def __init__(
        self,
        type: str,
        values: Mapping[str, Any] | None = None,
        *,
        uid: str | None = None,
        origin: str | None = None,
        target: str | None = None,
        parent_id: str | None = None,
        begin: dt.datetime | float | None = None,
    ) -> None:
        self.type = type
        self.id = uid if uid is not None else new_id()
        self.ts = time.time()
        self.origin = origin
        self.target = target
        self.parent_id = parent_id
        self._values: dict[str, Any] = dict(values or {})
        self._attachments: dict[str, Attachment] = {}
        # Begun when created, as a record of something that starts now.
        self._begin: dt.datetime | None = (as_time(begin) if begin is not None
                                           else dt.datetime.now(dt.UTC))
        self._end: dt.datetime | None = None
        self._closed: Event | None = None
        self._formatters: dict[str, Callable[[Any], Any]] = {}

    # -- attribute access to values ----------------------------------------

    def __getattr__(self, name: str) -> Any:
        # Only called for names that are not attributes: those are values.
        values = self.__dict__.get("_values")
        if values is not None and name in values:
            return values[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or value {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_") or name in _OWN:
            object.__setattr__(self, name, value)
            return
        if hasattr(type(self), name):
            raise AttributeError(f"{name!r} is a method of EventRecord: "
                                 f"use record.set({name!r}, value) for a value of that name")
        self.set(name, value)

    def __delattr__(self, name: str) -> None:
        self._check_open()
        if name not in self._values:
            raise AttributeError(name)
        del self._values[name]

    # -- context manager ---------------------------------------------------

    def __enter__(self) -> EventRecord:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None and not self.closed:
            self._values["error"] = {
                "type": type(exc).__name__, "message": str(exc),
                "traceback": "".join(traceback.format_exception(exc_type, exc, tb)),
            }
        self.close()

    # -- building ----------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed is not None:
            raise RecordClosed(f"event record {self.id} ({self.type}) is closed",
                               event_id=self.id)

    def set(self, key: str, value: Any) -> EventRecord:
        """Set one value; return the record so calls chain."""
        self._check_open()
        self._values[key] = value
        return self

    def update(self, values: Mapping[str, Any]) -> EventRecord:
        """Set several values."""
        self._check_open()
        self._values.update(values)
        return self

    def attach_file(self, path: str | os.PathLike[str], name: str | None = None) -> Attachment:
        """Attach a file by path, taking its SHA-1 now; a second file of that name replaces it."""
        self._check_open()
        file = Path(path).resolve()
        attachment = Attachment(name=name or file.name, path=str(file), sha1=sha1_of(file),
                                size=file.stat().st_size)
        self._attachments[attachment.name] = attachment
        return attachment

    def begin(self, at: dt.datetime | float | None = None) -> EventRecord:
        """Mark when what the event records began (now by default)."""
        self._check_open()
        self._begin = as_time(at) if at is not None else dt.datetime.now(dt.UTC)
        return self

    def end(self, at: dt.datetime | float | None = None) -> EventRecord:
        """Mark when it ended (now by default)."""
        self._check_open()
        self._end = as_time(at) if at is not None else dt.datetime.now(dt.UTC)
        return self

    def close(self, end: dt.datetime | float | None = None) -> Event:
        """Freeze the record (ending it now unless it has an end) and return its event."""
        if self._closed is not None:
            return self._closed
        if end is not None or self._end is None:
            self.end(end)
        self._closed = self._build(closed=True)
        return self._closed

    def set_formatter(self, key: str, fn: Callable[[Any], Any]) -> EventRecord:
        """Have :meth:`as_dict` show the value ``key`` as ``fn(value)``; the event keeps it."""
        self._formatters[key] = fn
        return self

    # -- reading -----------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        """The record for people: formatted values, human dates, attachments by name.

        Lossy by design (formatters, dates as text); :meth:`dump` and
        :func:`event_to_document` keep the lossless form.
        """
        values = {}
        for key, value in self._values.items():
            fn = self._formatters.get(key)
            values[key] = fn(value) if fn is not None else value
        return {
            "id": self.id, "type": self.type, "origin": self.origin,
            "begin": human_time(self._begin), "end": human_time(self._end),
            "closed": self.closed, "values": values,
            "attachments": {name: {"path": a.path, "sha1": a.sha1}
                            for name, a in self._attachments.items()},
        }

    def get_attachments(self) -> dict[str, tuple[str, str]]:
        """Each attached file's name with its ``(path, sha1)``."""
        return {name: (a.path, a.sha1) for name, a in self._attachments.items()}

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed is not None

    @property
    def values(self) -> dict[str, Any]:
        """A copy of the values."""
        return dict(self._values)

    @property
    def attachments(self) -> tuple[Attachment, ...]:
        """The attached files, in the order attached."""
        return tuple(self._attachments.values())

    @property
    def event(self) -> Event:
        """The closed event, or a snapshot of the record so far."""
        return self._closed if self._closed is not None else self._build(closed=False)

    def _build(self, *, closed: bool) -> Event:
        data = RecordData(values=dict(self._values), attachments=self.attachments,
                          begin=self._begin, end=self._end, closed=closed)
        return Event(id=self.id, ts=self.ts, origin=self.origin, target=self.target,
                     parent_id=self.parent_id, type=self.type, data=data)

    def dump(self, directory: str | os.PathLike[str]) -> Path:
        """Write the record's event to ``directory``; return the file."""
        return dump_event(self.event, directory)

    @classmethod
    def from_event(cls, event: Event) -> EventRecord:
        """Rebuild a record from its event (closed if the event was)."""
        record = cls(event.type, uid=event.id, origin=event.origin, target=event.target,
                     parent_id=event.parent_id)
        record.ts = event.ts
        record._begin = None
        data = event.data
        if isinstance(data, RecordData):
            record._values = dict(data.values)
            record._attachments = {a.name: a for a in data.attachments}
            record._begin, record._end = data.begin, data.end
            if data.closed:
                record._closed = event
        elif isinstance(data, Mapping):
            record._values = dict(data)
        else:
            record._values = {"value": data}
        return record

    @classmethod
    def load(cls, file: str | os.PathLike[str], codec: Codec | None = None) -> EventRecord:
        """Read a dumped event back into a record."""
        return cls.from_event(load_event(file, codec))


# -- lossless files -------------------------------------------------------------

_Path = tuple[str | int, ...]

_TAGS: tuple[tuple[type[Any], str], ...] = (
    (dt.datetime, "datetime"), (dt.date, "date"), (dt.time, "time"),
    (dt.timedelta, "timedelta"), (bytes, "bytes"), (bytearray, "bytes"),
    (uuid.UUID, "uuid"), (decimal.Decimal, "decimal"), (tuple, "tuple"),
    (frozenset, "set"), (set, "set"),
)
_RESTORE: dict[str, Any] = {
    "datetime": dt.datetime, "date": dt.date, "time": dt.time, "timedelta": dt.timedelta,
    "bytes": bytes, "uuid": uuid.UUID, "decimal": decimal.Decimal,
}


def _collect(value: Any, path: _Path, out: list[tuple[_Path, str]]) -> None:
    if isinstance(value, RecordData) and path == ("data",):
        out.append((path, "record"))
    if isinstance(value, msgspec.Struct):
        for field in msgspec.structs.fields(value):
            _collect(getattr(value, field.name), (*path, field.encode_name), out)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _collect(item, (*path, str(key)), out)
        return
    for cls, tag in _TAGS:
        if isinstance(value, cls):
            out.append((path, tag))
            break
    if isinstance(value, set | frozenset):
        # Sets are written sorted (see event_to_document), so index them in that order.
        value = msgspec.to_builtins(value, order="deterministic")
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _collect(item, (*path, index), out)


def event_to_document(event: Event) -> dict[str, Any]:
    """Return an event as a JSON-ready dict that :func:`event_from_document` reads back equal."""
    types: list[tuple[_Path, str]] = []
    _collect(event.data, ("data",), types)
    # Deterministic order: a set is written sorted, so the same event gives the same file.
    document: dict[str, Any] = msgspec.to_builtins(event, order="deterministic")
    document["format"] = FORMAT
    types.sort(key=lambda item: [str(step) for step in item[0]])
    document["value_types"] = [[list(path), tag] for path, tag in types]
    return document


def _restore(document: dict[str, Any], path: list[Any], tag: str) -> None:
    parent: Any = document
    for step in path[:-1]:
        parent = parent[step]
    key = path[-1]
    value = parent[key]
    if tag == "tuple":
        parent[key] = tuple(value)
    elif tag == "set":
        parent[key] = set(value)
    elif tag in _RESTORE:
        parent[key] = msgspec.convert(value, _RESTORE[tag])
    elif tag != "record":
        raise ValueError(f"unknown value type {tag!r}")


def event_from_document(document: Any, codec: Codec | None = None,
                        size: int | None = None) -> Event:
    """Rebuild an event from :func:`event_to_document` output (or a plain wire event).

    The codec (a default one if none is given) checks it as it checks any message:
    ``size`` is the length of the file it was read from (measured when not given).
    """
    if not isinstance(document, dict) or document.get("kind", "event") != "event":
        raise DecodeError("not an event document: expected a JSON object of kind 'event'")
    codec = codec if codec is not None else Codec()
    if size is None:
        try:
            size = len(msgspec.json.encode(document))
        except (TypeError, ValueError, OverflowError) as error:
            raise DecodeError(f"invalid event document: {error}") from None
    document = dict(document)
    document.pop("format", None)
    document["kind"] = "event"
    types = document.pop("value_types", None) or []
    record = False
    try:
        # Deepest first: a tuple is built after the values inside it.
        for path, tag in sorted(types, key=lambda item: -len(item[0])):
            if tag == "record" and path == ["data"]:
                record = True
            _restore(document, path, tag)
        if record:
            document["data"] = msgspec.convert(document.get("data") or {}, RecordData)
    except (msgspec.ValidationError, ValueError, KeyError, IndexError, TypeError) as error:
        raise DecodeError(f"invalid event document: {error}") from None
    try:
        event = codec.convert(document, size)
    except DecodeError as error:
        raise DecodeError(f"invalid event document: {error}") from None
    assert isinstance(event, Event)
    return event


def dump_event(event: Event, directory: str | os.PathLike[str]) -> Path:
    """Write an event to ``directory/<id>.json`` atomically; return the file."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{event.id}.json"
    write_atomic(target, msgspec.json.format(msgspec.json.encode(event_to_document(event))),
                 mode=0o600)
    return target


def load_event(file: str | os.PathLike[str], codec: Codec | None = None) -> Event:
    """Read an event written by :func:`dump_event` (or a plain JSON event)."""
    path = Path(file)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DecodeError(f"{path}: cannot read: {error.strerror}") from None
    try:
        document = (codec or Codec()).decode_json(raw)
    except DecodeError as error:
        raise DecodeError(f"{path}: {error}") from None
    try:
        return event_from_document(document, codec, len(raw))
    except DecodeError as error:
        raise DecodeError(f"{path}: {error}") from None

"""Event records: attachments, closing, and dump/load without loss."""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import uuid
from pathlib import Path

import pytest

from platybus.codec import Codec
from platybus.errors import DecodeError, RecordClosed
from platybus.messages import Event, NodeEventData, NodeStarted
from platybus.notify.records import EventRecord, RecordData, dump_event, load_event


def test_attach_file_keeps_path_and_sha1_taken_at_attach_time(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8 first frame")
    record = EventRecord("camera.motion", {"camera": "front"})
    attachment = record.attach_file(photo, "snapshot")
    assert attachment.path == str(photo.resolve())
    assert attachment.sha1 == hashlib.sha1(b"\xff\xd8 first frame").hexdigest()
    assert attachment.size == len(b"\xff\xd8 first frame")
    assert attachment.verify()
    photo.write_bytes(b"something else")
    assert not attachment.verify()
    assert record.event.data.attachment("snapshot").sha1 == attachment.sha1
    with pytest.raises(FileNotFoundError):
        record.attach_file(tmp_path / "missing.jpg")


def test_a_closed_record_is_immutable(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    begin = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    record = EventRecord("door.opened", begin=begin).set("door", "back")
    assert not record.closed
    assert record.event.data.closed is False
    event = record.close()
    assert record.closed
    assert isinstance(event.data, RecordData)
    assert event.data.closed is True
    assert event.data.begin == begin
    assert event.data.end is not None
    assert event.data.end.tzinfo is not None
    assert record.close() is event
    for change in (lambda: record.set("x", 1), lambda: record.update({"x": 1}),
                   lambda: record.attach_file(tmp_path / "a.txt"), lambda: record.end(),
                   lambda: record.begin()):
        with pytest.raises(RecordClosed):
            change()
    assert record.event is event


def test_times_are_timezone_aware() -> None:
    record = EventRecord("x.y", begin=1_700_000_000.5)
    record.end(dt.datetime(2024, 1, 1, 8, 30))  # naive: local time
    data = record.close().data
    assert data.begin == dt.datetime.fromtimestamp(1_700_000_000.5, tz=dt.UTC)
    assert data.end.utcoffset() is not None
    with pytest.raises(TypeError):
        EventRecord("x.y", begin="yesterday")  # type: ignore[arg-type]


def test_dump_and_load_lose_nothing(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00\x01 video")
    record = EventRecord("camera.motion", origin="gate", parent_id="cause-1",
                         begin=dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.UTC))
    record.update({
        "camera": "front",
        "score": 0.93,
        "count": 3,
        "flags": [True, None, "x"],
        "seen_at": dt.datetime(2024, 5, 1, 12, 0, 1, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        "day": dt.date(2024, 5, 1),
        "at": dt.time(12, 0, 1),
        "length": dt.timedelta(seconds=12.5),
        "raw": b"\x00\xffbytes",
        "box": (10, 20, 30, 40),
        "nested": {"when": [dt.datetime(2020, 1, 1, tzinfo=dt.UTC), ("a", b"b")]},
        "tags": {"a", "b"},
        "ref": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "price": decimal.Decimal("1.10"),
        "looks_like_a_time": "2024-05-01T12:00:00Z",
    })
    record.attach_file(clip)
    event = record.close(end=dt.datetime(2024, 5, 1, 12, 0, 30, tzinfo=dt.UTC))
    file = record.dump(tmp_path / "out")
    assert file == tmp_path / "out" / f"{event.id}.json"
    loaded = load_event(file)
    assert loaded == event
    assert isinstance(loaded.data.values["seen_at"], dt.datetime)
    assert loaded.data.values["looks_like_a_time"] == "2024-05-01T12:00:00Z"
    again = EventRecord.load(file)
    assert again.closed
    assert again.event == event
    # A second trip through a file gives the same file.
    assert dump_event(loaded, tmp_path / "second").read_bytes() == file.read_bytes()


def test_open_records_and_plain_events_round_trip(tmp_path: Path) -> None:
    record = EventRecord("job.progress", {"percent": 40})
    record.begin()
    open_file = record.dump(tmp_path)
    reopened = EventRecord.load(open_file)
    assert not reopened.closed
    reopened.set("percent", 80)
    assert reopened.close().data.values == {"percent": 80}

    plain = Event(type="garden.watered", data={"litres": 2, "at": dt.date(2024, 1, 2)},
                  target="*")
    assert load_event(dump_event(plain, tmp_path)) == plain
    typed = NodeStarted(origin="n1", data=NodeEventData(node_id="n1", version="1"))
    assert load_event(dump_event(typed, tmp_path), Codec()) == typed


def test_bad_files_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DecodeError, match=r"bad\.json: malformed JSON"):
        load_event(bad)
    bad.write_text('{"kind": "request", "action": "x.y"}')
    with pytest.raises(DecodeError, match="not an event document"):
        load_event(bad)
    bad.write_text('{"kind": "event", "type": "a.b", "value_types": [[["data", "x"], "time"]]}')
    with pytest.raises(DecodeError, match="invalid event document"):
        load_event(bad)
    with pytest.raises(DecodeError, match="cannot read"):
        load_event(tmp_path / "missing.json")


def test_a_file_over_the_size_limit_is_refused_like_any_message(tmp_path: Path) -> None:
    file = dump_event(Event(type="big.one", data={"blob": "a" * 5000}), tmp_path)
    with pytest.raises(DecodeError, match="exceeds the maximum of 1000 bytes"):
        load_event(file, Codec(max_size=1000))
    assert load_event(file).data == {"blob": "a" * 5000}

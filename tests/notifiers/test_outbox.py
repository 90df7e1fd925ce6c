"""The outbox: failed sends survive a restart and go out once the receiver is back."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest
from test_notifiers import Receiver, free_port, sample, wait_until

from platybus.cli.main import main
from platybus.codec import Codec
from platybus.config import load_config
from platybus.node import Node
from platybus.notify.outbox import Outbox, RetryPolicy
from platybus.notify.records import EventRecord, event_from_document


def webhook_config(tmp_path: Path, port: int, retry: str = "{initial: 0.2, max: 1}") -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(textwrap.dedent(f"""\
        node:
          id: outboxed
          data_dir: {tmp_path / "data"}
          stop_timeout: 2
        notifiers:
          hook:
            class: webhook
            url: "http://127.0.0.1:{port}/hook"
            retries: 0
            timeout: 2
            if: "type=camera.*"
            retry: {retry}
        """))
    return config


def test_a_failed_send_is_retried_after_a_restart(tmp_path: Path) -> None:
    port = free_port()
    config = webhook_config(tmp_path, port)
    outbox = Outbox(tmp_path / "data" / "outbox")

    # The receiver is down: the event goes to the outbox and stays there through a stop.
    first = Node(load_config(config))
    first.start()
    event = sample()
    try:
        first.bus.publish(event)
        [entry] = wait_until(lambda: outbox.entries("hook"))
    finally:
        first.stop()
    assert entry.event_id == event.id
    assert entry.state.attempts >= 1
    assert entry.state.last_error == "send_event returned false"

    # The receiver is up and a new node starts: the outbox drains, nothing is lost.
    receiver = Receiver(port)
    try:
        second = Node(load_config(config))
        second.start()
        try:
            [body] = receiver.wait(1)
            assert event_from_document(body) == event
            wait_until(lambda: not outbox.entries("hook"))
        finally:
            second.stop()
    finally:
        receiver.close()


def test_outbox_list_and_retry_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    port = free_port()
    config = webhook_config(tmp_path, port, retry="{initial: 3600}")
    outbox = Outbox(tmp_path / "data" / "outbox", Codec())
    event = sample()
    outbox.put("hook", event, "receiver down", RetryPolicy(initial=3600))

    assert main(["outbox", "list", "-c", str(config)]) == 0
    assert event.id in capsys.readouterr().out
    assert main(["outbox", "list", "--json", "-c", str(config)]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["event_id"] == event.id
    assert listed["last_error"] == "receiver down"

    # Receiver still down: retry reports failure and keeps the event.
    assert main(["outbox", "retry", "-c", str(config)]) == 1
    assert "0 sent, 1 still failing" in capsys.readouterr().out
    assert outbox.entries("hook")[0].state.attempts == 2

    receiver = Receiver(port)
    try:
        assert main(["outbox", "retry", "-c", str(config)]) == 0
        assert "1 sent" in capsys.readouterr().out
        assert event_from_document(receiver.wait(1)[0]) == event
    finally:
        receiver.close()
    assert outbox.entries("hook", expired=True) == []


def test_expired_events_are_kept_and_can_be_pushed(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    policy = RetryPolicy(initial=0.0, expire=0.05)
    event = EventRecord("door.opened").close()
    outbox.put("hook", event, "down", policy)
    time.sleep(0.1)
    assert outbox.retry("hook", lambda e: True, policy) == {"expired": 1}
    [entry] = outbox.entries("hook", expired=True)
    assert entry.expired
    assert outbox.entries("hook") == []
    sent: list[str] = []
    counts = outbox.retry("hook", lambda e: sent.append(e.id) is None, policy, expired=True)
    assert counts == {"sent": 1}
    assert sent == [event.id]
    assert outbox.entries("hook", expired=True) == []


def test_backoff_grows_and_a_raising_sender_keeps_the_event(tmp_path: Path) -> None:
    policy = RetryPolicy(initial=1.0, factor=2.0, max=5.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    outbox = Outbox(tmp_path / "outbox")
    outbox.put("hook", sample(), "down", policy, due_now=True)

    def explode(event: object) -> bool:
        raise RuntimeError("receiver exploded")

    assert outbox.retry("hook", explode, policy) == {"failed": 1}
    [entry] = outbox.entries("hook")
    assert entry.state.last_error == "RuntimeError: receiver exploded"
    assert entry.state.next_attempt > time.time()
    assert outbox.retry("hook", lambda e: True, policy) == {"waiting": 1}


def test_a_second_process_waits_for_the_lock(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    with outbox.locked("hook") as taken:
        assert taken
        with Outbox(tmp_path / "outbox").locked("hook", wait=0.1) as again:
            assert not again


def test_send_from_file_publishes_a_dumped_event(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "send.yaml"
    config.write_text(textwrap.dedent(f"""\
        node: {{id: sender, data_dir: {tmp_path / "data"}}}
        notifiers:
          archive: {{class: file, directory: {tmp_path / "archive"}}}
        """))
    clip = tmp_path / "clip.bin"
    clip.write_bytes(b"clip")
    record = EventRecord("camera.motion", {"camera": "back"})
    record.attach_file(clip)
    event = record.close()
    dumped = record.dump(tmp_path / "dumps")
    assert main(["send", "--from-file", str(dumped), "-c", str(config)]) == 0
    assert f"event {event.id} (camera.motion) published" in capsys.readouterr().out
    archived = tmp_path / "archive" / f"{event.id}.json"
    assert archived.read_bytes() == dumped.read_bytes()
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    assert main(["send", "--from-file", str(bad), "-c", str(config)]) != 0
    assert "not an event document" in capsys.readouterr().err


def test_kept_events_and_dumps_are_readable_by_the_node_user_only(tmp_path: Path) -> None:
    """Events may carry secrets: what the outbox keeps and what dump() writes is 0600."""
    import stat

    from platybus.notify.records import dump_event

    event = EventRecord("door.opened", {"code": "1234"}).close()
    path = Outbox(tmp_path / "outbox", Codec()).put("pager", event, "down", RetryPolicy())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    dumped = dump_event(event, tmp_path / "dumps")
    assert stat.S_IMODE(dumped.stat().st_mode) == 0o600

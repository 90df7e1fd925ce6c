"""The intake journal: durable hook runs survive a stop, repeats are recognised, no drops."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from platybus.codec import Codec
from platybus.config import load_config
from platybus.journal import Journal, JournalConfig
from platybus.messages import Event
from platybus.node import validate
from tests.automation.conftest import Harness, wait_for

Make = Callable[..., Harness]

SLOW = """
hooks:
  slow:
    if: {type: job.run}
    then:
      - action: rec.slow
        args: {seconds: 30, tag: "t${event.data.n}"}
"""


def rows(data: Path) -> dict[int, int]:
    """Journal rows by state (0 accepted, 1 done), read as another process would."""
    with sqlite3.connect(data / "journal.sqlite") as db:
        return dict(db.execute("SELECT state, COUNT(*) FROM runs GROUP BY state").fetchall())


def test_the_journal_keeps_accepted_runs_until_done_and_forgets_parked_ones(
        tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path, JournalConfig())
    journal.open()
    seqs = journal.accept([("m1", "hook", "a", b"one", True, False),
                           ("m2", "hook", "a", b"two", True, False),
                           ("m3", "hook", "b", b"three", False, False),
                           ("m5", "hook", "c", None, True, True)])
    journal.done(seqs[0])
    assert journal.flush() == 1
    assert journal.seen(["m1", "m2", "mx"]) == {"m1", "m2"}
    journal.close()

    again = Journal(path, JournalConfig())
    again.open()
    # m3 only waited there for room (not durable): a restart forgets it.
    assert [(e.message_id, e.body) for e in again.unfinished()] == [("m2", b"two")]
    assert again.seen(["m1"]) == {"m1"}  # done, but still recognised
    assert again.seen(["m5"]) == {"m5"}  # recorded as done at once: recognised, not resumed
    assert again.accept([("m4", "hook", "a", b"", True, False)])[0] > seqs[1]
    again.close()


def test_runs_cut_short_by_a_stop_run_again_at_start_traced_as_resumed(
        harness: Make, tmp_path: Path) -> None:
    h = harness(SLOW)
    for n in range(3):
        h.publish("job.run", n=n)
    wait_for(lambda: len(h.rec.tags()) == 3)  # three runs started, none ended
    h.stop()
    assert rows(tmp_path / "data") == {0: 3}

    again = harness(SLOW.replace("seconds: 30", "seconds: 0"))
    done = wait_for(lambda: [t for t in again.traces(name="slow", kind="hook")
                             if t["outcome"] == "ok"] if len(again.rec.values()) >= 6 else None)
    assert sorted(t for t in again.rec.tags() if t.startswith("end:")) == [
        "end:t0", "end:t1", "end:t2"]
    assert {t["note"] for t in done} == {"resumed after restart"}
    again.stop()
    assert rows(tmp_path / "data") == {1: 3}


def test_a_message_delivered_again_is_not_run_again(harness: Make) -> None:
    h = harness("""
        hooks:
          count:
            if: {type: remote.tick}
            then: [{action: rec.note, args: {value: "${event.data.n}"}}]
        """)
    tick = Event(type="remote.tick", origin="other-node", data={"n": 1})
    h.bus.publish(tick)
    wait_for(lambda: h.rec.values() == [1])
    h.bus.publish(tick)  # the same message id, as a stream redelivers it after a crash
    h.bus.publish(Event(type="remote.tick", origin="other-node", data={"n": 2}))
    wait_for(lambda: h.rec.values() == [1, 2])
    assert h.automation.hooks.duplicates == 1
    [repeat] = [c for t in h.traces(kind="event") for c in t["candidates"]
                if c.get("reason", "").startswith("already accepted")]
    assert repeat["hook"] == "count"


def test_a_burst_far_past_the_lanes_room_runs_every_event(harness: Make) -> None:
    h = harness("""
        traces: {enabled: false}
        hooks:
          slow:
            if: {type: job.run}
            then: [{action: rec.slow, args: {seconds: 0.0005}}]
        """)
    for n in range(5000):
        h.publish("job.run", n=n)
    lane = h.automation.hooks.hooks[0].lane
    assert lane is not None
    wait_for(lambda: lane.parked > 0, timeout=30)  # the overflow waits in the journal
    wait_for(lambda: sum(1 for t in h.rec.tags() if t.startswith("end:")) == 5000, timeout=120)
    assert lane.dropped == 0
    assert len(lane.pending) == 0


def test_max_queued_set_by_the_user_drops_and_counts(harness: Make) -> None:
    h = harness("""
        hooks:
          slow:
            if: {type: job.run}
            mode: queue
            max_queued: 2
            then: [{action: rec.slow, args: {seconds: 30}}]
        """)
    for n in range(6):
        h.publish("job.run", n=n)
    lane = h.automation.hooks.hooks[0].lane
    assert lane is not None
    wait_for(lambda: lane.dropped == 3)  # one running, two waiting, three dropped
    dropped = wait_for(lambda: [t for t in h.traces(name="slow", kind="hook")
                                if t["outcome"] == "dropped"])
    assert "max_queued" in dropped[0]["error"]


def test_a_delivery_is_safe_only_once_the_journal_has_it(harness: Make, tmp_path: Path) -> None:
    h = harness(SLOW)
    h.bus.deliver(Event(type="job.run", origin="other", data={"n": 1})).result(10)
    # Journaled (and committed) before the future resolved, while the run goes on.
    with sqlite3.connect(tmp_path / "data" / "journal.sqlite") as db:
        [(body, state)] = db.execute("SELECT body, state FROM runs").fetchall()
    assert state == 0
    assert Codec().decode(body).data == {"n": 1}  # type: ignore[attr-defined]


def test_the_documented_journal_example_loads(tmp_path: Path) -> None:
    page = (Path(__file__).resolve().parents[2] / "docs/automation/hooks.md").read_text()
    section = page[page.index("## Delivery: what a hook is promised"):]
    start = section.index("```yaml") + len("```yaml")
    example = section[start:section.index("```", start)]
    config = tmp_path / "c.yaml"
    config.write_text(f"node: {{id: doc, data_dir: {tmp_path / 'data'}}}\n"
                      "plugins: {shell: {}}\n" + example)
    node = validate(load_config(config))
    assert {h.name: h.durable for h in node.automation.hooks.hooks} == {
        "archive": True, "blink": False}
    assert node.automation.journal is not None
    assert node.automation.journal.config.max_resumes == 3

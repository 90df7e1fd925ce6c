"""Cron: exactly once per slot, seconds, time zones, catch-up after a restart, no overlap.

Time is moved by hand with a ManualClock: no test sleeps for a slot.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from platybus.automation.cron import ManualClock
from platybus.errors import ConfigError
from tests.automation.conftest import Harness, wait_for

Make = Callable[..., Harness]


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def job(when: str, extra: str = "", action: str = 'rec.note, args: {value: "${cron.slot}"}'
        ) -> str:
    return f"""
        cron:
          job:
            when: "{when}"
            tz: UTC
            {extra}
            then: [{{action: {action}}}]
    """


def step_to(h: Harness, clock: ManualClock, until: float, step: float) -> None:
    while clock.now() < until:
        clock.advance(min(step, until - clock.now()))
        assert h.automation.cron.wait_checked(clock.now())


def test_each_slot_fires_exactly_once_across_the_boundary(harness: Make) -> None:
    clock = ManualClock(at("2024-01-01 11:59:58"))
    h = harness(job("* * * * *"), clock=clock)
    step_to(h, clock, at("2024-01-01 12:00:03"), 0.25)
    wait_for(lambda: h.rec.calls)
    step_to(h, clock, at("2024-01-01 12:00:59.75"), 5)
    assert h.rec.values() == ["2024-01-01T12:00:00+00:00"]
    step_to(h, clock, at("2024-01-01 12:01:00.5"), 0.25)
    wait_for(lambda: len(h.rec.calls) == 2)
    assert h.rec.values()[1] == "2024-01-01T12:01:00+00:00"


def test_six_fields_mean_seconds_first(harness: Make) -> None:
    clock = ManualClock(at("2024-01-01 12:00:00.5"))
    h = harness(job("*/10 * * * * *"), clock=clock)
    step_to(h, clock, at("2024-01-01 12:00:31"), 1)
    wait_for(lambda: len(h.rec.calls) == 3)
    assert h.rec.values() == ["2024-01-01T12:00:10+00:00", "2024-01-01T12:00:20+00:00",
                              "2024-01-01T12:00:30+00:00"]


def test_time_zones(harness: Make) -> None:
    clock = ManualClock(at("2024-07-01 06:59:58"))
    h = harness(job("0 9 * * *").replace("tz: UTC", "tz: Europe/Paris"), clock=clock)
    step_to(h, clock, at("2024-07-01 07:00:01"), 1)
    wait_for(lambda: h.rec.calls)
    assert h.rec.values() == ["2024-07-01T09:00:00+02:00"]


@pytest.mark.parametrize(("catch_up", "expected"), [
    ("none", []),
    ("last", ["14:00"]),
    ("all", ["12:00", "13:00", "14:00"]),
])
def test_catch_up_after_a_restart(harness: Make, catch_up: str, expected: list[str]) -> None:
    clock = ManualClock(at("2024-01-01 10:00:30"))
    yaml = job("0 * * * *", f"catch_up: {catch_up}")
    first = harness(yaml, clock=clock)
    step_to(first, clock, at("2024-01-01 11:00:01"), 30)
    wait_for(lambda: first.rec.calls)
    assert first.rec.values() == ["2024-01-01T11:00:00+00:00"]
    first.stop()
    clock.set(at("2024-01-01 14:30:00"))  # down for three and a half hours
    second = harness(yaml, clock=clock)
    assert second.automation.cron.wait_checked(clock.now())
    if expected:
        wait_for(lambda: len(second.rec.calls) == len(expected))
    assert [v[11:16] for v in second.rec.values()] == expected
    step_to(second, clock, at("2024-01-01 15:00:01"), 60)
    wait_for(lambda: second.rec.values()[-1:] == ["2024-01-01T15:00:00+00:00"])
    assert len(second.rec.calls) == len(expected) + 1


def test_a_restart_within_a_slot_does_not_fire_it_twice(harness: Make) -> None:
    clock = ManualClock(at("2024-01-01 10:59:59"))
    yaml = job("0 * * * *", "catch_up: all")
    first = harness(yaml, clock=clock)
    step_to(first, clock, at("2024-01-01 11:00:02"), 1)
    wait_for(lambda: first.rec.calls)
    first.stop()
    clock.advance(3)
    second = harness(yaml, clock=clock)
    assert second.automation.cron.wait_checked(clock.now())
    step_to(second, clock, at("2024-01-01 11:00:30"), 5)
    assert second.rec.calls == []
    state = json.loads((first.context.data_dir / "cron.json").read_text())
    assert state["last_slots"]["job"] >= at("2024-01-01 11:00:00")


def test_a_slot_missed_by_seconds_still_fires(harness: Make) -> None:
    clock = ManualClock(at("2024-01-01 10:59:00"))
    yaml = job("0 * * * *")
    first = harness(yaml, clock=clock)
    step_to(first, clock, at("2024-01-01 10:59:50"), 10)
    first.stop()
    clock.set(at("2024-01-01 11:00:20"))  # restarted 20 s after the slot: within grace
    second = harness(yaml, clock=clock)
    wait_for(lambda: second.rec.calls)
    assert second.rec.values() == ["2024-01-01T11:00:00+00:00"]


def test_runs_of_one_job_do_not_overlap_unless_asked(harness: Make) -> None:
    clock = ManualClock(at("2024-01-01 12:00:00.5"))
    h = harness(job("* * * * * *", action="rec.slow, args: {seconds: 10}"), clock=clock)
    step_to(h, clock, at("2024-01-01 12:00:03.5"), 1)
    wait_for(lambda: len(h.traces(kind="cron")) == 2)
    assert h.rec.max_running == 1
    assert [t["outcome"] for t in h.traces(kind="cron")] == ["skipped", "skipped"]
    h.rec.release.set()


def test_overlap_when_asked(harness: Make) -> None:
    clock = ManualClock(at("2024-01-01 12:00:00.5"))
    h = harness(job("* * * * * *", "mode: parallel", action="rec.slow, args: {seconds: 10}"),
                clock=clock)
    step_to(h, clock, at("2024-01-01 12:00:03.5"), 1)
    wait_for(lambda: h.rec.running == 3)
    h.rec.release.set()


def test_a_cron_trace(harness: Make) -> None:
    clock = ManualClock(at("2024-01-01 11:59:59"))
    h = harness(job("0 12 * * *"), clock=clock)
    step_to(h, clock, at("2024-01-01 12:00:00.2"), 1)
    [trace] = wait_for(lambda: h.traces(kind="cron"))
    assert trace["name"] == "job"
    assert trace["slot"] == "2024-01-01T12:00:00+00:00"
    assert trace["outcome"] == "ok"
    assert trace["actions"][0]["args"] == {"value": "2024-01-01T12:00:00+00:00"}
    status = h.actions.call("automation.status")["cron"][0]
    assert status["fired"] == 1
    assert status["next"] == at("2024-01-02 12:00:00")


@pytest.mark.parametrize(("when", "extra", "message"), [
    ("61 * * * *", "", "invalid cron expression"),
    ("* * *", "", "5 fields"),
    ("* * * * *", "grace: -1", "grace"),
    ("* * * * *", "catch_up: some", "catch_up"),
    ("* * * * *", "mode: sometimes", "mode"),
])
def test_bad_jobs_are_config_errors(harness: Make, when: str, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        harness(job(when, extra), start=False)
    assert info.value.line is not None
    assert info.value.key is not None
    assert info.value.key.startswith("cron.job")


def test_an_unknown_time_zone_is_a_config_error(harness: Make) -> None:
    with pytest.raises(ConfigError, match="unknown time zone 'Mars/Olympus'") as info:
        harness(job("* * * * *").replace("tz: UTC", "tz: Mars/Olympus"), start=False)
    assert info.value.key == "cron.job.tz"

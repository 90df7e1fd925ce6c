"""Hooks: priority, stop, concurrency modes, timeouts, traces, other nodes, off-dispatcher."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from platybus.link.loopback import LoopbackHub, LoopbackLink
from platybus.messages import Message, Request
from tests.automation.conftest import Harness, wait_for

Make = Callable[..., Harness]


def runs(h: Harness, hook: str | None = None) -> list[dict[str, Any]]:
    return [t for t in h.traces(kind="hook") if hook is None or t["name"] == hook]


def test_every_matching_hook_runs_in_priority_order(harness: Make) -> None:
    h = harness("""
        hooks:
          late:  {if: {type: t.e}, priority: 100, then: [{action: rec.note, args: {tag: late}}]}
          early: {if: {type: t.e}, priority: 10, then: [{action: rec.note, args: {tag: early}}]}
          mid-a: {if: {type: t.e}, priority: 50, then: [{action: rec.note, args: {tag: mid-a}}]}
          mid-b: {if: "t.*", priority: 50, then: [{action: rec.note, args: {tag: mid-b}}]}
          other: {if: {type: t.other}, then: [{action: rec.note, args: {tag: other}}]}
    """)
    h.publish("t.e")
    wait_for(lambda: len(h.rec.calls) == 4)
    assert h.rec.tags() == ["early", "mid-a", "mid-b", "late"]


def test_stop_hides_the_event_from_later_hooks(harness: Make) -> None:
    h = harness("""
        hooks:
          first:   {if: {type: t.e}, priority: 1, then: [{action: rec.note, args: {tag: a}}]}
          blocker: {if: {type: t.e, data.block: true}, priority: 5, stop: true,
                    then: [{action: rec.note, args: {tag: blocker}}]}
          last:    {if: {type: t.e}, priority: 9, then: [{action: rec.note, args: {tag: z}}]}
    """)
    h.publish("t.e", block=True)
    h.publish("t.e", block=False)
    wait_for(lambda: len(h.traces(kind="event")) == 2)
    assert h.rec.tags() == ["a", "blocker", "a", "z"]
    events = h.traces(kind="event")
    first = {c["hook"]: c for c in events[0]["candidates"]}
    assert first["last"]["matched"] is False
    assert first["last"]["reason"] == "not reached: hook 'blocker' stops the event"


def test_disabled_hooks_never_run(harness: Make) -> None:
    h = harness("""
        hooks:
          disabled-one:
            if: {type: t.e}
            enabled: false
            then: [{action: rec.note, args: {tag: "no"}}]
          enabled-one:  {if: {type: t.e}, then: [{action: rec.note, args: {tag: "yes"}}]}
    """)
    h.publish("t.e")
    wait_for(lambda: h.rec.calls)
    wait_for(lambda: h.traces(kind="event"))
    assert h.rec.tags() == ["yes"]


def test_trace_of_a_hook_that_fired_and_one_that_did_not(harness: Make) -> None:
    h = harness("""
        hooks:
          texts:
            if: {type: file.created, data.path: {$regex: '(?P<name>[^/]+)\\.txt$'}}
            then:
              - action: rec.note
                args: {value: "got ${name} from ${event.data.path}", tag: t}
          images:
            if: {type: file.created, data.path: {$regex: '\\.jpg$'}}
            then: [{action: rec.note, args: {tag: i}}]
    """)
    event = h.publish("file.created", path="/w/notes.txt")
    wait_for(lambda: runs(h, "texts"))
    [run] = runs(h, "texts")
    assert run["message_id"] == event.id
    assert run["outcome"] == "ok"
    assert run["variables"] == {"name": "notes"}
    assert run["duration"] >= 0
    [action] = run["actions"]
    assert action["step"] == "hooks.texts.then[0]"
    assert action["action"] == "rec.note"
    assert action["args"] == {"value": "got notes from /w/notes.txt", "tag": "t"}
    assert action["output"] == "got notes from /w/notes.txt"
    assert "duration" in action
    wait_for(lambda: h.traces(kind="event"))
    [matching] = h.traces(kind="event")
    assert matching["message_id"] == event.id
    candidates = {c["hook"]: c for c in matching["candidates"]}
    assert candidates["texts"] == {"hook": "texts", "matched": True, "run": run["id"]}
    assert candidates["images"]["matched"] is False
    assert candidates["images"]["reason"] == (
        "data.path '/w/notes.txt' does not match regex '\\.jpg$'")
    only_images = h.traces(hook="images")
    assert [t["kind"] for t in only_images] == ["event"]
    assert [c["hook"] for c in only_images[0]["candidates"]] == ["images"]


def test_failed_step_and_on_error(harness: Make) -> None:
    h = harness("""
        hooks:
          careful:
            if: {type: t.e}
            then:
              - {action: rec.fail, args: {message: first}, on_error: continue}
              - {action: rec.note, args: {value: "${event.data.missing}"}}
              - {action: rec.note, args: {tag: never}}
    """)
    h.publish("t.e")
    [run] = wait_for(lambda: runs(h))
    assert run["outcome"] == "error"
    assert run["error"].startswith("hooks.careful.then[1]: event.data.missing is undefined")
    assert run["actions"][0]["ok"] is False
    assert "first" in run["actions"][0]["error"]
    assert h.rec.tags() == []


def test_a_slow_hook_never_delays_event_delivery(harness: Make) -> None:
    h = harness("""
        hooks:
          slow: {if: {type: t.e}, then: [{action: rec.slow, args: {seconds: 5, tag: s}}]}
    """)
    seen: list[Message] = []
    h.bus.subscribe("t.e", seen.append, priority=100_000)
    h.publish("t.e")
    wait_for(lambda: h.rec.running == 1)
    h.publish("t.e")
    h.publish("t.e")
    wait_for(lambda: len(seen) == 3)
    assert h.rec.running >= 1  # the first run is still sleeping
    h.rec.release.set()


@pytest.mark.parametrize(("max_parallel", "expected"), [(10, 3), (2, 2)])
def test_parallel_mode(harness: Make, max_parallel: int, expected: int) -> None:
    h = harness(f"""
        hooks:
          work:
            if: {{type: t.e}}
            mode: parallel
            max_parallel: {max_parallel}
            then: [{{action: rec.slow, args: {{seconds: 5, tag: "${{event.data.n | string}}"}}}}]
    """)
    for n in range(3):
        h.publish("t.e", n=n)
    wait_for(lambda: h.rec.running == expected)
    h.rec.release.set()
    wait_for(lambda: len(runs(h)) == 3)
    assert h.rec.max_running == expected
    assert all(r["outcome"] == "ok" for r in runs(h))


def test_queue_mode_runs_one_at_a_time_in_order(harness: Make) -> None:
    h = harness("""
        hooks:
          work:
            if: {type: t.e}
            mode: queue
            then: [{action: rec.slow, args: {seconds: 0.05, tag: "${event.data.n | string}"}}]
    """)
    for n in range(3):
        h.publish("t.e", n=n)
    wait_for(lambda: len(runs(h)) == 3)
    assert h.rec.tags() == ["start:0", "end:0", "start:1", "end:1", "start:2", "end:2"]
    assert h.rec.max_running == 1


def test_skip_mode_drops_events_while_running(harness: Make) -> None:
    h = harness("""
        hooks:
          work:
            if: {type: t.e}
            mode: skip
            then: [{action: rec.slow, args: {seconds: 5, tag: "${event.data.n | string}"}}]
    """)
    h.publish("t.e", n=0)
    wait_for(lambda: h.rec.running == 1)
    h.publish("t.e", n=1)
    h.publish("t.e", n=2)
    wait_for(lambda: len(runs(h)) == 2)
    h.rec.release.set()
    wait_for(lambda: len(runs(h)) == 3)
    outcomes = sorted(r["outcome"] for r in runs(h))
    assert outcomes == ["ok", "skipped", "skipped"]
    assert h.rec.tags() == ["start:0", "end:0"]


def test_restart_mode_stops_the_running_one(harness: Make) -> None:
    h = harness("""
        hooks:
          work:
            if: {type: t.e}
            mode: restart
            then:
              - {action: rec.note, args: {tag: "begin ${event.data.n}"}}
              - wait: 30
              - {action: rec.note, args: {tag: "done ${event.data.n}"}}
    """)
    h.publish("t.e", n=0)
    wait_for(lambda: h.rec.tags() == ["begin 0"])
    h.publish("t.e", n=1)
    wait_for(lambda: h.rec.tags() == ["begin 0", "begin 1"])
    [first] = wait_for(lambda: runs(h))
    assert first["outcome"] == "cancelled"
    assert first["error"] == "restarted by a newer run"
    assert h.rec.tags() == ["begin 0", "begin 1"]  # the first never reached its last step


def test_restart_frees_the_lane_even_inside_a_slow_action(harness: Make) -> None:
    h = harness("""
        hooks:
          work:
            if: {type: t.e}
            mode: restart
            then: [{action: rec.slow, args: {seconds: 30, tag: "${event.data.n | string}"}}]
    """)
    h.publish("t.e", n=0)
    wait_for(lambda: h.rec.running == 1)
    h.publish("t.e", n=1)
    wait_for(lambda: h.rec.running == 2)
    assert runs(h)[0]["outcome"] == "cancelled"
    h.rec.release.set()


def test_timeout_ends_the_run_and_frees_the_lane(harness: Make) -> None:
    h = harness("""
        hooks:
          waits: {if: {type: t.wait}, timeout: 0.2, then: [{wait: 30}]}
          stuck:
            if: {type: t.stuck}
            timeout: 0.2
            mode: queue
            then: [{action: rec.slow, args: {seconds: 30, tag: "${event.data.n | string}"}}]
    """)
    h.publish("t.wait")
    [run] = wait_for(lambda: runs(h, "waits"))
    assert (run["outcome"], run["error"]) == ("timeout", "timed out")
    h.publish("t.stuck", n=0)
    h.publish("t.stuck", n=1)
    wait_for(lambda: "start:1" in h.rec.tags())  # started although run 0 is still sleeping
    stuck = runs(h, "stuck")[0]
    assert stuck["outcome"] == "timeout"
    # The action the run was waiting on is not reported as a success.
    [action] = stuck["actions"]
    assert (action["action"], action["ok"], action["error"]) == (
        "rec.slow", False, "timeout before it finished")
    assert "duration" not in action
    h.rec.release.set()


def test_action_on_another_node(harness: Make) -> None:
    a = harness("""
        hooks:
          forward:
            if: {type: t.e}
            then:
              - {action: rec.note, target: n2, args: {value: "${event.data.x}", tag: remote},
                 as: answer}
              - {action: rec.note, args: {value: "${answer}", tag: local}}
    """, node_id="n1")
    b = harness("hooks: {}\n", node_id="n2")
    b.runner.remote_allowed = lambda request: True
    hub = LoopbackHub()
    links = [LoopbackLink(h.bus.node_id, hub, h.context.codec) for h in (a, b)]
    for h, joined in zip((a, b), links, strict=True):
        joined.start(h.bus)
    served: list[Request] = []
    b.bus.subscribe("kind=request", served.append)
    try:
        event = a.publish("t.e", x=42)
        [run] = wait_for(lambda: runs(a))
    finally:
        for joined in links:
            joined.stop()
    assert run["outcome"] == "ok", run
    assert b.rec.calls == [("remote", 42)]
    assert a.rec.calls == [("local", 42)]
    assert run["actions"][0]["target"] == "n2"
    # The request the step sent names the event that caused it.
    assert [request.parent_id for request in served] == [event.id]


def test_action_on_an_unreachable_node_fails_with_a_clear_error(harness: Make) -> None:
    h = harness("""
        hooks:
          forward: {if: {type: t.e}, then: [{action: x.y, target: ghost}]}
    """)
    h.publish("t.e")
    [run] = wait_for(lambda: runs(h))
    assert run["outcome"] == "error"
    assert "no route to node 'ghost'" in run["error"]


def test_non_blocking_hooks_run_on_the_hook_thread_others_on_the_pool(harness: Make) -> None:
    h = harness("""
        hooks:
          quick: {if: {type: t.e}, then: [{action: rec.thread, args: {tag: q}}]}
          slow:  {if: {type: t.e}, then: [{action: rec.thread_blocking, args: {tag: s}}]}
    """)
    status = h.actions.call("automation.status")
    assert {hook["name"]: hook["inline"] for hook in status["hooks"]} == {
        "quick": True, "slow": False}
    h.publish("t.e")
    wait_for(lambda: len(h.rec.calls) == 2)
    where = dict(h.rec.calls)
    assert where["q"] == "platybus-hooks"
    assert where["s"].startswith("platybus-automation")


def test_tracing_off_records_nothing(harness: Make) -> None:
    h = harness("""
        traces: {enabled: false}
        hooks:
          quick: {if: {type: t.e}, then: [{action: rec.note, args: {tag: q}}]}
    """)
    h.publish("t.e")
    wait_for(lambda: h.rec.calls)
    assert h.traces() == []

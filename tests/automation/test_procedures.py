"""Procedures: parameters, control flow, errors with their step path, calls from anywhere."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from platybus.errors import ArgumentError, StepFailed
from platybus.messages import Request
from tests.automation.conftest import Harness, wait_for

Make = Callable[..., Harness]

FLOW = """
procedures:
  classify:
    description: Say how big a number is.
    params: [n, {small: 10}]
    steps:
      - if: "${n < 0}"
        then: [{return: negative}]
        elif:
          - if: "n < small"
            then: [{return: small}]
          - if: "${n < small * 10}"
            then: [{return: medium}]
        else: [{return: large}]
  total:
    params: [items]
    steps:
      - set: {sum: 0, count: 0}
      - for: item
        in: "${items}"
        do:
          - set: {sum: "${sum + item}", count: "${count + 1}"}
          - action: rec.note
            args: {value: "${item}", tag: "item"}
      - return: {sum: "${sum}", count: "${count}", kind: "${sum | string}"}
  chain:
    params: [n]
    steps:
      - action: procedure.classify
        args: {n: "${n}"}
        as: size
      - return: "${n} is ${size}"
  both:
    steps:
      - parallel:
          - {action: rec.slow, args: {seconds: 5, tag: a}}
          - - {action: rec.slow, args: {seconds: 5, tag: b}}
            - {action: rec.note, args: {tag: after-b}}
      - return: done
  failing:
    steps:
      - {action: rec.note, args: {tag: one}}
      - if: "${true}"
        then:
          - {action: rec.fail, args: {message: "disk full"}}
      - {action: rec.note, args: {tag: never}}
  tolerant:
    steps:
      - {action: rec.fail, args: {message: ignored}, on_error: continue}
      - {set: {x: "${1 / 0}"}, on_error: continue}
      - return: survived
  sleepy:
    timeout: 0.2
    steps: [{wait: 30}, {return: woke}]
  recursive:
    params: [n]
    steps: [{action: procedure.recursive, args: {n: "${n + 1}"}}]
"""


@pytest.fixture
def h(harness: Make) -> Harness:
    return harness(FLOW)


@pytest.mark.parametrize(("n", "expected"), [(-1, "negative"), (3, "small"), (50, "medium"),
                                             (500, "large")])
def test_if_elif_else(h: Harness, n: int, expected: str) -> None:
    assert h.actions.call("procedure.classify", {"n": n}) == expected


def test_parameters_have_defaults_and_are_validated(h: Harness) -> None:
    assert h.actions.call("procedure.classify", {"n": 15, "small": 20}) == "small"
    with pytest.raises(ArgumentError, match="missing required argument 'n'"):
        h.actions.call("procedure.classify", {})
    with pytest.raises(ArgumentError, match="unknown argument 'nn'"):
        h.actions.call("procedure.classify", {"n": 1, "nn": 2})
    spec = h.actions.get("procedure.classify")
    assert spec.signature == "(n, small=10)"
    assert spec.doc == "Say how big a number is."


def test_for_and_set(h: Harness) -> None:
    assert h.actions.call("procedure.total", {"items": [1, 2, 3.5]}) == {
        "sum": 6.5, "count": 3, "kind": "6.5"}
    assert h.rec.values("item") == [1, 2, 3.5]


def test_procedures_call_procedures_and_leave_traces(h: Harness) -> None:
    assert h.actions.call("procedure.chain", {"n": 7}) == "7 is small"
    traces = h.traces(kind="procedure")
    outer = next(t for t in traces if t["name"] == "chain")
    inner = next(t for t in traces if t["name"] == "classify")
    assert inner["parent"] == outer["id"]
    assert outer["actions"][0]["action"] == "procedure.classify"
    assert outer["actions"][0]["output"] == "small"
    assert outer["variables"] == {"n": 7}


def test_parallel_runs_branches_at_once(h: Harness) -> None:
    import threading

    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(
        h.actions.call("procedure.both")))
    thread.start()
    wait_for(lambda: h.rec.running == 2)
    h.rec.release.set()
    thread.join(5)
    assert result == ["done"]
    assert h.rec.tags().index("after-b") > h.rec.tags().index("end:b")


def test_a_failing_step_reports_its_path(h: Harness) -> None:
    with pytest.raises(StepFailed) as info:
        h.actions.call("procedure.failing")
    assert info.value.step == "procedures.failing.steps[1].then[0]"
    assert str(info.value) == (
        "procedures.failing.steps[1].then[0] (rec.fail): ActionFailed: rec.fail failed: "
        "RuntimeError: disk full")
    assert h.rec.tags() == ["one"]
    [trace] = h.traces(name="failing")
    assert trace["outcome"] == "error"
    assert trace["error"].startswith("procedures.failing.steps[1].then[0]")


def test_on_error_continue(h: Harness) -> None:
    assert h.actions.call("procedure.tolerant") == "survived"


def test_a_procedure_timeout(h: Harness) -> None:
    with pytest.raises(StepFailed, match=r"procedures\.sleepy: timed out"):
        h.actions.call("procedure.sleepy")
    assert h.traces(name="sleepy")[0]["outcome"] == "timeout"


def test_recursion_is_bounded(h: Harness) -> None:
    with pytest.raises(StepFailed, match="nest deeper than 16"):
        h.actions.call("procedure.recursive", {"n": 0})


def test_procedures_are_requests_like_any_action(h: Harness) -> None:
    response = h.bus.request(Request(action="procedure.classify", args={"n": 50}), timeout=5)
    assert response.ok
    assert response.output == "medium"
    response = h.bus.request(Request(action="procedure.failing"), timeout=5)
    assert response.error is not None
    assert response.error.type == "StepFailed"
    assert response.error.details["step"] == "procedures.failing.steps[1].then[0]"


def test_hooks_call_procedures_with_arguments(harness: Make) -> None:
    h = harness(FLOW + """
hooks:
  sizes:
    if: {type: t.n}
    then:
      - {action: procedure.classify, args: {n: "${event.data.n}"}, as: size}
      - {action: rec.note, args: {value: "${size}", tag: size}}
""")
    h.publish("t.n", n=500)
    wait_for(lambda: h.rec.calls)
    assert h.rec.calls == [("size", "large")]

"""Automation inside a whole node: the shipped config's hook, start order, a real cron clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from platybus.config import load_config
from platybus.messages import Event, Request
from platybus.node import Node
from tests.automation.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def default_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Node]:
    # The shipped config, on a free HTTP port so that tests running side by side do not collide.
    text = (REPO / "config.yaml").read_text()
    assert "port: 8008" in text
    (tmp_path / "config.yaml").write_text(text.replace("port: 8008", "port: 0"))
    (tmp_path / "watched").mkdir()
    monkeypatch.chdir(tmp_path)
    node = Node(load_config(tmp_path / "config.yaml"))
    node.start()
    yield node
    node.stop()


def test_the_shipped_config_counts_new_files(default_node: Node, tmp_path: Path) -> None:
    node = default_node
    watched = tmp_path / "watched"
    (watched / "notes.txt").write_text("hello")
    wait_for(lambda: node.actions.call("variable.get", {"name": "files_created"}) == 1)
    (watched / "photos").mkdir()
    (watched / "b.txt").write_text("again")
    wait_for(lambda: node.actions.call("variable.get", {"name": "files_created"}) == 2)
    runs = wait_for(lambda: len(node.actions.call("trace.list", {"kind": "hook"})) == 2
                    and node.actions.call("trace.list", {"kind": "hook"}))
    first = runs[0]["actions"][0]["args"]["message"]
    assert first == f"new file in watched: notes.txt ({watched.resolve() / 'notes.txt'})"
    assert [run["actions"][2]["args"]["message"] for run in runs] == [
        "1 file(s) created so far", "2 file(s) created so far"]
    checked = node.actions.call("trace.list", {"hook": "new-file", "kind": "event"})
    reasons = [c["reason"] for t in checked for c in t["candidates"] if not c["matched"]]
    assert "data.is_directory is true, not false" in reasons
    node.stop()
    assert (tmp_path / "data" / "traces.jsonl").read_text().count("\n") >= 5


def test_start_order(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"node: {{id: order, data_dir: {tmp_path / 'data'}}}\n")
    node = Node(load_config(path))
    order = [step.name for step in node._steps]
    # Every subscriber before any source; cron fires once the sources are up.
    assert order[order.index("actions"):] == ["actions", "automation", "transport", "backends",
                                              "cron", "discovery"]
    node.start()
    assert node.automation.hooks._thread is None  # no hooks: no thread, no subscription
    node.stop()
    node.stop()


def test_cron_on_the_real_clock(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"""
node: {{id: clocked, data_dir: {tmp_path / 'data'}}}
cron:
  every-second:
    when: "* * * * * *"
    then: [{{action: log.info, args: {{message: "tick ${{cron.slot}}"}}}}]
""")
    node = Node(load_config(path))
    node.start()
    try:
        [first, *_] = wait_for(lambda: node.actions.call("trace.list", {"kind": "cron"}),
                               timeout=5)
        assert first["outcome"] == "ok"
        assert first["actions"][0]["args"]["message"] == f"tick {first['slot']}"
    finally:
        node.stop()


def test_a_chain_of_hooks_keeps_its_causes(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # The example of docs/concepts.md: file.created -> hook a publishes chain.step ->
    # hook b publishes chain.done; each event names the one that caused it.
    path = tmp_path / "causality.yaml"
    path.write_text((REPO / "docs/examples/causality.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    watched = tmp_path / "watched"
    node = Node(load_config(path))
    seen: dict[str, Event] = {}
    node.bus.subscribe("type=file.created or type=chain.step or type=chain.done",
                       lambda event: seen.setdefault(event.type, event))
    node.start()
    try:
        (watched / "report.txt").write_text("done")
        wait_for(lambda: "chain.done" in seen)
    finally:
        node.stop()
    created, step, done = seen["file.created"], seen["chain.step"], seen["chain.done"]
    assert step.data == {"path": str((watched / "report.txt").resolve())}
    assert step.parent_id == created.id
    assert done.parent_id == step.id


def test_causes_reach_procedures_and_served_requests_and_a_given_parent_wins(
        tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"""
node: {{id: causes, data_dir: {tmp_path / 'data'}}}
procedures:
  emit:
    steps: [{{action: event.publish, args: {{type: t.from_procedure}}}}]
hooks:
  start:
    if: {{type: t.start}}
    then:
      - {{action: event.publish, args: {{type: t.explicit, parent_id: chosen}}}}
      - {{action: procedure.emit}}
""")
    node = Node(load_config(path))
    seen: dict[str, list[Event]] = {}
    node.bus.subscribe("type=t.*", lambda event: seen.setdefault(event.type, []).append(event))
    node.start()
    try:
        start = Event(type="t.start")
        node.bus.publish(start)
        wait_for(lambda: {"t.explicit", "t.from_procedure"} <= seen.keys())
        served = Request(action="event.publish", args={"type": "t.served"})
        assert node.bus.request(served, timeout=10).error is None
        called = Request(action="procedure.emit")
        assert node.bus.request(called, timeout=10).error is None
        wait_for(lambda: "t.served" in seen and len(seen["t.from_procedure"]) == 2)
    finally:
        node.stop()
    assert [e.parent_id for e in seen["t.explicit"]] == ["chosen"]
    assert [e.parent_id for e in seen["t.from_procedure"]] == [start.id, called.id]
    assert [e.parent_id for e in seen["t.served"]] == [served.id]

"""The automation example in docs/ loads and does what its page says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from platybus.config import load_config
from platybus.node import validate

REPO = Path(__file__).resolve().parents[2]


def test_the_documented_example(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the example's scripts path is relative to where platybus runs
    node = validate(load_config("docs/examples/automation.yaml"))
    event = json.loads((REPO / "docs/examples/event.json").read_text())
    result = node.automation.explain_action(event)
    fires = {h["hook"]: h["fires"] for h in result["hooks"]}
    assert fires == {"text-files": True, "big-files": False, "on_csv": False,
                     "everything-else": True}
    assert node.actions.call("procedure.tidy", {"name": "report.TMP"}) == "delete report.TMP"
    assert node.actions.call("procedure.count-to", {"n": 3}) == 6
    assert node.actions.call("procedure.digits", {"text": "a1b22"}) == 3
    assert "procedure.tidy" in [spec.name for spec in node.actions.specs()]

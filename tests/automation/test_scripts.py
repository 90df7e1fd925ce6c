"""Python-defined automation: @hook, @procedure and @cron in a scripts: directory."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from platybus.automation.cron import ManualClock
from platybus.errors import ConfigError, StepFailed
from tests.automation.conftest import Harness, wait_for

Make = Callable[..., Harness]

SCRIPT = '''
from platybus.automation.scripts import cron, hook, procedure

CALLS = []


@hook({"type": "file.created", "data.path": {"$regex": r"\\.csv$"}}, priority=5)
def on_csv(event, ctx):
    size = ctx.call("procedure.double", n=event.data["rows"])
    ctx.call("rec.note", value=size, tag="csv")


@hook("type=plain.event")
def plain(event):
    CALLS.append(event.type)


@procedure
def double(n: int) -> int:
    """Double a number."""
    return n * 2


@procedure(name="greet")
def greeting(ctx, who: str, punctuation: str = "!") -> str:
    ctx.log.info("greeting %s", who)
    return f"hello {who}{punctuation} from {ctx.node_id}"


@procedure
def broken():
    raise ValueError("nope")


@cron("0 12 * * *", tz="UTC")
def noon(ctx):
    ctx.call("rec.note", value=ctx.cron["slot"], tag="noon")


def helper():
    """Not marked: not automation."""
'''


def write(tmp_path: Path, name: str, text: str) -> Path:
    scripts = tmp_path / "scripts"
    scripts.mkdir(exist_ok=True)
    (scripts / name).write_text(textwrap.dedent(text))
    return scripts


def test_marked_functions_become_hooks_procedures_and_jobs(harness: Make,
                                                           tmp_path: Path) -> None:
    scripts = write(tmp_path, "home.py", SCRIPT)
    clock = ManualClock(1704110399.0)  # 2024-01-01 11:59:59 UTC
    h = harness(f"""
        scripts: {scripts}
        hooks:
          yaml-hook:
            if: {{type: file.created}}
            then: [{{action: procedure.greet, args: {{who: yaml}}, as: said}},
                   {{action: rec.note, args: {{value: "${{said}}", tag: yaml}}}}]
    """, clock=clock)
    assert h.actions.call("procedure.double", {"n": 21}) == 42
    assert h.actions.call("procedure.greet", {"who": "you"}) == "hello you! from n1"
    spec = h.actions.get("procedure.greet")
    assert spec.signature == "(who: str, punctuation: str = '!')"
    assert h.actions.get("procedure.double").doc == "Double a number."
    with pytest.raises(StepFailed, match="ValueError: nope"):
        h.actions.call("procedure.broken")

    h.publish("file.created", path="/w/data.csv", rows=5)
    wait_for(lambda: len(h.rec.calls) == 2)
    assert sorted(h.rec.calls) == [("csv", 10), ("yaml", "hello yaml! from n1")]
    [run] = h.traces(name="on_csv", kind="hook")
    assert [a["action"] for a in run["actions"]] == ["procedure.double", "rec.note"]
    assert run["actions"][1]["args"] == {"value": 10, "tag": "csv"}

    clock.advance(2)
    wait_for(lambda: ("noon", "2024-01-01T12:00:00+00:00") in h.rec.calls)


def test_a_syntax_error_names_the_file_and_line(harness: Make, tmp_path: Path) -> None:
    scripts = write(tmp_path, "bad.py", "x = 1\n\ndef broken(:\n    pass\n")
    with pytest.raises(ConfigError, match="syntax error") as info:
        harness(f"scripts: {scripts}\n", start=False)
    assert info.value.file == str(scripts / "bad.py")
    assert info.value.line == 3


def test_an_import_error_names_the_file_and_line(harness: Make, tmp_path: Path) -> None:
    scripts = write(tmp_path, "bad.py", "import os\nraise RuntimeError('no config')\n")
    with pytest.raises(ConfigError, match="RuntimeError: no config") as info:
        harness(f"scripts: {scripts}\n", start=False)
    assert info.value.line == 2


def test_a_bad_decorator_argument_is_a_config_error(harness: Make, tmp_path: Path) -> None:
    scripts = write(tmp_path, "bad.py", '''
        from platybus.automation.scripts import hook, cron

        @cron("99 * * * *")
        def job():
            pass
    ''')
    with pytest.raises(ConfigError, match="invalid cron expression") as info:
        harness(f"scripts: {scripts}\n", start=False)
    assert info.value.file == str(scripts / "bad.py")
    assert info.value.line == 4


def test_a_hook_with_the_wrong_signature(harness: Make, tmp_path: Path) -> None:
    scripts = write(tmp_path, "bad.py", '''
        from platybus.automation.scripts import hook

        @hook("x.y")
        def nothing():
            pass
    ''')
    with pytest.raises(ConfigError, match=r"takes \(event\) or \(event, ctx\)"):
        harness(f"scripts: {scripts}\n", start=False)


def test_decorators_only_mark(tmp_path: Path) -> None:
    from platybus.automation.scripts import hook, procedure

    @procedure
    def p() -> None:
        pass

    @hook("a.b")
    def h(event: object) -> None:
        pass

    assert p.__platybus_automation__[0].kind == "procedure"  # type: ignore[attr-defined]
    assert h.__platybus_automation__[0].kind == "hook"  # type: ignore[attr-defined]


def test_missing_directory(harness: Make, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such directory") as info:
        harness(f"scripts: {tmp_path / 'nowhere'}\n", start=False)
    assert info.value.key == "scripts"

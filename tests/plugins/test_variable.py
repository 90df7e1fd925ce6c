"""The variable plugin: JSON values in SQLite that keep their types and survive restarts."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from platybus.plugins.variable import VariableError, VariablePlugin

from platybus.actions import ActionRegistry
from platybus.bus import Bus
from platybus.codec import Codec
from platybus.errors import ArgumentError
from platybus.extensions import NodeContext

Make = Callable[..., VariablePlugin]


@pytest.fixture
def make_store(tmp_path: Path) -> Iterator[Make]:
    """Build started variable plugins on ``tmp_path``; every one is stopped afterwards."""
    plugins: list[VariablePlugin] = []

    def build(**options: Any) -> VariablePlugin:
        ctx = NodeContext(node_id="test", bus=Bus("test"), codec=Codec(),
                          actions=ActionRegistry(), data_dir=tmp_path / "data")
        plugin = VariablePlugin("variable", VariablePlugin.Config(**options), ctx)
        plugin.start()
        plugins.append(plugin)
        ctx.actions.add_plugin(plugin)
        return plugin

    yield build
    for plugin in plugins:
        plugin.stop()


@pytest.fixture
def store(make_store: Make) -> VariablePlugin:
    """A started store in the default place."""
    return make_store()


def call(plugin: VariablePlugin, verb: str, **args: Any) -> Any:
    """Call an action through the registry, validating arguments like a request."""
    return plugin.context.actions.call(f"variable.{verb}", args)


VALUES = [
    0, 42, -7, 2**62, 3.5, -0.25, 1e300, True, False, None, "", "text", "ünïcødé ✓",
    [], [1, "two", None, [3.0]], {}, {"a": 1, "b": [True, {"c": None}]},
]


@pytest.mark.parametrize("value", VALUES)
def test_values_round_trip_with_their_types(store: VariablePlugin, value: Any) -> None:
    assert call(store, "set", name="v", value=value) == value
    got = call(store, "get", name="v")
    assert got == value
    assert type(got) is type(value)


def test_get_missing_returns_default(store: VariablePlugin) -> None:
    assert call(store, "get", name="nope") is None
    assert call(store, "get", name="nope", default=5) == 5
    call(store, "set", name="null", value=None)
    # A stored null is a value, not a missing variable.
    assert call(store, "get", name="null", default=5) is None


def test_set_replaces(store: VariablePlugin) -> None:
    call(store, "set", name="x", value=1)
    call(store, "set", name="x", value={"now": "a dict"})
    assert call(store, "get", name="x") == {"now": "a dict"}


def test_delete_reports_whether_it_existed(store: VariablePlugin) -> None:
    call(store, "set", name="x", value=1)
    assert call(store, "delete", name="x") is True
    assert call(store, "delete", name="x") is False
    assert call(store, "get", name="x", default="gone") == "gone"


def test_list_by_prefix(store: VariablePlugin) -> None:
    for name, value in [("garden.a", 1), ("garden.b", "two"), ("gardenx", 3), ("house", 4),
                        ("GARDEN.c", 5), ("garden%", 6)]:
        call(store, "set", name=name, value=value)
    assert call(store, "list", prefix="garden.") == {"garden.a": 1, "garden.b": "two"}
    # % and _ are literal characters, and case matters.
    assert call(store, "list", prefix="garden%") == {"garden%": 6}
    assert call(store, "list", prefix="garde_") == {}
    everything = call(store, "list")
    assert list(everything) == sorted(everything)
    assert len(everything) == 6


def test_increment(store: VariablePlugin) -> None:
    assert call(store, "increment", name="n") == 1
    assert call(store, "increment", name="n", by=5) == 6
    result = call(store, "increment", name="n", by=-10)
    assert result == -4
    assert type(result) is int
    assert type(call(store, "get", name="n")) is int
    assert call(store, "increment", name="n", by=0.5) == -3.5
    assert call(store, "increment", name="f", by=0.25) == 0.25
    call(store, "set", name="g", value=1.5)
    result = call(store, "increment", name="g", by=2)
    assert result == 3.5
    assert type(result) is float


@pytest.mark.parametrize("value", ["text", True, None, [1], {"a": 1}])
def test_increment_refuses_non_numbers(store: VariablePlugin, value: Any) -> None:
    call(store, "set", name="x", value=value)
    with pytest.raises(VariableError, match="not a number"):
        call(store, "increment", name="x")
    # The failed increment rolled back and left the value alone.
    assert call(store, "get", name="x") == value
    assert call(store, "increment", name="other") == 1


def test_increment_is_atomic_across_threads(store: VariablePlugin) -> None:
    threads_count, per_thread = 8, 150
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads_count)

    def work() -> None:
        try:
            barrier.wait()
            for _ in range(per_thread):
                store.increment("counter")
                call(store, "increment", name="float_counter", by=0.5)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.get("counter") == threads_count * per_thread
    assert store.get("float_counter") == threads_count * per_thread * 0.5


def test_values_survive_a_restart(make_store: Make, tmp_path: Path) -> None:
    first = make_store()
    first.set("kept", {"list": [1, 2.5, "x"], "flag": True})
    first.increment("count", 3)
    first.delete("count")
    first.increment("count", 2)
    first.stop()
    first.stop()  # idempotent

    second = make_store()
    assert second.get("kept") == {"list": [1, 2.5, "x"], "flag": True}
    assert second.get("count") == 2
    assert second.path == tmp_path / "data" / "variables.sqlite3"
    assert second.path.exists()


def test_file_is_wal_json_sqlite(store: VariablePlugin) -> None:
    store.set("answer", 42)
    assert store.path is not None
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        row = db.execute("SELECT value FROM variables WHERE name = 'answer'").fetchone()
    db.close()
    assert row == ("42",)


def test_configured_path(make_store: Make, tmp_path: Path) -> None:
    path = tmp_path / "elsewhere" / "vars.db"
    plugin = make_store(path=str(path))
    plugin.set("x", 1)
    assert path.exists()
    assert plugin.path == path


def test_actions_after_stop_fail_clearly(store: VariablePlugin) -> None:
    store.stop()
    with pytest.raises(VariableError, match="not open"):
        call(store, "get", name="x")


@pytest.mark.parametrize(
    ("verb", "args", "match"),
    [
        ("set", {"name": "x"}, "missing required argument 'value'"),
        ("set", {"name": 5, "value": 1}, "argument 'name'"),
        ("set", {"name": "", "value": 1}, "name must not be empty"),
        ("increment", {"name": "x", "by": "lots"}, "argument 'by'"),
        ("increment", {"name": "x", "by": "nan"}, "finite"),
        ("list", {"prefx": "a"}, "unknown argument 'prefx'; did you mean 'prefix'"),
    ],
)
def test_bad_arguments(store: VariablePlugin, verb: str, args: dict[str, Any],
                       match: str) -> None:
    with pytest.raises(ArgumentError, match=match):
        call(store, verb, **args)


def test_values_that_are_not_json_are_refused(store: VariablePlugin) -> None:
    with pytest.raises(ArgumentError, match="cannot be stored"):
        store.set("x", object())
    with pytest.raises(ArgumentError, match="cannot be stored"):
        store.set("x", float("inf"))
    assert store.get("x", "unset") == "unset"


def test_string_numbers_from_the_cli_are_converted(store: VariablePlugin) -> None:
    # ``platybus exec variable.increment name=n by=2`` sends by as a string.
    assert call(store, "increment", name="n", by="2") == 2

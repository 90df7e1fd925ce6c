"""Actions: argument validation from signatures, errors as typed responses, user plugins."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from platybus.actions import ActionRegistry, ActionSpec
from platybus.config import load_config
from platybus.errors import ArgumentError, ConfigError, UnknownActionError
from platybus.messages import Request
from platybus.node import Node


def scale(value: float, factor: int = 2, labels: list[str] | None = None) -> dict[str, Any]:
    """Multiply a value."""
    return {"value": value * factor, "labels": labels or []}


def explode(reason: str) -> None:
    """Always fails."""
    raise RuntimeError(reason)


@pytest.fixture
def registry() -> ActionRegistry:
    reg = ActionRegistry()
    reg.add(ActionSpec.from_function("math.scale", scale))
    reg.add(ActionSpec.from_function("test.explode", explode))
    return reg


def test_arguments_are_validated_and_converted(registry: ActionRegistry) -> None:
    assert registry.call("math.scale", {"value": 1.5, "factor": 3}) == {"value": 4.5, "labels": []}
    # Text from the command line converts when it can.
    assert registry.call("math.scale", {"value": "2", "factor": "4"})["value"] == 8


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, "math.scale: missing required argument 'value'"),
        ({"value": 1, "factr": 2}, "math.scale: unknown argument 'factr'; did you mean 'factor'?"),
        ({"value": "lots"}, "math.scale: argument 'value': expected `float`, got `str`"),
        ({"value": 1, "labels": "a"}, "math.scale: argument 'labels': expected `array | null`"),
    ],
)
def test_bad_arguments_say_what_is_wrong(
    registry: ActionRegistry, args: dict[str, Any], message: str
) -> None:
    with pytest.raises(ArgumentError) as info:
        registry.call("math.scale", args)
    assert str(info.value).startswith(message)
    assert info.value.action == "math.scale"


def test_unknown_action_suggests_a_name(registry: ActionRegistry) -> None:
    with pytest.raises(UnknownActionError, match=r"unknown action 'math.scal'; did you mean "
                                                 r"'math.scale'\?"):
        registry.call("math.scal")


def test_an_action_that_raises_becomes_a_typed_error_response(registry: ActionRegistry) -> None:
    response = registry.execute(Request(action="test.explode", args={"reason": "no fuel"}), "n1")
    assert response.output is None
    assert response.error is not None
    assert (response.error.type, response.error.message) == ("RuntimeError", "no fuel")
    assert response.error.details == {"action": "test.explode"}
    assert registry.get("test.explode").stats.errors == 1


def test_signature_and_doc_are_listed(registry: ActionRegistry) -> None:
    spec = registry.get("math.scale")
    assert spec.doc == "Multiply a value."
    assert spec.signature.startswith("(value: float, factor: int = 2")


USER_PLUGIN = '''
from platybus.extensions import Plugin, action
import msgspec

class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    greeting: str = "hello"

class Greeter(Plugin):
    Config = Config

    @action
    def greet(self, name: str, times: int = 1) -> str:
        """Greet someone."""
        return " ".join([f"{self.config.greeting} {name}"] * times)
'''


def user_node(tmp_path: Path, options: str = "greeting: hi") -> Node:
    ext = tmp_path / "ext"
    ext.mkdir(exist_ok=True)
    (ext / "greeter_ext.py").write_text(textwrap.dedent(USER_PLUGIN))
    config = tmp_path / "c.yaml"
    config.write_text(
        f"node:\n  id: t\n  data_dir: {tmp_path / 'data'}\n  extensions_path: [{ext}]\n"
        f"plugins:\n  greeter:\n    class: greeter_ext:Greeter\n    {options}\n"
    )
    return Node(load_config(config))


def test_user_plugin_from_extensions_path_runs_its_action(tmp_path: Path) -> None:
    node = user_node(tmp_path)
    node.start()
    try:
        response = node.bus.request(Request(action="greeter.greet",
                                             args={"name": "Ada", "times": 2}), timeout=5)
    finally:
        node.stop()
    assert response.output == "hi Ada hi Ada"


def test_user_plugin_config_is_validated_with_location(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        user_node(tmp_path, options="greting: hi")
    assert info.value.key == "plugins.greeter.greting"
    assert "did you mean 'greeting'" in str(info.value)


def test_bad_class_spec_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("plugins:\n  x:\n    class: no_such_module:Thing\n")
    with pytest.raises(ConfigError, match=r"c.yaml:3: plugins.x.class: plugin 'x': cannot import "
                                          r"'no_such_module'"):
        Node(load_config(config))


def test_call_counts_stay_exact_under_concurrent_calls(registry: ActionRegistry) -> None:
    import threading

    def hammer() -> None:
        for _ in range(500):
            registry.call("math.scale", {"value": 1})

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = registry.get("math.scale").stats
    assert (stats.calls, stats.errors) == (2000, 0)

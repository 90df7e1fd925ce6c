"""The config's JSON Schema: built from the structs that validate, and true to the docs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from platybus.config import SECTIONS
from platybus.schema import config_schema

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def doc_configs() -> list[tuple[str, Any]]:
    """Every node config in the docs: the YAML files and the fenced yaml blocks."""
    found: list[tuple[str, Any]] = []
    for path in [ROOT / "config.yaml", *sorted((ROOT / "docs").rglob("*.yaml"))]:
        found.append((str(path.relative_to(ROOT)), yaml.safe_load(path.read_text())))
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for i, block in enumerate(re.findall(r"```ya?ml\n(.*?)```", path.read_text(), re.S)):
            if "..." in block:  # a placeholder, such as "NAME: {...}", not a config
                continue
            found.append((f"{path.relative_to(ROOT)} block {i + 1}", yaml.safe_load(block)))
    return [(name, data) for name, data in found
            if isinstance(data, dict) and data and set(data) <= set(SECTIONS)]


def test_every_config_in_the_docs_validates(validator: jsonschema.Draft202012Validator) -> None:
    configs = doc_configs()
    assert len(configs) >= 20
    problems = [f"{name}: {'.'.join(map(str, e.path))}: {e.message}"
                for name, data in configs for e in validator.iter_errors(data)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("config", "where"), [
    ({"plugins": {"shell": {"timout": 3}}}, "plugins.shell"),
    ({"hooks": {"h": {"if": "type=x", "then": [], "mdoe": "queue"}}}, "hooks.h"),
    ({"nodes": {}}, ""),
    ({"backends": {"http": {"port": "eighty"}}}, "backends.http.port"),
    ({"notifiers": {"pager": {"url": "http://x/"}}}, "notifiers.pager"),  # no class:
    ({"node": {"log_level": "loud"}}, "node.log_level"),
])
def test_mistakes_an_editor_should_underline(
    validator: jsonschema.Draft202012Validator, config: dict[str, Any], where: str
) -> None:
    errors = list(validator.iter_errors(config))
    assert errors
    assert any(".".join(map(str, e.path)) == where for e in errors), [
        (list(e.path), e.message) for e in errors]


def test_installed_extensions_bring_their_options(
    validator: jsonschema.Draft202012Validator,
) -> None:
    schema = config_schema()
    shell = schema["properties"]["plugins"]["properties"]["shell"]["properties"]
    assert {"class", "enabled", "timeout", "allow"} <= set(shell)
    webhook = schema["properties"]["notifiers"]["properties"]["webhook"]["properties"]
    assert {"url", "if", "retry"} <= set(webhook)
    assert not list(validator.iter_errors(
        {"plugins": {"greeter": {"class": "greeter:Greeter", "greeting": "hi"}}}))


def test_the_command_writes_the_same_schema(tmp_path: Path) -> None:
    out = tmp_path / "platybus.schema.json"
    result = subprocess.run([sys.executable, "-m", "platybus", "schema", "-o", str(out)],
                            capture_output=True, text=True, timeout=60, check=True)
    assert "yaml-language-server: $schema=" in result.stdout
    assert json.loads(out.read_text()) == json.loads(json.dumps(config_schema()))

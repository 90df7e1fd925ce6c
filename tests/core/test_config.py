"""Config loading: typed sections, includes, env substitution, errors with file/line/key."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from platybus.config import load_config
from platybus.errors import ConfigError
from platybus.node import Node


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_and_typed_node_section(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path / "c.yaml", "node:\n  id: kitchen\n  bus:\n    workers: 4\n"))
    assert cfg.node.id == "kitchen"
    assert cfg.node.bus.workers == 4
    assert cfg.node.log_level == "info"
    assert cfg.plugins == {}
    assert cfg.backends == {}


def test_node_id_defaults_to_host_name(tmp_path: Path) -> None:
    import socket

    cfg = load_config(write(tmp_path / "c.yaml", "plugins: {}\n"))
    assert cfg.node.id == socket.gethostname()


def test_wrong_type_names_file_line_and_key(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "node:\n  id: a\n  stop_timeout: soon\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    error = info.value
    assert (error.file, error.line, error.key) == (str(path), 3, "node.stop_timeout")
    assert str(error) == f"{path}:3: node.stop_timeout: expected a number, got a string"


def test_plugin_option_errors_name_the_plugin_key(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "plugins:\n  shell:\n    timeout: [1]\n")
    with pytest.raises(ConfigError) as info:
        Node(load_config(path))
    assert info.value.key == "plugins.shell.timeout"
    assert info.value.line == 3
    assert "expected a number" in str(info.value)


def test_unknown_key_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "node:\n  id: a\n  log_levl: debug\n")
    with pytest.raises(ConfigError, match=r"c.yaml:3: node.log_levl: unknown key; did you mean "
                                          r"'log_level'\?"):
        load_config(path)


def test_unknown_section_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "node: {}\nplugin:\n  shell: {}\n")
    with pytest.raises(ConfigError, match=r"c.yaml:2: plugin: unknown section; did you mean "
                                          r"'plugins'\?"):
        load_config(path)


def test_unknown_plugin_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "plugins:\n  shel: {}\n")
    with pytest.raises(ConfigError, match=r"c.yaml:2: plugins.shel: no plugin named 'shel'; "
                                          r"did you mean 'shell'\?"):
        Node(load_config(path))


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "node:\n  id: a\n  bad: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.file == str(path)
    assert info.value.line is not None
    assert info.value.line >= 3
    assert "invalid YAML" in str(info.value)


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "node:\n  id: a\n  id: b\n")
    with pytest.raises(ConfigError, match=r"c.yaml:3: node.id: duplicate key"):
        load_config(path)


def test_env_substitution_with_defaults(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml",
                 "node:\n  id: ${NODE_NAME}\n  data_dir: ${DATA:-/tmp/x}/d\n"
                 "plugins:\n  shell:\n    env:\n      LITERAL: $${NOT_ENV}\n")
    cfg = load_config(path, env={"NODE_NAME": "attic"})
    assert cfg.node.id == "attic"
    assert cfg.node.data_dir == "/tmp/x/d"
    assert cfg.plugins["shell"].options["env"]["LITERAL"] == "${NOT_ENV}"


def test_missing_env_variable_names_line_and_key(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "node:\n  id: ${MISSING_VAR}\n")
    with pytest.raises(ConfigError, match=r"c.yaml:2: node.id: environment variable MISSING_VAR "
                                          r"is not set"):
        load_config(path, env={})


def test_lower_case_templates_are_left_alone(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "hooks:\n  - then: [{action: x, args: {p: '${event.id}'}}]\n")
    cfg = load_config(path, env={})
    assert cfg.section("hooks")[0]["then"][0]["args"]["p"] == "${event.id}"


def test_include_merges_and_the_including_file_wins(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", "node:\n  id: base\n  log_level: debug\nplugins:\n  shell: {}\n")
    (tmp_path / "more").mkdir()
    write(tmp_path / "more" / "extra.yaml", "plugins:\n  file:\n    roots: [/tmp]\n")
    path = write(tmp_path / "c.yaml",
                 "include: [base.yaml, more/extra.yaml]\nnode:\n  id: main\n")
    cfg = load_config(path)
    assert cfg.node.id == "main"
    assert cfg.node.log_level == "debug"
    assert set(cfg.plugins) == {"shell", "file"}


def test_errors_in_included_files_name_that_file(tmp_path: Path) -> None:
    extra = write(tmp_path / "extra.yaml", "node:\n  stop_timeout: never\n")
    path = write(tmp_path / "c.yaml", "include: extra.yaml\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.file, info.value.line) == (str(extra), 2)


def test_include_cycle_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "include: b.yaml\n")
    write(tmp_path / "b.yaml", "include: a.yaml\n")
    with pytest.raises(ConfigError, match="include cycle"):
        load_config(tmp_path / "a.yaml")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_bad_node_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"node.id: must be"):
        load_config(write(tmp_path / "c.yaml", "node:\n  id: 'has space'\n"))


class _Job(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    source: str
    retries: int = 0


class _Jobs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    jobs: dict[str, _Job] = msgspec.field(default_factory=dict)
    steps: list[_Job | None] = msgspec.field(default_factory=list)


def test_errors_inside_a_mapping_name_its_key(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "plugins:\n  x:\n    jobs:\n      good: {source: a}\n"
                                      "      nightly:\n        source: b\n        retrys: 2\n")
    cfg = load_config(path)
    with pytest.raises(ConfigError) as info:
        cfg.convert(cfg.plugins["x"].options, _Jobs, cfg.plugins["x"].path)
    assert str(info.value) == (f"{path}:7: plugins.x.jobs.nightly.retrys: unknown key; "
                               "did you mean 'retries'?")


def test_errors_inside_a_list_of_optional_structs(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "plugins:\n  x:\n    steps:\n      - null\n"
                                      "      - {source: a, retries: many}\n")
    cfg = load_config(path)
    with pytest.raises(ConfigError) as info:
        cfg.convert(cfg.plugins["x"].options, _Jobs, cfg.plugins["x"].path)
    assert info.value.key == "plugins.x.steps[1].retries"
    assert info.value.line == 5
    assert "expected an integer, got a string" in str(info.value)

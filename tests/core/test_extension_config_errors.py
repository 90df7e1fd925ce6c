"""Config errors raised by an extension's own checks name the file, the line and the key."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from platybus.config import load_config
from platybus.errors import ConfigError
from platybus.node import Node

EXTENSION = '''
import msgspec

from platybus.errors import ConfigError
from platybus.extensions import Backend


class PickyConfig(msgspec.Struct, frozen=True):
    level: int = 1


class Picky(Backend):
    Config = PickyConfig

    def __init__(self, name, config, context):
        super().__init__(name, config, context)
        if config.level > 3:
            raise ConfigError("must be at most 3", key="level")  # relative to the entry

    def loop(self):
        self.wait_for_stop()
'''


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "pickyext.py").write_text(EXTENSION)
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(f"""\
        node:
          data_dir: {tmp_path / "data"}
          extensions_path: [{tmp_path}]
        """) + textwrap.dedent(text))
    return path


def error_of(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        Node(load_config(path))
    return info.value


def test_a_plugins_own_check_is_located_at_its_key(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        plugins:
          transfer:
            chunk_size: 0
        """)
    error = error_of(path)
    assert (error.file, error.line, error.key) == (str(path), 6, "plugins.transfer.chunk_size")
    assert str(error) == f"{path}:6: plugins.transfer.chunk_size: must be at least 1"


def test_a_transfer_job_name_and_location_are_located(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        plugins:
          transfer:
            jobs:
              "bad name!":
                source: ./a
                target: ./b
        """)
    error = error_of(path)
    assert (error.line, error.key) == (7, "plugins.transfer.jobs.bad name!")
    path = write(tmp_path, """\
        plugins:
          transfer:
            jobs:
              fetch:
                source: ./a
                target: "ftp://nowhere/x"
        """)
    error = error_of(path)
    assert (error.line, error.key) == (9, "plugins.transfer.jobs.fetch.target")


def test_a_backends_relative_key_is_located_and_the_command_prints_it(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        backends:
          picky:
            class: pickyext:Picky
            level: 9
        """)
    error = error_of(path)
    assert (error.line, error.key) == (7, "backends.picky.level")
    done = subprocess.run([sys.executable, "-m", "platybus", "check", "-c", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 3
    assert f"{path}:7: backends.picky.level: must be at most 3" in done.stderr
    assert "Traceback" not in done.stderr

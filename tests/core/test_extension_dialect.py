"""The one extension dialect: plugins, backends, notifiers and handlers written and loaded alike."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from platybus.config import load_config
from platybus.errors import ConfigError
from platybus.loader import entry_point_index
from platybus.messages import Event
from platybus.node import Node

REPO = Path(__file__).resolve().parents[2]

# One class of each kind; every one records what it was built with.
EXTENSIONS = '''
import msgspec

from platybus.extensions import Backend, Plugin
from platybus.isolation.handlers import Handler
from platybus.notify.manager import Notifier


class GreeterConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    greeting: str = "hello"


class Greeter(Plugin):
    Config = GreeterConfig


class Quiet(Backend):
    Config = GreeterConfig


class PagerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    number: str


class Pager(Notifier):
    Config = PagerConfig

    def send_event(self, event):
        return True


class Echo(Handler):
    @staticmethod
    def handle(config, event):
        return config


class TypedEcho(Handler):
    Config = PagerConfig

    @staticmethod
    def handle(config, event):
        return {"number": config.number, "typed": type(config).__name__}
'''

# Fails at import on line 3, as a module with a bug does.
BROKEN = '''"""A module with a bug."""

RATE = 1 / 0
'''

MISSING_DEPENDENCY = '''"""A module that needs a package this machine does not have."""
import os
import no_such_dependency_anywhere
'''


def node_config(tmp_path: Path, body: str) -> Path:
    """Write a config with an extensions directory holding the modules above."""
    ext = tmp_path / "ext"
    (ext / "sftpplus_pkg").mkdir(parents=True, exist_ok=True)
    (ext / "dialect_ext.py").write_text(EXTENSIONS)
    (ext / "dialect_broken.py").write_text(BROKEN)
    (ext / "dialect_missing_dep.py").write_text(MISSING_DEPENDENCY)
    (ext / "dialect_syntax.py").write_text("x = 1\ndef broken(:\n")
    (ext / "sftpplus_pkg" / "__init__.py").write_text("")
    (ext / "sftpplus_pkg" / "handlers.py").write_text(EXTENSIONS)
    config = tmp_path / "config.yaml"
    config.write_text(textwrap.dedent(f"""\
        node:
          id: dialect
          data_dir: {tmp_path / "data"}
          extensions_path: [{ext}]
        discovery: {{enabled: false}}
        """) + textwrap.dedent(body))
    return config


def build(tmp_path: Path, body: str) -> Node:
    """Build (without starting) a node from a config with ``body`` as its extension sections."""
    return Node(load_config(node_config(tmp_path, body)))


# -- loading: by entry-point name and by module:Class, for each kind -------------------------


def test_each_kind_loads_by_module_and_class(tmp_path: Path) -> None:
    node = build(tmp_path, """\
        plugins:
          greeter: {class: "dialect_ext:Greeter", greeting: hi}
        backends:
          quiet: {class: "dialect_ext:Quiet", greeting: hey}
        notifiers:
          pager: {class: "dialect_ext:Pager", number: "+4412345", if: "type=alarm.*"}
        handlers:
          echo: {class: "dialect_ext:Echo", factor: 3, timeout: 5}
        """)
    plugin, backend = node.plugins["greeter"], node.backends["quiet"]
    assert (type(plugin).__name__, plugin.config.greeting) == ("Greeter", "hi")
    assert (type(backend).__name__, backend.config.greeting) == ("Quiet", "hey")
    assert node.notifiers is not None
    assert node.handlers is not None
    pager = node.notifiers.channels["pager"].notifier
    assert (type(pager).__name__, pager.config.number) == ("Pager", "+4412345")
    echo = node.handlers.runners["echo"]
    assert (type(echo.instance).__name__, echo.config) == ("Echo", {"factor": 3})
    assert echo.settings.timeout == 5
    # One constructor for all four: (name, config, context), the context being the node's.
    for name, built in (("greeter", plugin), ("quiet", backend), ("pager", pager),
                        ("echo", echo.instance)):
        assert built.context is node.context, name
        assert built.config is not None, name
    assert (plugin.name, backend.backend_name, pager.name, echo.instance.name) == (
        "greeter", "quiet", "pager", "echo")


def test_each_kind_loads_by_entry_point_name(tmp_path: Path) -> None:
    node = build(tmp_path, f"""\
        plugins:
          shell: {{timeout: 5}}             # the entry's own name is the installed name
          other-shell: {{class: shell}}     # an installed class under another name
        backends:
          http: {{port: 0}}
        notifiers:
          log: {{}}
          archive: {{class: file, directory: {tmp_path / "archive"}}}
        """)
    assert type(node.plugins["shell"]).__name__ == "ShellPlugin"
    assert type(node.plugins["other-shell"]).__name__ == "ShellPlugin"
    assert type(node.backends["http"]).__name__ == "HttpBackend"
    assert node.notifiers is not None
    assert type(node.notifiers.channels["log"].notifier).__name__ == "LogNotifier"
    assert type(node.notifiers.channels["archive"].notifier).__name__ == "FileNotifier"
    assert node.notifiers.status()["archive"]["class"] == "FileNotifier"


INSTALLED = """\
[platybus.plugins]
third-plugin = third_party_ext:Greeter

[platybus.backends]
third-backend = third_party_ext:Quiet

[platybus.notifiers]
third-notifier = third_party_ext:Pager

[platybus.handlers]
third-handler = third_party_ext:Echo
broken-handler = third_party_broken:Thing
"""

CHILD = """\
import sys
from platybus.config import load_config
from platybus.errors import ConfigError
from platybus.loader import entry_point_index
from platybus.messages import Event
from platybus.node import Node

node = Node(load_config(sys.argv[1]))
kinds = [node.plugins["third-plugin"], node.backends["third-backend"],
         node.notifiers.channels["third-notifier"].notifier,
         node.handlers.runners["third-handler"].instance]
print(*[type(k).__name__ for k in kinds])
try:
    Node(load_config(sys.argv[2]))
except ConfigError as error:
    print(error)
print("scans", entry_point_index.cache_info().misses)
"""


def test_installed_distributions_provide_all_four_kinds(tmp_path: Path) -> None:
    # A real distribution on the path, as pip leaves one: a module and its .dist-info.
    site = tmp_path / "site"
    info = site / "third_party-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: third-party\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(INSTALLED)
    (site / "third_party_ext.py").write_text(EXTENSIONS)
    (site / "third_party_broken.py").write_text(BROKEN)
    good = node_config(tmp_path, """\
        plugins: {third-plugin: {greeting: hi}}
        backends: {third-backend: {}}
        notifiers: {third-notifier: {number: "1"}}
        handlers: {third-handler: {}}
        """)
    bad = tmp_path / "bad.yaml"
    bad.write_text("handlers:\n  x:\n    class: broken-handler\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    done = subprocess.run([sys.executable, "-c", CHILD, str(good), str(bad)], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    lines = done.stdout.splitlines()
    assert lines[0] == "Greeter Quiet Pager Echo"
    assert "handlers.x.class: handler 'x': cannot load third_party_broken:Thing: " in lines[1]
    assert "ZeroDivisionError: division by zero" in lines[1]
    assert "third_party_broken.py, line 3: RATE = 1 / 0" in lines[1]
    # Entry points were read once for the whole process, however many extensions it loaded.
    assert lines[2] == "scans 1"


def test_the_entry_point_index_is_read_once() -> None:
    first = entry_point_index()
    assert entry_point_index() is first
    assert "shell" in first["platybus.plugins"]
    assert {"file", "log", "webhook", "command"} <= set(first["platybus.notifiers"])


# -- what goes wrong, said the same way for each kind -----------------------------------------


@pytest.mark.parametrize(("body", "key", "hint"), [
    ("plugins: {shel: {}}", "plugins.shel", "no plugin named 'shel'; did you mean 'shell'?"),
    ("backends: {htp: {}}", "backends.htp", "no backend named 'htp'; did you mean 'http'?"),
    ("notifiers: {a: {class: webhok}}", "notifiers.a.class",
     "no notifier named 'webhok' (for 'a'); did you mean 'webhook'?"),
    ("handlers: {a: {class: 'dialect_ext:Ecoh'}}", "handlers.a.class",
     "'dialect_ext' has no 'Ecoh'; did you mean 'Echo'?"),
    ("plugins: {a: {class: 'dialect_ext:Greter'}}", "plugins.a.class",
     "'dialect_ext' has no 'Greter'; did you mean 'Greeter'?"),
])
def test_a_typo_gets_did_you_mean(tmp_path: Path, body: str, key: str, hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(tmp_path, body + "\n")
    assert info.value.key == key
    assert info.value.line == 6
    assert hint in str(info.value)


@pytest.mark.parametrize("section", ["plugins", "backends", "notifiers", "handlers"])
def test_an_import_error_names_the_exception_and_the_line(tmp_path: Path, section: str) -> None:
    kind = section.rstrip("s")
    with pytest.raises(ConfigError) as info:
        build(tmp_path, f"{section}:\n  x:\n    class: dialect_broken:Thing\n")
    assert info.value.key == f"{section}.x.class"
    assert info.value.line == 8
    text = str(info.value)
    assert f"{kind} 'x': cannot import 'dialect_broken'" in text
    assert "ZeroDivisionError: division by zero" in text
    assert "dialect_broken.py, line 3: RATE = 1 / 0" in text
    with pytest.raises(ConfigError) as info:
        build(tmp_path, f"{section}:\n  x:\n    class: dialect_missing_dep:Thing\n")
    text = str(info.value)
    assert "ModuleNotFoundError: No module named 'no_such_dependency_anywhere'" in text
    assert "dialect_missing_dep.py, line 3: import no_such_dependency_anywhere" in text
    with pytest.raises(ConfigError) as info:
        build(tmp_path, f"{section}:\n  x:\n    class: dialect_syntax:Thing\n")
    assert "SyntaxError: invalid syntax (dialect_syntax.py, line 2)" in str(info.value)


def test_a_module_that_is_not_there_says_where_it_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        build(tmp_path, "notifiers:\n  x:\n    class: nowhere_module:Thing\n")
    assert "cannot import 'nowhere_module' (searched " in str(info.value)
    assert "ModuleNotFoundError: No module named 'nowhere_module'" in str(info.value)
    assert "loader.py" not in str(info.value)


def test_a_mistyped_common_key_is_named(tmp_path: Path) -> None:
    for body, key, hint in (
        ("plugins: {shell: {enabeld: false}}", "plugins.shell.enabeld", "'enabled'"),
        ("notifiers: {log: {queue_sise: 3}}", "notifiers.log.queue_sise", "'queue_size'"),
        ("handlers: {a: {class: 'dialect_ext:Echo', timout: 3}}", "handlers.a.timout",
         "'timeout'"),
    ):
        with pytest.raises(ConfigError) as info:
            build(tmp_path, body + "\n")
        assert info.value.key == key, body
        assert f"did you mean {hint}?" in str(info.value), body


def test_a_class_that_is_not_of_its_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a subclass of Notifier") as info:
        build(tmp_path, "notifiers:\n  x:\n    class: dialect_ext:Greeter\n")
    assert info.value.key == "notifiers.x.class"


# -- earlier spellings -------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "key", "new"), [
    ("notifiers:\n  x:\n    type: webhook\n", "notifiers.x.type",
     "'type' is now 'class': write class: webhook"),
    ("notifiers:\n  x:\n    class: file\n    options: {directory: /tmp}\n", "notifiers.x.options",
     "beside 'class': write directory: ... one level up, without 'options:'"),
    ("handlers:\n  x:\n    entry_point: 'python:dialect_ext.Echo'\n", "handlers.x.entry_point",
     "'entry_point' is now 'class': write class: python:dialect_ext.Echo"),
    ("handlers:\n  x:\n    class: dialect_ext:Echo\n    configuration: {factor: 3}\n",
     "handlers.x.configuration",
     "beside 'class': write factor: ... one level up, without 'configuration:'"),
])
def test_old_spellings_are_refused_naming_the_new_one(tmp_path: Path, body: str, key: str,
                                                      new: str) -> None:
    config = node_config(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        Node(load_config(config))
    assert info.value.key == key
    assert info.value.file == str(config)
    assert info.value.line == body.count("\n") + 5
    assert new in str(info.value)


# -- SFTPPlus's form ---------------------------------------------------------------------------


def test_the_sftpplus_form_is_a_class_value(tmp_path: Path) -> None:
    node = build(tmp_path, """\
        handlers:
          flat: {class: "python:dialect_ext.Echo"}
          packaged: {class: "python:sftpplus_pkg.handlers.Echo", factor: 2}
        """)
    assert node.handlers is not None
    status = node.handlers.status()["handlers"]
    assert status["packaged"]["class"] == "python:sftpplus_pkg.handlers.Echo"
    packaged = node.handlers.runners["packaged"]
    assert packaged.fn_ref == "sftpplus_pkg.handlers:Echo.handle"
    assert packaged.config == {"factor": 2}
    with pytest.raises(ConfigError) as info:
        build(tmp_path, "handlers:\n  x:\n    class: 'python:Echo'\n")
    assert info.value.key == "handlers.x.class"
    assert ("expected an installed name, 'module:Class' or 'python:package.module.Class', "
            "got 'python:Echo'") in str(info.value)


def test_a_handler_with_a_config_gets_typed_options_in_its_worker(
    tmp_path: Path, no_leaked_processes: None
) -> None:
    with pytest.raises(ConfigError, match="did you mean 'number'") as info:
        build(tmp_path, "handlers:\n  t:\n    class: dialect_ext:TypedEcho\n    numbr: 5\n")
    assert info.value.key == "handlers.t.numbr"
    node = build(tmp_path, """\
        handlers:
          t: {class: "dialect_ext:TypedEcho", number: "+4412345", workers: 1, timeout: 60}
        """)
    done: queue.Queue[Any] = queue.Queue()
    node.bus.subscribe("type=handler.*", done.put)
    node.start()
    try:
        node.bus.publish(Event(type="job.run"))
        outcome = done.get(timeout=60)
    finally:
        node.stop()
    assert outcome.type == "handler.done"
    assert outcome.data.result == {"number": "+4412345", "typed": "PagerConfig"}


# -- the documented examples run as written ---------------------------------------------------


@pytest.mark.slow
def test_the_handler_and_notifier_examples_run(tmp_path: Path, no_leaked_processes: None) -> None:
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    words = subprocess.run([sys.executable, "docs/examples/wordcount_demo.py"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120, check=True)
    assert "result={'words': 8," in words.stdout
    assert words.stdout.rstrip().endswith("word count stopped in the node (pid "
                                          f"{words.stdout.split('(pid ')[1].split(')')[0]})")
    record = subprocess.run([sys.executable, "docs/examples/record_demo.py"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, check=True)
    assert "dumped to" in record.stdout
    assert len(list((tmp_path / "data" / "archive").glob("*.json"))) == 1
    assert len(list((tmp_path / "data" / "outbox" / "alarm").glob("*.json"))) == 1

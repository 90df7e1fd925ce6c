"""The layout keeps its promises: a small public API, modules that import alone, one package.

Each module is imported in a fresh interpreter, so an import cycle or an import-time
side effect (a thread, a file, a registration) shows up here and not in a user's script.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import platybus
from platybus import errors

ROOT = Path(__file__).resolve().parents[2]
# Folder in the repository -> the package it installs as.
PACKAGES = {"platybus": "platybus", "backends": "platybus.backends",
            "plugins": "platybus.plugins", "notifiers": "platybus.notifiers"}

PUBLIC = {"Node", "Bus", "Event", "Request", "Response", "ErrorInfo", "Plugin", "Backend",
          "NodeContext", "action", "Client", "PlatybusError", "__version__"}


def modules() -> list[str]:
    """Every module of the distribution, by its installed name."""
    found = []
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name == "__main__.py" or "console" in path.relative_to(ROOT).parts[:-1]:
                continue
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found.append(".".join((package, *parts)))
    return found


def test_the_public_api_is_pinned() -> None:
    assert set(platybus.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(platybus, name) is not None
    # Every error class is reachable from the top, so a script needs one import.
    for name, value in vars(errors).items():
        if isinstance(value, type) and issubclass(value, errors.PlatybusError):
            assert getattr(platybus, name) is value
    with pytest.raises(AttributeError, match="no attribute 'Nodes'"):
        _ = platybus.Nodes


def test_import_platybus_is_cheap() -> None:
    """``import platybus`` loads none of the machinery: only the names, on first use."""
    code = ("import sys, json; before = set(sys.modules); import platybus; "
            "print(json.dumps(sorted(set(sys.modules) - before)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    loaded = [m for m in json.loads(out) if m.startswith("platybus")]
    assert loaded == ["platybus"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    names = modules()
    assert "platybus.link.protocol" in names
    assert "platybus.backends.http.gate" in names
    # One interpreter per module; the script checks that importing starts no thread.
    script = (
        "import importlib, sys, threading\n"
        "name = sys.argv[1]\n"
        "importlib.import_module(name)\n"
        "extra = [t.name for t in threading.enumerate() if t is not threading.main_thread()]\n"
        "assert not extra, f'importing {name} started threads: {extra}'\n"
    )
    def failure(name: str) -> str | None:
        result = subprocess.run([sys.executable, "-c", script, name], cwd=ROOT,
                                capture_output=True, text=True, timeout=120, check=False)
        if result.returncode == 0:
            return None
        lines = result.stderr.strip().splitlines()
        return f"{name}: {lines[-1] if lines else result.returncode}"

    with ThreadPoolExecutor(4) as pool:  # a few at a time: the machine may have 2 cores
        failures = [f for f in pool.map(failure, names) if f is not None]
    assert not failures, "\n".join(failures)


def test_the_core_names_no_extension() -> None:
    """The core reaches backends, plugins and notifiers only through the entry points."""
    offenders = []
    for path in sorted((ROOT / "platybus").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            text = line.strip()
            if text.startswith(("import platybus.", "from platybus.")) and any(
                    text.split()[1].startswith(f"platybus.{p}")
                    for p in ("backends", "plugins", "notifiers")):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {text}")
    assert not offenders, "\n".join(offenders)


def test_the_import_contracts_hold() -> None:
    """The layers and forbidden imports in pyproject.toml (``lint-imports``) are kept."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


@pytest.mark.slow
def test_the_wheel_holds_one_top_level_package(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "-q", "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("platybus-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"platybus"}
    for module in ("platybus/backends/http/gate.py", "platybus/plugins/transfer/engine.py",
                   "platybus/notifiers/log.py", "platybus/link/protocol.py"):
        assert module in names
    meta = next(n for n in names if n.endswith("entry_points.txt"))
    entry_points = zipfile.ZipFile(wheel).read(meta).decode()
    assert "platybus.plugins.shell:ShellPlugin" in entry_points
    assert "plugins." not in entry_points.replace("platybus.plugins", "")

"""The one loader of extension classes: plugins, backends, notifiers and handlers.

An entry's ``class:`` picks its class, in one of three forms:

- a name from the kind's entry-point group (``platybus.plugins``, ``platybus.backends``,
  ``platybus.notifiers``, ``platybus.handlers``); without ``class:`` the entry's own name;
- ``module:Class``, imported from ``node.extensions_path`` first, then the Python path;
- ``python:package.module.Class``, the form SFTPPlus writes, read as ``package.module:Class``.

Every failure is an :class:`~platybus.errors.ExtensionError` that says what was looked for:
an unknown name gets "did you mean", an import that raises names the exception's type and
the file and line it came from.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import re
import sys
import traceback
from collections.abc import Mapping
from importlib.metadata import EntryPoint, distributions
from pathlib import Path
from typing import Any, TypeVar

from platybus.errors import ExtensionError, ExtensionNotFound

__all__ = [
    "SFTPPLUS_PREFIX", "available", "describe_failure", "entry_point_index", "load_class",
    "split_spec",
]

T = TypeVar("T")

SFTPPLUS_PREFIX = "python:"

# Frames of the import machinery: a failure is reported at the line of the user's code.
_METADATA_FILE = importlib.import_module("importlib.metadata").__file__


@functools.cache
def entry_point_index() -> Mapping[str, Mapping[str, EntryPoint]]:
    """Every installed entry point by group and name, read once per process.

    Scanning the installed distributions costs about 12 ms a time, and what is
    installed does not change under a running process: one read serves every load.
    """
    index: dict[str, dict[str, EntryPoint]] = {}
    seen: set[str] = set()
    for dist in distributions():
        # As entry_points() does: a distribution found twice on the path counts once.
        # (the name from the path when it has one, so no metadata file is read for it).
        name = getattr(dist, "_normalized_name", None) or dist.metadata["Name"] or ""
        key = re.sub(r"[-_.]+", "_", name).lower()
        if key in seen:
            continue
        seen.add(key)
        for ep in dist.entry_points:
            index.setdefault(ep.group, {}).setdefault(ep.name, ep)
    return index


def available(group: str) -> dict[str, str]:
    """Return the extension names of an entry-point group with their targets."""
    return {name: ep.value for name, ep in entry_point_index().get(group, {}).items()}


def split_spec(spec: str) -> tuple[str, str] | None:
    """Return ``(module, qualname)`` of an import spec, or ``None`` for an entry-point name.

    Raises :class:`ExtensionError` for a spec that is neither.
    """
    text = spec[len(SFTPPLUS_PREFIX):] if spec.startswith(SFTPPLUS_PREFIX) else spec
    if ":" in text:
        module, _, qualname = text.partition(":")
    elif text is not spec:  # python:package.module.Class
        module, _, qualname = text.rpartition(".")
    else:
        return None
    if not module or not qualname or ":" in qualname:
        raise ExtensionError(f"expected an installed name, 'module:Class' or "
                             f"'python:package.module.Class', got {spec!r}")
    return module, qualname


def load_class(
    group: str,
    name: str,
    base: type[T],
    *,
    spec: str | None = None,
    search_path: list[Path] | None = None,
) -> type[T]:
    """Find the class of the extension ``name``: by its ``class:`` value ``spec``, or by name.

    ``spec`` is an entry-point name of ``group``, ``module:Class`` or
    ``python:package.module.Class``; without it, ``name`` is the entry-point name.
    A module is imported from the directories of ``search_path`` first.
    """
    kind = group.rsplit(".", 1)[-1].rstrip("s")
    target = name if spec is None else spec
    try:
        parts = split_spec(target) if spec is not None else None
    except ExtensionError as error:
        raise ExtensionError(f"{kind} {name!r}: {error}", name=name) from None
    if parts is not None:
        obj = _import(parts, search_path or [], kind, name)
    else:
        obj = _load_entry_point(group, target, kind, name)
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise ExtensionError(
            f"{kind} {name!r}: {obj!r} is not a subclass of {base.__name__}", name=name
        )
    return obj


def _load_entry_point(group: str, target: str, kind: str, name: str) -> Any:
    eps = entry_point_index().get(group, {})
    ep = eps.get(target)
    if ep is None:
        hint = difflib.get_close_matches(target, list(eps), n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        if not hint and "." in target:
            suggestion = "; to import a class, write 'module:Class'"
        known = ", ".join(sorted(eps)) or "none"
        owner = "" if target == name else f" (for {name!r})"
        raise ExtensionNotFound(
            f"no {kind} named {target!r}{owner}{suggestion} (installed: {known})", name=name)
    try:
        return ep.load()
    except Exception as error:
        raise ExtensionError(
            f"{kind} {name!r}: cannot load {ep.value}: {describe_failure(error)}", name=name
        ) from error


def _import(parts: tuple[str, str], search_path: list[Path], kind: str, name: str) -> Any:
    module_name, qualname = parts
    for directory in reversed(search_path):
        text = str(directory.resolve())
        if text not in sys.path:
            sys.path.insert(0, text)
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        where = ", ".join(str(p) for p in search_path) or "the Python path"
        raise ExtensionError(
            f"{kind} {name!r}: cannot import {module_name!r} (searched {where}): "
            f"{describe_failure(error)}", name=name,
        ) from error
    obj: Any = module
    for index, attr in enumerate(qualname.split(".")):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            owner = ".".join([module_name, *qualname.split(".")[:index]])
            names = [n for n in dir(obj) if not n.startswith("_")]
            hint = difflib.get_close_matches(attr, names, n=1)
            tail = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ExtensionError(
                f"{kind} {name!r}: {owner!r} has no {attr!r}{tail}", name=name
            ) from None
    return obj


def describe_failure(error: BaseException) -> str:
    """Render an import failure as ``Type: message (file, line N)``, the line where it arose."""
    text = f"{type(error).__name__}: {error}"
    if isinstance(error, SyntaxError) and error.filename and error.lineno:
        # The message already holds the file and line: "... (greeter.py, line 3)".
        return text if "line" in str(error) else f"{text} ({error.filename}, line {error.lineno})"
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not f.filename.startswith("<frozen ")
              and f.filename not in (__file__, importlib.__file__, _METADATA_FILE)]
    if frames:
        last = frames[-1]
        text += f" ({last.filename}, line {last.lineno}: {(last.line or '').strip()})"
    return text

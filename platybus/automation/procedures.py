"""Procedures: named lists of steps with parameters, compiled from the ``procedures`` section.

A procedure is a named list of steps with parameters. Each one is registered in
the node's action registry as ``procedure.<name>``, with an argument schema built
from its parameters, so hooks, cron jobs, HTTP, the command line and other nodes
call it like any action.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import msgspec

from platybus.actions import ActionSpec
from platybus.automation.engine import Engine, Procedure
from platybus.automation.steps import StepCompiler
from platybus.config import KeyPath, SourceMap, convert

_REQUIRED = object()


class ProcedureOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One entry of the ``procedures`` section."""

    steps: list[Any]
    params: list[Any] = msgspec.field(default_factory=list)
    timeout: float | None = None
    description: str = ""


# -- compiling ------------------------------------------------------------------


def _params(raw: list[Any], path: KeyPath, source: SourceMap) -> list[tuple[str, Any]]:
    params: list[tuple[str, Any]] = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            name, default = item, _REQUIRED
        elif isinstance(item, dict) and len(item) == 1:
            name, default = next(iter(item.items()))
        else:
            raise source.error((*path, i), "a parameter is a name (required) or "
                                           "{name: default} (optional)")
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            raise source.error((*path, i), f"invalid parameter name {name!r}")
        if name in (p for p, _ in params):
            raise source.error((*path, i), f"parameter {name!r} is given twice")
        params.append((name, default))
    return params


def _copier(value: Any) -> Callable[[], Any]:
    return lambda: copy.deepcopy(value)


def procedure_spec(proc: Procedure, blocking: bool,
                   fn: Callable[..., Any]) -> ActionSpec:
    """Build the action spec of a procedure from its parameters."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    shown = []
    for name, default in proc.params:
        if default is _REQUIRED:
            fields.append((name, Any))
            shown.append(name)
        else:
            value = (msgspec.field(default_factory=_copier(default))
                     if isinstance(default, list | dict) else default)
            fields.append((name, Any, value))
            shown.append(f"{name}={default!r}")
    args_type = msgspec.defstruct(f"{proc.action}.args", fields, kw_only=True,
                                  forbid_unknown_fields=True)
    return ActionSpec(name=proc.action, fn=fn, doc=proc.description or f"Procedure {proc.name}.",
                      signature=f"({', '.join(shown)})", blocking=blocking, args_type=args_type)


def compile_procedures(raw: Any, engine: Engine, source: SourceMap) -> list[Procedure]:
    """Compile the ``procedures`` section (names first, so procedures may call each other)."""
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise source.error(("procedures",), "expected a mapping of procedure names to "
                                            "procedures")
    compiled: list[tuple[Procedure, ProcedureOptions, KeyPath]] = []
    for name, body in raw.items():
        path: KeyPath = ("procedures", name)
        check_name(name, path, source)
        if name in engine.procedures:
            raise source.error(path, "a script defines a procedure with this name too")
        options = convert({"steps": body} if isinstance(body, list) else body,
                          ProcedureOptions, path, source)
        proc = Procedure(name, _params(options.params, (*path, "params"), source),
                         timeout=options.timeout, description=options.description)
        engine.procedures[name] = proc
        proc.spec = procedure_spec(proc, True, _caller(engine, proc))
        compiled.append((proc, options, path))
    for proc, options, path in compiled:
        compiler = StepCompiler(source, engine, known={p for p, _ in proc.params})
        proc.steps = compiler.steps(options.steps, (*path, "steps"))
        compiler.check_names()
        assert proc.spec is not None
        proc.spec.blocking = not all(step.inline for step in proc.steps)
    return [proc for proc, _, _ in compiled]


def _caller(engine: Engine, proc: Procedure) -> Callable[..., Any]:
    def call(**kwargs: Any) -> Any:
        return engine.run_procedure(proc, kwargs)

    return call


def check_name(name: Any, path: KeyPath, source: SourceMap) -> None:
    """Names of hooks, procedures and jobs: words, digits, '_', '-' and '.'."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", name):
        raise source.error(path, f"invalid name {name!r}: letters, digits, '_', '-' and '.'")

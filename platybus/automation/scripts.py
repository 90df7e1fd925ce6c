"""Python-defined automation: ``@hook``, ``@procedure`` and ``@cron`` in ``scripts:`` modules.

The decorators only *mark* functions; nothing registers at import. The node
imports each ``*.py`` module of the ``scripts:`` directories when it is built,
collects the marked functions of each module, and builds them like config
entries; an error in a module is a config error naming its file and line.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, TypeVar

from platybus.actions import ActionSpec
from platybus.automation.cron import CronJob, CronOptions, build_job
from platybus.automation.engine import Engine, Procedure
from platybus.automation.hooks import Hook, HookOptions, build_hook
from platybus.automation.isolated import Isolation, RunStep
from platybus.automation.runs import Mode, Run, record_action
from platybus.automation.steps import PythonStep, Step
from platybus.automation.trace import clip
from platybus.config import KeyPath, SourceMap, convert
from platybus.errors import ActionError, ArgumentError, ConfigError, DecodeError

__all__ = ["ScriptContext", "cron", "hook", "load_scripts", "procedure"]

F = TypeVar("F", bound=Callable[..., Any])
_ATTR = "__platybus_automation__"

log = logging.getLogger("platybus.automation.scripts")


@dataclass(frozen=True)
class Mark:
    """What a decorator records on a function."""

    kind: Literal["hook", "procedure", "cron"]
    name: str | None
    options: dict[str, Any]


def _mark(mark: Mark) -> Callable[[F], F]:
    def apply(fn: F) -> F:
        marks = (*getattr(fn, _ATTR, ()), mark)
        setattr(fn, _ATTR, marks)
        return fn

    return apply


def hook(condition: str | Mapping[str, Any], *, name: str | None = None, priority: int = 100,
         stop: bool = False, enabled: bool = True, timeout: float | None = 60.0,
         mode: Mode = "parallel", max_parallel: int = 10, max_queued: int | None = None,
         durable: bool = True, isolation: Isolation = "thread") -> Callable[[F], F]:
    """Mark ``fn(event)`` or ``fn(event, ctx)`` as a hook on events matching ``condition``;
    with ``isolation="process"``, ``fn(event)`` runs in a worker process."""
    return _mark(Mark("hook", name, {
        "if": condition if isinstance(condition, str) else dict(condition), "then": [],
        "priority": priority, "stop": stop, "enabled": enabled, "timeout": timeout,
        "mode": mode, "max_parallel": max_parallel, "max_queued": max_queued,
        "durable": durable, "isolation": isolation}))


def procedure(fn: F | None = None, *, name: str | None = None,
              timeout: float | None = None) -> Any:
    """Mark a function as the action ``procedure.<name>``; a first parameter ``ctx`` is given
    a :class:`ScriptContext`, the other parameters are the procedure's arguments."""
    mark = _mark(Mark("procedure", name, {"timeout": timeout}))
    return mark(fn) if fn is not None else mark


def cron(expression: str, *, name: str | None = None, tz: str | None = None,
         catch_up: Literal["none", "last", "all"] = "none", grace: float = 60.0,
         mode: Mode = "skip", timeout: float | None = None,
         enabled: bool = True) -> Callable[[F], F]:
    """Mark ``fn()`` or ``fn(ctx)`` as a cron job on ``expression``."""
    return _mark(Mark("cron", name, {
        "when": expression, "then": [], "tz": tz, "catch_up": catch_up, "grace": grace,
        "mode": mode, "timeout": timeout, "enabled": enabled}))


class ScriptContext:
    """What Python automation gets: call actions, publish events, sleep, see stops."""

    def __init__(self, engine: Engine, run: Run, step: str,
                 cron: dict[str, Any] | None = None) -> None:
        self._engine = engine
        self._run = run
        self._step = step
        self.node_id = engine.node_id
        self.cron = cron
        self.log = logging.getLogger(f"platybus.scripts.{run.name}")

    def call(self, action: str, /, target: str | None = None, **args: Any) -> Any:
        """Run an action (on ``target`` if given) and return its output; raise ActionError."""
        self._run.check()
        record = record_action(self._run, self._step, action, args, target)
        started = time.perf_counter()
        try:
            output = self._engine.call(self._run, action, args, target, None)
        except ActionError as error:
            if record is not None:
                record.ok = False
                record.error = f"{type(error).__name__}: {error}"
                record.duration = round(time.perf_counter() - started, 6)
            raise
        if record is not None:
            record.duration = round(time.perf_counter() - started, 6)
            record.output = clip(output, self._run.store.limit)
        return output

    def publish(self, type: str, data: dict[str, Any] | None = None) -> str:
        """Publish an event caused by this run; return its id."""
        try:
            event = self._engine.context.codec.event(type, data, origin=self.node_id,
                                                     parent_id=self._run.message_id)
        except DecodeError as error:
            raise ArgumentError(f"publish: {error}") from None
        self._engine.bus.publish(event)
        return event.id

    def sleep(self, seconds: float) -> None:
        """Sleep; raises (ending the run) at once if the run is stopped or times out."""
        self._run.sleep(seconds)

    @property
    def stopping(self) -> bool:
        """Whether the run has been asked to stop (timeout, restart, node stopping)."""
        return self._run.stopped() is not None


@dataclass
class ScriptDefinitions:
    """What the ``scripts:`` modules define."""

    hooks: list[Hook] = field(default_factory=list)
    procedures: list[Procedure] = field(default_factory=list)
    jobs: list[CronJob] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)


def directories(raw: Any, source: SourceMap) -> list[Path]:
    """The directories named by the ``scripts`` section (one or a list)."""
    if raw is None:
        return []
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise source.error(("scripts",), "expected a directory or a list of directories")
    dirs = []
    for i, name in enumerate(names):
        path = Path(name)
        if not path.is_dir():
            where: KeyPath = ("scripts",) if isinstance(raw, str) else ("scripts", i)
            raise source.error(where, f"no such directory: {name}")
        dirs.append(path)
    return dirs


def _import(path: Path) -> ModuleType:
    name = f"platybus_scripts.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError("cannot load this file as a Python module", file=str(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        sys.modules.pop(name, None)
        raise ConfigError(f"syntax error: {error.msg}", file=str(path),
                          line=error.lineno) from None
    except Exception as error:
        sys.modules.pop(name, None)
        frames = [f for f in traceback.extract_tb(error.__traceback__)
                  if Path(f.filename).resolve() == path.resolve()]
        line = frames[-1].lineno if frames else None
        raise ConfigError(f"failed to load: {type(error).__name__}: {error}", file=str(path),
                          line=line) from None
    return module


def _positional(fn: Callable[..., Any]) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def load_scripts(raw: Any, engine: Engine, source: SourceMap) -> ScriptDefinitions:
    """Import the scripts' modules and build their marked functions."""
    found = ScriptDefinitions()
    for directory in directories(raw, source):
        for path in sorted(directory.glob("*.py")):
            if path.name.startswith("_"):
                continue
            module = _import(path)
            found.modules.append(module.__name__)
            for obj in list(vars(module).values()):
                if getattr(obj, "__module__", None) != module.__name__:
                    continue  # imported from elsewhere: its own module defines it
                for mark in getattr(obj, _ATTR, ()):
                    _build(mark, obj, path, engine, found)
    return found


def _build(mark: Mark, fn: Callable[..., Any], file: Path, engine: Engine,
           found: ScriptDefinitions) -> None:
    name = mark.name or fn.__name__
    line = fn.__code__.co_firstlineno if hasattr(fn, "__code__") else None
    path: KeyPath = ("scripts", name)
    source = SourceMap(root=str(file), marks={(): (str(file), line or 1)})
    step = f"scripts.{file.stem}.{fn.__name__}"
    params = _positional(fn)
    if mark.kind == "hook":
        if len(params) not in (1, 2):
            raise source.error(path, "a hook function takes (event) or (event, ctx)")
        with_ctx = len(params) == 2

        def call_hook(run: Run, scope: dict[str, Any]) -> Any:
            event = scope["event"]
            if with_ctx:
                return fn(event, ScriptContext(engine, run, step))
            return fn(event)

        options = convert(mark.options, HookOptions, path, source)
        body: Step = PythonStep(step, fn, call_hook)
        if options.isolation == "process":
            if with_ctx or "<locals>" in fn.__qualname__:
                raise source.error(path, "a hook with isolation='process' is a module-level "
                                         "fn(event): it runs in a worker process, where no "
                                         "ctx (actions, the bus) is available")
            # The worker imports the script by its file name from the scripts directory.
            body = RunStep(step, f"{file.stem}:{fn.__qualname__}", engine, hook=True)
        found.hooks.append(build_hook(name, options, path, engine=engine, source=source,
                                      steps=[body]))
    elif mark.kind == "cron":
        if len(params) not in (0, 1):
            raise source.error(path, "a cron function takes () or (ctx)")
        takes_ctx = len(params) == 1

        def call_job(run: Run, scope: dict[str, Any]) -> Any:
            if takes_ctx:
                return fn(ScriptContext(engine, run, step, scope.get("cron")))
            return fn()

        job_options = convert(mark.options, CronOptions, path, source)
        found.jobs.append(build_job(name, job_options, path, source,
                                    [PythonStep(step, fn, call_job)]))
    else:
        found.procedures.append(_procedure(name, fn, mark, step=step, engine=engine,
                                                 source=source, path=path))


def _procedure(name: str, fn: Callable[..., Any], mark: Mark, *, step: str, engine: Engine,
               source: SourceMap, path: KeyPath) -> Procedure:
    if name in engine.procedures:
        raise source.error(path, f"procedure {name!r} is defined twice")
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    takes_ctx = bool(params) and params[0].name == "ctx"

    def shown(**kwargs: Any) -> Any:  # the signature the action shows: without ctx
        return None

    shown.__signature__ = sig.replace(parameters=params[1:] if takes_ctx else params)  # type: ignore[attr-defined]
    shown.__annotations__ = {k: v for k, v in getattr(fn, "__annotations__", {}).items()
                             if k != "ctx"}
    shown.__wrapped__ = fn  # type: ignore[attr-defined]
    shown.__doc__ = fn.__doc__
    try:
        spec = ActionSpec.from_function(f"procedure.{name}", shown)
    except ActionError as error:
        raise source.error(path, str(error)) from None

    def call(run: Run, scope: dict[str, Any]) -> Any:
        if takes_ctx:
            return fn(ScriptContext(engine, run, step), **scope)
        return fn(**scope)

    proc = Procedure(name, [], [PythonStep(step, fn, call)], timeout=mark.options["timeout"],
                     description=spec.doc)

    def run(**kwargs: Any) -> Any:
        return engine.run_procedure(proc, kwargs)

    spec.fn = run
    proc.spec = spec
    engine.procedures[name] = proc
    return proc

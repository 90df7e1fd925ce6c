"""Procedures and the engine that runs steps: local calls, procedure calls, remote requests.

A procedure is a named list of steps with parameters. Each one is registered in
the node's action registry as ``procedure.<name>``, with an argument schema built
from its parameters, so hooks, cron jobs, HTTP, the command line and other nodes
call it like any action.
"""

from __future__ import annotations

import copy
import difflib
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from platybus.actions import ActionSpec
from platybus.automation.runs import Return, Run, RunStopped, Watchdog
from platybus.automation.steps import Step, StepCompiler, run_steps, spawn_thread
from platybus.automation.trace import TraceStore
from platybus.config import KeyPath, SourceMap, convert
from platybus.errors import (
    ActionFailed,
    ArgumentError,
    RequestTimeout,
    StepFailed,
    UnknownActionError,
)
from platybus.isolation import ProcessPool
from platybus.messages import Request, Response
from platybus.workers import WorkerPool

if TYPE_CHECKING:
    from platybus.extensions import NodeContext

log = logging.getLogger("platybus.automation")

POOL_SIZE = 32
MAX_DEPTH = 16
_REQUIRED = object()


class ProcedureOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One entry of the ``procedures`` section."""

    steps: list[Any]
    params: list[Any] = msgspec.field(default_factory=list)
    timeout: float | None = None
    description: str = ""


@dataclass
class Procedure:
    """A compiled procedure."""

    name: str
    params: list[tuple[str, Any]]
    steps: list[Step] = field(default_factory=list)
    timeout: float | None = None
    description: str = ""
    spec: ActionSpec | None = None

    @property
    def action(self) -> str:
        """The action name it is called by."""
        return f"procedure.{self.name}"


class Engine:
    """Runs steps for hooks, procedures and cron jobs of one node."""

    def __init__(self, context: NodeContext, store: TraceStore) -> None:
        self.context = context
        self.node_id = context.node_id
        self.bus = context.bus
        self.actions = context.actions
        self.store = store
        self.procedures: dict[str, Procedure] = {}
        self.pool = WorkerPool(POOL_SIZE, "platybus-automation")
        self.watchdog = Watchdog()
        # Set by the automation component when some hook runs Python in worker processes.
        self.processes: ProcessPool | None = None
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    # -- checks at load --------------------------------------------------------

    def check_call(self, action: str, args: dict[str, Any] | None) -> bool:
        """Check an action name and literal argument names; return whether it runs inline."""
        if action.startswith("procedure."):
            proc = self.procedures.get(action.removeprefix("procedure."))
            if proc is None or proc.spec is None:
                names = [p.action for p in self.procedures.values()]
                hint = difflib.get_close_matches(action, names, n=1)
                tail = f"; did you mean {hint[0]!r}?" if hint else ""
                raise UnknownActionError(f"unknown procedure {action!r}{tail}", action=action)
            spec, inline = proc.spec, False
        else:
            spec = self.actions.get(action)
            inline = not spec.blocking
        if args is not None and spec.args_type is not None:
            fields = msgspec.structs.fields(spec.args_type)
            known = [f.name for f in fields]
            if not spec.extra_kwargs:
                for key in args:
                    if key not in known:
                        hint = difflib.get_close_matches(str(key), known, n=1)
                        tail = f"; did you mean {hint[0]!r}?" if hint else ""
                        raise ArgumentError(f"{action}: unknown argument {key!r}{tail} (takes "
                                            f"{', '.join(known) or 'no arguments'})",
                                            action=action)
            for f in fields:
                if f.required and f.name not in args:
                    raise ArgumentError(f"{action}: missing required argument {f.name!r}",
                                        action=action)
        return inline

    # -- calls -----------------------------------------------------------------

    def call(self, run: Run, action: str, args: dict[str, Any], target: str | None,
             timeout: float | None) -> Any:
        """Run one action for a step: remote request, procedure in this run, or local call."""
        if target is not None and target != self.node_id:
            return self.request(run, action, args, target, timeout)
        if action.startswith("procedure."):
            proc = self.procedures.get(action[10:])
            if proc is not None and proc.spec is not None:
                return self.run_procedure(proc, proc.spec.bind(args), run)
        return self.actions.call(action, args)

    def request(self, run: Run, action: str, args: dict[str, Any], target: str,
                timeout: float | None) -> Any:
        """Ask another node to run an action; wait for the response (or a stop)."""
        wait = timeout if timeout is not None else self.bus.config.request_timeout
        request = Request(action=action, args=args, target=target, origin=self.node_id,
                          parent_id=run.message_id, timeout=wait)
        box: list[Response] = []

        def on_reply(response: Response) -> None:
            box.append(response)
            run.notify()

        self.bus.publish(request, on_reply=on_reply, timeout=wait)
        if not run.wait_until(lambda: bool(box), wait + 1.0):
            raise RequestTimeout(f"no response from node {target!r} to {action} within "
                                 f"{wait:g}s", action=action, target=target)
        response = box[0]
        if response.error is not None:
            raise ActionFailed(f"{action} on node {target!r}: {response.error.type}: "
                               f"{response.error.message}", action=action, target=target)
        return response.output

    def run_procedure(self, proc: Procedure, kwargs: dict[str, Any],
                      parent: Run | None = None) -> Any:
        """Run a procedure in this thread; return its ``return`` value or raise StepFailed."""
        depth, up = 0, parent
        while up is not None:
            depth, up = depth + 1, up.parent
        if depth >= MAX_DEPTH:
            raise StepFailed(f"{proc.action}: procedures nest deeper than {MAX_DEPTH} calls",
                             step=f"procedures.{proc.name}", action=proc.action)
        run = Run("procedure", proc.name, self.store, parent=parent, timeout=proc.timeout,
                  message_id=parent.message_id if parent is not None else None,
                  variables=dict(kwargs))
        if parent is None:
            run.arm()
            self.watchdog.watch(run)
        scope = dict(kwargs)
        result: Any = None
        try:
            run_steps(proc.steps, run, scope)
        except Return as done:
            result = done.value
        except StepFailed as error:
            run.finish("error", str(error))
            raise
        except RunStopped as stopped:
            run.finish(stopped.outcome, stopped.reason)
            if parent is not None and parent.stopped() is not None:
                raise  # the caller is stopping too: unwind it as stopped
            raise StepFailed(f"procedures.{proc.name}: {stopped.reason}",
                             step=f"procedures.{proc.name}", action=proc.action) from None
        run.finish("ok")
        return result

    # -- runs on the pool ------------------------------------------------------

    def submit(self, steps: list[Step]) -> Callable[[Run, dict[str, Any]], None]:
        """Return a lane starter that runs ``steps`` on the worker pool."""
        def start(run: Run, scope: dict[str, Any]) -> None:
            run.arm()
            self.watchdog.watch(run)
            try:
                self.pool.submit(self.execute, run, steps, scope)
            except RuntimeError:
                run.finish("cancelled", "the node is stopping")

        return start

    def execute(self, run: Run, steps: list[Step], scope: dict[str, Any]) -> None:
        """Run the steps of a hook or cron run to the end and record the outcome."""
        try:
            run_steps(steps, run, scope)
        except Return:
            pass
        except StepFailed as error:
            log.warning("%s %s failed: %s", run.kind, run.name, error)
            run.finish("error", str(error))
            return
        except RunStopped as stopped:
            run.finish(stopped.outcome, stopped.reason)
            return
        except Exception as error:
            log.exception("%s %s failed", run.kind, run.name)
            run.finish("error", f"{type(error).__name__}: {error}")
            return
        run.finish("ok")

    def spawn(self, name: str, target: Callable[..., None], *args: Any) -> threading.Thread:
        """Start a thread for a parallel branch; it is joined when the engine stops."""
        thread = spawn_thread(name, target, *args)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        return thread

    def start(self) -> None:
        """Start the watchdog."""
        self.watchdog.start()

    def stop(self, timeout: float) -> None:
        """Stop the pool, the branch threads and the watchdog, each bounded."""
        self.pool.stop(timeout)
        with self._lock:
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout)
            if thread.is_alive():
                log.error("parallel branch %s still running after %.1fs", thread.name, timeout)
        self.watchdog.stop()


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

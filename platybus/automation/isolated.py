"""Hooks with ``isolation: process``: their Python code runs in a worker process.

Isolation applies to Python code, never to actions (they are the node's
plugins and run in the node): a ``@hook(..., isolation="process")`` function
of a ``scripts:`` module, and the ``run:`` steps of a YAML hook. The automation
component owns one :class:`~platybus.isolation.ProcessPool` for them; each call
gets the run's remaining time as its hard limit, so a hook that hangs is killed
at its ``timeout`` (the run is traced as ``timeout``) and one whose process dies
is traced as ``error``; the worker is replaced and the node keeps running.
See ``docs/automation/hooks.md``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from platybus.automation.runs import Return, Run, RunStopped, record_action
from platybus.automation.steps import OnError, Scope, Step, StepCompiler, StepHost, StepKind
from platybus.automation.templates import Compiled
from platybus.automation.values import to_value
from platybus.config import KeyPath, convert
from platybus.errors import (
    HandlerError,
    HandlerTimeout,
    PlatybusError,
    StepFailed,
    TemplateError,
)
from platybus.isolation.child import resolve_ref
from platybus.messages import Event

__all__ = ["STEP_KINDS", "AutomationOptions", "Isolation", "RunStep", "call_function",
           "call_hook", "compile_run"]

Isolation = Literal["thread", "process"]
_PREFIX = "python:"
_REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
# What the worker runs: a fixed function of ours, given the user's function by name.
_CALL_HOOK = "platybus.automation.isolated:call_hook"
_CALL_FUNCTION = "platybus.automation.isolated:call_function"


class AutomationOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The ``automation`` section."""

    process_workers: int = 2


def call_hook(configuration: dict[str, Any], event: Event) -> Any:
    """In a worker: call the hook function ``configuration['fn']`` with the event."""
    return resolve_ref(configuration["fn"])(event)


def call_function(configuration: dict[str, Any], event: Event) -> Any:
    """In a worker: call ``configuration['fn']`` with the rendered ``args`` as keywords."""
    return resolve_ref(configuration["fn"])(**configuration["args"])


@dataclass(eq=False)
class RunStep(Step):
    """Call a Python function in a worker process; the result is kept or ends the run."""

    path: str
    fn_ref: str
    engine: StepHost
    args: Compiled | None = None
    assign: str | None = None
    hook: bool = False
    on_error: OnError = "stop"
    inline: bool = False

    def execute(self, run: Run, scope: Scope) -> None:
        """Send the call to the process pool, wait for it, record it in the trace."""
        args: dict[str, Any] = {}
        if self.args is not None:
            try:
                rendered = to_value(self.args.render(scope))
            except TemplateError as error:
                raise self.fail(error) from None
            if not isinstance(rendered, dict):
                raise self.fail(TemplateError(f"args must render to a mapping, got "
                                              f"{rendered!r}"))
            args = rendered
        value = self.call(run, scope["event"], args)
        if self.hook:
            raise Return(value)
        if self.assign is not None:
            scope[self.assign] = value

    def call(self, run: Run, event: Event, args: dict[str, Any]) -> Any:
        """Run the function in a worker within the run's remaining time; return its result."""
        run.check()
        pool = self.engine.processes
        name = f"{_PREFIX}{self.fn_ref}"
        if pool is None:
            raise self.fail(RuntimeError("the automation's process pool is not running"), name)
        remaining = None if run.deadline is None else max(0.001, run.deadline - time.monotonic())
        record = record_action(run, self.path, name, args or None, None)
        started = time.perf_counter()
        try:
            future = pool.submit(_CALL_HOOK if self.hook else _CALL_FUNCTION,
                                 {"fn": self.fn_ref, "args": args}, event, remaining)
        except PlatybusError as refused:
            raise self.fail(refused, name) from None
        future.add_done_callback(lambda _: run.notify())
        if record is not None:
            # Known as soon as a worker takes the call, so that a trace the deadline timer
            # finishes while the call is still running names the worker it killed.
            future.add_start_callback(lambda f: setattr(record, "worker_pid", f.worker_pid))
        try:
            run.wait_until(future.done, None)
        except RunStopped as stopped:
            # A queued call is dropped; a running one is killed at the same limit by the pool.
            future.cancel()
            if record is not None:
                record.ok, record.error = False, f"{stopped.outcome}: {stopped.reason}"
                record.worker_pid = future.worker_pid
                record.duration = round(time.perf_counter() - started, 6)
            raise
        error = future.exception() if not future.cancelled() else RuntimeError("cancelled")
        if record is not None:
            record.worker_pid = future.worker_pid
            record.duration = round(time.perf_counter() - started, 6)
        if isinstance(error, HandlerTimeout):
            reason = (f"{self.fn_ref} passed its hard limit; worker process "
                      f"{future.worker_pid} was killed")
            if record is not None:
                record.ok, record.error = False, f"timeout: {reason}"
            raise RunStopped("timeout", reason)
        if error is not None:
            text = (f"{error.remote_type}: {error.remote_message}"
                    if isinstance(error, HandlerError) else f"{type(error).__name__}: {error}")
            if record is not None:
                record.ok, record.error = False, text
            raise StepFailed(f"{self.path} ({name}): {text}", step=self.path, action=name)
        value = future.result()
        if record is not None and value is not None:
            record.output = value
        return value


class _RunOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    run: str
    args: Any = msgspec.field(default_factory=dict)
    as_: str | None = msgspec.field(default=None, name="as")
    on_error: OnError = "stop"


def parse_ref(text: str, path: KeyPath, compiler: StepCompiler) -> str:
    """Check ``python:package.module:function`` and return ``package.module:function``."""
    ref = text.removeprefix(_PREFIX)
    if not text.startswith(_PREFIX) or not _REF.fullmatch(ref):
        raise compiler.error(path, f"expected 'python:package.module:function', got {text!r}")
    return ref


def compile_run(compiler: StepCompiler, raw: dict[str, Any], path: KeyPath,
                where: str) -> RunStep:
    """Compile a ``run:`` step (only hooks with ``isolation: process`` have them)."""
    o = convert(raw, _RunOptions, path, compiler.source)
    if compiler.isolation != "process":
        raise compiler.error((*path, "run"), "a 'run' step calls Python in a worker process: "
                                             "only hooks with 'isolation: process' have them")
    ref = parse_ref(o.run, (*path, "run"), compiler)
    if not isinstance(o.args, dict) and not (isinstance(o.args, str) and "${" in o.args):
        raise compiler.error((*path, "args"), "expected a mapping of arguments")
    args = compiler.template(o.args, (*path, "args"))
    assign = compiler.variable(o.as_, (*path, "as")) if o.as_ is not None else None
    return RunStep(where, ref, compiler.engine, args, assign, on_error=o.on_error)


def has_run_steps(steps: list[Step]) -> bool:
    """Whether any step, at any depth, runs Python in a worker process."""
    for step in steps:
        if isinstance(step, RunStep):
            return True
        nested: list[Step] = []
        for attr in ("steps", "otherwise"):
            nested += getattr(step, attr, [])
        for branch in getattr(step, "branches", []):
            nested += branch[1] if isinstance(branch, tuple) else branch
        if nested and has_run_steps(nested):
            return True
    return False


# The step kinds this module adds to the compiler (the engine is built with them).
STEP_KINDS: dict[str, StepKind] = {"run": compile_run}

"""Steps of hooks, procedures and cron jobs: compiled once from config, run many times.

Step kinds: an action call, ``if``/``elif``/``else``, ``for`` over a list,
``parallel`` branches, ``set`` variables, ``wait`` seconds and ``return`` a
value. Each step knows its path in the config (``procedures.backup.steps[2]``)
so a failure names it, and whether it can run without blocking (``inline``).
"""

from __future__ import annotations

import difflib
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import msgspec

from platybus.automation.runs import Return, Run, RunStopped, record_action
from platybus.automation.templates import (
    Compiled,
    compile_condition,
    compile_value,
    render_text,
)
from platybus.automation.trace import clip
from platybus.automation.values import to_value
from platybus.config import KeyPath, SourceMap, convert, format_path
from platybus.errors import ActionError, ConfigError, SelectorError, StepFailed, TemplateError
from platybus.messages import caused_by

if TYPE_CHECKING:
    from platybus.isolation.pool import ProcessPool

log = logging.getLogger("platybus.automation")

OnError = Literal["stop", "continue"]
Scope = dict[str, Any]
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
STEP_KINDS = ("action", "if", "for", "parallel", "set", "wait", "return", "run")

# Compiles a step kind this module does not know itself (``run:``): given the
# compiler, the raw step, its key path and its printed path.
StepKind = Callable[["StepCompiler", dict[str, Any], "KeyPath", str], "Step"]


class StepHost(Protocol):
    """What steps need of the engine that runs them (``automation.engine.Engine``)."""

    node_id: str
    processes: ProcessPool | None
    step_kinds: dict[str, StepKind]

    def check_call(self, action: str, args: dict[str, Any] | None) -> bool:
        """Check an action and its literal argument names; return whether it runs inline."""

    def call(self, run: Run, action: str, args: dict[str, Any], target: str | None,
             timeout: float | None) -> Any:
        """Run one action for a step and return its output."""

    def spawn(self, name: str, target: Callable[..., None], *args: Any) -> threading.Thread:
        """Start a thread for a parallel branch."""


class Step:
    """Base of compiled steps."""

    path: str
    on_error: OnError = "stop"
    inline: bool = True

    def execute(self, run: Run, scope: Scope) -> None:
        """Run the step."""
        raise NotImplementedError

    def fail(self, error: BaseException, action: str | None = None) -> StepFailed:
        """Wrap an error so that it names this step."""
        what = f" ({action})" if action else ""
        text = str(error) if isinstance(error, StepFailed | TemplateError) else (
            f"{type(error).__name__}: {error}")
        return StepFailed(f"{self.path}{what}: {text}", step=self.path, action=action)


def run_steps(steps: list[Step], run: Run, scope: Scope) -> None:
    """Run steps in order, honouring each one's ``on_error``."""
    for step in steps:
        run.check()
        try:
            step.execute(run, scope)
        except StepFailed as error:
            if step.on_error != "continue":
                raise
            log.info("%s %s: step failed, continuing: %s", run.kind, run.name, error)


def _render(compiled: Compiled, scope: Scope, step: Step) -> Any:
    try:
        return compiled.render(scope)
    except TemplateError as error:
        raise step.fail(error) from None


@dataclass(eq=False)
class ActionStep(Step):
    """Call an action (locally, a procedure in this run, or on another node)."""

    path: str
    action: str
    args: Compiled
    engine: StepHost
    target: Compiled | None = None
    timeout: float | None = None
    assign: str | None = None
    on_error: OnError = "stop"
    inline: bool = True

    def execute(self, run: Run, scope: Scope) -> None:
        """Render the arguments, call the action, keep its output if asked."""
        args = _render(self.args, scope, self)
        if not isinstance(args, dict):
            raise self.fail(TemplateError(f"args must render to a mapping, got {args!r}"),
                            self.action)
        target = _render(self.target, scope, self) if self.target is not None else None
        if target is not None and not isinstance(target, str):
            raise self.fail(TemplateError(f"target must be a node id, got {target!r}"))
        record = record_action(run, self.path, self.action, args, target)
        started = time.perf_counter()
        try:
            output = self.engine.call(run, self.action, args, target, self.timeout)
        except (ActionError, TemplateError) as error:
            if record is not None:
                record.ok = False
                record.error = f"{type(error).__name__}: {error}"
                record.duration = round(time.perf_counter() - started, 6)
            raise self.fail(error, self.action) from None
        if record is not None:
            record.duration = round(time.perf_counter() - started, 6)
            if output is not None:
                record.output = clip(output, run.store.limit)
        if self.assign is not None:
            scope[self.assign] = output


@dataclass(eq=False)
class IfStep(Step):
    """``if``/``elif``/``else``."""

    path: str
    branches: list[tuple[Compiled, list[Step]]]
    otherwise: list[Step]
    on_error: OnError = "stop"
    inline: bool = True

    def execute(self, run: Run, scope: Scope) -> None:
        """Run the first branch whose condition holds, else the ``else`` steps."""
        for condition, steps in self.branches:
            if _render(condition, scope, self):
                run_steps(steps, run, scope)
                return
        run_steps(self.otherwise, run, scope)


@dataclass(eq=False)
class ForStep(Step):
    """Run steps once per item of a list, the item in a variable."""

    path: str
    var: str
    items: Compiled
    steps: list[Step]
    on_error: OnError = "stop"
    inline: bool = True

    def execute(self, run: Run, scope: Scope) -> None:
        """Loop over the rendered list."""
        items = _render(self.items, scope, self)
        if isinstance(items, dict):
            items = list(items)
        if not isinstance(items, list | tuple):
            raise self.fail(TemplateError(f"'in' must give a list, got {render_text(items)}"))
        for item in items:
            run.check()
            scope[self.var] = item
            run_steps(self.steps, run, scope)


@dataclass(eq=False)
class SetStep(Step):
    """Set variables from templates."""

    path: str
    values: list[tuple[str, Compiled]]
    on_error: OnError = "stop"
    inline: bool = True

    def execute(self, run: Run, scope: Scope) -> None:
        """Assign each variable in order (later ones see earlier ones)."""
        for name, value in self.values:
            scope[name] = _render(value, scope, self)


@dataclass(eq=False)
class WaitStep(Step):
    """Pause the run; wakes at once if the run is stopped."""

    path: str
    seconds: Compiled
    on_error: OnError = "stop"
    inline: bool = False

    def execute(self, run: Run, scope: Scope) -> None:
        """Sleep for the rendered number of seconds."""
        seconds = _render(self.seconds, scope, self)
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise self.fail(TemplateError(f"wait needs a number of seconds >= 0, got "
                                          f"{render_text(seconds)}"))
        run.sleep(float(seconds))


@dataclass(eq=False)
class ReturnStep(Step):
    """End the run with a value (a procedure's result)."""

    path: str
    value: Compiled
    on_error: OnError = "stop"
    inline: bool = True

    def execute(self, run: Run, scope: Scope) -> None:
        """Raise :class:`Return` with the rendered value."""
        raise Return(_render(self.value, scope, self))


@dataclass(eq=False)
class ParallelStep(Step):
    """Run branches at the same time; wait for all; fail if one failed."""

    path: str
    branches: list[list[Step]]
    engine: StepHost
    on_error: OnError = "stop"
    inline: bool = False

    def execute(self, run: Run, scope: Scope) -> None:
        """Run branch 0 here and the others on their own threads, then join them."""
        errors: list[BaseException | None] = [None] * len(self.branches)
        done = [False] * len(self.branches)

        def branch(i: int) -> None:
            try:
                # A branch thread works for the run's message as the run's own thread does.
                with caused_by(run.message_id):
                    run_steps(self.branches[i], run, scope)
            except BaseException as error:  # carried to the joining thread
                errors[i] = error
            finally:
                done[i] = True
                run.notify()

        for i in range(1, len(self.branches)):
            self.engine.spawn(f"{run.name}-{self.path}-{i}", branch, i)
        branch(0)
        run.wait_until(lambda: all(done), None)
        for error in errors:
            if isinstance(error, RunStopped | Return | StepFailed):
                raise error
            if error is not None:
                raise self.fail(error)


@dataclass(eq=False)
class PythonStep(Step):
    """Call a Python function from a ``scripts:`` module."""

    path: str
    fn: Callable[..., Any]
    call: Callable[[Run, Scope], Any]
    on_error: OnError = "stop"
    inline: bool = False

    def execute(self, run: Run, scope: Scope) -> None:
        """Call the function; its return value is the run's result."""
        try:
            value = self.call(run, scope)
        except (RunStopped, Return, StepFailed):
            raise
        except Exception as error:
            log.warning("%s %s: %s raised", run.kind, run.name, self.path, exc_info=True)
            raise self.fail(error) from None
        raise Return(value)


# -- compiling ------------------------------------------------------------------


class _ActionOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    action: str
    args: Any = msgspec.field(default_factory=dict)
    target: str | None = None
    timeout: float | None = None
    as_: str | None = msgspec.field(default=None, name="as")
    on_error: OnError = "stop"


class _IfOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    if_: Any = msgspec.field(name="if")
    then: list[Any]
    elif_: list[Any] = msgspec.field(default_factory=list, name="elif")
    else_: list[Any] = msgspec.field(default_factory=list, name="else")
    on_error: OnError = "stop"


class _ElifOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    if_: Any = msgspec.field(name="if")
    then: list[Any]


class _ForOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    for_: str = msgspec.field(name="for")
    in_: Any = msgspec.field(name="in")
    do: list[Any]
    on_error: OnError = "stop"


class _ParallelOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    parallel: list[Any]
    on_error: OnError = "stop"


class _SetOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    set: dict[str, Any]
    on_error: OnError = "stop"


class _WaitOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    wait: float | str
    on_error: OnError = "stop"


class _ReturnOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    return_: Any = msgspec.field(name="return")


@dataclass
class StepCompiler:
    """Compiles step lists, checking action names, argument names and template names."""

    source: SourceMap
    engine: StepHost
    known: set[str]
    reserved: frozenset[str] = frozenset({"event", "cron"})
    isolation: str = "thread"
    uses: list[tuple[KeyPath, frozenset[str]]] = field(default_factory=list)

    def error(self, path: KeyPath, message: str) -> ConfigError:
        """A config error at ``path``."""
        return self.source.error(path, message)

    def template(self, value: Any, path: KeyPath, condition: bool = False) -> Compiled:
        """Compile a template, reporting syntax errors at ``path``."""
        try:
            compiled = compile_condition(value) if condition else compile_value(value)
        except SelectorError as error:
            raise self.error(path, f"invalid template: {error}") from None
        if compiled.names:
            self.uses.append((path, compiled.names))
        return compiled

    def variable(self, name: Any, path: KeyPath) -> str:
        """Check a variable name that a step assigns."""
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise self.error(path, f"invalid variable name {name!r}: letters, digits and '_', "
                                   "starting with a letter")
        if name in self.reserved:
            raise self.error(path, f"{name!r} is reserved")
        self.known.add(name)
        return name

    def steps(self, raw: Any, path: KeyPath) -> list[Step]:
        """Compile a list of steps."""
        if isinstance(raw, dict):
            raw = [raw]
        if not isinstance(raw, list):
            raise self.error(path, "expected a list of steps")
        return [self.step(item, (*path, i)) for i, item in enumerate(raw)]

    def step(self, raw: Any, path: KeyPath) -> Step:
        """Compile one step."""
        if isinstance(raw, str):
            raw = {"action": raw}
        if not isinstance(raw, dict):
            raise self.error(path, f"expected a step (a mapping with one of: "
                                   f"{', '.join(STEP_KINDS)})")
        kinds = [k for k in STEP_KINDS if k in raw]
        if len(kinds) != 1:
            found = f"found {', '.join(kinds)}" if kinds else "found none"
            hint = ""
            if not kinds:
                guesses = [difflib.get_close_matches(str(k), STEP_KINDS, n=1) for k in raw]
                named = [g[0] for g in guesses if g]
                hint = f"; did you mean {named[0]!r}?" if named else ""
            raise self.error(path, f"a step needs exactly one of {', '.join(STEP_KINDS)} "
                                   f"({found}){hint}")
        where = format_path(path)
        kind = kinds[0]
        if kind == "action":
            return self._action(convert(raw, _ActionOptions, path, self.source), path, where)
        if kind == "if":
            o = convert(raw, _IfOptions, path, self.source)
            branches = [(self.template(o.if_, (*path, "if"), True), self.steps(o.then,
                                                                              (*path, "then")))]
            for i, item in enumerate(o.elif_):
                e = convert(item, _ElifOptions, (*path, "elif", i), self.source)
                branches.append((self.template(e.if_, (*path, "elif", i, "if"), True),
                                 self.steps(e.then, (*path, "elif", i, "then"))))
            otherwise = self.steps(o.else_, (*path, "else"))
            inline = all(s.inline for _, b in branches for s in b) and all(
                s.inline for s in otherwise)
            return IfStep(where, branches, otherwise, o.on_error, inline)
        if kind == "for":
            f = convert(raw, _ForOptions, path, self.source)
            var = self.variable(f.for_, (*path, "for"))
            items = self.template(f.in_, (*path, "in"))
            body = self.steps(f.do, (*path, "do"))
            return ForStep(where, var, items, body, f.on_error, all(s.inline for s in body))
        if kind == "parallel":
            p = convert(raw, _ParallelOptions, path, self.source)
            if not p.parallel:
                raise self.error((*path, "parallel"), "expected at least one branch")
            lanes = [self.steps(b, (*path, "parallel", i)) for i, b in enumerate(p.parallel)]
            return ParallelStep(where, lanes, self.engine, p.on_error)
        if kind == "set":
            s = convert(raw, _SetOptions, path, self.source)
            values = [(self.variable(k, (*path, "set", k)),
                       self.template(v, (*path, "set", k))) for k, v in s.set.items()]
            return SetStep(where, values, s.on_error)
        if kind == "wait":
            w = convert(raw, _WaitOptions, path, self.source)
            if isinstance(w.wait, float | int) and w.wait < 0:
                raise self.error((*path, "wait"), "expected a number of seconds >= 0")
            return WaitStep(where, self.template(w.wait, (*path, "wait")), w.on_error)
        extra = self.engine.step_kinds.get(kind)
        if extra is not None:
            return extra(self, raw, path, where)
        if kind == "run":
            raise self.error(path, "'run' steps need process isolation, which this node "
                                   "was built without")
        r = convert(raw, _ReturnOptions, path, self.source)
        return ReturnStep(where, self.template(r.return_, (*path, "return")))

    def _action(self, o: _ActionOptions, path: KeyPath, where: str) -> ActionStep:
        if "${" in o.action:
            raise self.error((*path, "action"), "the action name cannot be a template")
        args = self.template(o.args, (*path, "args"))
        target = self.template(o.target, (*path, "target")) if o.target is not None else None
        assign = self.variable(o.as_, (*path, "as")) if o.as_ is not None else None
        remote = target is not None and not (
            target.static and target.source in (self.engine.node_id, "*"))
        inline = False
        if not remote:
            try:
                inline = self.engine.check_call(o.action, o.args if isinstance(o.args, dict)
                                                else None)
            except ActionError as error:
                raise self.error((*path, "action"), str(error)) from None
        if not isinstance(o.args, dict) and args.static:
            raise self.error((*path, "args"), "expected a mapping of arguments")
        return ActionStep(where, o.action, args, self.engine, target, o.timeout, assign,
                          o.on_error, inline)

    def check_names(self) -> None:
        """Refuse templates that name a variable nothing defines."""
        for path, names in self.uses:
            for name in sorted(names - self.known):
                hint = difflib.get_close_matches(name, sorted(self.known), n=1)
                tail = f"; did you mean {hint[0]!r}?" if hint else ""
                known = ", ".join(sorted(self.known)) or "none"
                raise self.error(path, f"unknown name {name!r} in template{tail} "
                                       f"(known here: {known})")


def describe(step: Step, scope: Scope | None = None) -> dict[str, Any]:
    """Describe a step for ``explain``: an action with its rendered arguments, or its kind."""
    if isinstance(step, ActionStep):
        out: dict[str, Any] = {"step": step.path, "action": step.action}
        if scope is not None:
            try:
                out["args"] = to_value(step.args.render(scope))
                if step.target is not None:
                    out["target"] = step.target.render(scope)
            except TemplateError as error:
                out["error"] = str(error)
        return out
    kind = type(step).__name__.removesuffix("Step").lower()
    return {"step": step.path, "kind": kind}


def spawn_thread(name: str, target: Callable[..., None], *args: Any) -> threading.Thread:
    """Start a named daemon thread (the engine tracks and joins it)."""
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    thread.start()
    return thread

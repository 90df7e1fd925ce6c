"""The engine that runs steps for hooks, procedures and cron jobs of one node.

Every run's steps go through it: local calls, procedure calls (in the caller's
run), remote requests through the bus, parallel branches, and runs on the worker
pool. Steps see it through :class:`~platybus.automation.steps.StepHost`.
"""

from __future__ import annotations

import difflib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from platybus.actions import ActionSpec
from platybus.automation.runs import Return, Run, RunDeadlines, RunStopped
from platybus.automation.steps import Step, StepKind, run_steps, spawn_thread
from platybus.automation.trace import TraceStore
from platybus.errors import (
    ActionFailed,
    ArgumentError,
    RequestTimeout,
    StepFailed,
    UnknownActionError,
)
from platybus.messages import Request, Response, caused_by, current_cause
from platybus.threads import WorkerPool

if TYPE_CHECKING:
    from platybus.extensions import NodeContext
    from platybus.isolation.pool import ProcessPool

log = logging.getLogger("platybus.automation")

POOL_SIZE = 32
MAX_DEPTH = 16


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

    def __init__(self, context: NodeContext, store: TraceStore,
                 step_kinds: dict[str, StepKind] | None = None) -> None:
        self.context = context
        self.step_kinds = dict(step_kinds or {})
        self.node_id = context.node_id
        self.bus = context.bus
        self.actions = context.actions
        self.store = store
        self.procedures: dict[str, Procedure] = {}
        self.pool = WorkerPool(POOL_SIZE, "platybus-automation")
        self.deadlines = RunDeadlines()
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
                  message_id=parent.message_id if parent is not None else current_cause(),
                  variables=dict(kwargs))
        if parent is None:
            run.arm()
            self.deadlines.watch(run)
        scope = dict(kwargs)
        result: Any = None
        try:
            with caused_by(run.message_id):
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
            self.deadlines.watch(run)
            try:
                self.pool.submit(self.execute, run, steps, scope)
            except RuntimeError:
                run.finish("cancelled", "the node is stopping")

        return start

    def execute(self, run: Run, steps: list[Step], scope: dict[str, Any]) -> None:
        """Run the steps of a hook or cron run to the end and record the outcome."""
        try:
            with caused_by(run.message_id):
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
        """Start the deadline timer."""
        self.deadlines.start()

    def stop(self, timeout: float) -> None:
        """Stop the pool, the branch threads and the deadline timer, each bounded."""
        self.pool.stop(timeout)
        with self._lock:
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout)
            if thread.is_alive():
                log.error("parallel branch %s still running after %.1fs", thread.name, timeout)
        self.deadlines.stop()

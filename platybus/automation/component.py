"""The :class:`Automation` component of a node: hooks, procedures, cron jobs and traces."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import msgspec

from platybus.actions import ActionSpec
from platybus.automation.cron import Clock, CronScheduler, compile_cron
from platybus.automation.engine import Engine
from platybus.automation.hooks import HookRunner, compile_hooks, explain
from platybus.automation.isolated import STEP_KINDS, AutomationOptions
from platybus.automation.procedures import compile_procedures
from platybus.automation.scripts import directories, load_scripts
from platybus.automation.trace import TracesConfig, TraceStore
from platybus.config import Config
from platybus.errors import ActionError, ArgumentError, DecodeError
from platybus.extensions import NodeContext
from platybus.isolation.pool import ProcessPool
from platybus.journal import Journal, JournalConfig
from platybus.messages import Event

log = logging.getLogger("platybus.automation")


class Automation:
    """Everything declared under ``hooks``, ``procedures``, ``cron``, ``scripts``, ``traces``.

    Building it validates all of it (errors name file, line and key) and
    registers the procedures and the ``trace.*`` / ``automation.*`` actions;
    :meth:`start` subscribes the hooks and starts the scheduler.
    """

    def __init__(self, config: Config, context: NodeContext, *,
                 clock: Clock | None = None) -> None:
        source = config.source
        self.context = context
        self.stop_timeout = config.node.stop_timeout
        traces = config.convert(config.section("traces") or {}, TracesConfig, ("traces",))
        if traces.keep < 1 or traces.max_value_chars < 10:
            raise source.error(("traces",), "keep must be >= 1 and max_value_chars >= 10")
        self.store = TraceStore(traces, context.data_dir)
        self.engine = Engine(context, self.store, STEP_KINDS)
        scripts = load_scripts(config.section("scripts"), self.engine, source)
        self.scripts = scripts.modules
        self.procedures = [*scripts.procedures,
                           *compile_procedures(config.section("procedures"), self.engine,
                                               source)]
        hooks = compile_hooks(config.section("hooks"), self.engine, source)
        names = {hook.name for hook in hooks}
        for hook in scripts.hooks:
            if hook.name in names:
                raise source.error(("hooks", hook.name), "a script defines a hook with this "
                                                         "name too")
        jobs = compile_cron(config.section("cron"), self.engine, source)
        names = {job.name for job in jobs}
        for job in scripts.jobs:
            if job.name in names:
                raise source.error(("cron", job.name), "a script defines a job with this "
                                                       "name too")
        all_hooks = [*hooks, *scripts.hooks]
        journal_options = config.convert(config.section("journal") or {}, JournalConfig,
                                         ("journal",))
        # Durable hooks record their runs there; the others only wait there for room.
        self.journal = (Journal(context.data_dir / journal_options.file, journal_options)
                        if all_hooks else None)
        self.hooks = HookRunner(all_hooks, self.engine, self.store, self.journal)
        options = config.convert(config.section("automation") or {}, AutomationOptions,
                                 ("automation",))
        if options.process_workers < 1:
            raise source.error(("automation", "process_workers"), "must be 1 or more")
        if any(hook.isolation == "process" for hook in self.hooks.hooks):
            search: list[str | Path] = [*directories(config.section("scripts"), source),
                                        *config.node.extensions_path]
            self.engine.processes = ProcessPool("automation", size=options.process_workers,
                                                codec=context.codec, search_path=search)
        self.cron = CronScheduler([*jobs, *scripts.jobs], self.engine, context.data_dir, clock)
        self._started = False
        for spec in self._action_specs():
            try:
                context.actions.add(spec)
            except ActionError as error:
                where = ("procedures", spec.name.removeprefix("procedure."))
                raise source.error(where, str(error)) from None

    def _action_specs(self) -> list[ActionSpec]:
        specs = [proc.spec for proc in self.procedures if proc.spec is not None]
        for name, fn in (("trace.list", self.trace_list), ("trace.get", self.trace_get),
                         ("trace.clear", self.trace_clear),
                         ("automation.explain", self.explain_action),
                         ("automation.status", self.status)):
            specs.append(ActionSpec.from_function(name, fn, blocking=False))
        return specs

    # -- lifecycle -------------------------------------------------------------

    def start(self, *, fire_cron: bool = True) -> None:
        """Start the trace writer, the hooks (resuming the journal's runs) and cron.

        A node passes ``fire_cron=False`` and calls :meth:`start_cron` once its
        sources are up: jobs are armed, but fire only then.
        """
        if self._started:
            return
        self._started = True
        self.store.start()
        self.engine.start()
        if self.engine.processes is not None:
            self.engine.processes.start()
        self.hooks.start(self.context.bus)
        if fire_cron:
            self.cron.start()
        log.info("automation: %d hooks, %d procedures, %d cron jobs", len(self.hooks.hooks),
                 len(self.procedures), len(self.cron.jobs))

    def start_cron(self) -> None:
        """Let the cron scheduler fire (the node's last step before discovery)."""
        if self._started:
            self.cron.start()

    def stop_cron(self) -> None:
        """Stop the cron scheduler; idempotent."""
        self.cron.stop(self.stop_timeout)

    def stop(self) -> None:
        """Stop in reverse order, each part bounded; idempotent."""
        if not self._started:
            return
        self._started = False
        self.cron.stop(self.stop_timeout)
        self.hooks.stop(self.stop_timeout)
        if self.engine.processes is not None:
            self.engine.processes.stop(self.stop_timeout)
        self.engine.stop(self.stop_timeout)
        self.store.stop(self.stop_timeout)

    # -- actions -----------------------------------------------------------------

    def trace_list(self, hook: str | None = None, name: str | None = None,
                   kind: str | None = None, last: int = 20) -> list[dict[str, Any]]:
        """Return the newest traces (oldest first), of one hook, name or kind if given."""
        traces = self.store.list(hook=hook, name=name, kind=kind, last=max(0, last))
        result: list[dict[str, Any]] = msgspec.to_builtins(traces)
        return result

    def trace_get(self, id: str) -> dict[str, Any] | None:
        """Return one trace by id (``None`` if no longer kept)."""
        trace = self.store.get(id)
        return None if trace is None else msgspec.to_builtins(trace)

    def trace_clear(self) -> int:
        """Forget the traces kept in memory; return how many there were."""
        return self.store.clear()

    def explain(self, event: Event) -> list[dict[str, Any]]:
        """Say which hooks would fire for ``event`` and why the others would not."""
        return explain(self.hooks.hooks, event)

    def explain_action(self, event: dict[str, Any]) -> dict[str, Any]:
        """Say which hooks would fire for an event (``{type, data}``) and why the others not."""
        message = decode_event(self.context, event)
        return {"event": {"id": message.id, "type": message.type},
                "hooks": self.explain(message)}

    def status(self) -> dict[str, Any]:
        """Return the hooks, cron jobs and counters."""
        return {
            "hooks": [{"name": h.name, "priority": h.priority, "enabled": h.enabled,
                       "mode": h.mode, "inline": h.inline,
                       "running": len(h.lane.active) if h.lane else 0,
                       "durable": h.durable,
                       "waiting": len(h.lane.pending) + h.lane.parked if h.lane else 0,
                       "waiting_in_journal": h.lane.parked if h.lane else 0,
                       "dropped": h.lane.dropped if h.lane else 0}
                      for h in self.hooks.hooks],
            "procedures": sorted(p.action for p in self.procedures),
            "cron": self.cron.status(),
            "events": self.hooks.events,
            "runs": self.hooks.runs,
            "throttled": self.hooks.throttled,
            "duplicates": self.hooks.duplicates,
            "resumed": self.hooks.resumed,
            "journal": self.journal_status(),
            "scripts": self.scripts,
            "traces": {"enabled": self.store.enabled, "kept": len(self.store),
                       "file": str(self.store.path) if self.store.path else None,
                       "written": self.store.written},
        }


    def counters(self) -> dict[str, Any]:
        """Hook run counters and each hook's lane (dropped, waiting) as plain values."""
        hooks = self.hooks
        journal = self.journal
        return {
            "runs": hooks.runs, "repeated": hooks.duplicates, "resumed": hooks.resumed,
            "lanes": [(h.name, h.lane.dropped, len(h.lane.pending) + h.lane.parked)
                      for h in hooks.hooks if h.lane is not None],
            "journal": None if journal is None else (journal.accepted, journal.finished),
        }

    def journal_status(self) -> dict[str, Any] | None:
        """The journal's file and counters (``None`` without hooks)."""
        journal = self.journal
        if journal is None:
            return None
        return {"file": str(journal.path), "accepted": journal.accepted,
                "finished": journal.finished, "resumed": journal.resumed}


def decode_event(context: NodeContext, event: Any) -> Event:
    """Build an event from plain data through the node's codec (typed events validated)."""
    if not isinstance(event, dict):
        raise ArgumentError("an event is a JSON object with at least a 'type'")
    data = {"kind": "event", **event}
    try:
        message = context.codec.from_builtins(data)
    except DecodeError as error:
        raise ArgumentError(f"invalid event: {error}") from None
    if not isinstance(message, Event):
        raise ArgumentError("not an event")
    return message

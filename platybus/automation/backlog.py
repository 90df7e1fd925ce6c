"""Hook runs that wait in the intake journal: parked for lack of room, or left by the last run.

A lane with no room in memory (past ``IN_MEMORY`` waiting runs) *parks* a run:
it keeps no object for it, only the journal row (a durable run has one anyway;
for another one a row is written, forgotten at the next start). Parked runs of a
hook are the journal's unfinished rows of that hook from one position on, so a
lane takes them back, oldest first, as its runs end. At start every unfinished
durable row is treated as parked: the runs a crash or a stop cut short run again
before newer ones, in order, in bounded memory.

Only the hook runner's thread reads or writes the journal here; workers only
ask for a refill (:meth:`Backlog.spiller`'s callback), which wakes that thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from platybus.automation.runs import IN_MEMORY, Run, Spill
from platybus.automation.trace import Trace, TraceStore
from platybus.codec import Codec
from platybus.errors import DecodeError, JournalError
from platybus.journal import Entry, Journal
from platybus.messages import Event

if TYPE_CHECKING:
    from platybus.automation.hooks import Hook

log = logging.getLogger("platybus.automation.hooks")

RESUMED = "resumed after restart"

NewRun = Callable[["Hook", Event, "dict[str, Any] | None"], "tuple[Run, dict[str, Any]]"]
Launch = Callable[["Hook", Run, "dict[str, Any]"], None]


class Backlog:
    """The runs of every hook that wait in the journal (see the module docstring)."""

    def __init__(self, journal: Journal, codec: Codec, store: TraceStore, new_run: NewRun,
                 launch: Launch, wake: Callable[[], None]) -> None:
        self.journal = journal
        self.codec = codec
        self.store = store
        self.hooks: dict[str, Hook] = {}
        self._new_run = new_run
        self._launch = launch
        self._wake = wake
        self._lock = threading.Lock()
        self._requested: set[str] = set()
        self._spilled: list[tuple[Hook, Run, dict[str, Any]]] = []
        self._park_from: dict[str, int] = {}
        self.resumed = 0

    @property
    def requested(self) -> bool:
        """Whether some lane asked for its parked runs back."""
        return bool(self._requested)

    def spiller(self, hook: Hook) -> Spill:
        """The lane callback of ``hook``: park a run, or (with ``None``) ask for runs back."""
        def spill(run: Run | None, scope: dict[str, Any] | None) -> None:
            if run is None:  # from any thread: the runner thread reads the journal
                with self._lock:
                    self._requested.add(hook.name)
                self._wake()
                return
            if run.journal is None:  # not durable: its row is written for the wait only
                assert scope is not None
                self._spilled.append((hook, run, scope))
            else:
                self._park_from.setdefault(hook.name, run.seq)
            if hook.lane is not None and hook.lane.wants_refill():
                with self._lock:
                    self._requested.add(hook.name)

        return spill

    def write_spilled(self) -> None:
        """Write the rows of runs parked since the last call that had none (one commit)."""
        if not self._spilled:
            return
        spilled, self._spilled = self._spilled, []
        try:
            seqs = self.journal.accept((run.message_id or "", "hook", hook.name,
                                        self.codec.encode(scope["event"]), False, False)
                                       for hook, run, scope in spilled)
        except JournalError as error:
            log.error("%s: %d runs that had no room are lost", error, len(spilled))
            return
        for (hook, _, _), seq in zip(spilled, seqs, strict=True):
            self._park_from.setdefault(hook.name, seq)

    def refill_requested(self) -> None:
        """Give the lanes that asked for them their next parked runs."""
        if not self._requested:
            return
        with self._lock:
            names, self._requested = self._requested, set()
        for name in names:
            self.refill(self.hooks[name])

    def refill(self, hook: Hook) -> None:
        """Read the next parked runs of ``hook`` and hand them to its lane."""
        assert hook.lane is not None
        self.write_spilled()
        start = self._park_from.get(hook.name)
        if start is None:
            hook.lane.unpark([], more=False)
            return
        limit = IN_MEMORY // 2
        entries = self.journal.waiting("hook", hook.name, start, limit)
        more = len(entries) == limit
        if more:
            self._park_from[hook.name] = entries[-1].seq + 1
        else:
            del self._park_from[hook.name]
        runs = [r for r in (self._revive(hook, e) for e in entries) if r is not None]
        hook.lane.unpark(runs, more)

    def _revive(self, hook: Hook, entry: Entry) -> tuple[Run, dict[str, Any]] | None:
        try:
            event = self.codec.decode(entry.body)
        except DecodeError as error:
            log.error("journal row %d of hook %s does not decode (%s): dropped", entry.seq,
                      hook.name, error)
            self.journal.done(entry.seq)
            return None
        if not isinstance(event, Event):
            self.journal.done(entry.seq)
            return None
        run, scope = self._new_run(hook, event, hook.condition.match(event))
        run.journal = self.journal
        run.seq = entry.seq
        if entry.attempts:
            run.note = RESUMED
        return run, scope

    def resume(self) -> None:
        """At start: every unfinished durable run waits as if parked, then runs again."""
        journal = self.journal
        entries = journal.unfinished()
        if not entries:
            return
        again: list[Entry] = []
        first: dict[str, int] = {}
        counts: dict[str, int] = {}
        for entry in entries:
            hook = self.hooks.get(entry.name)
            if hook is None or not hook.enabled:
                log.warning("journal: hook %s is gone or disabled; its run for message %s "
                            "is dropped", entry.name, entry.message_id)
                journal.done(entry.seq)
                continue
            if entry.attempts >= journal.config.max_resumes:
                log.error("hook %s: run for message %s was cut short by %d restarts; given "
                          "up", hook.name, entry.message_id, entry.attempts)
                self.store.add(Trace(id=f"{entry.message_id}.{entry.seq}", kind="hook",
                                     name=hook.name, ts=time.time(),
                                     message_id=entry.message_id, outcome="error",
                                     error=f"given up: cut short by {entry.attempts} "
                                           "restarts"))
                journal.done(entry.seq)
                continue
            again.append(entry)
            first.setdefault(hook.name, entry.seq)
            counts[hook.name] = counts.get(hook.name, 0) + 1
        journal.resumed_once(again)
        self.resumed += len(again)
        log.info("journal: %d runs accepted before the last stop run again", len(again))
        for name, seq in first.items():
            hook = self.hooks[name]
            if hook.inline or hook.lane is None or hook.lane.spill is None:
                self._resume_direct(hook, seq)
                continue
            self._park_from[name] = seq
            hook.lane.add_parked(counts[name])
            self.refill(hook)

    def _resume_direct(self, hook: Hook, start: int) -> None:
        while True:
            entries = self.journal.waiting("hook", hook.name, start, IN_MEMORY)
            for entry in entries:
                revived = self._revive(hook, entry)
                if revived is not None:
                    self._launch(hook, *revived)
            if len(entries) < IN_MEMORY:
                return
            start = entries[-1].seq + 1

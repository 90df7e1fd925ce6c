"""Cron jobs: each slot runs exactly once, missed slots are caught up as asked.

A job's expression has five fields, or six with seconds first, or a macro such
as ``@hourly``; it is read in the job's time zone (the local one by default).
The scheduler keeps, per job, the last slot it handled, in memory and in
``cron.json`` in the data dir; a slot fires only if it is later than that, so a
slot never fires twice, across a restart too. Slots that passed while the node
was down (or later than ``grace`` seconds) are *missed*: ``catch_up: none``
skips them, ``last`` runs the latest once, ``all`` runs each (at most
:data:`MAX_CATCH_UP`). The clock is injectable so tests move time by hand.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from platybus.atomic import write_atomic
from platybus.automation.engine import Engine
from platybus.automation.procedures import check_name
from platybus.automation.runs import Lane, Mode, Run
from platybus.automation.steps import Step, StepCompiler
from platybus.config import KeyPath, SourceMap, convert

if TYPE_CHECKING:
    from croniter import croniter

log = logging.getLogger("platybus.automation.cron")

CatchUp = Literal["none", "last", "all"]
MAX_CATCH_UP = 1000
STATE_FILE = "cron.json"


class Clock(Protocol):
    """Where the scheduler reads the time and how it waits for the next slot."""

    def now(self) -> float:
        """Epoch seconds."""

    def wait(self, cond: threading.Condition, seconds: float | None) -> None:
        """Wait on ``cond`` (held by the caller) for about ``seconds``."""

    def attach(self, cond: threading.Condition) -> None:
        """Let the clock wake ``cond`` when time jumps (manual clocks)."""


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        """Epoch seconds."""
        return time.time()

    def wait(self, cond: threading.Condition, seconds: float | None) -> None:
        """Wait on the condition for real seconds."""
        cond.wait(seconds)

    def attach(self, cond: threading.Condition) -> None:
        """Nothing to do: real time moves by itself."""


class ManualClock:
    """A clock moved by hand (``advance``, ``set``), for tests and simulations."""

    def __init__(self, start: float) -> None:
        self._now = start
        self._conds: list[threading.Condition] = []

    def now(self) -> float:
        """The time set by hand."""
        return self._now

    def set(self, when: float) -> None:
        """Jump to ``when`` and wake the schedulers."""
        self._now = when
        for cond in list(self._conds):
            with cond:
                cond.notify_all()

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.set(self._now + seconds)

    def wait(self, cond: threading.Condition, seconds: float | None) -> None:
        """Wait until woken by a jump (bounded in real time so a stop is seen)."""
        cond.wait(0.5)

    def attach(self, cond: threading.Condition) -> None:
        """Remember a condition to wake on jumps."""
        self._conds.append(cond)


class CronOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One entry of the ``cron`` section."""

    when: str
    then: list[Any]
    tz: str | None = None
    catch_up: CatchUp = "none"
    grace: float = 60.0
    mode: Mode = "skip"
    timeout: float | None = None
    enabled: bool = True
    description: str = ""


@dataclass(eq=False)
class CronJob:
    """A compiled cron job and its scheduling state."""

    name: str
    when: str
    steps: list[Step]
    tz: ZoneInfo | None = None
    catch_up: CatchUp = "none"
    grace: float = 60.0
    mode: Mode = "skip"
    timeout: float | None = None
    enabled: bool = True
    lane: Lane | None = field(default=None, repr=False)
    last: float | None = None
    next: float | None = None
    fired: int = 0
    missed: int = 0

    def slots_after(self, start: float) -> croniter:
        """An iterator over the slots strictly after ``start``."""
        # croniter (with dateutil) costs ~5 MB: imported only by nodes that have cron jobs.
        from croniter import croniter

        return croniter(self.when, datetime.fromtimestamp(start, self.tz).astimezone(self.tz),
                        second_at_beginning=len(self.when.split()) == 6)


def parse_zone(name: str | None, path: KeyPath, source: SourceMap) -> ZoneInfo | None:
    """A time zone by IANA name (``None``: the local zone)."""
    if name is None:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise source.error(path, f"unknown time zone {name!r} (an IANA name such as "
                                 "'Europe/Paris' or 'UTC')") from None


def check_expression(expression: str, path: KeyPath, source: SourceMap) -> None:
    """Refuse an invalid cron expression at load."""
    fields = expression.split()
    if not expression.startswith("@") and len(fields) not in (5, 6):
        raise source.error(path, f"a cron expression has 5 fields (minute hour day month "
                                 f"weekday) or 6 with seconds first; got {len(fields)}")
    try:
        from croniter import croniter

        croniter(expression, 0.0, second_at_beginning=len(fields) == 6)
    except (ValueError, KeyError) as error:
        raise source.error(path, f"invalid cron expression {expression!r}: {error}") from None


def compile_cron(raw: Any, engine: Engine, source: SourceMap) -> list[CronJob]:
    """Compile the ``cron`` section."""
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise source.error(("cron",), "expected a mapping of job names to jobs")
    jobs = []
    for name, body in raw.items():
        path: KeyPath = ("cron", name)
        check_name(name, path, source)
        options = convert(body, CronOptions, path, source)
        compiler = StepCompiler(source, engine, known={"cron"})
        steps = compiler.steps(options.then, (*path, "then"))
        compiler.check_names()
        jobs.append(build_job(name, options, path, source, steps))
    return jobs


def build_job(name: str, options: CronOptions, path: KeyPath, source: SourceMap,
              steps: list[Step]) -> CronJob:
    """Build one job from its options."""
    check_expression(options.when, (*path, "when"), source)
    if options.grace < 0:
        raise source.error((*path, "grace"), "expected a number of seconds >= 0")
    return CronJob(name, options.when, steps, parse_zone(options.tz, (*path, "tz"), source),
                   options.catch_up, options.grace, options.mode, options.timeout,
                   options.enabled)


class CronScheduler:
    """One thread that fires the jobs' slots on their lanes."""

    def __init__(self, jobs: list[CronJob], engine: Engine, data_dir: Path,
                 clock: Clock | None = None) -> None:
        self.jobs = [job for job in jobs if job.enabled]
        self.engine = engine
        self.clock: Clock = clock or SystemClock()
        self.state_path = data_dir / STATE_FILE
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.checked_at = float("-inf")
        self._state: dict[str, float] = {}
        for job in jobs:
            job.lane = Lane(job.name, job.mode, 10, 100, engine.submit(job.steps))

    def start(self) -> None:
        """Load the last handled slots, catch up, and start the thread."""
        if self._thread is not None or not self.jobs:
            return
        self._state = self._load_state()
        now = self.clock.now()
        for job in self.jobs:
            job.last = self._state.get(job.name, now)
            job.next = None
        self._save_state()
        self.clock.attach(self._cond)
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="platybus-cron")
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread; idempotent. Runs still going are stopped by their lanes."""
        thread = self._thread
        if thread is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        thread.join(timeout)
        self._thread = None
        # Slots up to the last look at the clock are handled: a restart catches up after it.
        for job in self.jobs:
            if job.last is not None and self.checked_at > job.last:
                job.last = self.checked_at
        self._save_state()
        for job in self.jobs:
            if job.lane is not None:
                job.lane.stop_all("the node is stopping")

    def _loop(self) -> None:
        with self._cond:
            while not self._stopping:
                now = self.clock.now()
                try:
                    changed = [job for job in self.jobs if self._tick(job, now)]
                except Exception:
                    log.exception("cron scheduling failed")
                    changed = []
                if changed:
                    self._save_state()
                self.checked_at = now
                self._cond.notify_all()
                upcoming = [job.next for job in self.jobs if job.next is not None]
                wait = max(0.0, min(upcoming) - now) if upcoming else None
                if not self._stopping:
                    self.clock.wait(self._cond, wait)

    def _tick(self, job: CronJob, now: float) -> bool:
        """Fire what is due for ``job``; return whether its last handled slot moved."""
        assert job.last is not None
        if job.next is None:
            job.next = job.slots_after(job.last).get_next(float)
        if now < job.next:
            return False
        due: list[float] = []
        it = job.slots_after(job.last)
        slot = it.get_next(float)
        while slot <= now and len(due) <= MAX_CATCH_UP:
            due.append(slot)
            slot = it.get_next(float)
        if slot <= now:  # far behind: jump to the latest slot, counting the rest as missed
            latest = job.slots_after(now).get_prev(float)
            due = [*due[:MAX_CATCH_UP - 1], latest] if latest > due[-1] else due
            slot = job.slots_after(now).get_next(float)
        on_time = [s for s in due if now - s <= job.grace]
        missed = [s for s in due if now - s > job.grace]
        if job.catch_up == "all":
            fire = missed[-MAX_CATCH_UP:] + on_time
        elif job.catch_up == "last" and missed and not on_time:
            fire = [missed[-1]]
        else:
            fire = on_time
        skipped = len(missed) - (len(fire) - len(on_time))
        if skipped:
            job.missed += skipped
            log.info("cron %s: %d missed slot(s) skipped (catch_up: %s)", job.name, skipped,
                     job.catch_up)
        for when in fire:
            self._fire(job, when, now, catching_up=len(fire) > 1)
        job.last = due[-1]
        job.next = slot
        return True

    def _fire(self, job: CronJob, slot: float, now: float, catching_up: bool) -> None:
        job.fired += 1
        iso = datetime.fromtimestamp(slot, job.tz).astimezone(job.tz).isoformat()
        info = {"name": job.name, "slot": iso, "ts": slot, "late": round(now - slot, 6)}
        run = Run("cron", job.name, self.engine.store, timeout=job.timeout, slot=iso,
                  variables={"slot": iso})
        assert job.lane is not None
        # Slots caught up together queue behind each other instead of skipping each other.
        job.lane.offer(run, {"cron": info}, queue=catching_up or None)

    def wait_checked(self, at: float, timeout: float = 5.0) -> bool:
        """Wait until the scheduler has looked at the clock at or after ``at`` (for tests)."""
        end = time.monotonic() + timeout
        with self._cond:
            while self.checked_at < at:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.notify_all()
                self._cond.wait(min(left, 0.05))
        return True

    # -- state -----------------------------------------------------------------

    def _load_state(self) -> dict[str, float]:
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            log.warning("cannot read %s; starting without catch-up", self.state_path,
                        exc_info=True)
            return {}
        slots = data.get("last_slots", {}) if isinstance(data, dict) else {}
        return {k: float(v) for k, v in slots.items() if isinstance(v, int | float)}

    def _save_state(self) -> None:
        state = self._state
        state.update({job.name: job.last for job in self.jobs if job.last is not None})
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.state_path, json.dumps({"last_slots": state}, indent=1).encode())
        except OSError:
            log.exception("cannot save cron state to %s", self.state_path)

    def status(self) -> list[dict[str, Any]]:
        """Each job: expression, next slot, fired and missed counts."""
        return [{"name": job.name, "when": job.when, "tz": str(job.tz or "local"),
                 "next": job.next, "last": job.last, "fired": job.fired,
                 "missed": job.missed, "catch_up": job.catch_up, "mode": job.mode}
                for job in self.jobs]

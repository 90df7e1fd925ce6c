"""The outbox: events a notifier failed to send, kept on disk until sent or expired.

One JSON file per event under ``<data_dir>/outbox/<notifier>/``, holding the
event (lossless, see :mod:`platybus.notify.records`) and its retry state. A retry pass
takes the notifier's directory lock, so a node and ``platybus outbox retry``
never send the same entry twice. Expired entries move to ``expired/`` and stay
there: nothing is deleted unsent.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec

from platybus.atomic import write_atomic
from platybus.codec import Codec
from platybus.errors import DecodeError, NodeError
from platybus.messages import Event
from platybus.notify.records import event_from_document, event_to_document

log = logging.getLogger("platybus.notify.outbox")

Outcome = Literal["sent", "failed", "expired", "waiting", "busy", "gone"]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class RetryPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """When a failed send is tried again: exponential backoff until it expires."""

    initial: float = 10.0
    factor: float = 2.0
    max: float = 3600.0
    expire: float = 7 * 86400.0

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed try."""
        return float(min(self.max, self.initial * self.factor ** max(0, attempts - 1)))


class OutboxState(msgspec.Struct, kw_only=True):
    """The retry state stored beside an event in its outbox file."""

    notifier: str
    attempts: int
    first_failure: float
    next_attempt: float
    expires: float
    last_error: str


class _File(msgspec.Struct, kw_only=True):
    state: OutboxState
    event: dict[str, Any]


@dataclass(frozen=True)
class OutboxEntry:
    """One stored event and its retry state."""

    path: Path
    event_id: str
    event_type: str
    state: OutboxState
    expired: bool


class Outbox:
    """Failed sends of every notifier, under one directory."""

    def __init__(self, directory: str | os.PathLike[str], codec: Codec | None = None) -> None:
        self.directory = Path(directory)
        self.codec = codec

    def _folder(self, notifier: str) -> Path:
        if not _NAME.fullmatch(notifier):
            raise ValueError(f"invalid notifier name {notifier!r}")
        return self.directory / notifier

    def put(self, notifier: str, event: Event, error: str, policy: RetryPolicy,
            *, attempts: int = 1, due_now: bool = False) -> Path:
        """Store an event that ``notifier`` failed to send."""
        now = time.time()
        state = OutboxState(
            notifier=notifier, attempts=attempts, first_failure=now,
            next_attempt=now if due_now else now + policy.delay(attempts),
            expires=now + policy.expire, last_error=error,
        )
        folder = self._folder(notifier)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{event.id}.json"
        # Events may carry secrets: only the node's user reads what waits here.
        write_atomic(path, msgspec.json.encode(_File(state=state,
                                                     event=event_to_document(event))),
                     mode=0o600)
        return path

    def notifiers(self) -> list[str]:
        """Names of the notifiers that have an outbox folder."""
        if not self.directory.is_dir():
            return []
        return sorted(p.name for p in self.directory.iterdir() if p.is_dir())

    def entries(self, notifier: str | None = None, *, expired: bool = False) -> list[OutboxEntry]:
        """Return the stored entries (of one notifier, or all), oldest first."""
        names = [notifier] if notifier else self.notifiers()
        found: list[OutboxEntry] = []
        for name in names:
            folder = self._folder(name)
            files = sorted((folder / "expired").glob("*.json")) if expired else []
            for path in sorted(folder.glob("*.json")) + files:
                entry = self._read_entry(path)
                if entry is not None:
                    found.append(entry)
        return sorted(found, key=lambda e: e.state.first_failure)

    def _read_entry(self, path: Path) -> OutboxEntry | None:
        try:
            stored = msgspec.json.decode(path.read_bytes(), type=_File)
        except FileNotFoundError:
            return None
        except (OSError, msgspec.DecodeError) as error:
            log.error("outbox file %s is unreadable, left in place: %s", path, error)
            return None
        return OutboxEntry(path=path, event_id=str(stored.event.get("id", path.stem)),
                           event_type=str(stored.event.get("type", "")), state=stored.state,
                           expired=path.parent.name == "expired")

    @contextlib.contextmanager
    def locked(self, notifier: str, wait: float = 0.0) -> Iterator[bool]:
        """Hold the notifier's outbox lock; yield whether it was taken within ``wait``."""
        folder = self._folder(notifier)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "a+b") as handle:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        yield False
                        return
                    time.sleep(0.05)
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def retry(
        self,
        notifier: str,
        send: Callable[[Event], bool],
        policy: RetryPolicy,
        *,
        force: bool = False,
        expired: bool = False,
        wait: float = 0.0,
        should_continue: Callable[[], bool] = lambda: True,
    ) -> dict[Outcome, int]:
        """Try the due entries of one notifier; count the outcomes.

        ``force`` tries every entry now, whatever its schedule; ``expired`` also
        tries the expired ones (and implies ``force``).
        """
        force = force or expired
        counts: dict[Outcome, int] = {}
        with self.locked(notifier, wait) as taken:
            if not taken:
                raise NodeError(f"the outbox of notifier {notifier!r} is being retried by "
                                "another process; try again in a moment")
            for entry in self.entries(notifier, expired=expired):
                if not should_continue():
                    break
                outcome = self._attempt(entry, send, policy, force)
                counts[outcome] = counts.get(outcome, 0) + 1
        return counts

    def find(self, notifier: str, event_id: str) -> OutboxEntry | None:
        """The entry of one event (waiting or expired), if it is kept."""
        if not _NAME.fullmatch(event_id):
            raise ValueError(f"invalid event id {event_id!r}")
        folder = self._folder(notifier)
        for path in (folder / f"{event_id}.json", folder / "expired" / f"{event_id}.json"):
            entry = self._read_entry(path)
            if entry is not None:
                return entry
        return None

    def retry_one(self, notifier: str, event_id: str, send: Callable[[Event], bool],
                  policy: RetryPolicy) -> Outcome:
        """Try one entry now, whatever its schedule (an expired one too)."""
        with self.locked(notifier, 2.0) as taken:
            if not taken:
                return "busy"
            entry = self.find(notifier, event_id)
            if entry is None:
                return "gone"
            return self._attempt(entry, send, policy, True)

    def drop(self, notifier: str, event_id: str) -> bool:
        """Delete one entry unsent, as its user asked; return whether it was kept."""
        with self.locked(notifier, 2.0) as taken:
            if not taken:
                raise NodeError(f"the outbox of notifier {notifier!r} is being retried; "
                                "try again in a moment")
            entry = self.find(notifier, event_id)
            if entry is None:
                return False
            entry.path.unlink(missing_ok=True)
        log.warning("outbox: event %s (%s) for %s dropped unsent after %d tries", event_id,
                    entry.event_type, notifier, entry.state.attempts)
        return True

    def next_due(self, notifier: str) -> float | None:
        """The epoch time of the next entry due, if any."""
        entries = self.entries(notifier)
        return min((e.state.next_attempt for e in entries), default=None)

    def _attempt(self, entry: OutboxEntry, send: Callable[[Event], bool], policy: RetryPolicy,
                 force: bool) -> Outcome:
        now = time.time()
        state = entry.state
        if now >= state.expires and not force:
            self._expire(entry)
            return "expired"
        if state.next_attempt > now and not force:
            return "waiting"
        try:
            stored = msgspec.json.decode(entry.path.read_bytes(), type=_File)
            event = event_from_document(stored.event, self.codec)
        except FileNotFoundError:
            return "gone"
        except (OSError, msgspec.DecodeError, DecodeError) as unreadable:
            log.error("outbox file %s is unreadable, left in place: %s", entry.path, unreadable)
            return "failed"
        reason = "send_event returned false"
        try:
            if send(event):
                entry.path.unlink(missing_ok=True)
                log.info("outbox: %s sent event %s after %d failed tries", state.notifier,
                         entry.event_id, state.attempts)
                return "sent"
        except Exception as failure:
            log.exception("outbox: %s failed on event %s", state.notifier, entry.event_id)
            reason = f"{type(failure).__name__}: {failure}"
        # The file just read is the truth: another process may have tried it meanwhile.
        fresh = stored.state
        fresh.attempts += 1
        fresh.last_error = reason
        fresh.next_attempt = time.time() + policy.delay(fresh.attempts)
        write_atomic(entry.path, msgspec.json.encode(stored), mode=0o600)
        return "failed"

    def _expire(self, entry: OutboxEntry) -> None:
        folder = entry.path.parent / "expired"
        folder.mkdir(exist_ok=True)
        os.replace(entry.path, folder / entry.path.name)
        log.error("outbox: event %s (%s) for %s expired after %d tries; kept in %s",
                  entry.event_id, entry.event_type, entry.state.notifier, entry.state.attempts,
                  folder)

"""The durable intake journal: one SQLite file (WAL) in the data dir, batched commits.

A row is one *run* that a source's message asked for: the message id, who runs
it (``owner``, e.g. ``hook``) and its name, the encoded message, and a state.
The row is written, in a batch, *before* the source is acknowledged, and marked
done when the run ends; on start the rows still accepted are the runs a crash or
a stop interrupted, and run again. Rows marked done stay for a while (``keep``),
so a message delivered twice is recognised by its id.

Layout of table ``runs``::

    seq         increasing position (the order runs were accepted in)
    message_id  the message's id (the key a redelivery is recognised by)
    owner       what runs it ("hook")
    name        the hook's name
    state       0 accepted, 1 done
    durable     0 for a run only parked here for lack of room (forgotten at start)
    attempts    how many starts resumed it
    body        the encoded message (cleared once done)
    checkpoint  reserved: where a run waiting mid-way stands (see docs/automation/hooks.md)

Only one thread writes (its owner, the hook runner): :meth:`accept`,
:meth:`flush` and the queries run there. :meth:`done` may be called from any
thread; it only queues the mark for the next flush.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec

from platybus.errors import JournalError

log = logging.getLogger("platybus.journal")

SCHEMA = 1
_IN_CHUNK = 500  # host parameters per IN (...) query, well below SQLite's limit
_PRUNE_EVERY = 64  # flushes between two prunes of old done rows


class JournalConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The ``journal`` section."""

    file: str = "journal.sqlite"
    keep: int = 100_000
    flush_interval: float = 0.005
    max_resumes: int = 3
    synchronous: str = "normal"

    def __post_init__(self) -> None:
        if self.keep < 1:
            raise ValueError("keep must be at least 1")
        if self.flush_interval <= 0:
            raise ValueError("flush_interval must be a positive number of seconds")
        if self.max_resumes < 1:
            raise ValueError("max_resumes must be at least 1")
        if self.synchronous not in ("normal", "full"):
            raise ValueError("synchronous must be 'normal' or 'full'")


# (message_id, owner, name, body, durable, done)
Row = tuple[str, str, str, bytes | None, bool, bool]


class Entry(msgspec.Struct, frozen=True):
    """One accepted run as stored: position, message id, owner, name, attempts, message."""

    seq: int
    message_id: str
    owner: str
    name: str
    attempts: int
    body: bytes


class Journal:
    """The intake journal of one node (see the module docstring)."""

    def __init__(self, path: Path, config: JournalConfig | None = None) -> None:
        self.path = path
        self.config = config or JournalConfig()
        self._db: sqlite3.Connection | None = None
        self._next = 1
        self._done: deque[int] = deque()
        self._lock = threading.Lock()
        self._flushes = 0
        self.on_done: Callable[[], None] | None = None
        self.accepted = 0
        self.finished = 0
        self.resumed = 0

    # -- lifecycle -------------------------------------------------------------

    def open(self) -> None:
        """Open (creating if needed) the file; forget rows that were only parked here."""
        if self._db is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.config.synchronous.upper()}")
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            db.execute(
                "CREATE TABLE IF NOT EXISTS runs (seq INTEGER PRIMARY KEY, message_id TEXT "
                "NOT NULL, owner TEXT NOT NULL, name TEXT NOT NULL, state INTEGER NOT NULL "
                "DEFAULT 0, durable INTEGER NOT NULL DEFAULT 1, attempts INTEGER NOT NULL "
                "DEFAULT 0, body BLOB, checkpoint BLOB)")
            db.execute("CREATE INDEX IF NOT EXISTS runs_message ON runs (message_id)")
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
            db.execute("DELETE FROM runs WHERE durable = 0")
            row = db.execute("SELECT MAX(seq) FROM runs").fetchone()
        except sqlite3.Error as error:
            raise JournalError(f"cannot open the journal {self.path}: {error}",
                               path=str(self.path)) from None
        self._next = (row[0] or 0) + 1
        self._db = db

    def close(self) -> None:
        """Write the queued done marks and close the file; idempotent."""
        if self._db is None:
            return
        try:
            self.flush()
        finally:
            self._db.close()
            self._db = None

    @property
    def is_open(self) -> bool:
        """Whether the file is open."""
        return self._db is not None

    # -- writing (owner thread) -----------------------------------------------

    def accept(self, rows: Iterable[Row]) -> list[int]:
        """Record runs ``(message_id, owner, name, body, durable, done)``; one commit.

        Returns their positions. A row recorded done (a run that already ended)
        needs no body: it is kept to recognise its message. The queued done marks
        go into the same transaction.
        """
        db = self._require()
        seq = self._next
        batch = []
        seqs = []
        for message_id, owner, name, body, durable, done_ in rows:
            batch.append((seq, message_id, owner, name, body, 1 if durable else 0,
                          1 if done_ else 0))
            seqs.append(seq)
            seq += 1
        done = self._take_done()
        try:
            db.execute("BEGIN")
            if batch:
                db.executemany("INSERT INTO runs (seq, message_id, owner, name, body, durable, "
                               "state) VALUES (?, ?, ?, ?, ?, ?, ?)", batch)
            if done:
                db.executemany("UPDATE runs SET state = 1, body = NULL WHERE seq = ?", done)
            db.execute("COMMIT")
        except sqlite3.Error as error:
            self._rollback(done)
            raise JournalError(f"cannot write the journal {self.path}: {error}",
                               path=str(self.path)) from None
        self._next = seq
        self.accepted += len(batch)
        self.finished += sum(1 for row in batch if row[6])
        self.finished += len(done)
        self._after_commit()
        return seqs

    def flush(self) -> int:
        """Commit the queued done marks; return how many."""
        if self._db is None or not self._done:
            return 0
        before = self.finished
        self.accept(())
        return self.finished - before

    def done(self, seq: int) -> None:
        """Mark a run done (any thread); written by the next flush or accept."""
        with self._lock:
            first = not self._done
            self._done.append(seq)
        if first and self.on_done is not None:
            self.on_done()

    @property
    def dirty(self) -> bool:
        """Whether done marks wait for a flush."""
        return bool(self._done)

    def resumed_once(self, entries: list[Entry]) -> None:
        """Count a start's resumption of ``entries`` (committed before they run again)."""
        db = self._require()
        try:
            db.execute("BEGIN")
            db.executemany("UPDATE runs SET attempts = attempts + 1 WHERE seq = ?",
                           [(e.seq,) for e in entries])
            db.execute("COMMIT")
        except sqlite3.Error as error:
            db.rollback()
            raise JournalError(f"cannot write the journal {self.path}: {error}",
                               path=str(self.path)) from None
        self.resumed += len(entries)

    # -- reading (owner thread) -----------------------------------------------

    def unfinished(self, owner: str = "hook") -> list[Entry]:
        """The runs accepted and not done, in the order they were accepted."""
        return self._entries("SELECT seq, message_id, owner, name, attempts, body FROM runs "
                             "WHERE state = 0 AND owner = ? ORDER BY seq", (owner,))

    def waiting(self, owner: str, name: str, after: int, limit: int) -> list[Entry]:
        """Up to ``limit`` runs of ``name`` not done, from position ``after`` on."""
        return self._entries("SELECT seq, message_id, owner, name, attempts, body FROM runs "
                             "WHERE seq >= ? AND state = 0 AND owner = ? AND name = ? "
                             "ORDER BY seq LIMIT ?", (after, owner, name, limit))

    def seen(self, message_ids: list[str]) -> set[str]:
        """Which of ``message_ids`` the journal already holds (accepted or done)."""
        db = self._require()
        found: set[str] = set()
        for start in range(0, len(message_ids), _IN_CHUNK):
            chunk = message_ids[start:start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = db.execute(f"SELECT message_id FROM runs WHERE message_id IN ({marks})",  # noqa: S608 - only placeholders
                              chunk).fetchall()
            found.update(row[0] for row in rows)
        return found

    def counts(self) -> dict[str, int]:
        """Rows by state: accepted (not done) and done (kept for recognising repeats)."""
        db = self._require()
        rows = dict(db.execute("SELECT state, COUNT(*) FROM runs GROUP BY state").fetchall())
        return {"accepted": rows.get(0, 0), "done": rows.get(1, 0)}

    # -- internals -------------------------------------------------------------

    def _entries(self, sql: str, args: tuple[object, ...]) -> list[Entry]:
        db = self._require()
        return [Entry(seq, mid, owner, name, attempts, bytes(body or b""))
                for seq, mid, owner, name, attempts, body in db.execute(sql, args)]

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise JournalError(f"the journal {self.path} is not open", path=str(self.path))
        return self._db

    def _take_done(self) -> list[tuple[int]]:
        with self._lock:
            done, self._done = self._done, deque()
        return [(seq,) for seq in done]

    def _rollback(self, done: list[tuple[int]]) -> None:
        if self._db is not None and self._db.in_transaction:
            self._db.rollback()
        with self._lock:
            self._done.extendleft(seq for (seq,) in reversed(done))

    def _after_commit(self) -> None:
        self._flushes += 1
        if self._flushes % _PRUNE_EVERY:
            return
        # Done rows are kept only to recognise repeats: the newest ``keep`` are enough.
        db = self._require()
        try:
            db.execute("DELETE FROM runs WHERE state = 1 AND seq < ?",
                       (self._next - self.config.keep,))
        except sqlite3.Error:
            log.warning("could not prune the journal %s", self.path, exc_info=True)

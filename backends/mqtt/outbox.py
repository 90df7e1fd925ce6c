"""The disk-backed outbound queue: a publish leaves it only once the broker confirmed it.

One SQLite file (WAL) in the data dir per broker entry. A row is written before
the message is handed to the client and deleted on PUBACK/PUBCOMP (on the
write for QoS 0), so a node restart sends what was still waiting.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Literal, NamedTuple

Policy = Literal["reject", "drop_oldest"]


class Pending(NamedTuple):
    """One queued publish."""

    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: str


class OutboxFull(Exception):
    """The outbox holds ``size`` messages and its policy is ``reject``."""


class Outbox:
    """A bounded, ordered, durable queue of publishes; thread-safe."""

    def __init__(self, path: Path, size: int, policy: Policy) -> None:
        self.path = path
        self.size = size
        self.policy = policy
        self.dropped = 0
        self.rejected = 0
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        # NORMAL in WAL mode survives a killed process (not a power cut) and costs no fsync.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            "topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL, "
            "retain INTEGER NOT NULL, properties TEXT NOT NULL DEFAULT '')")
        self._count = self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]

    def put(self, topic: str, payload: bytes, qos: int, retain: bool,
            properties: str = "") -> int:
        """Store a publish; return its sequence number, or raise :class:`OutboxFull`."""
        with self._lock:
            if self._count >= self.size:
                if self.policy == "reject":
                    self.rejected += 1
                    raise OutboxFull(f"the outbox holds {self.size} messages (outbox_size)")
                self._db.execute("DELETE FROM outbox WHERE seq = (SELECT min(seq) FROM outbox)")
                self._count -= 1
                self.dropped += 1
            cursor = self._db.execute(
                "INSERT INTO outbox (topic, payload, qos, retain, properties) "
                "VALUES (?, ?, ?, ?, ?)", (topic, payload, qos, int(retain), properties))
            self._count += 1
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def done(self, seq: int) -> None:
        """Forget a publish the broker confirmed."""
        with self._lock:
            cursor = self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            self._count -= cursor.rowcount

    def pending(self) -> list[Pending]:
        """Return every waiting publish, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, payload, qos, retain, properties FROM outbox "
                "ORDER BY seq").fetchall()
        return [Pending(seq, topic, bytes(payload), qos, bool(retain), props)
                for seq, topic, payload, qos, retain, props in rows]

    def __len__(self) -> int:
        return int(self._count)

    def close(self) -> None:
        """Close the file; idempotent."""
        with self._lock:
            self._db.close()

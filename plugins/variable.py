"""The ``variable`` plugin: named values that persist across restarts, kept in SQLite.

Values are stored as JSON text, so numbers, strings, booleans, null, lists and
objects come back with the type they were stored with. One connection serves
every worker thread, behind a lock; WAL mode lets other processes read the file
while the node writes.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from platybus.errors import ActionError, ArgumentError, ExtensionError
from platybus.extensions import Plugin, action

if TYPE_CHECKING:
    from platybus.extensions import NodeContext

_SCHEMA = """
CREATE TABLE IF NOT EXISTS variables (
    name TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL,
    updated REAL NOT NULL
)
"""


class VariableError(ActionError):
    """A variable action could not do what was asked."""


class VariablePlugin(Plugin):
    """A persistent key-value store of JSON values."""

    class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
        """Options of the ``variable`` plugin."""

        path: str | None = None

    config: VariablePlugin.Config

    def __init__(self, name: str, config: Any, context: NodeContext) -> None:
        super().__init__(name, config, context)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.path: Path | None = None

    def start(self) -> None:
        """Open (creating if needed) the database file."""
        if self._db is not None:
            return
        path = (Path(self.config.path).expanduser() if self.config.path
                else self.context.data_dir / "variables.sqlite3")
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit (isolation_level=None): every statement commits on its own, and
        # increment() opens its own transaction explicitly.
        try:
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                 timeout=10.0)
        except sqlite3.Error as error:
            raise ExtensionError(f"{self.name}: cannot open {path}: {error}",
                                 name=self.name) from error
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable in WAL mode except for the last commits on power loss.
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
        except sqlite3.Error as error:
            db.close()
            raise ExtensionError(f"{self.name}: cannot use {path}: {error}",
                                 name=self.name) from error
        with self._lock:
            self._db = db
        self.path = path
        self.log.debug("variables in %s", path)

    def stop(self) -> None:
        """Close the database; safe to call more than once."""
        with self._lock:
            db, self._db = self._db, None
            if db is not None:
                db.close()

    # -- actions -----------------------------------------------------------

    @action
    def get(self, name: str, default: Any = None) -> Any:
        """Return a variable's value, or default when it is not set."""
        with self._open("get") as db:
            row = db.execute("SELECT value FROM variables WHERE name = ?", (name,)).fetchone()
        return default if row is None else msgspec.json.decode(row[0])

    @action
    def set(self, name: str, value: Any) -> Any:
        """Store a JSON value under a name; return the value as stored."""
        text = self._encode("set", name, value)
        with self._open("set") as db:
            db.execute(
                "INSERT INTO variables (name, value, updated) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value, "
                "updated = excluded.updated",
                (name, text, time.time()),
            )
        return msgspec.json.decode(text)

    @action
    def delete(self, name: str) -> bool:
        """Delete a variable; return whether it existed."""
        with self._open("delete") as db:
            cursor = db.execute("DELETE FROM variables WHERE name = ?", (name,))
        return cursor.rowcount > 0

    @action(name="list")
    def list(self, prefix: str = "") -> dict[str, Any]:
        """Return every variable whose name starts with prefix, by name."""
        with self._open("list") as db:
            rows = db.execute(
                # substr() rather than LIKE: LIKE treats % and _ as wildcards and
                # ignores ASCII case.
                "SELECT name, value FROM variables WHERE substr(name, 1, ?) = ? ORDER BY name",
                (len(prefix), prefix),
            ).fetchall()
        return {name: msgspec.json.decode(value) for name, value in rows}

    @action
    def increment(self, name: str, by: float = 1) -> float:
        """Add by to a numeric variable (missing counts as 0) atomically; return the result."""
        action_name = f"{self.name}.increment"
        if not math.isfinite(by):
            raise ArgumentError(f"{action_name}: by must be a finite number, got {by}",
                                action=action_name)
        with self._open("increment") as db:
            # IMMEDIATE takes the write lock up front, so another process sharing the
            # file cannot change the value between our read and our write.
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT value FROM variables WHERE name = ?", (name,)
                ).fetchone()
                current = 0 if row is None else msgspec.json.decode(row[0])
                if isinstance(current, bool) or not isinstance(current, int | float):
                    raise VariableError(
                        f"{action_name}: variable {name!r} holds "
                        f"{type(current).__name__} {row[0] if row else ''}, not a number",
                        action=action_name, variable=name,
                    )
                # An integer stays an integer when the step is a whole number.
                step: float = int(by) if isinstance(current, int) and float(by).is_integer() else by
                result = current + step
                if not math.isfinite(result):
                    raise VariableError(f"{action_name}: {name!r} would overflow",
                                        action=action_name, variable=name)
                db.execute(
                    "INSERT INTO variables (name, value, updated) VALUES (?, ?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value, "
                    "updated = excluded.updated",
                    (name, self._encode("increment", name, result), time.time()),
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        return result

    # -- helpers -----------------------------------------------------------

    @contextlib.contextmanager
    def _open(self, verb: str) -> Iterator[sqlite3.Connection]:
        """Hold the lock around one use of the connection; fail clearly if it is closed."""
        with self._lock:
            if self._db is None:
                raise VariableError(
                    f"{self.name}.{verb}: the variable store is not open (the plugin is not "
                    "started, or already stopped)",
                    action=f"{self.name}.{verb}",
                )
            yield self._db

    def _encode(self, verb: str, name: str, value: Any) -> str:
        """Return ``value`` as JSON text, refusing names and values that cannot be stored."""
        action_name = f"{self.name}.{verb}"
        if not name:
            raise ArgumentError(f"{action_name}: name must not be empty", action=action_name)
        if isinstance(value, float) and not math.isfinite(value):
            # JSON has no NaN or infinity; storing null instead would lose the value silently.
            raise ArgumentError(f"{action_name}: {value} cannot be stored as JSON",
                                action=action_name)
        try:
            return msgspec.json.encode(value).decode("utf-8")
        except (TypeError, OverflowError, msgspec.EncodeError) as error:
            raise ArgumentError(
                f"{action_name}: value of type {type(value).__name__} cannot be stored "
                f"as JSON: {error}",
                action=action_name,
            ) from None


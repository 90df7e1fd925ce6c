"""Traces: why each hook ran or did not, and what every hook, procedure and cron run did.

Traces are bounded in memory (a ring of the last ``keep`` records) and, when
``disk`` is on, appended as JSON lines to ``traces.jsonl`` in the data dir by a
writer thread (rotated to ``traces.jsonl.1`` past ``max_file_bytes``), so that
``platybus trace`` can read them without reaching the node.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import msgspec

log = logging.getLogger("platybus.automation.trace")

Kind = Literal["event", "hook", "procedure", "cron"]
FLUSH_INTERVAL = 0.25
_FLUSH_BATCH = 512


class TracesConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The ``traces`` section."""

    enabled: bool = True
    keep: int = 1000
    disk: bool = True
    file: str = "traces.jsonl"
    max_file_bytes: int = 5_000_000
    max_value_chars: int = 500


class ActionRecord(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One action a run called: its step path, arguments after templating, result."""

    step: str
    action: str
    args: Any = None
    target: str | None = None
    ok: bool
    error: str | None = None
    output: Any = None
    duration: float | None = None  # None while the action runs
    worker_pid: int | None = None


class Candidate(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One hook whose event type matched: whether its condition matched, and why not."""

    hook: str
    matched: bool
    reason: str | None = None
    run: str | None = None


class Trace(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One record: an event's hook matching (``kind=event``) or one run."""

    id: str
    kind: Kind
    name: str
    ts: float
    message_id: str | None = None
    parent: str | None = None
    slot: str | None = None
    outcome: str
    error: str | None = None
    note: str | None = None
    duration: float = 0.0
    variables: dict[str, Any] = msgspec.field(default_factory=dict)
    actions: list[ActionRecord] = msgspec.field(default_factory=list)
    candidates: list[Candidate] = msgspec.field(default_factory=list)


def clip(value: Any, limit: int, depth: int = 0) -> Any:
    """Bound a value kept in a trace: long strings and deep or wide structures are cut."""
    t = type(value)
    if t is str:
        return value if len(value) <= limit else f"{value[:limit]}... ({len(value)} chars)"
    if value is None or t is int or t is float or t is bool:
        return value
    if depth >= 6:
        return "..."
    if t is dict:
        items = list(value.items())
        out = {str(k): clip(v, limit, depth + 1) for k, v in items[:50]}
        if len(items) > 50:
            out["..."] = f"{len(items) - 50} more"
        return out
    if t is list or t is tuple:
        seq = [clip(v, limit, depth + 1) for v in value[:50]]
        if len(value) > 50:
            seq.append(f"... {len(value) - 50} more")
        return seq
    if isinstance(value, msgspec.Struct):
        return clip(msgspec.to_builtins(value), limit, depth)
    return clip(repr(value), limit, depth)


def select(traces: Iterable[Trace], *, hook: str | None = None, name: str | None = None,
           kind: str | None = None, last: int = 20) -> list[Trace]:
    """The newest ``last`` traces that concern ``hook`` / have ``name`` / are of ``kind``."""
    picked: list[Trace] = []
    # Runs are kept when they finish; show them in the order they started.
    ordered = sorted(traces, key=lambda t: t.ts)  # stable: equal times keep their order
    for trace in reversed(ordered):
        if kind is not None and trace.kind != kind:
            continue
        if name is not None and trace.name != name:
            continue
        if hook is not None:
            if trace.kind == "hook" and trace.name != hook:
                continue
            if trace.kind == "event":
                mine = [c for c in trace.candidates if c.hook == hook]
                if not mine:
                    continue
                picked.append(msgspec.structs.replace(trace, candidates=mine))
            elif trace.kind == "hook":
                picked.append(trace)
        else:
            picked.append(trace)
        if len(picked) >= last:
            break
    picked.reverse()
    return picked


class TraceStore:
    """The bounded in-memory ring of traces, optionally mirrored to a JSON-lines file."""

    def __init__(self, config: TracesConfig, data_dir: Path) -> None:
        self.config = config
        self.enabled = config.enabled
        self.limit = config.max_value_chars
        self._ring: deque[Trace] = deque(maxlen=max(1, config.keep))
        self.path = data_dir / config.file if config.disk and config.enabled else None
        self._pending: deque[Trace] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.written = 0

    def add(self, trace: Trace) -> None:
        """Keep a finished trace."""
        self._ring.append(trace)
        if self._thread is not None:
            self._pending.append(trace)
            if len(self._pending) >= _FLUSH_BATCH:
                with self._cond:
                    self._cond.notify()

    def list(self, *, hook: str | None = None, name: str | None = None,
             kind: str | None = None, last: int = 20) -> list[Trace]:
        """Return the newest matching traces, oldest first."""
        return select(list(self._ring), hook=hook, name=name, kind=kind, last=last)

    def __len__(self) -> int:
        return len(self._ring)

    def get(self, trace_id: str) -> Trace | None:
        """Return one trace by id, if still kept."""
        for trace in reversed(list(self._ring)):
            if trace.id == trace_id:
                return trace
        return None

    def clear(self) -> int:
        """Forget the traces kept in memory; return how many there were."""
        count = len(self._ring)
        self._ring.clear()
        return count

    # -- disk ----------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread if traces go to disk."""
        if self.path is None or self._thread is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._stopping = False
        self._thread = threading.Thread(target=self._write_loop, name="platybus-traces")
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is pending and stop the writer; idempotent."""
        thread = self._thread
        if thread is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify()
        thread.join(timeout)
        if thread.is_alive():
            log.error("trace writer did not stop within %.1fs", timeout)
        self._thread = None

    def _write_loop(self) -> None:
        assert self.path is not None
        encoder = msgspec.json.Encoder()
        while True:
            with self._cond:
                if not self._stopping and len(self._pending) < _FLUSH_BATCH:
                    self._cond.wait(FLUSH_INTERVAL)
                stopping = self._stopping
            self._flush(encoder)
            if stopping:
                self._flush(encoder)
                return

    def _flush(self, encoder: msgspec.json.Encoder) -> None:
        assert self.path is not None
        if not self._pending:
            return
        lines = bytearray()
        while self._pending:
            lines += encoder.encode(self._pending.popleft())
            lines += b"\n"
        try:
            if self.path.exists() and self.path.stat().st_size + len(lines) > (
                    self.config.max_file_bytes):
                self.path.replace(self.path.with_name(self.path.name + ".1"))
            with self.path.open("ab") as handle:
                handle.write(lines)
            self.written += lines.count(b"\n")
        except OSError:
            log.exception("cannot write traces to %s", self.path)


def read_file(path: Path) -> list[Trace]:
    """Read the traces a node wrote to disk (the rotated file first), skipping bad lines."""
    decoder = msgspec.json.Decoder(Trace)
    traces: list[Trace] = []
    for file in (path.with_name(path.name + ".1"), path):
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            continue
        for line in data.splitlines():
            if not line.strip():
                continue
            try:
                traces.append(decoder.decode(line))
            except msgspec.DecodeError:
                log.debug("skipping a bad trace line in %s", file)
    return traces

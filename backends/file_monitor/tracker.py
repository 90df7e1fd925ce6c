"""What the monitor knows about one watched root, and the changes it reports.

A :class:`RootTracker` keeps a small record per tracked path (every directory,
and the files the filters let through) so that it can report each change
exactly once: duplicate notifications from the OS are dropped, bursts of
modifications are coalesced, and after the kernel dropped events a rescan of
the tree is compared against what was known. It does no threading: the
backend's thread is its only caller.
"""

from __future__ import annotations

import heapq
import itertools
import os
from typing import NamedTuple

from .config import PathFilter, WatchedPath

# (mtime_ns, size) of a file; directories and unreadable files have fixed signatures.
Sig = tuple[int, int]
DIR: Sig = (-2, -2)
UNKNOWN: Sig = (-1, -1)
# How long after the first walk a reported creation of a walked path still counts.
QUIET_PERIOD = 2.0


class Change(NamedTuple):
    """One change to report: ``kind`` is created/modified/deleted/moved/closed/ready."""

    kind: str
    rel: str
    is_dir: bool = False
    new_rel: str | None = None
    marker: str | None = None


def scan_tree(root: str, recursive: bool, keep: PathFilter, ready_suffix: str | None,
              ) -> dict[str, Sig]:
    """Walk ``root`` and return the signature of every tracked path, parents first."""
    found: dict[str, Sig] = {}
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            listing = os.scandir(os.path.join(root, rel_dir) if rel_dir else root)
        except OSError:
            continue  # vanished or unreadable since it was listed
        with listing:
            for entry in listing:
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if keep.skips_dir(entry.name):
                            continue
                        found[rel] = DIR
                        if recursive:
                            stack.append(rel)
                        continue
                    if not (keep.allows(rel) or _is_marker(rel, ready_suffix, keep)):
                        continue
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                found[rel] = (st.st_mtime_ns, st.st_size)
    return found


def _is_marker(rel: str, suffix: str | None, keep: PathFilter) -> bool:
    return (suffix is not None and rel.endswith(suffix) and len(rel) > len(suffix)
            and not rel.endswith("/" + suffix) and keep.allows(rel[:-len(suffix)]))


def _parent(rel: str) -> str:
    return rel.rpartition("/")[0]


class RootTracker:
    """The known state of one root and the rules that turn observations into changes."""

    def __init__(self, root: str, spec: WatchedPath, *, coalesce: float, settle: float,
                 synthesize_close: bool, only: str | None = None) -> None:
        self.root = root
        self.filter = PathFilter(spec, only)
        self.recursive = spec.recursive and only is None
        ready = spec.ready
        self.ready = ready is not False
        self.suffix = ready.suffix if not isinstance(ready, bool) else None
        self.coalesce = coalesce
        self.settle = settle
        # Polling sees no close events: a file counts as closed once it stops changing.
        self.synthesize_close = synthesize_close
        self.entries: dict[str, Sig] = {}
        self.kids: dict[str, set[str]] = {}
        self._mod_until: dict[str, float] = {}
        self._mod_pending: set[str] = set()
        self._unconfirmed: dict[str, tuple[Sig, float]] = {}
        self._synth_closed: dict[str, Sig] = {}
        self._fresh_dirs: dict[str, float] = {}
        self._pending_ready: dict[str, str] = {}
        self._quiet: set[str] = set()
        # Files written since their last reported close: a rescan must not forget them.
        self._open: set[str] = set()
        self._timers: list[tuple[float, int, str, str]] = []
        self._seq = itertools.count()

    # -- filters ---------------------------------------------------------------

    def tracked(self, rel: str, is_dir: bool) -> bool:
        """Whether the tracker keeps a record of ``rel``."""
        if self.filter.in_skipped_dir(rel, is_dir):
            return False
        if not self.recursive and "/" in rel:
            return False
        return is_dir or self.filter.allows(rel) or self.is_marker(rel)

    def reported(self, rel: str) -> bool:
        """Whether changes of a tracked ``rel`` are reported."""
        return self.filter.allows(rel)

    def is_marker(self, rel: str) -> bool:
        """Whether ``rel`` is the ready marker of a reported file."""
        return _is_marker(rel, self.suffix, self.filter)

    def scan(self) -> dict[str, Sig]:
        """Walk the root as it is now."""
        return scan_tree(self.root, self.recursive, self.filter, self.suffix)

    # -- whole-tree operations ---------------------------------------------------

    def load(self, found: dict[str, Sig], now: float) -> None:
        """Start from ``found`` without reporting anything (the tree as the node found it).

        The walk runs while the OS already reports changes, so a creation
        reported for a path the walk found may be genuine: for a while such a
        path stays *quiet* and its first creation is still reported.
        """
        self.entries.clear()
        self.kids.clear()
        for rel, sig in found.items():
            self._add(rel, sig)
        self._quiet = set(found)
        self._push(now + QUIET_PERIOD, "quiet", "")

    def rescan(self, found: dict[str, Sig], now: float) -> list[Change]:
        """Compare a fresh walk with what is known; report what was missed."""
        out: list[Change] = []
        for rel, sig in found.items():
            old = self.entries.get(rel)
            if old is None:
                self._add(rel, sig)
                is_dir = sig == DIR
                if self.reported(rel):
                    out.append(Change("created", rel, is_dir))
                if not is_dir:
                    self._expect_close(rel, sig, now)
                    if self.is_marker(rel):
                        out.extend(self._marker_appeared(rel))
            elif old != sig and DIR not in (sig, old):
                self.entries[rel] = sig
                if self.reported(rel):
                    out.append(Change("modified", rel))
                self._expect_close(rel, sig, now)
            elif rel in self._open and rel not in self._unconfirmed:
                # Its close may have been among the dropped events.
                self._expect_close(rel, sig, now)
        gone = [rel for rel in self.entries if rel not in found]
        gone.sort(key=lambda r: r.count("/"), reverse=True)
        for rel in gone:
            out.extend(self._remove(rel))
        return out

    def clear(self) -> list[Change]:
        """Forget everything (the root went away), reporting each known path as deleted."""
        gone = sorted(self.entries, key=lambda r: r.count("/"), reverse=True)
        out: list[Change] = []
        for rel in gone:
            out.extend(self._remove(rel))
        self._timers.clear()
        self._mod_until.clear()
        self._mod_pending.clear()
        self._fresh_dirs.clear()
        self._open.clear()
        return out

    # -- observations ------------------------------------------------------------

    def created(self, rel: str, is_dir: bool, now: float, *, complete: bool = False
                ) -> list[Change]:
        """A path appeared; ``complete`` when it arrived whole (moved in)."""
        if rel in self.entries:
            if rel not in self._quiet:
                return []  # already reported
            self._quiet.discard(rel)
            self._remove(rel)
        if not self.tracked(rel, is_dir):
            return []
        sig = DIR if is_dir else self._stat(rel) or UNKNOWN
        self._add(rel, sig)
        out = [Change("created", rel, is_dir)] if self.reported(rel) else []
        if is_dir:
            if not complete:
                # Files written before the OS watches this new directory send no close.
                self._fresh_dirs[rel] = now + self.settle
                self._push(now + self.settle, "fresh", rel)
            return out
        if self.is_marker(rel):
            out.extend(self._marker_appeared(rel))
        if complete:
            out.extend(self._complete(rel))
            return out
        self._open.add(rel)
        if self.synthesize_close or self._in_fresh_dir(rel, now):
            self._expect_close(rel, sig, now)
        return out

    def modified(self, rel: str, now: float) -> list[Change]:
        """A file's content changed."""
        out: list[Change] = []
        if rel not in self.entries:
            if not self.tracked(rel, False) or self._stat(rel) is None:
                return out  # a late notification for a file that is gone
            out = self.created(rel, False, now)
        sig = self._stat(rel)
        self._open.add(rel)
        if sig is not None:
            self.entries[rel] = sig
            if self.synthesize_close or rel in self._unconfirmed:
                self._expect_close(rel, sig, now)
        if not self.reported(rel):
            return out
        if self.coalesce <= 0:
            out.append(Change("modified", rel))
        elif now < self._mod_until.get(rel, 0.0):
            self._mod_pending.add(rel)
        else:
            out.append(Change("modified", rel))
            self._mod_until[rel] = now + self.coalesce
            self._push(now + self.coalesce, "mod", rel)
        return out

    def closed(self, rel: str, now: float) -> list[Change]:
        """A file open for writing was closed."""
        out: list[Change] = []
        sig = self._stat(rel)
        if rel not in self.entries:
            if sig is None or not self.tracked(rel, False):
                return out
            out = self.created(rel, False, now)
        out.extend(self._flush_modified(rel))
        self._unconfirmed.pop(rel, None)
        self._open.discard(rel)
        if sig is not None:
            self.entries[rel] = sig
            if self._synth_closed.pop(rel, None) == sig:
                return out  # already reported closed by a rescan
        if self.reported(rel):
            out.append(Change("closed", rel))
        out.extend(self._complete(rel))
        return out

    def deleted(self, rel: str) -> list[Change]:
        """A path (and everything under it) disappeared."""
        if rel not in self.entries:
            return []
        out: list[Change] = []
        stack, order = [rel], []
        while stack:
            item = stack.pop()
            order.append(item)
            stack.extend(self.kids.get(item, ()))
        order.sort(key=lambda r: r.count("/"), reverse=True)
        for item in order:
            out.extend(self._remove(item))
        return out

    def moved(self, src: str | None, dst: str | None, is_dir: bool, now: float) -> list[Change]:
        """A rename; ``None`` for a side outside the root.

        A rename over an existing path is reported as a change of that path
        (``modified``), not as its deletion: the path still exists.
        """
        known = src is not None and src in self.entries
        keep = dst is not None and self.tracked(dst, is_dir)
        if not keep or dst is None:
            return self.deleted(src) if known and src is not None else []
        replaced = dst in self.entries
        if replaced:
            self.deleted(dst)
            self._quiet.discard(dst)
        if not known or src is None:
            out = self.created(dst, is_dir, now, complete=True)
            return [c._replace(kind="modified") if replaced and c.kind == "created" and
                    c.rel == dst else c for c in out]
        out = self._flush_modified(src)
        self._rekey(src, dst)
        was, now_reported = self.reported(src), self.reported(dst)
        if was and now_reported:
            out.append(Change("moved", src, is_dir, new_rel=dst))
        elif was:
            out.append(Change("deleted", src, is_dir))
        elif now_reported:
            out.append(Change("modified" if replaced else "created", dst, is_dir))
        if not is_dir:
            if self.is_marker(dst):
                out.extend(self._marker_appeared(dst))
            if not now_reported or not was:
                out.extend(self._complete(dst))
        return out

    # -- timers ------------------------------------------------------------------

    def pending(self) -> frozenset[str]:
        """Files with a coalesced modification waiting for the end of its window."""
        return frozenset(self._mod_pending)

    def flush(self) -> list[Change]:
        """Report every coalesced modification still waiting for its window to end."""
        out = [Change("modified", rel) for rel in sorted(self._mod_pending)]
        self._mod_pending.clear()
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`tick` has something to do next, if ever."""
        return self._timers[0][0] if self._timers else None

    def tick(self, now: float) -> list[Change]:
        """Run due timers: trailing coalesced modifications and settled files."""
        out: list[Change] = []
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, kind, rel = heapq.heappop(timers)
            if kind == "mod":
                if rel in self._mod_pending:
                    self._mod_pending.discard(rel)
                    out.append(Change("modified", rel))
                    self._mod_until[rel] = now + self.coalesce
                    self._push(now + self.coalesce, "mod", rel)
                elif self._mod_until.get(rel, now + 1) <= now:
                    del self._mod_until[rel]
            elif kind == "settle":
                out.extend(self._check_settled(rel, now))
            elif kind == "quiet":
                self._quiet = set()
            elif self._fresh_dirs.get(rel, now + 1) <= now:
                del self._fresh_dirs[rel]
        return out

    # -- internals ---------------------------------------------------------------

    def _stat(self, rel: str) -> Sig | None:
        try:
            st = os.stat(os.path.join(self.root, rel), follow_symlinks=False)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _push(self, when: float, kind: str, rel: str) -> None:
        heapq.heappush(self._timers, (when, next(self._seq), kind, rel))

    def _add(self, rel: str, sig: Sig) -> None:
        self.entries[rel] = sig
        kids = self.kids.get(_parent(rel))
        if kids is None:
            kids = self.kids[_parent(rel)] = set()
        kids.add(rel)

    def _remove(self, rel: str) -> list[Change]:
        sig = self.entries.pop(rel, None)
        if sig is None:
            return []
        parent = _parent(rel)
        kids = self.kids.get(parent)
        if kids is not None:
            kids.discard(rel)
            if not kids:
                del self.kids[parent]
        self._mod_until.pop(rel, None)
        self._mod_pending.discard(rel)
        self._unconfirmed.pop(rel, None)
        self._synth_closed.pop(rel, None)
        self._pending_ready.pop(rel, None)
        self._open.discard(rel)
        if self.is_marker(rel):
            data = rel[:-len(self.suffix or "")]
            if self._pending_ready.get(data) == rel:
                del self._pending_ready[data]
        return [Change("deleted", rel, sig == DIR)] if self.reported(rel) else []

    def _rekey(self, src: str, dst: str) -> None:
        # Only the path itself moves; for a directory the OS reports each child's
        # move after it, and each child's record moves then.
        sig = self.entries.pop(src)
        parent = _parent(src)
        kids = self.kids.get(parent)
        if kids is not None:
            kids.discard(src)
            if not kids:
                del self.kids[parent]
        self._add(dst, sig)
        for table in (self._unconfirmed, self._synth_closed, self._mod_until):
            if src in table:
                table[dst] = table.pop(src)  # type: ignore[assignment]
        if src in self._open:
            self._open.discard(src)
            self._open.add(dst)

    def _flush_modified(self, rel: str) -> list[Change]:
        if rel in self._mod_pending:
            self._mod_pending.discard(rel)
            return [Change("modified", rel)]
        return []

    def _expect_close(self, rel: str, sig: Sig, now: float) -> None:
        self._unconfirmed[rel] = (sig, now)
        self._push(now + self.settle, "settle", rel)

    def _check_settled(self, rel: str, now: float) -> list[Change]:
        pending = self._unconfirmed.get(rel)
        if pending is None:
            return []
        old, since = pending
        if now - since < self.settle - 1e-9:
            return []  # a newer timer for the same file will come
        sig = self._stat(rel)
        if sig is None:
            del self._unconfirmed[rel]
            return []
        if sig != old:
            self.entries[rel] = sig
            self._expect_close(rel, sig, now)
            return []
        del self._unconfirmed[rel]
        self._open.discard(rel)
        self._synth_closed[rel] = sig
        out = [Change("closed", rel)] if self.reported(rel) else []
        out.extend(self._complete(rel))
        return out

    def _in_fresh_dir(self, rel: str, now: float) -> bool:
        deadline = self._fresh_dirs.get(_parent(rel))
        return deadline is not None and now < deadline

    def _complete(self, rel: str) -> list[Change]:
        if not self.ready:
            return []
        if self.suffix is None:
            return [Change("ready", rel)] if self.reported(rel) else []
        marker = self._pending_ready.pop(rel, None)
        return [Change("ready", rel, marker=marker)] if marker is not None else []

    def _marker_appeared(self, marker: str) -> list[Change]:
        data = marker[:-len(self.suffix or "")]
        sig = self.entries.get(data)
        if sig is not None and sig != DIR and data not in self._unconfirmed:
            return [Change("ready", data, marker=marker)]
        self._pending_ready[data] = marker
        return []

"""Config of the file monitor and the path filters it compiles.

Every check that can fail runs in ``__post_init__``, so a bad pattern, regex or
option mix is reported at load time with the file, line and key of the entry.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Literal

import msgspec

EventName = Literal["created", "modified", "deleted", "moved", "closed"]
ALL_EVENTS: tuple[EventName, ...] = ("created", "modified", "deleted", "moved", "closed")

Match = Callable[[str], bool]


class ReadyConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """When a file counts as complete: at its marker file if ``suffix`` is set, else at close."""

    suffix: str | None = None

    def __post_init__(self) -> None:
        if self.suffix is not None and (not self.suffix or "/" in self.suffix):
            raise ValueError(f"suffix: {self.suffix!r} must be a non-empty file name "
                             "ending such as '.ready'")


class WatchedPath(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One watched root and the filters of what is reported under it."""

    path: str
    recursive: bool = True
    patterns: list[str] = msgspec.field(default_factory=list)
    ignore_patterns: list[str] = msgspec.field(default_factory=list)
    ignore_directories: list[str] = msgspec.field(default_factory=list)
    regexes: list[str] = msgspec.field(default_factory=list)
    ignore_regexes: list[str] = msgspec.field(default_factory=list)
    case_sensitive: bool = True
    create: bool = False
    ready: bool | ReadyConfig = False

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("path: must not be empty")
        if self.patterns and (self.regexes or self.ignore_regexes):
            raise ValueError(
                "use either patterns/ignore_patterns (globs such as '*.txt') or "
                "regexes/ignore_regexes (regular expressions), not both in one path entry")
        if self.ignore_regexes and self.ignore_patterns and not self.regexes:
            raise ValueError(
                "use either ignore_patterns (globs) or ignore_regexes (regular expressions), "
                "not both in one path entry")
        for key in self.glob_keys():
            for i, pattern in enumerate(getattr(self, key)):
                problem = _glob_problem(pattern)
                if problem:
                    raise ValueError(f"{key}[{i}]: {pattern!r} {problem}")
        for key in self.regex_keys():
            for i, regex in enumerate(getattr(self, key)):
                try:
                    re.compile(regex)
                except re.error as error:
                    raise ValueError(
                        f"{key}[{i}]: {regex!r} is not a valid regular expression: {error}"
                    ) from None
        for i, name in enumerate(self.ignore_directories):
            if not name or "/" in name or name in (".", ".."):
                raise ValueError(
                    f"ignore_directories[{i}]: {name!r} must be a directory name such as "
                    "'.git' or 'node_modules' (it is skipped at any depth), not a path")


    def regex_mode(self) -> bool:
        """Whether ``ignore_patterns`` are regexes: they are beside ``regexes``, as in watchdog."""
        return bool(self.regexes)

    def glob_keys(self) -> tuple[str, ...]:
        """The keys of this entry that hold globs."""
        return ("patterns",) if self.regex_mode() else ("patterns", "ignore_patterns")

    def regex_keys(self) -> tuple[str, ...]:
        """The keys of this entry that hold regular expressions."""
        extra = ("ignore_patterns",) if self.regex_mode() else ()
        return ("regexes", "ignore_regexes", *extra)


class FileMonitorConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The ``backends.file_monitor`` section."""

    paths: list[str | WatchedPath]
    observer: Literal["auto", "inotify", "polling"] = "auto"
    poll_interval: float = 1.0
    coalesce: float = 0.5
    settle: float = 1.0
    retry_interval: float = 1.0
    events: list[EventName] = msgspec.field(default_factory=lambda: list(ALL_EVENTS))
    log_events: bool = True
    log_rate: int = 10

    def __post_init__(self) -> None:
        if not self.paths:
            raise ValueError("paths: give at least one directory or file to watch")
        seen: dict[str, int] = {}
        for i, entry in enumerate(self.paths):
            path = entry if isinstance(entry, str) else entry.path
            if not path:
                raise ValueError(f"paths[{i}]: must not be empty")
            key = os.path.abspath(os.path.expanduser(path))
            if key in seen:
                raise ValueError(f"paths[{i}]: {path!r} is already watched by paths[{seen[key]}]")
            seen[key] = i
        for key in ("poll_interval", "settle", "retry_interval"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key}: must be a positive number of seconds")
        if self.coalesce < 0:
            raise ValueError("coalesce: must be zero (off) or a positive number of seconds")
        if self.log_rate < 0:
            raise ValueError("log_rate: must be zero or more lines per second")

    def watched(self) -> list[WatchedPath]:
        """Every entry of ``paths`` as a :class:`WatchedPath`."""
        return [WatchedPath(path=p) if isinstance(p, str) else p for p in self.paths]


# -- matching -----------------------------------------------------------------


def _glob_problem(pattern: str) -> str | None:
    if not pattern:
        return "is empty"
    if pattern.startswith("/"):
        return ("is absolute: patterns match the path relative to the watched root, "
                "such as '*.txt' or 'reports/**/*.csv'")
    if pattern.endswith("/"):
        return "ends with '/' and matches no file; write 'dir/**' for everything under dir"
    if pattern.count("[") != pattern.count("]"):
        return "has an unclosed '['"
    return None


def glob_to_regex(pattern: str) -> str:
    """Translate a glob over a relative path into a regex for ``fullmatch``.

    ``*`` and ``?`` stay within one path segment, ``**`` spans segments, and a
    pattern without ``/`` matches the file name at any depth (``*.txt`` matches
    ``a/b/c.txt``), as in ``.gitignore``.
    """
    if pattern.startswith("./"):
        pattern = pattern[2:]
    out = [] if "/" in pattern else ["(?:.*/)?"]
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == n:
            out.append("(?:/.*)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1:i + 2] in ("!", "]") else i + 1)
            if end < 0:
                out.append(re.escape(c))
                i += 1
                continue
            body = pattern[i + 1:end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


class PathFilter:
    """Decides which paths under a root are reported, from a :class:`WatchedPath`."""

    def __init__(self, spec: WatchedPath, only: str | None = None) -> None:
        flags = 0 if spec.case_sensitive else re.IGNORECASE
        self._include = _any_glob(spec.patterns, flags) or _any_regex(spec.regexes, flags)
        if spec.regex_mode():
            self._exclude = _any_regex(spec.ignore_patterns + spec.ignore_regexes, flags)
        else:
            self._exclude = _any_glob(spec.ignore_patterns, flags) or _any_regex(
                spec.ignore_regexes, flags)
        # A single watched file: its directory is watched, and only that name counts.
        self.only = only
        names = spec.ignore_directories
        self._ignored_dirs = frozenset(names if spec.case_sensitive else
                                       [n.casefold() for n in names])
        self._fold = not spec.case_sensitive

    def allows(self, rel: str) -> bool:
        """Whether events for ``rel`` (a path relative to the root) are reported."""
        if self.only is not None and rel != self.only:
            return False
        if self._include is not None and not self._include(rel):
            return False
        return self._exclude is None or not self._exclude(rel)

    def skips_dir(self, name: str) -> bool:
        """Whether a directory of this name is skipped with everything under it."""
        if self.only is not None:
            return True
        if not self._ignored_dirs:
            return False
        return (name.casefold() if self._fold else name) in self._ignored_dirs

    def in_skipped_dir(self, rel: str, is_dir: bool) -> bool:
        """Whether ``rel`` is, or lies under, a skipped directory."""
        if not self._ignored_dirs and self.only is None:
            return False
        parts = rel.split("/")
        if not is_dir:
            parts.pop()
        return any(self.skips_dir(part) for part in parts)


def _any_glob(patterns: list[str], flags: int) -> Match | None:
    if not patterns:
        return None
    regex = re.compile("|".join(f"(?:{glob_to_regex(p)})" for p in patterns), flags | re.DOTALL)
    return lambda rel: regex.fullmatch(rel) is not None


def _any_regex(regexes: list[str], flags: int) -> Match | None:
    if not regexes:
        return None
    compiled = [re.compile(r, flags) for r in regexes]
    return lambda rel: any(r.search(rel) is not None for r in compiled)

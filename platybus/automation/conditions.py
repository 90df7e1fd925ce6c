"""Hook conditions: an event-type glob plus per-field matchers, or a selector expression.

A mapping condition such as ``{type: file.created, data.path: {$regex: '\\.txt$'}}``
compiles into a list of checks once. :meth:`Condition.match` is the fast path (it
returns the captured regex groups, or ``None``); :meth:`Condition.why` says which
field failed and why, for traces and ``platybus explain``.
"""

from __future__ import annotations

import contextlib
import fnmatch
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from platybus.automation.templates import render_text
from platybus.automation.values import MISSING, equal, is_number, lookup
from platybus.config import KeyPath
from platybus.errors import ConfigError, SelectorError
from platybus.expr import Selector, parse_selector

__all__ = ["Condition", "compile_hook_condition"]

Fail = Callable[[KeyPath, str], ConfigError]
Captures = dict[str, Any]

_GLOB = frozenset("*?[")
_EMPTY: Final[Captures] = {}
OPERATORS: Final = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$exists", "$regex",
                    "$glob")


def _show(value: Any) -> str:
    text = render_text(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _getter(path: str) -> Callable[[Any], Any]:
    keys: tuple[str | int, ...] = tuple(int(k) if k.isdigit() else k
                                        for k in path.split("."))
    if len(keys) == 1:
        only = keys[0]
        return lambda obj: lookup(obj, only)

    def get(obj: Any) -> Any:
        for key in keys:
            obj = lookup(obj, key)
            if obj is MISSING:
                break
        return obj

    return get


@dataclass(frozen=True, slots=True)
class _Check:
    """One field test: ``test(value, captures)`` on the value at ``path`` (MISSING if absent)."""

    path: str
    get: Callable[[Any], Any]
    test: Callable[[Any, Captures], bool]
    explain: Callable[[Any], str]


def _ordering(op: str, operand: Any) -> tuple[Callable[[Any, Captures], bool],
                                              Callable[[Any], str]]:
    compare: Callable[[Any, Any], bool] = {
        "$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}[op]
    symbol = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}[op]
    if is_number(operand):
        def test(v: Any, c: Captures) -> bool:
            return is_number(v) and compare(v, operand)
        kind = "a number"
    else:
        def test(v: Any, c: Captures) -> bool:
            return isinstance(v, str) and compare(v, operand)
        kind = "a string"

    def explain(v: Any) -> str:
        if v is MISSING:
            return "is missing"
        if (kind == "a number" and not is_number(v)) or (kind == "a string"
                                                        and not isinstance(v, str)):
            return f"is {_show(v)}, not {kind} to compare with {_show(operand)}"
        return f"is {_show(v)}, not {symbol} {_show(operand)}"

    return test, explain


def _operator(op: str, operand: Any, path: KeyPath, fail: Fail) -> tuple[
        Callable[[Any, Captures], bool], Callable[[Any], str]]:
    if op == "$eq":
        return (lambda v, c: v is not MISSING and equal(v, operand),
                lambda v: "is missing" if v is MISSING else f"is {_show(v)}, not {_show(operand)}")
    if op == "$ne":
        # Like MongoDB: a missing field is "not equal" too.
        return (lambda v, c: v is MISSING or not equal(v, operand),
                lambda v: f"is {_show(v)}, which $ne excludes")
    if op in ("$gt", "$gte", "$lt", "$lte"):
        if not (is_number(operand) or isinstance(operand, str)):
            raise fail(path, f"{op} needs a number or a string, got {_show(operand)}")
        return _ordering(op, operand)
    if op == "$in":
        if not isinstance(operand, list):
            raise fail(path, f"$in needs a list, got {_show(operand)}")
        options = tuple(operand)
        return (lambda v, c: v is not MISSING and any(equal(v, o) for o in options),
                lambda v: "is missing" if v is MISSING else
                f"is {_show(v)}, not one of {_show(list(options))}")
    if op == "$exists":
        if not isinstance(operand, bool):
            raise fail(path, f"$exists needs true or false, got {_show(operand)}")
        want = operand
        return ((lambda v, c: (v is not MISSING) is want),
                lambda v: "is missing" if want else f"exists ({_show(v)})")
    if op in ("$regex", "$glob"):
        if not isinstance(operand, str):
            raise fail(path, f"{op} needs a string pattern, got {_show(operand)}")
        if op == "$glob":
            pattern = re.compile(fnmatch.translate(operand))
            return (lambda v, c: isinstance(v, str) and pattern.match(v) is not None,
                    lambda v: _pattern_reason(v, "glob", operand))
        try:
            regex = re.compile(operand)
        except re.error as error:
            raise fail(path, f"invalid regex {operand!r}: {error}") from None
        search = regex.search
        if not regex.groupindex:
            return (lambda v, c: isinstance(v, str) and search(v) is not None,
                    lambda v: _pattern_reason(v, "regex", operand))

        def capture(v: Any, c: Captures) -> bool:
            if not isinstance(v, str):
                return False
            m = search(v)
            if m is None:
                return False
            c.update(m.groupdict())
            return True

        return capture, lambda v: _pattern_reason(v, "regex", operand)
    hint = [o for o in OPERATORS if o.lstrip("$").startswith(op.lstrip("$")[:2])]
    tail = f"; did you mean {hint[0]!r}?" if hint else ""
    raise fail(path, f"unknown operator {op!r}{tail} (operators: {', '.join(OPERATORS)})")


def _pattern_reason(v: Any, kind: str, pattern: str) -> str:
    if v is MISSING:
        return "is missing"
    if not isinstance(v, str):
        return f"is {_show(v)}, not a string to match {kind} '{pattern}'"
    return f"{_show(v)} does not match {kind} '{pattern}'"


def _checks_for(field: str, value: Any, path: KeyPath, fail: Fail) -> list[_Check]:
    if isinstance(value, dict) and value:
        ops = [k for k in value if isinstance(k, str) and k.startswith("$")]
        if ops and len(ops) != len(value):
            raise fail(path, "mix of operators ($...) and field names: write them apart")
        if not ops:
            checks = []
            for key, sub in value.items():
                checks += _checks_for(f"{field}.{key}", sub, (*path, key), fail)
            return checks
        out = []
        for op, operand in value.items():
            _refuse_template(operand, (*path, op), fail)
            test, explain = _operator(op, operand, (*path, op), fail)
            out.append(_Check(field, _getter(field), test, explain))
        return out
    _refuse_template(value, path, fail)
    test, explain = _operator("$eq", value, path, fail)
    return [_Check(field, _getter(field), test, explain)]


def _refuse_template(value: Any, path: KeyPath, fail: Fail) -> None:
    if isinstance(value, str) and "${" in value:
        raise fail(path, "conditions compare with literal values; '${...}' is not "
                         "evaluated here (use a selector or an 'if' step)")


class Condition:
    """A compiled hook condition."""

    def __init__(self, source: Any, types: tuple[str, ...] | None, checks: list[_Check],
                 selector: Selector | None = None) -> None:
        self.source = source
        self.types = types
        self.checks = tuple(checks)
        self.selector = selector
        self.capture_names = frozenset(capture_names(source))
        exact: frozenset[str] | None = None
        if types is not None and not any(_GLOB & set(t) for t in types):
            exact = frozenset(types)
        elif selector is not None:
            exact = selector.exact_types
        self.exact_types = exact
        self._type_res = tuple(re.compile(fnmatch.translate(t)) for t in types or ())

    def type_matches(self, event_type: str) -> bool:
        """Whether the event type passes this condition's type gate (the hook is a candidate)."""
        if self.exact_types is not None:
            return event_type in self.exact_types
        if self._type_res:
            return any(r.match(event_type) for r in self._type_res)
        return True

    def match(self, event: Any) -> Captures | None:
        """Return the captured groups if ``event`` matches (the type gate is assumed passed)."""
        if self.selector is not None:
            return _EMPTY if self.selector.matches(event) else None
        captures: Captures | None = None
        for check in self.checks:
            if captures is None:
                captures = {}
            if not check.test(check.get(event), captures):
                return None
        return captures if captures else _EMPTY

    def why(self, event: Any) -> str | None:
        """Say why ``event`` does not match (``None`` if it does)."""
        event_type = getattr(event, "type", "")
        if not self.type_matches(event_type):
            wanted = " or ".join(repr(t) for t in self.types or sorted(self.exact_types or ()))
            return f"type {event_type!r} does not match {wanted}"
        if self.selector is not None:
            if self.selector.matches(event):
                return None
            return f"selector {self.selector.source!r} does not match"
        scratch: Captures = {}
        for check in self.checks:
            value = check.get(event)
            if not check.test(value, scratch):
                return f"{check.path} {check.explain(value)}"
        return None


def compile_hook_condition(value: Any, path: KeyPath, fail: Fail) -> Condition:
    """Compile a hook's ``if:`` (a mapping or a selector string); raise ConfigError if bad."""
    if isinstance(value, str):
        try:
            selector = parse_selector(value)
        except SelectorError as error:
            raise fail(path, f"invalid selector: {error}") from None
        return Condition(value, None, [], selector)
    if not isinstance(value, Mapping):
        raise fail(path, "expected a mapping of fields to match, or a selector string")
    types: tuple[str, ...] | None = None
    checks: list[_Check] = []
    for key, spec in value.items():
        if not isinstance(key, str) or not key or key.startswith("$"):
            raise fail((*path, str(key)), "expected a field name such as 'type' or 'data.path'")
        if any(not part or part.startswith("_") for part in key.split(".")):
            raise fail((*path, key), "field names are dotted words that do not start with '_'")
        if key == "type" and isinstance(spec, str | list) and not isinstance(spec, bool):
            globs = [spec] if isinstance(spec, str) else spec
            if not globs or not all(isinstance(g, str) and g for g in globs):
                raise fail((*path, key), "expected an event type (glob) or a list of them")
            types = tuple(globs)
            continue
        checks += _checks_for(key, spec, (*path, key), fail)
    return Condition(dict(value), types, checks)


def capture_names(value: Any) -> set[str]:
    """The named groups of every ``$regex`` in a mapping condition (variables for templates)."""
    names: set[str] = set()
    if isinstance(value, Mapping):
        for key, spec in value.items():
            if key == "$regex" and isinstance(spec, str):
                with contextlib.suppress(re.error):
                    names |= set(re.compile(spec).groupindex)
            else:
                names |= capture_names(spec)
    return names

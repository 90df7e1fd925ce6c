"""The selector language: ``type=file.* and data.size > 10``, parsed once, matched fast.

A selector is a boolean expression over comparisons ``field OP value``. Parsing
compiles it into nested closures so :meth:`Selector.matches` does no parsing,
no regex compiling and little allocation per message. See ``docs/selectors.md``.
"""

from __future__ import annotations

import fnmatch
import functools
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import msgspec

from platybus.errors import SelectorError
from platybus.messages import Event, Request, Response

__all__ = ["MISSING", "Selector", "parse_selector", "resolve_path"]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final[Any] = _Missing()
"""What path lookups give for a field that does not exist."""

_Pred = Callable[[object], bool]
_Step = tuple[str, int | None]
_Hint = frozenset[str] | None


def _step(obj: object, name: str, index: int | None) -> object:
    if type(obj) is dict:  # plain dicts from JSON are the common case: test them first
        return obj.get(name, MISSING)
    if isinstance(obj, msgspec.Struct):
        cls = type(obj)
        # Declared fields only: getattr on any name would reach methods and dunders.
        if name in cls.__struct_fields__:
            value = getattr(obj, name, MISSING)
            return MISSING if value is msgspec.UNSET else value
        kind = getattr(cls, "kind", None) if name == "kind" else None
        return kind if isinstance(kind, str) else MISSING
    if isinstance(obj, list | tuple):
        return obj[index] if index is not None and index < len(obj) else MISSING
    if isinstance(obj, Mapping):
        return obj.get(name, MISSING)
    return MISSING


def _steps(path: str) -> tuple[_Step, ...]:
    # Index precomputed once; a 19+ digit segment can never index a real list anyway.
    return tuple(
        (seg, int(seg) if seg.isascii() and seg.isdigit() and len(seg) < 19 else None)
        for seg in path.split(".")
    )


def _resolve(obj: object, steps: tuple[_Step, ...]) -> object:
    for name, index in steps:
        obj = _step(obj, name, index)
        if obj is MISSING:
            break
    return obj


def resolve_path(obj: object, path: str) -> tuple[bool, object]:
    """Look up a dotted path (``data.items.0``) in a message; return ``(found, value)``."""
    value = _resolve(obj, _steps(path))
    return (value is not MISSING, value)


_STR, _NUM, _BOOL, _NULL = "str", "num", "bool", "null"
_NUMBER_RE = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_INT_RE = re.compile(r"-?\d+")
_GLOB_CHARS = frozenset("*?[")


class _Value(NamedTuple):
    kind: str
    text: str  # numbers keep their spelling so that `code=200` also equals the string "200"
    const: object  # the str/int/float/bool/None the value stands for
    pattern: str | None  # fnmatch pattern when the value is a glob


def _word_value(text: str) -> _Value:
    if text in ("true", "false"):
        return _Value(_BOOL, text, text == "true", None)
    if text == "null":
        return _Value(_NULL, text, None, None)
    if len(text) < 300 and _NUMBER_RE.fullmatch(text):  # int() refuses huge digit strings
        number: int | float = int(text) if _INT_RE.fullmatch(text) else float(text)
        return _Value(_NUM, text, number, None)
    bracket = text.find("[")
    is_glob = "*" in text or "?" in text or (bracket >= 0 and "]" in text[bracket + 1 :])
    return _Value(_STR, text, text, text if is_glob else None)


_WORD, _STRING, _OP, _LPAREN, _RPAREN, _END = "word", "string", "op", "(", ")", "end"
_OPERATORS: Final = {"=": "=", "==": "=", "!=": "!=", ">": ">", ">=": ">=", "<": "<", "<=": "<="}
_OP_CHARS = frozenset("=!<>")
_WORD_STOP = frozenset("()\"'") | _OP_CHARS
_KEYWORDS = frozenset(("and", "or", "not"))
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0"}
_MAX_DEPTH = 100


class _Token(NamedTuple):
    kind: str
    text: str  # the operator, the word, or the decoded string
    pos: int
    value: _Value | None = None


def _tokenize(src: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(src)
    while i < n:
        ch = src[i]
        if ch.isspace():
            i += 1
        elif ch in "()":
            tokens.append(_Token(ch, ch, i))
            i += 1
        elif ch in _OP_CHARS:
            j = i
            while j < n and src[j] in _OP_CHARS:
                j += 1
            op = _OPERATORS.get(src[i:j])
            if op is None:
                raise SelectorError(f"unknown operator {src[i:j]!r}", source=src, position=i)
            tokens.append(_Token(_OP, op, i))
            i = j
        elif ch in "\"'":
            i = _read_string(src, i, tokens)
        else:
            j = i
            while j < n and not src[j].isspace() and src[j] not in _WORD_STOP:
                if src[j] == "[":  # a glob class like [!a] holds '!', elsewhere an operator
                    end = src.find("]", j + 1)
                    if end > j and not any(c.isspace() or c in "()\"'" for c in src[j:end]):
                        j = end
                j += 1
            tokens.append(_Token(_WORD, src[i:j], i, _word_value(src[i:j])))
            i = j
    tokens.append(_Token(_END, "", n))
    return tokens


def _read_string(src: str, start: int, tokens: list[_Token]) -> int:
    quote, i, n = src[start], start + 1, len(src)
    text: list[str] = []
    pattern: list[str] = []
    is_glob = False
    while i < n and src[i] != quote:
        ch = src[i]
        if ch == "\\" and i + 1 < n:
            ch = _ESCAPES.get(src[i + 1], src[i + 1])
            text.append(ch)
            # An escaped metacharacter stays literal inside a glob; fnmatch spells that [*].
            pattern.append(f"[{ch}]" if ch in _GLOB_CHARS else ch)
            i += 2
            continue
        is_glob = is_glob or ch in "*?" or (ch == "[" and "]" in src[i + 1 :])
        text.append(ch)
        pattern.append(ch)
        i += 1
    if i >= n:
        raise SelectorError("unterminated string", source=src, position=start)
    decoded = "".join(text)
    value = _Value(_STR, decoded, decoded, "".join(pattern) if is_glob else None)
    tokens.append(_Token(_STRING, decoded, start, value))
    return i + 1


_ORDER: Final[dict[str, Callable[[Any, Any], bool]]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def _never(value: object) -> bool:
    return False


def _equals(value: _Value) -> _Pred:
    const = value.const
    if value.kind == _BOOL:
        return lambda v: v is const
    if value.kind == _NULL:
        return lambda v: v is None
    if value.kind == _NUM:
        raw = value.text
        # bool is an int subclass but `flag=1` must not match True.
        return lambda v: (
            v == raw
            if isinstance(v, str)
            else (isinstance(v, int | float) and not isinstance(v, bool) and v == const)
        )
    if value.pattern is not None:
        match = re.compile(fnmatch.translate(value.pattern)).match
        return lambda v: isinstance(v, str) and match(v) is not None
    return lambda v: isinstance(v, str) and v == const


def _tester(op: str, value: _Value) -> _Pred:
    """Build the test of a present field's value; ``!=`` is exactly ``not =``."""
    if op == "=":
        return _equals(value)
    if op == "!=":
        eq = _equals(value)
        return lambda v: not eq(v)
    cmp, const = _ORDER[op], value.const
    if value.kind == _NUM:
        return lambda v: isinstance(v, int | float) and not isinstance(v, bool) and cmp(v, const)
    if value.kind == _STR:
        return lambda v: isinstance(v, str) and cmp(v, const)
    return _never


def _compile_comparison(path: str, op: str, value: _Value) -> _Pred:
    test, steps = _tester(op, value), _steps(path)
    if len(steps) == 1:  # top-level fields are the hot path: skip the loop
        name, index = steps[0]
        return lambda m: (v := _step(m, name, index)) is not MISSING and test(v)
    return lambda m: (v := _resolve(m, steps)) is not MISSING and test(v)


# Top-level fields that only some message kinds have (`action` → request), for `kinds`.
_FIELD_KINDS: Final = {
    name: frozenset(c.kind for c in (Event, Request, Response) if name in c.__struct_fields__)
    for cls in (Event, Request, Response)
    for name in cls.__struct_fields__
    if not all(name in c.__struct_fields__ for c in (Event, Request, Response))
}


def _both(a: _Hint, b: _Hint) -> _Hint:
    if a is None:
        return b
    return a if b is None else a & b


def _either(a: _Hint, b: _Hint) -> _Hint:
    return None if a is None or b is None else a | b


class _Node(NamedTuple):
    pred: _Pred
    types: _Hint
    kinds: _Hint
    implied: bool = False


def _comparison_node(path: str, op: str, value: _Value) -> _Node:
    if path == "topic":
        path = "type"  # the event hub's name for an event's type: one field, two names
    exact = op == "=" and value.kind in (_STR, _NUM) and value.pattern is None
    types: _Hint = frozenset((value.text,)) if exact and path == "type" else None
    kinds: _Hint = _FIELD_KINDS.get(path.split(".", 1)[0])
    if path == "kind":
        kinds = frozenset((value.text,)) if exact else None
    implied = (path == "type" and types is not None) or (path == "kind" and kinds is not None)
    return _Node(_compile_comparison(path, op, value), types, kinds, implied)


def _chain(nodes: list[_Node], is_or: bool) -> _Node:
    # One flat closure per and/or run, so a long chain does not nest calls deeply.
    if len(nodes) == 1:
        return nodes[0]
    merge = _either if is_or else _both
    types, kinds = nodes[0].types, nodes[0].kinds
    for node in nodes[1:]:
        types, kinds = merge(types, node.types), merge(kinds, node.kinds)
    preds = tuple(node.pred for node in nodes)
    if len(preds) == 2:
        a, b = preds
        return _Node((lambda m: a(m) or b(m)) if is_or else (lambda m: a(m) and b(m)), types, kinds)
    if is_or:
        return _Node(lambda m: any(p(m) for p in preds), types, kinds)
    return _Node(lambda m: all(p(m) for p in preds), types, kinds)


def _not(inner: _Pred) -> _Pred:
    return lambda m: not inner(m)


def _describe(tok: _Token) -> str:
    return "end of selector" if tok.kind == _END else repr(tok.text)


class _Parser:
    def __init__(self, src: str, tokens: list[_Token]) -> None:
        self.src, self.tokens, self.i, self.depth = src, tokens, 0, 0

    def fail(self, message: str, tok: _Token) -> SelectorError:
        return SelectorError(message, source=self.src, position=tok.pos)

    def take(self) -> _Token:
        self.i += 1
        return self.tokens[self.i - 1]

    def at_keyword(self, word: str) -> bool:
        tok = self.tokens[self.i]
        return tok.kind == _WORD and tok.text == word

    def nest(self, tok: _Token) -> None:
        # Bounded so hostile input gets a SelectorError rather than a RecursionError.
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.fail("selector nests too deeply", tok)

    def parse(self) -> _Node:
        node = self.parse_or("")
        tok = self.tokens[self.i]
        if tok.kind == _RPAREN:
            raise self.fail("unbalanced parentheses: unexpected ')'", tok)
        if tok.kind != _END:
            raise self.fail(f"expected 'and', 'or' or end of selector, found {tok.text!r}", tok)
        return node

    def parse_or(self, after: str) -> _Node:
        nodes = [self.parse_and(after)]
        while self.at_keyword("or"):
            self.take()
            nodes.append(self.parse_and("after 'or'"))
        return _chain(nodes, is_or=True)

    def parse_and(self, after: str) -> _Node:
        nodes = [self.parse_not(after)]
        while self.at_keyword("and"):
            self.take()
            nodes.append(self.parse_not("after 'and'"))
        return _chain(nodes, is_or=False)

    def parse_not(self, after: str) -> _Node:
        if not self.at_keyword("not"):
            return self.parse_primary(after)
        self.nest(self.take())
        inner = self.parse_not("after 'not'").pred
        self.depth -= 1
        return _Node(_not(inner), None, None)

    def parse_primary(self, after: str) -> _Node:
        tok = self.take()
        if tok.kind == _LPAREN:
            self.nest(tok)
            node = self.parse_or("after '('")
            self.depth -= 1
            close = self.take()
            if close.kind == _END:
                raise self.fail("unbalanced parentheses: '(' is never closed", tok)
            if close.kind != _RPAREN:
                raise self.fail(f"expected ')', found {close.text!r}", close)
            return node
        if tok.kind != _WORD or tok.text in _KEYWORDS:
            where = f" {after}" if after else ""
            raise self.fail(f"expected a comparison{where}, found {_describe(tok)}", tok)
        path = tok.text
        if any(not seg or _GLOB_CHARS & set(seg) or "]" in seg for seg in path.split(".")):
            raise self.fail(f"invalid field name {path!r}", tok)
        op = self.take()
        if op.kind != _OP:
            raise self.fail(f"expected an operator after {path!r}, found {_describe(op)}", op)
        val = self.take()
        if val.value is None or (val.kind == _WORD and val.text in _KEYWORDS):
            raise self.fail(f"expected a value after {op.text!r}, found {_describe(val)}", val)
        return _comparison_node(path, op.text, val.value)


def _always(message: object) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class Selector:
    """A parsed, immutable selector; build one with :func:`parse_selector`."""

    source: str
    exact_types: frozenset[str] | None = None
    kinds: frozenset[str] | None = None
    # True when exact_types/kinds say everything: an index on them needs no matches() call.
    implied_by_index: bool = True
    _pred: _Pred = field(default=_always, repr=False, compare=False)

    def matches(self, message: object) -> bool:
        """Return whether the message matches; never raises."""
        try:
            return self._pred(message)
        except Exception:  # an odd __eq__ in user data must not break dispatch
            return False

    def __reduce__(self) -> tuple[Callable[[str], Selector], tuple[str]]:
        # Closures do not pickle; the source text rebuilds an equal selector.
        return (parse_selector, (self.source,))


def parse_selector(text: str) -> Selector:
    """Parse selector text into a :class:`Selector`; raise SelectorError on bad syntax."""
    return _parse_cached(text)


# Subscribers often repeat selectors, and a Selector is immutable, so share parses.
@functools.lru_cache(maxsize=1024)
def _parse_cached(text: str) -> Selector:
    tokens = _tokenize(text)
    body = tokens[:-1]
    if not body or (len(body) == 1 and body[0].kind == _WORD and body[0].text == "*"):
        return Selector(text)
    first = body[0]
    # A lone word is shorthand for its event type: "file.*" means "type=file.*".
    if (
        len(body) == 1
        and first.value is not None
        and (first.kind == _STRING or first.text not in _KEYWORDS)
    ):
        value = first.value
        if value.kind != _STR:  # `true` or `5` alone still names a type
            value = _Value(_STR, value.text, value.text, None)
        node = _comparison_node("type", "=", value)
    else:
        node = _Parser(text, tokens).parse()
    return Selector(text, node.types, node.kinds, node.implied, node.pred)

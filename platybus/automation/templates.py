"""The ``${...}`` template language: a small safe expression language, compiled once.

A template is parsed into closures when the config loads, so rendering does no
parsing. There is no ``eval``, no calls and no attribute access to Python
objects: names come from the run's scope (the event, captured groups, variables,
procedure arguments), dotted lookups read mapping keys, list indexes and the
declared fields of messages, and names that start with ``_`` are refused.
See ``docs/automation/templates.md``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from platybus.automation.values import (
    BINARY,
    FILTERS,
    LEVELS,
    MISSING,
    Undefined,
    is_number,
    lookup_or_undefined,
    need,
    to_text,
    to_value,
    type_name,
)
from platybus.errors import SelectorError, TemplateError

__all__ = [
    "Compiled",
    "compile_condition",
    "compile_value",
    "render_text",
]

Scope = dict[str, Any]
Fn = Callable[[Scope], Any]

_MAX_DEPTH = 60

# -- tokens ---------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>\d+\.\d+(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+|\d+)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>//|==|!=|<=|>=|[-+*/%<>.\[\](),|}])
""", re.VERBOSE | re.DOTALL)
_DIGITS = re.compile(r"\d+")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", "'": "'", '"': '"'}
_CONSTANTS: Final = {"true": True, "false": False, "null": None}
_KEYWORDS: Final = frozenset(("and", "or", "not", "in", *_CONSTANTS))


class _Tok(NamedTuple):
    kind: str
    text: str
    pos: int


def _tokenize(src: str, start: int) -> tuple[list[_Tok], int]:
    """Tokens from ``start`` up to the closing ``}``; return them and the index after it."""
    tokens: list[_Tok] = []
    i, n = start, len(src)
    while i < n:
        if tokens and tokens[-1].text == ".":
            digits = _DIGITS.match(src, i)  # `items.0.name`: an index, not the number 0.5
            if digits:
                tokens.append(_Tok("number", digits.group(), i))
                i = digits.end()
                continue
        m = _TOKEN.match(src, i)
        if m is None:
            raise SelectorError(f"unexpected character {src[i]!r}", source=src, position=i)
        kind = m.lastgroup or ""
        if kind == "op" and m.group() == "}":
            tokens.append(_Tok("end", "}", i))
            return tokens, m.end()
        if kind != "space":
            tokens.append(_Tok(kind, m.group(), i))
        i = m.end()
    raise SelectorError("'${' is never closed by '}'", source=src, position=start - 2)


def _unquote(text: str) -> str:
    body, out, i = text[1:-1], [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            out.append(_ESCAPES.get(body[i + 1], "\\" + body[i + 1]))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


# -- parser ---------------------------------------------------------------------


class _Parser:
    """Recursive descent over one ``${...}``, building closures as it goes."""

    def __init__(self, src: str, tokens: list[_Tok], names: set[str]) -> None:
        self.src, self.tokens, self.i, self.depth, self.names = src, tokens, 0, 0, names

    def fail(self, message: str, tok: _Tok) -> SelectorError:
        return SelectorError(message, source=self.src, position=tok.pos)

    def peek(self) -> _Tok:
        return self.tokens[self.i]

    def take(self) -> _Tok:
        self.i += 1
        return self.tokens[self.i - 1]

    def expect(self, text: str) -> _Tok:
        tok = self.take()
        if tok.text != text or tok.kind == "string":
            raise self.fail(f"expected {text!r}, found {_show(tok)}", tok)
        return tok

    def nest(self, tok: _Tok) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.fail("expression nests too deeply", tok)

    def at_word(self, word: str) -> bool:
        tok = self.peek()
        return tok.kind == "name" and tok.text == word

    def parse(self) -> tuple[Fn, str]:
        if self.peek().kind == "end":
            raise self.fail("empty expression", self.peek())
        fn, text = self.pipe()
        tok = self.peek()
        if tok.kind != "end":
            raise self.fail(f"unexpected {_show(tok)}", tok)
        return fn, text

    def pipe(self) -> tuple[Fn, str]:
        fn, text = self.or_()
        while self.peek().text == "|" and self.peek().kind == "op":
            self.take()
            fn = self.filter(fn, text)
        return fn, text

    def filter(self, inner: Fn, what: str) -> Fn:
        tok = self.take()
        if tok.kind != "name":
            raise self.fail(f"expected a filter name after '|', found {_show(tok)}", tok)
        spec = FILTERS.get(tok.text)
        if spec is None:
            raise self.fail(f"unknown filter {tok.text!r} (filters: "
                            f"{', '.join(sorted(FILTERS))})", tok)
        args: list[Fn] = []
        if self.peek().text == "(" and self.peek().kind == "op":
            self.take()
            while not (self.peek().text == ")" and self.peek().kind == "op"):
                if args:
                    self.expect(",")
                args.append(self.pipe()[0])
            self.take()
        if len(args) != spec.args:
            raise self.fail(f"filter {tok.text!r} takes {spec.args} argument(s), "
                            f"got {len(args)}", tok)
        fn = spec.fn
        if tok.text == "default":
            fallback = args[0]
            return lambda s: (fallback(s) if type(v := inner(s)) is Undefined or v is None
                              else v)
        if args:
            extra = args
            return lambda s: fn(need(inner(s)), *(need(a(s)) for a in extra))
        return lambda s: fn(need(inner(s)))

    def or_(self) -> tuple[Fn, str]:
        left, text = self.and_()
        while self.at_word("or"):
            self.take()
            right = self.and_()[0]
            left = _or(left, right)
        return left, text

    def and_(self) -> tuple[Fn, str]:
        left, text = self.not_()
        while self.at_word("and"):
            self.take()
            right = self.not_()[0]
            left = _and(left, right)
        return left, text

    def not_(self) -> tuple[Fn, str]:
        if self.at_word("not"):
            tok = self.take()
            self.nest(tok)
            inner = self.not_()
            self.depth -= 1
            fn = inner[0]
            return (lambda s: not fn(s)), inner[1]
        return self.binary(0)

    def binary(self, level: int) -> tuple[Fn, str]:
        if level == len(LEVELS):
            return self.unary()
        left, text = self.binary(level + 1)
        ops = LEVELS[level]
        while True:
            tok = self.peek()
            op = tok.text if tok.kind in ("op", "name") else ""
            if op == "not" and level == 0 and self.tokens[self.i + 1].text == "in":
                self.take()
                op = "not in"
            elif op not in ops or (tok.kind == "name" and op != "in"):
                return left, text
            self.take()
            right = self.binary(level + 1)[0]
            left = _binary_fn(op, left, right)
            if level == 0:
                return left, text  # comparisons do not chain: `a < b < c` is an error

    def unary(self) -> tuple[Fn, str]:
        tok = self.peek()
        if tok.kind == "op" and tok.text == "-":
            self.take()
            self.nest(tok)
            inner, text = self.unary()
            self.depth -= 1

            def neg(s: Scope) -> Any:
                v = need(inner(s))
                if not is_number(v):
                    raise TemplateError(f"cannot negate {type_name(v)}")
                return -v

            return neg, text
        return self.postfix()

    def postfix(self) -> tuple[Fn, str]:
        fn, text = self.primary()
        while True:
            tok = self.peek()
            if tok.kind != "op" or tok.text not in ".[(":
                return fn, text
            self.take()
            if tok.text == "(":
                raise self.fail("calls are not allowed; filters are written 'value | name'",
                                tok)
            if tok.text == ".":
                key_tok = self.take()
                if key_tok.kind == "number":
                    key: str | int = int(key_tok.text)
                elif key_tok.kind == "name":
                    key = self._field_name(key_tok)
                else:
                    raise self.fail(f"expected a field name after '.', found {_show(key_tok)}",
                                    key_tok)
                text = f"{text}.{key}"
                fn = _field_fn(fn, key, text)
                continue
            self.nest(tok)
            first = self.peek()
            index, _ = self.pipe()
            if (self.tokens[self.i - 1] is first and first.kind == "string"
                    and _unquote(first.text).startswith("_")):
                raise self.fail(f"names starting with '_' are not allowed: {first.text}", first)
            self.depth -= 1
            self.expect("]")
            fn = _index_fn(fn, index, text)
            text = f"{text}[...]"

    def _field_name(self, tok: _Tok) -> str:
        if tok.text.startswith("_"):
            raise self.fail(f"names starting with '_' are not allowed: {tok.text!r}", tok)
        return tok.text

    def primary(self) -> tuple[Fn, str]:
        tok = self.take()
        if tok.kind == "number":
            num: int | float = float(tok.text) if any(c in tok.text for c in ".eE") else int(
                tok.text)
            return (lambda s: num), tok.text
        if tok.kind == "string":
            text = _unquote(tok.text)
            return (lambda s: text), tok.text
        if tok.kind == "name":
            if tok.text in _CONSTANTS:
                const = _CONSTANTS[tok.text]
                return (lambda s: const), tok.text
            if tok.text in _KEYWORDS:
                raise self.fail(f"expected a value, found {tok.text!r}", tok)
            name = self._field_name(tok)
            if self.peek().text == "(" and self.peek().kind == "op":
                raise self.fail("calls are not allowed; filters are written 'value | name'",
                                self.peek())
            self.names.add(name)
            what = name
            return (lambda s: v if (v := s.get(name, MISSING)) is not MISSING
                    else Undefined(what)), name
        if tok.kind == "op" and tok.text == "(":
            self.nest(tok)
            if self.peek().text == ")":
                raise self.fail("empty parentheses", self.peek())
            fn, text = self.pipe()
            self.depth -= 1
            self.expect(")")
            return fn, text
        if tok.kind == "op" and tok.text == "[":
            self.nest(tok)
            items: list[Fn] = []
            while not (self.peek().text == "]" and self.peek().kind == "op"):
                if items:
                    self.expect(",")
                items.append(self.pipe()[0])
            self.take()
            self.depth -= 1
            return (lambda s: [to_value(f(s)) for f in items]), "[...]"
        raise self.fail(f"expected a value, found {_show(tok)}", tok)


def _show(tok: _Tok) -> str:
    return "the end of the expression" if tok.kind == "end" else repr(tok.text)


def _or(a: Fn, b: Fn) -> Fn:
    return lambda s: a(s) or b(s)


def _and(a: Fn, b: Fn) -> Fn:
    return lambda s: a(s) and b(s)


def _field_fn(inner: Fn, key: str | int, what: str) -> Fn:
    return lambda s: lookup_or_undefined(inner(s), key, what)


def _binary_fn(op: str, left: Fn, right: Fn) -> Fn:
    fn = BINARY[op]
    if op in ("==", "!="):
        return lambda s: fn(left(s), right(s))
    return lambda s: fn(need(left(s)), need(right(s)))


def _index_fn(inner: Fn, index: Fn, base: str) -> Fn:
    def get(s: Scope) -> Any:
        key = need(index(s))
        if isinstance(key, bool) or not isinstance(key, str | int):
            raise TemplateError(f"{base}[...]: an index must be a string or an integer, got "
                                f"{type_name(key)}")
        value = lookup_or_undefined(inner(s), key, base)
        return Undefined(f"{base}[{key!r}]") if type(value) is Undefined else value

    return get


# -- public API -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Compiled:
    """A compiled config value: ``render(scope)`` gives its value for one run."""

    render: Fn
    names: frozenset[str]
    static: bool
    source: Any


def _parse_expr(src: str, start: int, names: set[str]) -> tuple[Fn, int]:
    tokens, end = _tokenize(src, start)
    fn, _ = _Parser(src, tokens, names).parse()
    return fn, end


def _compile_string(text: str, names: set[str]) -> tuple[Fn, bool]:
    """Compile one string; return its renderer and whether it holds templates."""
    if "${" not in text:
        return (lambda s: text), False
    parts: list[str | Fn] = []
    i, literal = 0, []
    while i < len(text):
        at = text.find("${", i)
        if at < 0:
            literal.append(text[i:])
            break
        if at > 0 and text[at - 1] == "$":  # `$${` keeps a literal `${`
            literal.append(text[i : at - 1] + "${")
            i = at + 2
            continue
        literal.append(text[i:at])
        fn, i = _parse_expr(text, at + 2, names)
        if "".join(literal):
            parts.append("".join(literal))
        literal = []
        parts.append(fn)
    if "".join(literal):
        parts.append("".join(literal))
    if not any(callable(p) for p in parts):
        plain = "".join(p for p in parts if isinstance(p, str))
        return (lambda s: plain), False
    if len(parts) == 1 and callable(parts[0]):
        only = parts[0]
        return (lambda s: to_value(only(s))), True  # exactly one `${}` keeps its type
    if len(parts) == 2 and isinstance(parts[0], str) and callable(parts[1]):
        head, tail = parts[0], parts[1]
        return (lambda s: head + to_text(tail(s))), True
    frozen = tuple(parts)
    return (lambda s: "".join(p if type(p) is str else to_text(p(s))  # type: ignore[operator]
                              for p in frozen)), True


def _compile(value: Any, names: set[str]) -> tuple[Fn, bool]:
    if isinstance(value, str):
        return _compile_string(value, names)
    if isinstance(value, dict):
        items = [(k, *_compile(v, names)) for k, v in value.items()]
        if not any(dynamic for _, _, dynamic in items):
            const = value
            return (lambda s: _copy(const)), False
        pairs = tuple((k, fn) for k, fn, _ in items)
        return (lambda s: {k: fn(s) for k, fn in pairs}), True
    if isinstance(value, list):
        compiled = [_compile(v, names) for v in value]
        if not any(dynamic for _, dynamic in compiled):
            const_list = value
            return (lambda s: _copy(const_list)), False
        fns = tuple(fn for fn, _ in compiled)
        return (lambda s: [fn(s) for fn in fns]), True
    return (lambda s: value), False


def _copy(value: Any) -> Any:
    # Actions receive fresh containers so one run cannot change what the next one sees.
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def compile_value(value: Any) -> Compiled:
    """Compile a config value whose strings may hold ``${...}``; raise SelectorError if bad."""
    names: set[str] = set()
    fn, dynamic = _compile(value, names)
    return Compiled(fn, frozenset(names), not dynamic, value)


def compile_condition(value: Any) -> Compiled:
    """Compile an ``if:`` of a step: one expression, bare or inside ``${...}``; or a boolean."""
    if isinstance(value, bool):
        return Compiled(lambda s: value, frozenset(), True, value)
    if not isinstance(value, str):
        raise SelectorError(f"a condition must be an expression, got {type_name(value)}")
    text = value.strip()
    names: set[str] = set()
    if text.startswith("${") and text.endswith("}"):
        fn, end = _parse_expr(text, 2, names)
        if end != len(text):
            raise SelectorError("a condition must be one expression", source=text)
    elif "${" in text:
        raise SelectorError("a condition must be one expression, not text around '${...}'",
                            source=text)
    else:
        fn, end = _parse_expr(text + "}", 0, names)
        if end != len(text) + 1:
            raise SelectorError("unexpected '}'", source=text, position=end - 1)
    return Compiled(lambda s: bool(fn(s)), frozenset(names), False, value)


def render_text(value: Any) -> str:
    """Render a value for a log or trace line (JSON-like, never raising)."""
    try:
        return to_text(value)
    except (TemplateError, TypeError, ValueError):
        return json.dumps(repr(value))

"""The ${...} template language: lookups, operators, filters, types, and refused injections."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from platybus.automation.templates import compile_condition, compile_value
from platybus.errors import SelectorError, TemplateError
from platybus.messages import Event


class FileData(msgspec.Struct, frozen=True):
    path: str
    size: int


class FileCreated(Event, tag="event", frozen=True, kw_only=True):
    type: str = "file.created"
    data: FileData


EVENT = Event(type="file.created", data={"path": "/home/me/Report.TXT", "size": 1200,
                                         "tags": ["a", "b"], "meta": {"code": "200"},
                                         "flag": True, "none": None})
SCOPE: dict[str, Any] = {"event": EVENT, "name": "report", "n": 3, "items": [1, 2, 3]}


def render(text: Any, scope: dict[str, Any] | None = None) -> Any:
    return compile_value(text).render(SCOPE if scope is None else scope)


@pytest.mark.parametrize(("template", "expected"), [
    ("${event.data.path}", "/home/me/Report.TXT"),
    ("${event.type}", "file.created"),
    ("${event.kind}", "event"),
    ("${event.data.tags.1}", "b"),
    ("${event.data.tags[0]}", "a"),
    ("${event.data['meta']['code']}", "200"),
    ("${items[-1]}", 3),
    ("${name}", "report"),
    ("${'lit' + \"eral\"}", "literal"),
    ("${n + 1}", 4),
    ("${n - 5}", -2),
    ("${n * 2.5}", 7.5),
    ("${7 / 2}", 3.5),
    ("${7 // 2}", 3),
    ("${7 % 4}", 3),
    ("${-n}", -3),
    ("${(n + 1) * 2}", 8),
    ("${n > 2}", True),
    ("${n >= 4}", False),
    ("${n < 4 and name == 'report'}", True),
    ("${n != 3 or false}", False),
    ("${not event.data.flag}", False),
    ("${'b' in event.data.tags}", True),
    ("${'x' not in event.data.tags}", True),
    ("${'port' in name}", True),
    ("${'code' in event.data.meta}", True),
    ("${event.data.none == null}", True),
    ("${[n, name]}", [3, "report"]),
    ("${event.data.path | lower}", "/home/me/report.txt"),
    ("${name | upper}", "REPORT"),
    ("${event.data.path | basename}", "Report.TXT"),
    ("${event.data.path | dirname}", "/home/me"),
    ("${event.data.tags | json}", '["a","b"]'),
    ("${event.data.missing | default('none')}", "none"),
    ("${event.data.none | default(5)}", 5),
    ("${'  x ' | trim}", "x"),
    ("${'42' | int}", 42),
    ("${'2.5' | float}", 2.5),
    ("${n | string}", "3"),
    ("${event.data.tags | length}", 2),
    ("${n > 1 and 'big' or 'small'}", "big"),
    ("$${name} is ${name}", "${name} is report"),
])
def test_expressions(template: str, expected: Any) -> None:
    assert render(template) == expected


def test_a_lone_template_keeps_its_type() -> None:
    assert render("${event.data.size}") == 1200
    assert render("${event.data.flag}") is True
    assert render("${event.data.none}") is None
    assert render("${event.data.tags}") == ["a", "b"]
    assert render("${event.data.meta}") == {"code": "200"}


def test_a_string_is_never_reparsed_into_another_type() -> None:
    assert render("${event.data.meta.code}") == "200"
    assert render("size ${event.data.size}") == "size 1200"
    assert render("${event.data.size}${n}") == "12003"
    assert render("${'true'}") == "true"


def test_text_rendering_uses_json_spellings() -> None:
    assert render("[${event.data.flag} ${event.data.none} ${event.data.tags}]") == (
        '[true null ["a","b"]]')


def test_typed_events_and_structures() -> None:
    event = FileCreated(data=FileData(path="/w/a.txt", size=3))
    scope = {"event": event}
    assert render("${event.data.path | basename}", scope) == "a.txt"
    assert render("${event.data}", scope) == {"path": "/w/a.txt", "size": 3}
    assert render({"args": ["${event.data.size}", "x"], "k": 1}, scope) == {
        "args": [3, "x"], "k": 1}


def test_static_values_are_fresh_copies() -> None:
    compiled = compile_value({"a": [1, 2]})
    first = compiled.render({})
    first["a"].append(3)
    assert compiled.render({}) == {"a": [1, 2]}
    assert compiled.static


def test_names_are_collected() -> None:
    assert compile_value({"m": "${a.b + c | default(d)} ${e[f]}"}).names == {
        "a", "c", "d", "e", "f"}


@pytest.mark.parametrize("template", [
    "${__import__('os')}",
    "${__import__('os').system('true')}",
    "${event.__class__}",
    "${event.__class__.__mro__}",
    "${().__class__}",
    "${''.__class__.__mro__[1].__subclasses__()}",
    "${event['__class__']}",
    "${event.data.get('path')}",
    "${name.upper()}",
    "${open('/etc/passwd')}",
    "${lambda: 1}",
    "${[x for x in items]}",
    "${n if n else 1}",
    "${n ** 100}",
    "${eval('1')}",
    "${_private}",
    "${event._x}",
    "${globals}" + "${",
])
def test_injection_attempts_are_refused_at_compile(template: str) -> None:
    with pytest.raises(SelectorError):
        compile_value(template)


@pytest.mark.parametrize(("template", "message"), [
    ("${", "never closed"),
    ("${}", "empty expression"),
    ("${n +}", "expected a value"),
    ("${n | nope}", "unknown filter 'nope'"),
    ("${n | default}", "takes 1 argument"),
    ("${a < b < c}", "unexpected '<'"),
    ("${'abc}", "unexpected character"),
    ("${n.upper()}", "calls are not allowed"),
])
def test_syntax_errors_say_what_is_wrong(template: str, message: str) -> None:
    with pytest.raises(SelectorError, match=message):
        compile_value(template)


@pytest.mark.parametrize(("template", "message"), [
    ("${event.data.missing}", "event.data.missing is undefined"),
    ("${nope}", "nope is undefined"),
    ("x ${event.data.tags.9}", "event.data.tags.9 is undefined"),
    ("${n + 'a'}", "cannot add a number and a string"),
    ("${name * 1000000}", "cannot apply '\\*'"),
    ("${n / 0}", "division by zero"),
    ("${name > 3}", "cannot compare"),
    ("${n | lower}", "needs a string"),
    ("${'x' | int}", "not a number"),
    ("${event.data.missing > 1}", "is undefined"),
    ("${n in 5}", "'in' needs"),
])
def test_runtime_errors_are_template_errors(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        render(template)


def test_numbers_and_strings_are_bounded() -> None:
    scope = {"big": 2 ** 1000, "s": "x" * 600_000}
    with pytest.raises(TemplateError, match="too large"):
        render("${big * big}", scope)
    with pytest.raises(TemplateError, match="longer than"):
        render("${s + s}", scope)


def test_booleans_are_not_numbers() -> None:
    assert render("${event.data.flag == 1}") is False
    with pytest.raises(TemplateError):
        render("${event.data.flag + 1}")


def test_conditions() -> None:
    assert compile_condition("n > 2").render(SCOPE) is True
    assert compile_condition("${name == 'x'}").render(SCOPE) is False
    assert compile_condition(True).render({}) is True
    assert compile_condition("event.data.missing").render(SCOPE) is False
    with pytest.raises(SelectorError, match="one expression"):
        compile_condition("n is ${n}")
    with pytest.raises(SelectorError):
        compile_condition(3)

"""Tests for the selector language in :mod:`platybus.expr`."""

from __future__ import annotations

import dataclasses
import pickle
from types import MappingProxyType
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from platybus.errors import SelectorError
from platybus.expr import MISSING, Selector, parse_selector, resolve_path
from platybus.messages import ErrorInfo, Event, NodeEventData, NodeStarted, Request, Response


class FileData(msgspec.Struct, frozen=True):
    path: str
    size: int = 0
    tags: tuple[str, ...] = ()
    owner: dict[str, Any] = msgspec.field(default_factory=dict)


class FileCreated(Event, tag="event", kw_only=True):
    type: str = "file.created"
    data: FileData


def ev(type_: str = "file.created", **data: Any) -> Event:
    return Event(type=type_, data=data)


def m(selector: str, message: object) -> bool:
    return parse_selector(selector).matches(message)


# --- operators ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        ("=", [False, True, False]),
        ("==", [False, True, False]),
        ("!=", [True, False, True]),
        (">", [True, False, False]),
        (">=", [True, True, False]),
        ("<", [False, False, True]),
        ("<=", [False, True, True]),
    ],
)
def test_every_operator_on_numbers(op: str, expected: list[bool]) -> None:
    sizes = [11, 10, 9]
    assert [m(f"data.size {op} 10", ev(size=s)) for s in sizes] == expected


@pytest.mark.parametrize(
    ("op", "expected"),
    [("=", False), ("!=", True), (">", True), (">=", True), ("<", False), ("<=", False)],
)
def test_every_operator_on_strings(op: str, expected: bool) -> None:
    assert m(f"data.name {op} apple", ev(name="banana")) is expected


def test_spaces_around_operators_are_optional() -> None:
    event = ev(size=3)
    assert m("data.size=3", event)
    assert m("data.size = 3", event)
    assert m("  data.size   >=3  ", event)


def test_string_ordering_is_lexicographic() -> None:
    assert m("data.v < b", ev(v="abc"))
    assert not m("data.v > b", ev(v="abc"))


# --- numbers, strings, constants ----------------------------------------------------------


def test_numbers_compare_numerically() -> None:
    assert m("data.size > 9", ev(size=10))  # as strings "10" < "9"
    assert m("data.size = 2.5", ev(size=2.5))
    assert m("data.size = 200", ev(size=200.0))
    assert m("data.size = 200.0", ev(size=200))
    assert m("data.t > -1", ev(t=0))
    assert m("data.t < -1.5", ev(t=-2))
    assert m("data.t >= 1e3", ev(t=1000))
    assert m("data.t < .5", ev(t=0.25))


def test_unquoted_number_equals_a_string_field_with_the_same_spelling() -> None:
    assert m("data.code = 200", ev(code="200"))
    assert not m("data.code = 200", ev(code="200.0"))
    assert m("data.v = 1.2", ev(v="1.2"))


def test_quoted_value_is_always_a_string() -> None:
    assert m("data.code = '200'", ev(code="200"))
    assert not m("data.code = '200'", ev(code=200))
    assert m("data.code != '200'", ev(code=200))


def test_ordering_against_a_different_type_never_matches() -> None:
    for op in (">", ">=", "<", "<="):
        assert not m(f"data.size {op} 5", ev(size="10"))
        assert not m(f"data.size {op} 5", ev(size=None))
        assert not m(f"data.size {op} 5", ev(size=[1]))
        assert not m(f"data.name {op} abc", ev(name=7))
        assert not m(f"data.flag {op} true", ev(flag=True))
        assert not m(f"data.n {op} null", ev(n=None))


def test_bool_is_not_a_number() -> None:
    assert not m("data.flag = 1", ev(flag=True))
    assert not m("data.flag > 0", ev(flag=True))
    assert not m("data.count = true", ev(count=1))
    assert m("data.flag != 1", ev(flag=True))


def test_true_false_null() -> None:
    assert m("data.flag = true", ev(flag=True))
    assert m("data.flag = false", ev(flag=False))
    assert not m("data.flag = false", ev(flag=True))
    assert m("data.flag != false", ev(flag=True))
    assert not m("data.flag = true", ev(flag="true"))
    assert m("data.flag = 'true'", ev(flag="true"))
    assert m("data.n = null", ev(n=None))
    assert not m("data.n = null", ev(n=0))
    assert m("data.n != null", ev(n=""))


def test_words_that_are_not_numbers_stay_strings() -> None:
    assert m("data.v = 1.2.3", ev(v="1.2.3"))
    assert m("data.v = foo-bar_1", ev(v="foo-bar_1"))
    assert m("data.v = 1_000", ev(v="1_000"))
    assert not m("data.v = 1_000", ev(v=1000))
    assert m("data.v = nan", ev(v="nan"))


def test_huge_numbers_do_not_break_parsing() -> None:
    assert m("data.v = " + "9" * 5000, ev(v="9" * 5000))
    assert m("data.v < " + "9" * 200, ev(v=10))


# --- quoting ------------------------------------------------------------------------------


def test_quoted_strings() -> None:
    assert m('data.name = "hello world"', ev(name="hello world"))
    assert m("data.name = 'a and b or (c)'", ev(name="a and b or (c)"))
    assert m("data.name = 'x=1 != <'", ev(name="x=1 != <"))
    assert m("data.name = ''", ev(name=""))
    assert m("data.name = 'and'", ev(name="and"))


def test_backslash_escapes() -> None:
    assert m(r'data.s = "say \"hi\""', ev(s='say "hi"'))
    assert m(r"data.s = 'it\'s'", ev(s="it's"))
    assert m(r"data.s = 'a\\b'", ev(s="a\\b"))
    assert m(r"data.s = 'a\nb\tc'", ev(s="a\nb\tc"))
    assert m(r"data.s = '\q'", ev(s="q"))


# --- globs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("file.*", "file.created", True),
        ("file.*", "file.a.b", True),  # '*' crosses dots
        ("file.*", "files.created", False),
        ("*.txt", "/tmp/a.txt", True),
        ("*.txt", "/tmp/a.txt.bak", False),
        ("a?c", "abc", True),
        ("a?c", "abbc", False),
        ("[ab]x", "bx", True),
        ("[ab]x", "cx", False),
        ("[!ab]x", "cx", True),
        ("[!ab]x", "ax", False),
        ("File.*", "file.created", False),  # case-sensitive
        ("*", "", True),
    ],
)
def test_globs(pattern: str, value: str, expected: bool) -> None:
    assert m(f"data.v = {pattern}", ev(v=value)) is expected
    assert m(f"data.v = '{pattern}'", ev(v=value)) is expected
    assert m(f"data.v != {pattern}", ev(v=value)) is not expected


def test_glob_only_matches_strings() -> None:
    assert not m("data.v = 2*", ev(v=200))
    assert m("data.v != 2*", ev(v=200))


def test_escaped_glob_characters_are_literal() -> None:
    assert m(r"data.v = 'a\*'", ev(v="a*"))
    assert not m(r"data.v = 'a\*'", ev(v="ab"))
    assert m(r"data.v = '\[x]*'", ev(v="[x]yz"))
    assert not m(r"data.v = '\[x]*'", ev(v="xyz"))
    assert m(r"data.v = 'a\?*'", ev(v="a?b"))


def test_glob_characters_are_literal_in_ordering() -> None:
    assert m("data.v > a*", ev(v="b"))
    assert not m("data.v < a*", ev(v="b"))


def test_lone_bracket_is_literal() -> None:
    assert m("data.v = a[b", ev(v="a[b"))


# --- paths --------------------------------------------------------------------------------


def test_top_level_fields() -> None:
    event = Event(type="x.y", origin="n1", target="n2", id="abc")
    assert m("origin = n1 and target = n2 and id = abc", event)
    assert m("kind = event", event)
    request = Request(action="shell.run", args={"cmd": "ls"})
    assert m("kind = request and action = shell.run and args.cmd = ls", request)
    response = Response(request_id="r1", error=ErrorInfo(type="ActionFailed", message="no"))
    assert m("kind = response and request_id = r1 and error.type = ActionFailed", response)
    assert m("error.message = no and duration = 0", response)


def test_nested_dict_paths() -> None:
    event = ev(a={"b": {"c": 5}}, weird={"x-y": 1, "0": "zero"})
    assert m("data.a.b.c = 5", event)
    assert m("data.weird.x-y = 1", event)
    assert m("data.weird.0 = zero", event)  # digits are a key in a dict
    assert not m("data.a.b.c.d = 5", event)
    assert not m("data.a.z = 5", event)


def test_typed_struct_paths() -> None:
    event = FileCreated(data=FileData(path="/a.txt", size=3, tags=("x", "y"), owner={"u": "bo"}))
    assert m("type = file.created and data.path = *.txt", event)
    assert m("data.size >= 3 and data.tags.1 = y and data.owner.u = bo", event)
    assert not m("data.nothing = 1", event)
    started = NodeStarted(data=NodeEventData(node_id="n1", version="2"))
    assert m("type = node.started and data.node_id = n1", started)
    assert m("data.version = 2", started)


def test_list_indexing() -> None:
    event = ev(items=[{"name": "a"}, {"name": "b"}], nested=[[1, 2], [3]])
    assert m("data.items.0.name = a", event)
    assert m("data.items.1.name = b", event)
    assert m("data.nested.1.0 = 3", event)
    assert not m("data.items.2.name = a", event)
    assert not m("data.items.name = a", event)
    assert not m("data.items.-1.name = b", event)
    assert not m("data.items.99999999999999999999999.name = a", event)


def test_methods_and_dunders_are_not_fields() -> None:
    event = ev(size=1)
    for path in ("get", "stop", "replace", "__class__", "__doc__", "data.__class__", "ok"):
        assert resolve_path(event, path) == (False, MISSING)
        assert not m(f"{path} != zzz", event)
    assert resolve_path(Response(request_id="r"), "ok") == (False, MISSING)


def test_missing_field_never_matches() -> None:
    event = ev(size=1)
    for op in ("=", "!=", ">", ">=", "<", "<="):
        assert not m(f"data.nope {op} 1", event)
        assert not m(f"action {op} x", event)
    assert not m("data.size.deeper != 1", event)
    assert not m("data.s != x", Event(type="t", data="not a mapping"))
    assert m("not data.nope = 1", event)


def test_non_message_inputs() -> None:
    for thing in (None, 5, "text", [1], object()):
        assert not m("type = x", thing)
        assert not m("kind != x", thing)
        assert m("*", thing)
    assert m("a.b = 1", {"a": {"b": 1}})


def test_resolve_path() -> None:
    event = FileCreated(data=FileData(path="/p", tags=("t",)))
    assert resolve_path(event, "data.path") == (True, "/p")
    assert resolve_path(event, "data.tags.0") == (True, "t")
    assert resolve_path(event, "kind") == (True, "event")
    assert resolve_path(event, "parent_id") == (True, None)
    assert resolve_path(event, "data.tags.1") == (False, MISSING)
    assert resolve_path({"a": [None]}, "a.0") == (True, None)
    assert resolve_path(MappingProxyType({"a": {"b": 2}}), "a.b") == (True, 2)
    assert resolve_path({"a": 1}, "") == (False, MISSING)
    assert repr(MISSING) == "MISSING"


def test_unset_struct_field_is_missing() -> None:
    class Partial(msgspec.Struct):
        x: int | msgspec.UnsetType = msgspec.UNSET

    assert resolve_path(Partial(), "x") == (False, MISSING)
    assert resolve_path(Partial(x=1), "x") == (True, 1)


# --- boolean structure --------------------------------------------------------------------


def test_and_or_not() -> None:
    event = ev(a=1, b=2)
    assert m("data.a = 1 and data.b = 2", event)
    assert not m("data.a = 1 and data.b = 3", event)
    assert m("data.a = 9 or data.b = 2", event)
    assert not m("data.a = 9 or data.b = 9", event)
    assert m("not data.a = 9", event)
    assert m("not not data.a = 1", event)


def test_and_binds_tighter_than_or() -> None:
    event = ev(a=1, b=0)
    # (a=1) or (a=2 and b=3) is true; (a=1 or a=2) and b=3 would be false.
    assert m("data.a = 1 or data.a = 2 and data.b = 3", event)
    assert not m("(data.a = 1 or data.a = 2) and data.b = 3", event)


def test_not_binds_tighter_than_and() -> None:
    event = ev(a=1, b=3)
    # (not a=1) and b=2 is false; not (a=1 and b=2) would be true.
    assert not m("not data.a = 1 and data.b = 2", event)
    assert m("not (data.a = 1 and data.b = 2)", event)


def test_parentheses_nest() -> None:
    event = ev(a=1, b=2, c=3)
    assert m("((data.a = 1) and ((data.b = 9) or (data.c = 3)))", event)
    assert m("not(data.a=2)and(data.b=2)", event)


def test_long_chains_do_not_recurse() -> None:
    event = ev(v=999)
    text = " or ".join(f"data.v = {i}" for i in range(1000))
    assert m(text, event)
    assert not m(text, ev(v=1000))
    conj = " and ".join(f"data.v != {i}" for i in range(1000, 2000))
    assert m(conj, event)
    assert not m(conj, ev(v=1500))


def test_keywords_are_lowercase_only() -> None:
    with pytest.raises(SelectorError, match="found 'AND'"):
        parse_selector("data.a = 1 AND data.b = 2")
    assert m("data.and = 1", Event(type="t", data={"and": 1}))


# --- shorthand and match-all --------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "*", " * "])
def test_match_everything(text: str) -> None:
    sel = parse_selector(text)
    assert sel.matches(ev())
    assert sel.matches(Request(action="x"))
    assert sel.matches(Response(request_id="r"))
    assert sel.exact_types is None
    assert sel.kinds is None


def test_bare_word_means_type() -> None:
    assert m("file.created", ev("file.created"))
    assert not m("file.created", ev("file.deleted"))
    assert m("file.*", ev("file.deleted"))
    assert not m("file.*", Request(action="file.x"))
    assert m("'odd type'", ev("odd type"))
    assert m("200", ev("200"))
    assert m("true", ev("true"))
    assert m("'and'", ev("and"))


# --- index hints --------------------------------------------------------------------------

EV, REQ, RESP = frozenset({"event"}), frozenset({"request"}), frozenset({"response"})


@pytest.mark.parametrize(
    ("text", "types", "kinds"),
    [
        ("type = file.created", {"file.created"}, EV),
        ("type == file.created", {"file.created"}, EV),
        ("file.created", {"file.created"}, EV),
        ("type = 'file.created'", {"file.created"}, EV),
        ("file.*", None, EV),
        ("type != file.created", None, EV),
        ("type > a", None, EV),
        ("data.size > 1", None, EV),
        ("type = a and data.x = 1", {"a"}, EV),
        ("data.x = 1 and type = a", {"a"}, EV),
        ("type = a and type = b", set(), EV),
        ("type = a or type = b", {"a", "b"}, EV),
        ("type = a or type = b or type = c", {"a", "b", "c"}, EV),
        ("type = a or data.x = 1", None, EV),
        ("type = a or origin = n1", None, None),
        ("(type = a or type = b) and data.x = 1", {"a", "b"}, EV),
        ("(type = a or type = b) and type = b", {"b"}, EV),
        ("not type = a", None, None),
        ("origin = n1", None, None),
        ("kind = event", None, EV),
        ("kind = request or kind = response", None, REQ | RESP),
        ("kind != event", None, None),
        ("kind = ev*", None, None),
        ("action = shell.run", None, REQ),
        ("args.cmd = ls", None, REQ),
        ("request_id = r1", None, RESP),
        ("error.type = X", None, RESP),
        ("action = x or request_id = y", None, REQ | RESP),
        ("action = x and type = y", {"y"}, frozenset()),
        ("data.path = '*.txt'", None, EV),
        ("type = true", None, EV),
    ],
)
def test_exact_types_and_kinds(
    text: str, types: set[str] | None, kinds: frozenset[str] | None
) -> None:
    sel = parse_selector(text)
    assert sel.exact_types == (None if types is None else frozenset(types))
    assert sel.kinds == kinds


def test_exact_types_agree_with_matches() -> None:
    sel = parse_selector("(type = a or type = b) and data.x = 1")
    assert sel.exact_types is not None
    for name in ("a", "b", "c"):
        assert sel.matches(ev(name, x=1)) is (name in sel.exact_types)


# --- syntax errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("type = ", 7, "expected a value after '='"),
        ("type =", 6, "expected a value after '='"),
        ("(type = a", 0, "'(' is never closed"),
        ("((type = a)", 0, "'(' is never closed"),
        ("type = a)", 8, "unexpected ')'"),
        ("(type = a))", 10, "unexpected ')'"),
        ("()", 1, "expected a comparison after '('"),
        ("type => a", 5, "unknown operator '=>'"),
        ("type <> a", 5, "unknown operator '<>'"),
        ("type ! a", 5, "unknown operator '!'"),
        ("type === a", 5, "unknown operator '==='"),
        ("type = a b = c", 9, "expected 'and', 'or' or end of selector, found 'b'"),
        ("type = a 'x'", 9, "expected 'and', 'or' or end of selector"),
        ("type = a and", 12, "expected a comparison after 'and'"),
        ("type = a or", 11, "expected a comparison after 'or'"),
        ("not", 3, "expected a comparison after 'not'"),
        ("and", 0, "expected a comparison, found 'and'"),
        ("or type = a", 0, "expected a comparison, found 'or'"),
        ("type = a and or b = c", 13, "expected a comparison after 'and', found 'or'"),
        ("data.x)", 6, "expected an operator after 'data.x', found ')'"),
        ("a b", 2, "expected an operator after 'a', found 'b'"),
        ("data.x and type = a", 7, "expected an operator after 'data.x', found 'and'"),
        ("= a", 0, "expected a comparison, found '='"),
        ("'type' = a", 0, "expected a comparison, found 'type'"),
        ("type = and", 7, "expected a value after '=', found 'and'"),
        ("type = (a)", 7, "expected a value after '=', found '('"),
        ("type = = a", 7, "expected a value after '=', found '='"),
        ("type = 'abc", 7, "unterminated string"),
        ('type = "abc\\"', 7, "unterminated string"),
        ("data..x = 1", 0, "invalid field name 'data..x'"),
        (".x = 1", 0, "invalid field name"),
        ("x. = 1", 0, "invalid field name"),
        ("data.* = 1", 0, "invalid field name"),
        ("(type = a b)", 10, "expected ')', found 'b'"),
    ],
)
def test_syntax_errors(text: str, position: int, fragment: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_selector(text)
    err = info.value
    assert err.position == position
    assert err.source == text
    assert fragment in str(err)
    assert f"at position {position}" in str(err)


def test_error_message_format() -> None:
    with pytest.raises(SelectorError) as info:
        parse_selector("type = ")
    assert (
        str(info.value)
        == "expected a value after '=', found end of selector at position 7: 'type = '"
    )


def test_deep_nesting_is_a_selector_error() -> None:
    with pytest.raises(SelectorError, match="nests too deeply"):
        parse_selector("(" * 5000 + "a=1" + ")" * 5000)
    with pytest.raises(SelectorError, match="nests too deeply"):
        parse_selector("not " * 5000 + "a=1")
    assert m("(" * 50 + "data.a=1" + ")" * 50, ev(a=1))
    assert m("not " * 50 + "data.a=1", ev(a=1))


# --- the Selector object ------------------------------------------------------------------


def test_selector_is_immutable_and_compares_by_source() -> None:
    sel = parse_selector("type = a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        sel.source = "x"  # type: ignore[misc]
    assert sel == parse_selector("type = a")
    assert sel != parse_selector("type = b")
    assert hash(sel) == hash(parse_selector("type = a"))
    assert sel.source == "type = a"
    assert "type = a" in repr(sel)


def test_selector_pickles_by_source() -> None:
    sel = parse_selector("data.v = a* and type = t")
    copy = pickle.loads(pickle.dumps(sel))
    assert isinstance(copy, Selector)
    assert copy == sel
    assert copy.matches(ev("t", v="abc"))


def test_matches_swallows_errors_from_user_objects() -> None:
    class Touchy(str):
        __hash__ = str.__hash__

        def __eq__(self, other: object) -> bool:
            raise RuntimeError("boom")

    assert not m("data.v = abc", ev(v=Touchy("abc")))


# --- properties ---------------------------------------------------------------------------

_GRAMMAR_TEXT = st.lists(
    st.sampled_from(list("abt.=!<>()*?[]'\"\\ -019e"))
    | st.sampled_from(["and ", "or ", "not ", "type", "data.", "true", "null", " = "]),
    max_size=30,
).map("".join)

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=10,
)

_SELECTORS = [
    "data.a = 1",
    "data.a != x",
    "data.a > 1.5",
    "data.a <= b",
    "data.a.0 = *",
    "data.a.b.c = null",
    "data.a = true or data.0 < 0",
    "not data.a.a = '?'",
    "kind = event",
    "data.a.0.1 >= -3 and data.b != [ab]*",
]


@settings(max_examples=300)
@given(st.text(max_size=60) | _GRAMMAR_TEXT)
def test_any_text_parses_or_raises_selector_error(text: str) -> None:
    error: SelectorError | None = None
    try:
        sel = parse_selector(text)
    except SelectorError as err:
        error = err
    if error is None:
        assert isinstance(sel.matches(ev(a=1)), bool)
    else:
        assert error.position is not None
        assert 0 <= error.position <= len(text)


@settings(max_examples=300)
@given(st.sampled_from(_SELECTORS), _JSON)
def test_matches_never_raises_on_any_data(text: str, data: Any) -> None:
    sel = parse_selector(text)
    assert isinstance(sel.matches(Event(type="t", data=data)), bool)
    assert isinstance(sel.matches(Event(type="t", data={"a": data, "b": data})), bool)


@settings(max_examples=300)
@given(_GRAMMAR_TEXT, _JSON)
def test_arbitrary_selectors_on_arbitrary_data(text: str, data: Any) -> None:
    try:
        sel = parse_selector(text)
    except SelectorError:
        return
    assert isinstance(sel.matches(Event(type="t", data={"a": data})), bool)


_COMPARISON = st.builds(
    "{} {} {}".format,
    st.sampled_from(["type", "kind", "data.a", "data.a.0", "data.a.b", "data.0.a", "origin"]),
    st.sampled_from(["=", "==", "!=", ">", ">=", "<", "<="]),
    st.sampled_from(["1", "-2.5", "x", "a*", "'a b'", '"[ab]?"', "true", "false", "null", "1e3"]),
)
_WELL_FORMED = st.recursive(
    _COMPARISON,
    lambda inner: (
        st.builds("({} and {})".format, inner, inner)
        | st.builds("{} or {}".format, inner, inner)
        | st.builds("not {}".format, inner)
    ),
    max_leaves=8,
)


@settings(max_examples=300)
@given(_WELL_FORMED, _JSON)
def test_well_formed_selectors_parse_and_match_safely(text: str, data: Any) -> None:
    sel = parse_selector(text)
    for message in (
        Event(type="t", data={"a": data}),
        Event(type="t", data=data),
        Request(action="a"),
    ):
        assert isinstance(sel.matches(message), bool)


@given(_JSON, st.sampled_from(["1", "x", "true", "null", "*", "'a'", "-2.5"]))
def test_equal_and_not_equal_partition_present_fields(data: Any, value: str) -> None:
    event = Event(type="t", data={"a": data})
    eq, ne = m(f"data.a = {value}", event), m(f"data.a != {value}", event)
    assert eq is not ne
    assert not m(f"data.zz = {value}", event)
    assert not m(f"data.zz != {value}", event)

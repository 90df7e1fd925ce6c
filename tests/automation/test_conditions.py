"""Hook conditions: each matcher and operator, captures, and the reasons for a miss."""

from __future__ import annotations

import re
from typing import Any

import pytest

from platybus.automation.conditions import Condition, compile_hook_condition
from platybus.config import SourceMap
from platybus.errors import ConfigError
from platybus.messages import Event

SOURCE = SourceMap(root="config.yaml", marks={("hooks", "h", "if"): ("config.yaml", 4)})
EVENT = Event(type="file.created", origin="n1",
              data={"path": "/w/Report-2024.txt", "size": 1200, "kind": "text",
                    "flags": {"hidden": False}, "tags": ["a", "b"], "none": None})


def cond(value: Any) -> Condition:
    return compile_hook_condition(value, ("hooks", "h", "if"), SOURCE.error)


def check(value: Any, event: Event = EVENT) -> tuple[bool, str | None]:
    c = cond(value)
    ok = c.type_matches(event.type) and c.match(event) is not None
    return ok, c.why(event)


@pytest.mark.parametrize(("condition", "matches"), [
    ({"type": "file.created"}, True),
    ({"type": "file.*"}, True),
    ({"type": ["dir.*", "file.created"]}, True),
    ({"type": "file.deleted"}, False),
    ({}, True),
    ({"data.kind": "text"}, True),
    ({"data.kind": "image"}, False),
    ({"data.size": 1200}, True),
    ({"data.size": "1200"}, False),
    ({"data.flags.hidden": False}, True),
    ({"data.flags.hidden": 0}, False),
    ({"data": {"flags": {"hidden": False}}}, True),
    ({"data.tags": ["a", "b"]}, True),
    ({"data.tags.0": "a"}, True),
    ({"data.none": None}, True),
    ({"origin": "n1"}, True),
    ({"data.size": {"$eq": 1200}}, True),
    ({"data.size": {"$ne": 5}}, True),
    ({"data.size": {"$ne": 1200}}, False),
    ({"data.missing": {"$ne": 1}}, True),
    ({"data.size": {"$gt": 1000}}, True),
    ({"data.size": {"$gt": 1200}}, False),
    ({"data.size": {"$gte": 1200}}, True),
    ({"data.size": {"$lt": 1200}}, False),
    ({"data.size": {"$lte": 1200}}, True),
    ({"data.size": {"$gt": 100, "$lt": 2000}}, True),
    ({"data.kind": {"$gt": "a"}}, True),
    ({"data.kind": {"$gt": 1}}, False),
    ({"data.size": {"$gt": "a"}}, False),
    ({"data.kind": {"$in": ["text", "image"]}}, True),
    ({"data.kind": {"$in": ["image"]}}, False),
    ({"data.size": {"$exists": True}}, True),
    ({"data.missing": {"$exists": True}}, False),
    ({"data.missing": {"$exists": False}}, True),
    ({"data.none": {"$exists": True}}, True),
    ({"data.path": {"$regex": r"\.txt$"}}, True),
    ({"data.path": {"$regex": r"\.jpg$"}}, False),
    ({"data.size": {"$regex": "1"}}, False),
    ({"data.path": {"$glob": "/w/*.txt"}}, True),
    ({"data.path": {"$glob": "*.jpg"}}, False),
    ("type=file.created and data.size > 1000", True),
    ("type=file.created and data.size > 5000", False),
    ("file.*", True),
])
def test_matchers_and_operators(condition: Any, matches: bool) -> None:
    ok, why = check(condition)
    assert ok is matches
    assert (why is None) is matches


def test_regex_named_groups_are_captured() -> None:
    c = cond({"type": "file.created",
              "data.path": {"$regex": r"(?P<name>[A-Za-z]+)-(?P<year>\d+)\.(?P<ext>\w+)$"}})
    assert c.match(EVENT) == {"name": "Report", "year": "2024", "ext": "txt"}
    assert c.capture_names == {"name", "year", "ext"}


@pytest.mark.parametrize(("condition", "reason"), [
    ({"type": "file.deleted"}, "type 'file.created' does not match 'file.deleted'"),
    ({"data.kind": "image"}, "data.kind is 'text', not 'image'"),
    ({"data.missing": 1}, "data.missing is missing"),
    ({"data.size": {"$gt": 5000}}, "data.size is 1200, not > 5000"),
    ({"data.kind": {"$lt": 3}}, "data.kind is 'text', not a number to compare with 3"),
    ({"data.kind": {"$in": ["a", "b"]}}, "data.kind is 'text', not one of [\"a\",\"b\"]"),
    ({"data.size": {"$exists": False}}, "data.size exists (1200)"),
    ({"data.path": {"$regex": r"\.jpg$"}},
     r"data.path '/w/Report-2024.txt' does not match regex '\.jpg$'"),
    ({"data.size": {"$regex": "x"}}, "data.size is 1200, not a string to match regex 'x'"),
    ({"data.size": {"$ne": 1200}}, "data.size is 1200, which $ne excludes"),
    ("data.size > 5000", "selector 'data.size > 5000' does not match"),
])
def test_a_miss_says_which_field_failed_and_why(condition: Any, reason: str) -> None:
    assert check(condition) == (False, reason)


def test_first_failing_field_is_reported() -> None:
    ok, why = check({"data.kind": "text", "data.size": {"$lt": 10}, "data.path": "x"})
    assert not ok
    assert why == "data.size is 1200, not < 10"


def test_exact_types_feed_the_candidate_index() -> None:
    assert cond({"type": "file.created"}).exact_types == {"file.created"}
    assert cond({"type": "file.*"}).exact_types is None
    assert cond("type=file.created and data.size > 1").exact_types == {"file.created"}


@pytest.mark.parametrize(("condition", "message"), [
    (5, "expected a mapping"),
    ({"data.size": {"$gtt": 1}}, "unknown operator '$gtt'; did you mean '$gt'"),
    ({"data.size": {"$gt": 1, "x": 2}}, "mix of operators"),
    ({"data.path": {"$regex": "("}}, "invalid regex"),
    ({"data.path": {"$in": "abc"}}, "$in needs a list"),
    ({"data.path": {"$exists": "yes"}}, "$exists needs true or false"),
    ({"data.size": {"$gt": [1]}}, "$gt needs a number or a string"),
    ({"data.__class__": 1}, "do not start with '_'"),
    ({"$or": []}, "expected a field name"),
    ({"type": []}, "expected an event type"),
    ({"data.path": "${event.data.x}"}, "not evaluated here"),
    ("type = = x", "invalid selector"),
])
def test_bad_conditions_are_config_errors(condition: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        cond(condition)
    assert info.value.file == "config.yaml"
    assert info.value.line == 4
    assert info.value.key is not None
    assert info.value.key.startswith("hooks.h.if")

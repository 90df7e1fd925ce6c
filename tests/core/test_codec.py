"""The wire format: round trips, typed events, and a decoder that only raises DecodeError."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from platybus.codec import Codec
from platybus.errors import DecodeError
from platybus.messages import (
    ErrorInfo,
    Event,
    EventTypes,
    NodeEventData,
    NodeStarted,
    Request,
    Response,
)

codec = Codec()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
names = st.from_regex(r"[a-z][a-z0-9_]{0,8}(\.[a-z][a-z0-9_]{0,8}){0,3}", fullmatch=True)
node_ids = st.none() | st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)

events = st.builds(
    Event, type=names.filter(lambda t: t not in codec.types),
    data=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    origin=node_ids, target=node_ids, parent_id=node_ids,
)
requests = st.builds(
    Request, action=names, args=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    target=node_ids, timeout=st.none() | st.floats(0, 1e6),
)
responses = st.builds(
    Response, request_id=st.text(min_size=1, max_size=12), output=json_values,
    error=st.none() | st.builds(ErrorInfo, type=st.text(max_size=10), message=st.text()),
    duration=st.floats(0, 1e6),
)


@given(st.one_of(events, requests, responses))
def test_encode_then_decode_is_the_identity(message: Any) -> None:
    assert codec.decode(codec.encode(message)) == message


@given(st.binary(max_size=200))
def test_garbage_bytes_only_ever_raise_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        codec.decode(data)


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(["kind", "type", "data", "id", "ts", "action", "args",
                                        "request_id", "error", "origin", "target"]),
                       json_values | st.sampled_from(["event", "request", "response",
                                                      "node.started"]),
                       max_size=8))
def test_wrong_shapes_only_ever_raise_decode_error(obj: dict[str, Any]) -> None:
    try:
        message = codec.decode(json.dumps(obj).encode())
    except DecodeError:
        return
    assert message.kind == obj["kind"]


def test_known_type_decodes_to_its_class_with_typed_data() -> None:
    started = NodeStarted(data=NodeEventData(node_id="a", version="1"))
    decoded = codec.decode(codec.encode(started))
    assert type(decoded) is NodeStarted
    assert decoded.data.node_id == "a"


def test_unknown_type_stays_a_generic_event_with_type_and_data() -> None:
    raw = b'{"kind":"event","type":"garden.watered","data":{"litres":3}}'
    event = codec.decode(raw)
    assert type(event) is Event
    assert event.type == "garden.watered"
    assert event.data == {"litres": 3}


def test_known_type_with_wrong_data_says_what_is_wrong() -> None:
    with pytest.raises(DecodeError, match=r"node.started.*node_id"):
        codec.decode(b'{"kind":"event","type":"node.started","data":{}}')


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{nope", "malformed JSON"),
        (b"[1,2]", "Expected `object`"),
        (b'{"kind":"command"}', "unknown message kind 'command'"),
        (b'{"kind":"event","type":""}', "'type' must be a non-empty string"),
        (b'{"kind":"request","action":5}', "Expected `str`"),
        (b'{"kind":"response"}', "request_id"),
    ],
)
def test_bad_messages_raise_decode_error_saying_why(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        codec.decode(raw)


def test_size_limit_is_enforced_before_parsing() -> None:
    small = Codec(max_size=100)
    big = Event(type="x", data={"blob": "a" * 200})
    with pytest.raises(DecodeError, match="exceeds the maximum of 100 bytes"):
        small.decode(codec.encode(big))


def test_wire_never_names_python_code() -> None:
    # A payload that names a class is just data: nothing is imported or built from it.
    raw = b'{"kind":"event","type":"os.system","data":{"__class__":"os:system","cmd":"rm"}}'
    event = codec.decode(raw)
    assert type(event) is Event
    assert event.data["__class__"] == "os:system"


def test_event_types_registry_refuses_a_second_class_for_a_name() -> None:
    class Other(Event, tag="event", frozen=True, kw_only=True):
        type: str = "node.started"
        data: dict[str, Any] = msgspec.field(default_factory=dict)

    types = EventTypes()
    with pytest.raises(Exception, match="already registered"):
        types.register(Other)
    assert "node.started" in types.names()


# -- bounded decoding -------------------------------------------------------------

def nested(levels: int) -> bytes:
    """An event whose data nests ``levels`` arrays (the event itself is one more level)."""
    return (b'{"kind":"event","type":"deep.data","data":' + b"[" * levels + b"]" * levels + b"}")


def test_deeply_nested_json_is_a_decode_error_not_a_recursion_error() -> None:
    with pytest.raises(DecodeError, match="nested deeper than the maximum of 64 levels"):
        codec.decode(nested(5000))
    with pytest.raises(DecodeError, match="nested deeper"):
        codec.decode(nested(5000).decode())  # the same as text


def test_depth_limit_counts_the_message_itself_and_ignores_brackets_in_strings() -> None:
    assert isinstance(codec.decode(nested(63)), Event)
    with pytest.raises(DecodeError, match="nested deeper"):
        codec.decode(nested(64))
    text = b'{"kind":"event","type":"a.b","data":"' + b"[{" * 5000 + b'\\"]"}'
    assert codec.decode(text).data.startswith("[{")  # type: ignore[attr-defined]


def test_depth_limit_is_configurable() -> None:
    shallow = Codec(max_depth=3)
    assert isinstance(shallow.decode(nested(2)), Event)
    with pytest.raises(DecodeError, match="maximum of 3 levels"):
        shallow.decode(nested(3))
    with pytest.raises(DecodeError, match="nested deeper"):
        shallow.decode_json(b"[[[[1]]]]")


def test_unbalanced_deep_json_is_a_decode_error() -> None:
    for data in (b"[" * 100_000, b'{"kind":"event","type":"a.b","data":' + b"[" * 100_000,
                 b"[" * 100_000 + b"]"):
        with pytest.raises(DecodeError):
            codec.decode(data)
        with pytest.raises(DecodeError):
            codec.decode_json(data)


def test_a_str_with_a_lone_surrogate_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="surrogates not allowed"):
        codec.decode('{"kind": "event", "type": "a.b", "data": "\ud800"}')
    with pytest.raises(DecodeError, match="surrogates"):
        codec.decode_json("\udfff")


def test_oversized_text_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="exceeds the maximum"):
        Codec(max_size=100).decode_json("[" + "1," * 100 + "1]")


def test_from_builtins_with_unencodable_objects_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        codec.from_builtins({"kind": "event", "type": "a.b", "data": object()})


def test_an_event_asked_for_by_type_and_data_gets_the_checks_of_the_wire() -> None:
    types = EventTypes()
    strict = Codec(types, max_size=200)
    event = strict.event("garden.watered", {"litres": 3}, origin="n1", parent_id="p1")
    assert (type(event), event.type, event.data, event.origin, event.parent_id) == (
        Event, "garden.watered", {"litres": 3}, "n1", "p1")
    assert type(strict.event("node.started", {"node_id": "n1"})) is NodeStarted
    with pytest.raises(DecodeError, match="must be dotted words"):
        strict.event("not a type")
    with pytest.raises(DecodeError, match=r"node.started.*node_id"):
        strict.event("node.started", {})
    with pytest.raises(DecodeError, match="exceeds the maximum of 200 bytes"):
        strict.event("x.y", {"blob": "a" * 300})
    with pytest.raises(DecodeError, match="invalid message"):
        strict.event("x.y", {"thing": object()})


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{nope", "malformed"),
        (b'{"kind":"command"}', "unknown_kind"),
        (b'{"type":"x"}', "unknown_kind"),
        (b'{"kind":"response"}', "invalid"),
        (b'{"kind":"event","type":"x","data":"' + b"a" * 2000 + b'"}', "too_large"),
    ],
)
def test_decode_errors_name_their_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        Codec(max_size=1000).decode(raw)
    assert caught.value.details["reason"] == reason

"""The bus: ordering, priorities, stop(), blocking handlers, back-pressure, requests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from platybus.bus import Bus, BusConfig
from platybus.errors import (
    BusError,
    DuplicateSubscriberError,
    NodeNotReady,
    QueueFullError,
)
from platybus.expr import parse_selector
from platybus.link.loopback import LoopbackHub, LoopbackLink
from platybus.messages import ErrorInfo, Event, Request, Response


@pytest.fixture
def bus() -> Iterator[Bus]:
    b = Bus("n1")
    b.start()
    yield b
    b.stop()


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def test_publish_delivers_in_order_to_matching_subscribers(bus: Bus) -> None:
    seen: list[int] = []
    other: list[str] = []
    bus.subscribe("sensor.*", lambda e: seen.append(e.data["n"]))
    bus.subscribe("type=light.on", lambda e: other.append(e.type))
    for n in range(100):
        bus.publish(Event(type="sensor.read", data={"n": n}))
    bus.publish(Event(type="light.on"))
    wait_for(lambda: len(seen) == 100 and other)
    assert seen == list(range(100))
    assert other == ["light.on"]


def test_expression_selector_filters_on_data(bus: Bus) -> None:
    seen: list[str] = []
    bus.subscribe("type=file.created and data.path=*.txt", lambda e: seen.append(e.data["path"]))
    for path in ("a.txt", "b.png", "c.txt"):
        bus.publish(Event(type="file.created", data={"path": path}))
    bus.publish(Event(type="file.deleted", data={"path": "d.txt"}), synchronous=True)
    assert seen == ["a.txt", "c.txt"]


def test_lower_priority_runs_first_and_stop_ends_the_chain(bus: Bus) -> None:
    order: list[str] = []

    def first(event: Event) -> None:
        order.append("first")
        if event.data.get("stop"):
            event.stop()

    bus.subscribe("x", lambda e: order.append("late"), priority=200)
    bus.subscribe("x", first, priority=10)
    bus.subscribe("x", lambda e: order.append("default"))
    bus.publish(Event(type="x"), synchronous=True)
    assert order == ["first", "default", "late"]
    order.clear()
    bus.publish(Event(type="x", data={"stop": True}), synchronous=True)
    assert order == ["first"]


def test_stop_outside_a_handler_is_an_error() -> None:
    with pytest.raises(BusError, match="only works inside a handler"):
        Event(type="x").stop()


def test_nested_publish_is_queued_not_recursed(bus: Bus) -> None:
    order: list[str] = []

    def on_a(event: Event) -> None:
        order.append("a-start")
        bus.publish(Event(type="b"))
        order.append("a-end")

    bus.subscribe("a", on_a)
    bus.subscribe("a", lambda e: order.append("a-second"), priority=200)
    bus.subscribe("b", lambda e: order.append("b"))
    bus.publish(Event(type="a"))
    wait_for(lambda: "b" in order)
    assert order == ["a-start", "a-end", "a-second", "b"]


def test_failing_handler_is_logged_and_others_still_run(
    bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    def broken(event: Event) -> None:
        raise ValueError("boom")

    bus.subscribe("x", broken, id="broken", priority=1)
    bus.subscribe("x", lambda e: seen.append("ok"))
    bus.publish(Event(type="x"), synchronous=True)
    assert seen == ["ok"]
    assert bus.stats().handler_errors == 1
    record = next(r for r in caplog.records if "handler broken failed" in r.getMessage())
    assert record.exc_info is not None
    assert "boom" in str(record.exc_info[1])


def test_blocking_handler_does_not_stall_the_dispatcher(bus: Bus) -> None:
    release = threading.Event()
    fast: list[int] = []
    bus.subscribe("slow", lambda e: release.wait(5), blocking=True)
    bus.subscribe("fast", lambda e: fast.append(1))
    bus.publish(Event(type="slow"))
    bus.publish(Event(type="fast"))
    wait_for(lambda: fast == [1])
    release.set()


def test_synchronous_publish_returns_results_including_blocking_handlers(bus: Bus) -> None:
    bus.subscribe("q", lambda e: "inline", priority=1)
    bus.subscribe("q", lambda e: "pooled", blocking=True, priority=2)
    assert bus.publish(Event(type="q"), synchronous=True) == ["inline", "pooled"]


def test_duplicate_subscriber_id_is_an_error_and_unsubscribe_removes(bus: Bus) -> None:
    seen: list[int] = []
    sub = bus.subscribe("x", lambda e: seen.append(1), id="mine")
    with pytest.raises(DuplicateSubscriberError, match="mine"):
        bus.subscribe("x", lambda e: None, id="mine")
    bus.publish(Event(type="x"), synchronous=True)
    sub.unsubscribe()
    sub.unsubscribe()  # idempotent
    bus.publish(Event(type="x"), synchronous=True)
    assert seen == [1]
    bus.subscribe("x", lambda e: None, id="mine")  # the id is free again


def test_reject_policy_counts_and_raises_when_full() -> None:
    bus = Bus("n1", BusConfig(queue_size=3, policy="reject"))  # not started: nothing drains
    for _ in range(3):
        bus.publish(Event(type="x"))
    with pytest.raises(QueueFullError, match="full"):
        bus.publish(Event(type="x"))
    assert bus.stats().rejected == 1
    assert bus.stats().queue_depth == 3
    bus.stop()


def test_block_policy_waits_for_room_then_gives_up() -> None:
    bus = Bus("n1", BusConfig(queue_size=1, policy="block", block_timeout=0.2))
    seen: list[str] = []
    bus.subscribe("x", lambda e: seen.append(e.data["n"]))
    bus.publish(Event(type="x", data={"n": "first"}))
    with pytest.raises(QueueFullError):
        bus.publish(Event(type="x", data={"n": "never"}))
    # Once the dispatcher drains, a blocked producer gets through.
    starter = threading.Timer(0.05, bus.start)
    starter.start()
    bus.publish(Event(type="x", data={"n": "second"}))
    starter.join()
    wait_for(lambda: len(seen) == 2)
    assert seen == ["first", "second"]
    bus.stop()


def test_a_thread_that_never_waits_is_refused_at_once_under_block() -> None:
    # block_timeout is far beyond the test's time limit: waiting at all would fail it.
    bus = Bus("n1", BusConfig(queue_size=1, policy="block", block_timeout=3600))
    bus.publish(Event(type="x"))  # not started: the queue stays full
    with bus.never_wait(), pytest.raises(QueueFullError, match="full"):
        bus.publish(Event(type="x"))
    assert bus.stats().rejected == 1
    # Outside the block the thread waits again; a producer that waits gets through.
    threading.Timer(0.05, bus.start).start()
    bus.publish(Event(type="x"))
    bus.stop()


def test_messages_published_before_start_are_delivered_after() -> None:
    bus = Bus("n1")
    seen: list[str] = []
    bus.subscribe("x", lambda e: seen.append(e.id))
    event = Event(type="x")
    bus.publish(event)
    bus.start()
    wait_for(lambda: seen == [event.id])
    bus.stop()
    bus.stop()
    with pytest.raises(NodeNotReady):
        bus.publish(Event(type="x"))


def echo_responder(bus: Bus) -> None:
    def serve(request: Request) -> None:
        if request.action == "test.silent":
            return
        bus.publish(Response(request_id=request.id, target=request.origin,
                             output={"echo": request.args}))

    bus.subscribe("kind=request", serve, blocking=True)


def test_request_returns_the_response(bus: Bus) -> None:
    echo_responder(bus)
    response = bus.request(Request(action="test.echo", args={"a": 1}), timeout=5)
    assert response.ok
    assert response.output == {"echo": {"a": 1}}


def test_request_times_out_with_a_clear_error(bus: Bus) -> None:
    echo_responder(bus)
    response = bus.request(Request(action="test.silent"), timeout=0.2)
    assert response.error is not None
    assert response.error.type == "RequestTimeout"
    assert "test.silent" in response.error.message
    assert "0.2s" in response.error.message
    assert bus.stats().pending_replies == 0


def test_on_reply_callback_gets_the_response_or_a_timeout(bus: Bus) -> None:
    echo_responder(bus)
    replies: list[Response] = []
    bus.publish(Request(action="test.echo", args={"n": 1}), on_reply=replies.append, timeout=5)
    bus.publish(Request(action="test.silent"), on_reply=replies.append, timeout=0.1)
    wait_for(lambda: len(replies) == 2)
    by_kind = {r.ok: r for r in replies}
    assert by_kind[True].output == {"echo": {"n": 1}}
    assert isinstance(by_kind[False].error, ErrorInfo)
    assert by_kind[False].error.type == "RequestTimeout"


def test_request_for_another_node_without_a_link_fails_fast(bus: Bus) -> None:
    started = time.monotonic()
    response = bus.request(Request(action="node.ping", target="elsewhere"), timeout=5)
    assert time.monotonic() - started < 4
    assert response.error is not None
    assert response.error.type == "NoRouteError"
    assert "elsewhere" in response.error.message


def test_transport_receives_messages_for_other_nodes(bus: Bus) -> None:
    other = Bus("other")
    other.start()
    hub = LoopbackHub()
    links = [LoopbackLink("n1", hub, outgoing=parse_selector("nothing")),
             LoopbackLink("other", hub)]
    links[0].start(bus)
    links[1].start(other)
    try:
        sent: list[Any] = []
        other.subscribe("*", sent.append)
        local: list[Event] = []
        bus.subscribe("x", local.append)
        bus.publish(Event(type="x", target="other"))
        bus.publish(Request(action="a.b", target="other"))
        bus.publish(Event(type="x", target="n1"), synchronous=True)
        wait_for(lambda: len(sent) == 2)
    finally:
        for joined in links:
            joined.stop()
        other.stop()
    assert [(m.kind, m.origin) for m in sent] == [("event", "n1"), ("request", "n1")]
    assert [e.target for e in local] == ["n1"]


def test_request_from_the_dispatcher_is_refused(bus: Bus) -> None:
    errors: list[BaseException] = []

    def handler(event: Event) -> None:
        try:
            bus.request(Request(action="a.b"))
        except BusError as error:
            errors.append(error)

    bus.subscribe("x", handler)
    bus.publish(Event(type="x"), synchronous=True)
    assert errors
    assert "would block the dispatcher" in str(errors[0])


def test_stats_count_published_and_delivered(bus: Bus) -> None:
    bus.subscribe("x", lambda e: None)
    bus.subscribe("x", lambda e: None)
    for _ in range(10):
        bus.publish(Event(type="x"))
    bus.publish(Event(type="y"), synchronous=True)
    stats = bus.stats()
    assert stats.published == 11
    assert stats.delivered == 20
    assert stats.queue_depth == 0
    assert stats.latency_max_ms >= stats.latency_p50_ms >= 0


def test_publish_from_many_threads_loses_nothing(bus: Bus) -> None:
    seen: list[tuple[int, int]] = []
    bus.subscribe("x", lambda e: seen.append((e.data["t"], e.data["n"])))

    def produce(t: int) -> None:
        for n in range(2000):
            bus.publish(Event(type="x", data={"t": t, "n": n}))

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_for(lambda: len(seen) == 8000)
    for t in range(4):
        assert [n for tt, n in seen if tt == t] == list(range(2000))


def test_a_reply_callback_may_publish(bus: Bus) -> None:
    echoed: list[str] = []
    bus.subscribe("reply.seen", lambda e: echoed.append(e.data["error"]))

    def on_reply(response: Response) -> None:
        assert response.error is not None
        bus.publish(Event(type="reply.seen", data={"error": response.error.type}))

    bus.publish(Request(action="nobody.listens"), on_reply=on_reply, timeout=0.05)
    wait_for(lambda: echoed == ["RequestTimeout"])

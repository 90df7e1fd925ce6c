"""The client library against a real Redis: subscribe, publish, request, reconnect, queueing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from platybus.client import Client
from platybus.errors import (
    ArgumentError,
    DuplicateSubscriberError,
    LinkError,
    NodeNotReady,
    QueueFullError,
)
from platybus.messages import Event, Request, Response

Launcher = Callable[..., Any]


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def make_client(redis_url: str, prefix: str, secret: str) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(connect: bool = True, url: str | None = None, **options: Any) -> Client:
        options.setdefault("secret", secret)
        c = Client(url or redis_url, prefix=prefix, timeout=5, **options)
        made.append(c)
        if connect:
            c.connect()
        return c

    yield make
    for c in made:
        c.disconnect()


def test_publish_reaches_subscribers_of_other_clients_once(
        make_client: Callable[..., Client]) -> None:
    listener, talker = make_client(), make_client()
    got: list[Event] = []
    other: list[Event] = []
    sub = listener.subscribe("type=chat.*", got.append)
    listener.subscribe("type=weather.*", other.append, subscriber="weather")
    with pytest.raises(DuplicateSubscriberError):
        listener.subscribe("*", print, subscriber="weather")
    for n in range(50):
        talker.publish(Event(type="chat.said", data={"n": n}))
    talker.publish(Event(type="news.flash"))
    assert wait_for(lambda: len(got) >= 50)
    time.sleep(0.2)
    assert [e.data["n"] for e in got] == list(range(50))
    assert {e.origin for e in got} == {talker.id}
    assert other == []
    assert listener.unsubscribe(sub) is True
    assert listener.unsubscribe(sub) is False
    talker.publish(Event(type="chat.said", data={"n": 99}))
    talker.publish(Event(type="weather.rain"))
    assert wait_for(lambda: len(other) == 1)
    assert len(got) == 50


def test_request_to_a_node_and_to_a_node_that_is_not_there(
        launch: Launcher, make_client: Callable[..., Client]) -> None:
    launch("B")
    c = make_client()
    response = c.request("B", "probe.echo", {"value": "hello"})
    assert response.ok
    assert response.output == "hello"
    assert response.origin == "B"
    missing = c.request("nowhere", "node.ping", timeout=0.3)
    assert missing.error is not None
    assert missing.error.type == "RequestTimeout"
    assert "node 'nowhere' did not answer" in missing.error.message
    with pytest.raises(ArgumentError):
        c.request("*", "node.ping")


def test_concurrent_requests_from_two_clients_get_their_own_answers(
        launch: Launcher, make_client: Callable[..., Client]) -> None:
    launch("B")
    clients = [make_client(), make_client()]
    results: dict[tuple[int, int], Any] = {}

    def ask(index: int) -> None:
        for n in range(30):
            results[(index, n)] = clients[index].request("B", "probe.echo",
                                                         {"value": [index, n]}).output

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {(i, n): [i, n] for i in range(2) for n in range(30)}


def test_publish_a_request_with_on_reply(
        launch: Launcher, make_client: Callable[..., Client]) -> None:
    launch("B")
    c = make_client()
    replies: list[Response] = []
    done = threading.Event()

    def on_reply(response: Response) -> None:
        replies.append(response)
        done.set()

    c.publish(Request(action="probe.whoami", target="B"), on_reply=on_reply)
    assert done.wait(5)
    assert replies[0].output == "B"
    with pytest.raises(ArgumentError):
        c.publish(Event(type="x.y"), on_reply=on_reply)
    errors: list[Exception] = []
    c.publish(Event(type="x.y"), on_reply=on_reply, on_error=errors.append)
    assert isinstance(errors[0], ArgumentError)


def test_publishes_while_disconnected_are_sent_on_connect(
        make_client: Callable[..., Client]) -> None:
    listener = make_client()
    got: list[Event] = []
    listener.subscribe("type=queued.*", got.append)
    late = make_client(connect=False, max_queued=3)
    for n in range(3):
        late.publish(Event(type="queued.one", data={"n": n}))
    with pytest.raises(QueueFullError):
        late.publish(Event(type="queued.one", data={"n": 3}))
    late.publish(Event(type="queued.one", data={"n": 4}), on_error="ignore")
    with pytest.raises(NodeNotReady):
        late.request("B", "node.ping")
    time.sleep(0.2)
    assert got == []
    late.connect()
    assert wait_for(lambda: len(got) == 3)
    assert [e.data["n"] for e in got] == [0, 1, 2]


def test_reconnect_after_redis_comes_back_sends_what_was_published(
        own_redis: Any, make_client: Callable[..., Client]) -> None:
    listener = make_client(url=own_redis.url)
    talker = make_client(url=own_redis.url, config=None)
    got: list[Event] = []
    link_events: list[Event] = []
    listener.subscribe("type=gone.*", got.append)
    talker.subscribe("type=node.link.*", link_events.append)
    own_redis.stop()
    for n in range(20):
        talker.publish(Event(type="gone.while.down", data={"n": n}))
    assert wait_for(lambda: any(e.type == "node.link.down" for e in link_events))
    assert not talker.connected
    own_redis.start()
    talker.reconnect(attempts=20, delay=0.5)
    assert talker.connected
    assert wait_for(lambda: len(got) >= 20)
    assert [e.data["n"] for e in got] == list(range(20))
    assert wait_for(lambda: link_events[-1].type == "node.link.up")
    assert talker.stats()["reconnects"] >= 1


def test_reconnect_of_a_disconnected_client_and_connect_to_nothing(
        make_client: Callable[..., Client], redis_url: str) -> None:
    c = make_client(connect=False)
    c.reconnect(attempts=2, delay=2.0)
    assert c.connected
    c.reconnect(attempts=3, delay=2.0)  # already up: nothing to do
    assert c.connected
    dead = "redis://127.0.0.1:1/0"
    nowhere = make_client(connect=False, url=dead)
    started = time.monotonic()
    with pytest.raises(LinkError, match="cannot reach Redis"):
        nowhere.reconnect(attempts=2, delay=0.2)
    assert time.monotonic() - started < 5
    assert not nowhere.connected


def test_a_durable_client_resumes_and_a_throwaway_one_cleans_up(
        make_client: Callable[..., Client], redis_url: str, prefix: str) -> None:
    talker = make_client()
    durable = make_client(connect=False, client_id="recorder")
    got: list[int] = []
    durable.subscribe("type=log.*", lambda e: got.append(e.data["n"]))
    durable.connect()
    talker.publish(Event(type="log.line", data={"n": 0}))
    assert wait_for(lambda: got == [0])
    durable.disconnect()
    for n in range(1, 4):
        talker.publish(Event(type="log.line", data={"n": n}))
    time.sleep(0.2)
    durable.connect()
    assert wait_for(lambda: got == [0, 1, 2, 3])

    throwaway = make_client()
    r = redis.Redis.from_url(redis_url)
    try:
        groups = {g["name"].decode() for g in r.xinfo_groups(f"{prefix}:events")}
        assert {"recorder", throwaway.id} <= groups
        throwaway.disconnect()
        groups = {g["name"].decode() for g in r.xinfo_groups(f"{prefix}:events")}
        assert throwaway.id not in groups
        assert "recorder" in groups
    finally:
        r.close()


def test_disconnect_from_inside_a_callback(make_client: Callable[..., Client]) -> None:
    listener, talker = make_client(), make_client()
    listener.subscribe("type=bye", lambda e: listener.disconnect())
    talker.publish(Event(type="bye"))
    assert listener.wait(10) is True
    assert wait_for(lambda: not listener.connected)


def test_wait_returns_after_the_duration_when_still_connected(
        make_client: Callable[..., Client]) -> None:
    c = make_client()
    assert c.wait(0.05) is False


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ArgumentError, match="url must start with"):
        Client("http://localhost")
    with pytest.raises(ArgumentError, match="secret must be at least"):
        Client(secret="short")
    with pytest.raises(ArgumentError, match="client_id"):
        Client(client_id="bad id")


def test_the_documented_example_runs(launch: Launcher, redis_url: str, prefix: str,
                                     secret: str) -> None:
    import subprocess
    import sys
    from pathlib import Path

    launch("kitchen")
    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "client_example.py"
    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": redis_url, "PLATYBUS_PREFIX": prefix,
           "PLATYBUS_SECRET": secret}
    done = subprocess.run([sys.executable, str(example), "kitchen"], capture_output=True,
                          text=True, timeout=30, env=env, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "pong from kitchen"
    assert lines[1].startswith("script.hello from client-")

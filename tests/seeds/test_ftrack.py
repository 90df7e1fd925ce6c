"""ftrack's event hub client examples, translated, over a real redis-server."""

from __future__ import annotations

import threading
import uuid

import pytest

from platybus.client import Client
from platybus.errors import LinkError
from platybus.messages import Event

SECRET = "seed-secret-0123456789"


def test_subscribe_by_topic_with_subscriber_metadata_and_publish(redis_url: str) -> None:
    prefix = f"seed{uuid.uuid4().hex[:8]}"
    got: list[Event] = []
    arrived = threading.Event()

    def my_callback(event: Event) -> None:
        got.append(event)
        arrived.set()

    listener = Client(redis_url, prefix=prefix, secret=SECRET)
    sender = Client(redis_url, prefix=prefix, secret=SECRET)
    listener.connect()
    sender.connect()
    try:
        # ftrack: session.event_hub.subscribe('topic=my-company.some-topic', my_callback,
        #                                     subscriber={'id': 'my-subscriber'})
        sub_id = listener.subscribe("topic=my-company.some-topic", my_callback,
                                    subscriber={"id": "my-subscriber", "app": "maya"},
                                    priority=50)
        assert sub_id == "my-subscriber"
        found = listener.get_subscriber_by_identifier("my-subscriber")
        assert found is not None
        assert found.metadata == {"id": "my-subscriber", "app": "maya"}
        assert found.priority == 50
        assert listener.get_subscriber_by_identifier("nobody") is None

        sender.publish(Event(type="my-company.other-topic", data={"n": 0}))
        sender.publish(Event(type="my-company.some-topic", data={"n": 1}))
        assert arrived.wait(10)
        listener.wait(0.2)
        assert [e.data["n"] for e in got] == [1]
    finally:
        sender.disconnect()
        listener.disconnect()


def test_a_synchronous_publish_returns_the_local_subscribers_results(redis_url: str) -> None:
    prefix = f"seed{uuid.uuid4().hex[:8]}"
    other = Client(redis_url, prefix=prefix, secret=SECRET)
    remote_calls: list[Event] = []
    other.subscribe("topic=my-company.some-topic", remote_calls.append)
    with Client(redis_url, prefix=prefix, secret=SECRET) as client, other:
        client.subscribe("topic=my-company.some-topic", lambda e: e.data["x"] * 2)
        client.subscribe("topic=my-company.some-topic", lambda e: "second", priority=200)
        results = client.publish(Event(type="my-company.some-topic", data={"x": 21}),
                                 synchronous=True)
        assert results == [42, "second"]
        # Local only, as the hub documents: the other client never sees it.
        client.publish(Event(type="my-company.marker"))
        seen = threading.Event()
        other.subscribe("my-company.marker", lambda e: seen.set())
        client.publish(Event(type="my-company.marker"))
        assert seen.wait(10)
        assert remote_calls == []


def test_connect_disconnect_and_reconnect_keep_working(redis_url: str) -> None:
    client = Client(redis_url, prefix=f"seed{uuid.uuid4().hex[:8]}", secret=SECRET)
    client.connect()
    assert client.connected
    client.disconnect()
    assert not client.connected
    client.reconnect(attempts=3, delay=1.0)
    assert client.connected
    assert client.wait(0.1) is False
    client.disconnect()
    unreachable = Client("redis://127.0.0.1:1/0", secret=SECRET)
    with pytest.raises(LinkError):
        unreachable.reconnect(attempts=2, delay=0.2)



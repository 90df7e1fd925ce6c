"""ftrack's event hub example in platybus: subscribe by topic, publish, wait."""

import os
import threading

from platybus.client import Client
from platybus.messages import Event

url = os.environ.get("PLATYBUS_REDIS_URL", "redis://127.0.0.1:6379/0")
secret = os.environ.get("PLATYBUS_SECRET", "change-me-to-16-chars-or-more")
done = threading.Event()


def my_callback(event):
    print("got", event.type, event.data)
    done.set()


with Client(url, secret=secret) as hub, Client(url, secret=secret) as other:
    hub.subscribe("topic=my-company.some-topic", my_callback,
                  subscriber={"id": "my-subscriber", "application": "demo"})
    print(hub.get_subscriber_by_identifier("my-subscriber").metadata)
    print(hub.publish(Event(type="my-company.some-topic", data={"x": 1}), synchronous=True))
    done.clear()  # the synchronous publish ran my_callback here, in this thread
    other.publish(Event(type="my-company.some-topic", data={"x": 2}))
    assert done.wait(10)

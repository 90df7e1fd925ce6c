"""Build a recorded event with an attachment, dump it, load it back and send it."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

from platybus.config import load_config
from platybus.node import Node
from platybus.notify.records import EventRecord, load_event

with tempfile.TemporaryDirectory() as tmp:
    snapshot = Path(tmp) / "snapshot.jpg"
    snapshot.write_bytes(b"\xff\xd8 not really a jpeg")

    record = EventRecord("camera.motion", {"camera": "front", "score": 0.93})
    record.begin(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=12))
    record.attach_file(snapshot, "snapshot")
    event = record.close()  # immutable from here on

    file = record.dump(tmp)
    assert load_event(file) == event  # times stay times, nothing is lost
    print("dumped to", file.name, "- attachment sha1", event.data.attachments[0].sha1)

    node = Node(load_config("docs/examples/notify.yaml"))
    node.start()
    node.bus.publish(event)
    node.stop()  # the alarm receiver is down: its copy waits in ./data/outbox/alarm

"""Run the word-count handler in a node and print what comes back."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

from platybus.config import load_config
from platybus.messages import Event
from platybus.node import Node

node = Node(load_config("docs/examples/wordcount.yaml"))
node.start()
outcome = threading.Event()
node.bus.subscribe("type=handler.*", lambda e: (print(e.type, e.data), outcome.set()))
with tempfile.TemporaryDirectory() as tmp:
    text = Path(tmp) / "poem.txt"
    text.write_text("the quick brown fox jumps over a lazy dog")
    node.bus.publish(Event(type="text.ready", data={"path": str(text)}))
    outcome.wait(30)
print(node.actions.call("handlers.status")["handlers"]["wordcount"]["done"], "done")
node.stop()

"""Platypush's file monitor example in platybus: a single file and a folder of photos."""

import tempfile
import threading
from pathlib import Path

from platybus.config import load_config
from platybus.node import Node

work = Path(tempfile.mkdtemp())
(work / "photos").mkdir()
(work / "hosts").write_text("127.0.0.1 localhost\n")
(work / "config.yaml").write_text(f"""
node: {{id: platypush-demo, data_dir: {work / "data"}}}
discovery: {{enabled: false}}
backends:
  file_monitor:
    paths:
      - {work / "hosts"}                 # a single file
      - path: {work / "photos"}
        regexes: ['.*\\.jpe?g$']
        ignore_patterns: ['^tmp_.*']     # regexes too, beside regexes
        case_sensitive: false
""")

node = Node(load_config(work / "config.yaml"))
seen = threading.Semaphore(0)


def on_event(event):
    print(event.type, Path(event.data.path).name)
    seen.release()


node.bus.subscribe("type=file.closed", on_event)
node.start()
try:
    with (work / "hosts").open("a") as out:
        out.write("10.0.0.2 nas\n")
    assert seen.acquire(timeout=10)
    (work / "photos" / "tmp_draft.jpg").write_text("skipped")
    (work / "photos" / "Holiday.JPG").write_text("reported")
    assert seen.acquire(timeout=10)
finally:
    node.stop()

"""SFTPPlus's Python event handler example in platybus: the class, its configuration, a node."""

import tempfile
import textwrap
import threading
from pathlib import Path

from platybus.config import load_config
from platybus.messages import Event
from platybus.node import Node

work = Path(tempfile.mkdtemp())
(work / "extensions").mkdir()  # looked up beside the config without node.extensions_path
(work / "extensions" / "demo_handler.py").write_text(textwrap.dedent('''
    import os

    from platybus.isolation.handlers import Handler


    class DemoEventHandler(Handler):
        def onStart(self, configuration):
            print("started with", dict(configuration))

        def onStop(self):
            print("stopped")

        @staticmethod
        def handle(configuration, event):
            return {"pid": os.getpid(), "message": configuration["message"],
                    "file": event.data["path"]}
'''))
(work / "config.yaml").write_text(f"""
node: {{id: sftpplus-demo, data_dir: {work / "data"}, handlers_parallel: 2}}
discovery: {{enabled: false}}
handlers:
  demo:
    class: "python:demo_handler.DemoEventHandler"
    message: "file uploaded"
    if: "type=transfer.uploaded"
    timeout: 60
""")

node = Node(load_config(work / "config.yaml"))
done = threading.Event()
node.bus.subscribe("type=handler.done", lambda e: (print(e.data.result), done.set()))
node.start()
try:
    node.bus.publish(Event(type="transfer.uploaded", data={"path": "/in/report.csv"}))
    assert done.wait(30)
finally:
    node.stop()

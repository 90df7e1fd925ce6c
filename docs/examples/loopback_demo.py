"""Two nodes in one process, joined by the in-memory link instead of Redis.

Run it: ``python docs/examples/loopback_demo.py`` prints ``garage answered kitchen``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from platybus.config import load_config
from platybus.link.loopback import LoopbackHub, LoopbackLink
from platybus.messages import Request
from platybus.node import Node


def main() -> str:
    """Start two nodes, link them in memory, ask one to ping the other."""
    with tempfile.TemporaryDirectory() as tmp:
        nodes = []
        for node_id in ("kitchen", "garage"):
            path = Path(tmp) / f"{node_id}.yaml"
            path.write_text(f"node: {{id: {node_id}, data_dir: {Path(tmp) / node_id}}}\n")
            nodes.append(Node(load_config(path)))
        kitchen, garage = nodes
        # What backends.redis's allow_actions does for a node linked through Redis.
        garage.runner.remote_allowed = lambda request: request.action == "node.ping"
        hub = LoopbackHub()
        links = [LoopbackLink(node.id, hub, node.codec) for node in nodes]
        for node, link in zip(nodes, links, strict=True):
            node.start()
            link.start(node.bus)
        try:
            response = kitchen.bus.request(Request(action="node.ping", target="garage"),
                                           timeout=10)
            return f"{response.origin} answered {kitchen.id}"
        finally:
            for link in links:
                link.stop()
            for node in nodes:
                node.stop()


if __name__ == "__main__":
    print(main())

"""Platypush's backend API on a real node: every form of message, services, a Redis queue."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from platybus.config import load_config
from platybus.discovery import browse_nodes
from platybus.messages import Event, Response
from platybus.node import Node

HERE = Path(__file__).parent


@pytest.mark.slow
def test_a_backend_sends_typed_dict_text_and_bytes_messages_and_waits_for_a_response(
        tmp_path: Path, redis_url: str) -> None:
    node_id = f"seed-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "config.yaml"
    config.write_text(f"""\
node: {{id: {node_id}, data_dir: {tmp_path / 'data'}, extensions_path: [{HERE}]}}
discovery: {{interfaces: [127.0.0.1]}}
backends:
  redis: {{url: "{redis_url}", prefix: {node_id}}}
  file_monitor: {{paths: [{tmp_path}]}}
  chatty: {{class: "backend_ext:ChattyBackend"}}
""")
    node = Node(load_config(config))
    seen: list[Any] = []
    got = threading.Condition()

    def record(message: Any) -> None:
        with got:
            seen.append(message)
            got.notify_all()

    node.bus.subscribe("type=seed.* or kind=response", record)
    node.start()
    try:
        chatty: Any = node.backends["chatty"]
        with got:
            assert got.wait_for(lambda: len([m for m in seen if isinstance(m, Event)]) >= 5, 10)
        types = [m.type for m in seen if isinstance(m, Event)]
        assert types == ["seed.typed", "seed.dict", "seed.text", "seed.bytes",
                         "seed.on_message"]
        assert all(m.origin == node_id for m in seen if isinstance(m, Event))
        assert "invalid event seed.bad" in chatty.results["bad"]
        returned = chatty.results["returned"]
        assert isinstance(returned, Response)
        assert returned.ok
        assert chatty.results["callback"] == [returned]
        (reply,) = [m for m in seen if isinstance(m, Response) and m.request_id == "r-1"]
        assert (reply.output, reply.target) == ("pong", node_id)
        # The queue is a plain Redis list another consumer pops from.
        raw = redis.Redis.from_url(redis_url).lpop("seed:queue")
        assert json.loads(raw)["type"] == "seed.queued"

        # "file_monitor" is too long for "_platybus-<name>": it gets a derived short label.
        assert [s.srv_type for s in chatty.services] == [
            "_platybus-chatty._tcp.local.", "_pb-file-mo-de3c._tcp.local."]
        assert node.discovery.announced.wait(10)
        assert sorted(s.name for s in _announced(node_id)) == ["chatty", "file_monitor"]
        assert [s.name for s in chatty.unregister_service("file_monitor")] == ["file_monitor"]
        assert f"{node_id}._pb-file-mo-de3c._tcp.local." not in node.discovery.names()
        assert f"{node_id}._platybus-chatty._tcp.local." in node.discovery.names()
        chatty.unregister_service()
        assert chatty.services == []
        assert node.discovery.names() == [f"{node_id}._platybus-node._tcp.local."]
    finally:
        node.stop()


def _announced(node_id: str) -> list[Any]:
    for peer in browse_nodes(["127.0.0.1"], 2.0):
        if peer.node_id == node_id:
            return list(peer.services)
    return []

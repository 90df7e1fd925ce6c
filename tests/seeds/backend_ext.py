"""A backend written as Platypush documents one, for test_platypush_backend.py."""

from __future__ import annotations

import json
from typing import Any

from platybus.errors import DecodeError
from platybus.extensions import Backend
from platybus.messages import Event


class ChattyBackend(Backend):
    """Sends every form of message a Platypush backend may send, once it runs."""

    def loop(self) -> None:
        """Send, record what came back, then serve until stopped."""
        self.register_service(port=4321)
        self.register_service(port=4322, name="file_monitor")
        self.results: dict[str, Any] = {}
        self.send_event(Event(type="seed.typed"))
        self.send_event({"type": "seed.dict", "data": {"n": 1}})
        self.send_event(json.dumps({"type": "seed.text"}))
        self.send_event(json.dumps({"kind": "event", "type": "seed.bytes"}).encode())
        try:
            self.send_event({"type": "seed.bad", "ts": "yesterday"})
        except DecodeError as error:
            self.results["bad"] = str(error)
        responses: list[Any] = []
        self.results["returned"] = self.send_request(
            {"action": "node.ping", "target": self.context.node_id},
            on_response=responses.append, response_timeout=5)
        self.results["callback"] = responses
        self.on_message('{"kind": "event", "type": "seed.on_message"}')
        self.send_response({"output": "pong"}, {"kind": "request", "id": "r-1",
                                                "action": "x", "origin": self.context.node_id})
        if self.context.link is not None:
            self.results["queue"] = self.send_message({"type": "seed.queued"}, "seed:queue")
        self.mark_ready()
        self.wait_for_stop()

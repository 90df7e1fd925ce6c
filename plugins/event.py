"""The ``event`` plugin: publish custom events from actions, hooks and scripts."""

from __future__ import annotations

import re
from typing import Any

from platybus.errors import ArgumentError
from platybus.extensions import Plugin, action
from platybus.messages import Event

_TYPE = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


class EventPlugin(Plugin):
    """Publishes events on the bus."""

    @action(blocking=False)
    def publish(
        self,
        type: str,
        data: dict[str, Any] | None = None,
        target: str | None = None,
        parent_id: str | None = None,
    ) -> dict[str, str]:
        """Publish an event of a dotted ``type`` with ``data``; return its id."""
        if not _TYPE.fullmatch(type):
            raise ArgumentError(
                f"event.publish: type {type!r} must be dotted words such as 'garden.watered'",
                action="event.publish",
            )
        if self.context.codec.types.get(type) is not None:
            # Typed events are validated by the codec, so they can't be forged with bad data.
            event = self.context.codec.from_builtins(
                {"kind": "event", "type": type, "data": data or {}, "target": target,
                 "parent_id": parent_id, "origin": self.context.node_id})
            assert isinstance(event, Event)
        else:
            event = Event(type=type, data=data or {}, target=target, parent_id=parent_id,
                          origin=self.context.node_id)
        self.context.bus.publish(event)
        return {"id": event.id, "type": type}

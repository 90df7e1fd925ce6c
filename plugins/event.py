"""The ``event`` plugin: publish custom events from actions, hooks and scripts."""

from __future__ import annotations

from typing import Any

from platybus.errors import ArgumentError, DecodeError
from platybus.extensions import Plugin, action


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
        # The codec checks the type's name, a typed event's data and the size limit.
        try:
            event = self.context.codec.event(type, data, origin=self.context.node_id,
                                             target=target, parent_id=parent_id)
        except DecodeError as error:
            raise ArgumentError(f"event.publish: {error}", action="event.publish") from None
        self.context.bus.publish(event)
        return {"id": event.id, "type": type}

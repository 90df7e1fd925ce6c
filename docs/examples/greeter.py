"""An example platybus plugin: a user's own file, named in config.yaml.

Run it (from the repository root):

    platybus exec -c docs/examples/greeter.yaml greeter.greet name=Ada times:=2
"""

from __future__ import annotations

import msgspec

from platybus.extensions import Plugin, action
from platybus.messages import Event


class GreeterConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Options of the greeter plugin."""

    greeting: str = "hello"
    shout: bool = False


class Greeter(Plugin):
    """Greets people and tells the bus it did."""

    Config = GreeterConfig

    def start(self) -> None:
        """Nothing to open; a real plugin would connect to its device here."""
        self.greeted = 0

    @action
    def greet(self, name: str, times: int = 1) -> dict[str, object]:
        """Greet someone ``times`` times and publish a ``greeter.greeted`` event."""
        if times < 1:
            raise ValueError("times must be at least 1")
        text = " ".join([f"{self.config.greeting} {name}"] * times)
        if self.config.shout:
            text = text.upper()
        self.greeted += 1
        self.send_event(Event(type="greeter.greeted", data={"name": name}))
        return {"text": text, "greeted": self.greeted}

"""The ``file`` notifier: dump each event to a directory as a JSON file."""

from __future__ import annotations

import msgspec

from platybus.messages import Event
from platybus.notify.manager import Notifier
from platybus.notify.records import dump_event


class FileConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where the event files go."""

    directory: str


class FileNotifier(Notifier):
    """Writes ``<directory>/<event id>.json``, readable with ``load_event``."""

    Config = FileConfig
    shorthand = "directory"

    def send_event(self, event: Event) -> bool:
        """Dump the event; False if the directory cannot be written."""
        try:
            dump_event(event, self.config.directory)
        except OSError as error:
            self.log.warning("cannot write event %s to %s: %s", event.id,
                             self.config.directory, error)
            return False
        return True

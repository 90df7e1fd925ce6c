"""The ``log`` plugin: write a line to the node's log from hooks, procedures and scripts."""

from __future__ import annotations

import logging

from platybus.extensions import Plugin, action


class LogPlugin(Plugin):
    """Writes messages to the node's log (logger ``platybus.log``)."""

    def _write(self, level: int, message: str) -> str:
        logging.getLogger("platybus.log").log(level, "%s", message)
        return message

    @action(blocking=False)
    def debug(self, message: str) -> str:
        """Log a message at debug level; return it."""
        return self._write(logging.DEBUG, message)

    @action(blocking=False)
    def info(self, message: str) -> str:
        """Log a message at info level; return it."""
        return self._write(logging.INFO, message)

    @action(blocking=False)
    def warning(self, message: str) -> str:
        """Log a message at warning level; return it."""
        return self._write(logging.WARNING, message)

    @action(blocking=False)
    def error(self, message: str) -> str:
        """Log a message at error level; return it."""
        return self._write(logging.ERROR, message)

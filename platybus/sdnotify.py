"""Tell systemd how the node is doing: the ``sd_notify`` datagram protocol.

Under a unit with ``Type=notify`` systemd sets ``NOTIFY_SOCKET``; the node sends
``READY=1`` once it serves, ``STOPPING=1`` when it begins to stop and, when the unit
sets ``WatchdogSec=``, ``WATCHDOG=1`` at half that interval. Without the variable
every call does nothing, so the same code runs under systemd, in a container or in a
terminal. See ``contrib/platybus.service`` and ``docs/operations.md``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("platybus.sdnotify")


class SystemdNotifier:
    """Sends state lines to systemd's notify socket, if the service manager gave one."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        # A leading "@" names a socket in the abstract namespace.
        self.address = "\0" + path[1:] if path.startswith("@") else path
        self.watchdog_interval: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 2e6  # ping at half the limit
        self._next_ping = 0.0
        self._warned = False

    @property
    def enabled(self) -> bool:
        """Whether a service manager is listening."""
        return bool(self.address)

    def notify(self, *lines: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; return whether it was sent."""
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as error:
            if not self._warned:  # once: systemd may have gone away, the node goes on
                log.warning("cannot notify the service manager at %s: %s",
                            self.address.replace("\0", "@"), error)
                self._warned = True
            return False
        return True

    def ready(self, status: str = "") -> bool:
        """Say that the node serves."""
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def stopping(self) -> bool:
        """Say that the node has begun to stop."""
        return self.notify("STOPPING=1")

    def ping_if_due(self, now: float | None = None) -> bool:
        """Send ``WATCHDOG=1`` when half the watchdog interval has passed since the last."""
        if self.watchdog_interval is None:
            return False
        now = time.monotonic() if now is None else now
        if now < self._next_ping:
            return False
        self._next_ping = now + self.watchdog_interval
        return self.notify("WATCHDOG=1")

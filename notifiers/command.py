"""The ``command`` notifier: run a program with the event as JSON on its standard input."""

from __future__ import annotations

import os
import shlex
import subprocess
import threading

import msgspec

from platybus.extensions import NodeContext
from platybus.messages import Event
from platybus.notify.manager import Notifier
from platybus.notify.records import event_to_document


class CommandConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The program (a list of arguments, or one string split like a shell would) and limits."""

    command: list[str] | str
    timeout: float = 30.0
    env: dict[str, str] = msgspec.field(default_factory=dict)
    cwd: str | None = None


class CommandNotifier(Notifier):
    """Runs the command once per event, without a shell; exit status 0 means sent."""

    Config = CommandConfig
    shorthand = "command"

    def __init__(self, name: str, config: CommandConfig, context: NodeContext) -> None:
        super().__init__(name, config, context)
        command = config.command
        self.argv = shlex.split(command) if isinstance(command, str) else list(command)
        if not self.argv:
            raise ValueError(f"notifier {name}: the command is empty")
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None

    def send_event(self, event: Event) -> bool:
        """Run the command with the event document on stdin."""
        body = msgspec.json.encode(event_to_document(event))
        try:
            with self._lock:
                if self.cancelled.is_set():
                    return False
                process = self._process = subprocess.Popen(  # noqa: S603 - argv from config
                    self.argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE, env={**os.environ, **self.config.env},
                    cwd=self.config.cwd,
                )
        except OSError as error:
            self.log.warning("cannot run %s: %s", self.argv[0], error)
            return False
        try:
            _, err = process.communicate(body, timeout=self.config.timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            self.log.warning("%s took more than %gs on event %s: killed", self.argv[0],
                             self.config.timeout, event.id)
            return False
        finally:
            with self._lock:
                self._process = None
        if process.returncode != 0:
            self.log.warning("%s exited with %d on event %s: %s", self.argv[0],
                             process.returncode, event.id, err.decode(errors="replace")[-500:])
            return False
        return True

    def cancel(self) -> None:
        """Kill a command still running (the node is stopping)."""
        super().cancel()
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                self._process.kill()

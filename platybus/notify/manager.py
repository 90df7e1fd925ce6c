"""Notifiers: send matching events to the outside world, losing none.

A :class:`Notifier` is built as ``cls(name, config, context)`` and has
``send_event(event) -> bool``; its typed ``Config`` round-trips through
``encode_config()`` / ``decode_config(text)``. ``class:`` names it, as for every
extension: a name of the ``platybus.notifiers`` entry-point group or ``module:Class``.
An entry of the ``notifiers:`` section holds ``class``, the manager's own keys
(``if``, ``retry``, ``queue_size``, ``enabled``) and the notifier's options; the
``PLATYBUS_NOTIFIERS="class=config|class2=config"`` variable configures them in a
child process (:meth:`NotifierManager.from_environment`).

The :class:`NotifierManager` gives each notifier its own queue and thread, so
one slow or failing notifier never holds up another. A failed send goes to the
:class:`~platybus.notify.outbox.Outbox` and is retried with backoff, across restarts,
until it is sent or expires. See ``docs/notifiers.md``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from platybus.config import COMMON_KEYS, extension_section
from platybus.errors import ArgumentError, ExtensionError, NodeError, PlatybusError, SelectorError
from platybus.expr import Selector, parse_selector
from platybus.extensions import EmptyConfig, NodeContext
from platybus.loader import available, load_class
from platybus.messages import Event
from platybus.notify.outbox import Outbox, RetryPolicy

if TYPE_CHECKING:
    from platybus.bus import Bus, Subscription
    from platybus.config import Config

log = logging.getLogger("platybus.notify.manager")

__all__ = ["ENV_VAR", "NOTIFIER_GROUP", "Notifier", "NotifierManager", "NotifierSettings"]

NOTIFIER_GROUP = "platybus.notifiers"
ENV_VAR = "PLATYBUS_NOTIFIERS"


class Notifier:
    """Base of notifiers: ``send_event`` returns whether the event went out."""

    Config: ClassVar[type[msgspec.Struct]] = EmptyConfig
    # The config field that a bare (non-JSON) config text fills, e.g. a URL.
    shorthand: ClassVar[str | None] = None

    def __init__(self, name: str, config: Any, context: NodeContext) -> None:
        self.name = name
        self.config = config
        self.context = context
        self.log = logging.getLogger(f"platybus.notify.manager.{name}")
        self.cancelled = threading.Event()

    def send_event(self, event: Event) -> bool:
        """Send one event; return True once it is out, False to have it retried later."""
        raise NotImplementedError

    def cancel(self) -> None:
        """Ask a send in progress to give up soon (the node is stopping)."""
        self.cancelled.set()

    def close(self) -> None:
        """Release resources; idempotent."""

    def encode_config(self) -> str:
        """Return the config as text that :meth:`decode_config` reads back."""
        return msgspec.json.encode(self.config).decode()

    @classmethod
    def decode_config(cls, text: str) -> Any:
        """Read a config from JSON text, or from a bare value for the shorthand field."""
        stripped = text.strip()
        try:
            if stripped.startswith("{") or cls.shorthand is None:
                return msgspec.json.decode(stripped or "{}", type=cls.Config)
            return msgspec.convert({cls.shorthand: stripped}, cls.Config)
        except (msgspec.ValidationError, msgspec.DecodeError) as error:
            raise ExtensionError(f"{cls.__name__}: invalid config {text!r}: {error}") from None


# The keys of a ``notifiers`` entry that the manager reads; the others are the notifier's.
NOTIFIER_SETTINGS = ("if", "retry", "queue_size")


class NotifierSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What the manager reads of a ``notifiers`` entry, beside ``class`` and the options."""

    condition: str | None = msgspec.field(default=None, name="if")
    retry: RetryPolicy = msgspec.field(default_factory=RetryPolicy)
    queue_size: int = 10_000


class _Channel:
    """One notifier's queue and delivery thread, with its outbox retries."""

    def __init__(self, notifier: Notifier, selector: Selector, policy: RetryPolicy,
                 outbox: Outbox | None, queue_size: int) -> None:
        self.name = notifier.name
        self.notifier = notifier
        self.selector = selector
        self.policy = policy
        self.outbox = outbox
        self.queue_size = queue_size
        self._queue: deque[Event] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._drain_until = 0.0
        self._next_check: float | None = None
        self.sent = self.failed = self.stored = self.retried = 0

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self.notifier.cancelled.clear()
        self._next_check = time.time() if self.outbox is not None else None
        self._thread = threading.Thread(target=self._run, name=f"platybus-notify-{self.name}")
        self._thread.start()

    def offer(self, event: Event) -> None:
        with self._cond:
            if len(self._queue) < self.queue_size and not self._stopping:
                self._queue.append(event)
                self._cond.notify()
                return
        self.store(event, "the notifier's queue was full", due_now=True)

    def stop(self, timeout: float) -> None:
        thread = self._thread
        if thread is None:
            return
        with self._cond:
            self._stopping = True
            self._drain_until = time.monotonic() + timeout / 2
            self._cond.notify()
        thread.join(timeout)
        if thread.is_alive():
            self.notifier.cancel()
            thread.join(timeout)
        if thread.is_alive():
            log.error("notifier %s did not stop within %.1fs", self.name, 2 * timeout)
            return
        self._thread = None
        self.notifier.close()

    def send(self, event: Event) -> tuple[bool, str]:
        """Send once in the calling thread; never raises."""
        try:
            if self.notifier.send_event(event):
                return True, ""
            return False, "send_event returned false"
        except Exception as error:
            self.notifier.log.exception("notifier %s failed on event %s", self.name, event.id)
            return False, f"{type(error).__name__}: {error}"

    def send_ok(self, event: Event) -> bool:
        """Send once in the calling thread; return whether it went out."""
        return self.send(event)[0]

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    if self._next_check is not None:
                        wait = self._next_check - time.time()
                        if wait <= 0:
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
                event = self._queue.popleft() if self._queue else None
                if self._stopping and (event is None or time.monotonic() >= self._drain_until):
                    if event is not None:
                        self._queue.appendleft(event)
                    leftovers = list(self._queue)
                    self._queue.clear()
                    break
            if event is not None:
                self._deliver(event)
            else:
                self._retry_outbox()
        for event in leftovers:
            self.store(event, "the node stopped before it was sent", due_now=True)

    def _deliver(self, event: Event) -> None:
        ok, error = self.send(event)
        if ok:
            self.sent += 1
            return
        self.failed += 1
        self.store(event, error)

    def store(self, event: Event, error: str, *, due_now: bool = False) -> None:
        """Keep an event that could not be sent in the outbox."""
        if self.outbox is None:
            log.error("notifier %s could not send event %s and has no outbox: %s",
                      self.name, event.id, error)
            return
        try:
            self.outbox.put(self.name, event, error, self.policy, due_now=due_now)
        except OSError:
            log.exception("notifier %s: cannot store event %s in the outbox", self.name,
                          event.id)
            return
        self.stored += 1
        log.warning("notifier %s could not send event %s (%s): kept in the outbox", self.name,
                    event.id, error)
        due = time.time() + (0.0 if due_now else self.policy.delay(1))
        with self._cond:
            self._next_check = min(self._next_check or due, due)

    def _retry_outbox(self) -> None:
        assert self.outbox is not None
        try:
            counts = self.outbox.retry(self.name, self.send_ok, self.policy,
                                       should_continue=lambda: not self._stopping)
            self.retried += counts.get("sent", 0)
            next_check = self.outbox.next_due(self.name)
        except NodeError:  # someone else (``platybus outbox retry``) holds it: come back soon
            next_check = time.time() + 1.0
        except Exception:
            log.exception("notifier %s: outbox retry failed", self.name)
            next_check = time.time() + self.policy.initial
        with self._cond:
            self._next_check = next_check

    def status(self) -> dict[str, Any]:
        return {"class": type(self.notifier).__name__, "if": self.selector.source,
                "queued": len(self._queue), "sent": self.sent, "failed": self.failed,
                "stored": self.stored, "retried": self.retried,
                "outbox": len(self.outbox.entries(self.name)) if self.outbox else 0}


class NotifierManager:
    """Every notifier of a node: subscribes them to the bus and owns their threads."""

    def __init__(self, channels: list[_Channel], outbox: Outbox | None = None) -> None:
        self.channels = {c.name: c for c in channels}
        self.outbox = outbox
        self._bus: Bus | None = None
        self._subscriptions: list[Subscription] = []

    # -- building ----------------------------------------------------------

    @classmethod
    def from_config(cls, config: Config, context: NodeContext | None = None) -> NotifierManager:
        """Validate the ``notifiers`` section and build each notifier.

        Without a ``context`` (a command that only sends), the notifiers get a
        detached one.
        """
        entries = extension_section(config.section("notifiers"), "notifiers", config.source,
                                    settings=NOTIFIER_SETTINGS, refuse_old=True)
        if context is None:
            context = NodeContext.detached(config.node.id, config.data_dir)
        search = [Path(p) for p in config.node.extensions_path]
        outbox = Outbox(config.data_dir / "outbox", context.codec)
        channels = []
        for name, ext in entries.items():
            if not ext.enabled:
                continue
            entry = config.convert(ext.settings, NotifierSettings, ext.path)
            try:
                notifier_cls = load_class(NOTIFIER_GROUP, name, Notifier, spec=ext.class_spec,
                                          search_path=search)
            except PlatybusError as error:
                raise config.source.error(ext.class_path, str(error)) from None
            options = config.convert(ext.options, notifier_cls.Config, ext.path,
                                     also_known=COMMON_KEYS + NOTIFIER_SETTINGS)
            try:
                selector = parse_selector(entry.condition or "kind=event")
            except SelectorError as error:
                raise config.source.error((*ext.path, "if"), str(error)) from None
            try:
                notifier = notifier_cls(name, options, context)
            except (PlatybusError, ValueError) as error:
                raise config.source.error(ext.path, str(error)) from None
            channels.append(_Channel(notifier, selector, entry.retry, outbox, entry.queue_size))
        return cls(channels, outbox)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None,
                         outbox: Outbox | None = None,
                         context: NodeContext | None = None) -> NotifierManager:
        """Build the notifiers that ``PLATYBUS_NOTIFIERS`` names (``class=config|...``)."""
        text = (os.environ if environ is None else environ).get(ENV_VAR, "")
        if context is None:
            context = NodeContext.detached(socket.gethostname(), Path.cwd())
        channels: list[_Channel] = []
        for index, item in enumerate(p for p in text.split("|") if p.strip()):
            spec, _, encoded = item.partition("=")
            spec = spec.strip()
            notifier_cls = load_class(NOTIFIER_GROUP, spec, Notifier, spec=spec)
            config = notifier_cls.decode_config(_unescape(encoded))
            name = spec if spec not in (c.name for c in channels) else f"{spec}-{index}"
            channels.append(_Channel(notifier_cls(name, config, context),
                                     parse_selector("kind=event"), RetryPolicy(), outbox, 10_000))
        return cls(channels, outbox)

    def environment(self) -> str:
        """Return the ``PLATYBUS_NOTIFIERS`` value that rebuilds these notifiers elsewhere."""
        parts = []
        for channel in self.channels.values():
            spec = _class_spec(type(channel.notifier))
            parts.append(f"{spec}={_escape(channel.notifier.encode_config())}")
        return "|".join(parts)

    # -- running -----------------------------------------------------------

    def start(self, bus: Bus | None = None) -> None:
        """Start every notifier's thread and, with a bus, subscribe them to it."""
        self._bus = bus
        for channel in self.channels.values():
            channel.start()
            if bus is not None:
                self._subscriptions.append(bus.subscribe(
                    channel.selector, self._offer_to(channel), id=f"notifier.{channel.name}"))

    @staticmethod
    def _offer_to(channel: _Channel) -> Any:
        def offer(message: Any) -> None:
            if isinstance(message, Event):
                channel.offer(message)
        return offer

    def stop(self, timeout: float = 5.0) -> None:
        """Take what the bus still holds, send what is queued within half of ``timeout``,
        store the rest in the outbox."""
        if self._subscriptions and self._bus is not None:
            self._bus.flush(timeout)
        for subscription in self._subscriptions:
            subscription.unsubscribe()
        self._subscriptions.clear()
        for channel in self.channels.values():
            channel.stop(timeout)

    def notify(self, event: Event) -> dict[str, bool]:
        """Send an event to every notifier it matches, now, in this thread.

        Failures go to the outbox when there is one. Returns each notifier's outcome.
        """
        results = {}
        for channel in self.channels.values():
            if not channel.selector.matches(event):
                continue
            ok, error = channel.send(event)
            results[channel.name] = ok
            if not ok:
                channel.store(event, error)
        return results

    def status(self) -> dict[str, Any]:
        """Return each notifier's counters and outbox size."""
        return {name: channel.status() for name, channel in self.channels.items()}


class OutboxActions:
    """The ``outbox.*`` actions: list, retry and drop what the notifiers failed to send."""

    def __init__(self, manager: NotifierManager) -> None:
        self.manager = manager

    def _outbox(self) -> Outbox:
        if self.manager.outbox is None:
            raise ArgumentError("this node keeps no outbox")
        return self.manager.outbox

    def list(self, notifier: str | None = None) -> list[dict[str, Any]]:
        """Return the kept entries (expired ones too), oldest first."""
        try:
            entries = self._outbox().entries(notifier or None, expired=True)
        except ValueError as error:
            raise ArgumentError(str(error)) from None
        return [{"notifier": e.state.notifier, "event_id": e.event_id,
                 "event_type": e.event_type, "expired": e.expired,
                 "attempts": e.state.attempts, "first_failure": e.state.first_failure,
                 "next_attempt": e.state.next_attempt, "expires": e.state.expires,
                 "last_error": e.state.last_error} for e in entries]

    def retry(self, notifier: str, event_id: str) -> str:
        """Try to send one entry now; return the outcome (sent, failed, busy, gone)."""
        channel = self.manager.channels.get(notifier)
        if channel is None:
            raise ArgumentError(f"no notifier named {notifier!r}")
        try:
            return self._outbox().retry_one(notifier, event_id, channel.send_ok, channel.policy)
        except ValueError as error:
            raise ArgumentError(str(error)) from None

    def drop(self, notifier: str, event_id: str) -> bool:
        """Delete one entry unsent; return whether it was kept."""
        try:
            return self._outbox().drop(notifier, event_id)
        except ValueError as error:
            raise ArgumentError(str(error)) from None


def _class_spec(cls: type[Notifier]) -> str:
    """The shortest ``class:`` value that names ``cls``: its entry-point name, or module:Class."""
    target = f"{cls.__module__}:{cls.__qualname__}"
    for name, value in available(NOTIFIER_GROUP).items():
        if value == target:
            return name
    return target


def _escape(text: str) -> str:
    return text.replace("%", "%25").replace("|", "%7C")


def _unescape(text: str) -> str:
    return text.replace("%7C", "|").replace("%7c", "|").replace("%25", "%")

"""The :class:`Node`: builds everything from config, starts and stops it in order.

Start order, every subscriber before any source: bus → plugins → notifiers →
handlers → automation (hooks subscribed, the journal's unfinished runs resumed,
cron armed) → transports (backends marked ``transport``, such as the Redis link)
→ other backends (file monitor, HTTP) → cron firing → discovery (zeroconf
announce and browse) → ``node.started``. Stop runs the same steps in reverse and
is idempotent. The whole stop is bounded by ``node.stop_timeout``: one deadline is
taken when it begins and every step gets what is left of it. A step (or a plugin)
that has not returned by then, and a thread still alive, is logged by name and
left behind, so one hung component cannot keep the node from stopping.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, Literal

from platybus import __version__
from platybus.actions import ActionRegistry, ActionRunner, ActionSpec
from platybus.automation import Automation
from platybus.bus import Bus
from platybus.codec import Codec
from platybus.config import COMMON_KEYS, Config, ExtensionConfig
from platybus.discovery import EVENT_TYPES as DISCOVERY_EVENTS
from platybus.discovery import Discovery, load_discovery_config
from platybus.errors import (
    ConfigError,
    ExtensionError,
    NodeAlreadyRunning,
    NodeError,
    PlatybusError,
)
from platybus.extensions import (
    BACKEND_GROUP,
    PLUGIN_GROUP,
    Backend,
    NodeContext,
    Plugin,
    ServiceInfo,
    load_class,
)
from platybus.messages import EventTypes, NodeEventData, NodeStarted, NodeStopped
from platybus.sdnotify import SystemdNotifier
from platybus.threads import OwnedThread, deadline_after, join_all, stop_all, time_left

if TYPE_CHECKING:
    from platybus.isolation.handlers import HandlerSet
    from platybus.link.protocol import LinkConfig
    from platybus.notify.manager import NotifierManager

log = logging.getLogger("platybus.node")

State = Literal["created", "starting", "ready", "stopping", "stopped", "failed"]

# Plugins every node has unless the config disables them.
DEFAULT_PLUGINS = ("node", "event", "log")

READY_TIMEOUT = 10.0

# Share of the stop deadline kept back from a step, so that a step which bounds itself
# logs what it left behind before the node gives up on the step as a whole.
_STOP_MARGIN = 0.05
# While other steps still wait, one step may use this share of what is left: a hung
# step is then given up on with time to spare for the rest, not at the very end.
_STEP_SHARE = 0.9


@dataclass
class Phase:
    """One named start/stop phase of the node; ``stop`` gets the monotonic time to stop by."""

    name: str
    start: Callable[[], None]
    stop: Callable[[float], None]
    embedded: bool = False
    started: bool = False
    # Run the stop on a thread of its own, so that a hang cannot hold up the node's stop.
    guarded: bool = True


class Node:
    """One platybus process: a bus, its plugins and backends, built from a config."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.id = config.node.id
        self.data_dir = config.data_dir
        self.state: State = "created"
        # What a user compares to tell whether two nodes (or two starts) run the same config.
        self.config_hash = hashlib.sha256(
            json.dumps(config.raw, sort_keys=True, default=str).encode()).hexdigest()[:12]
        self.started_at = 0.0
        self.types = EventTypes()
        self.codec = Codec(self.types, max_size=config.node.max_message_size,
                           max_depth=config.node.max_message_depth)
        self.bus = Bus(self.id, config.node.bus)
        self.actions = ActionRegistry()
        self.runner = ActionRunner(self.bus, self.actions, config.node.bus.workers)
        self.context = NodeContext(
            node_id=self.id, bus=self.bus, codec=self.codec, actions=self.actions,
            data_dir=self.data_dir, version=__version__, health=self.health,
            metrics=self.metrics, runner=self.runner,
        )
        search = [Path(p) for p in config.node.extensions_path]
        self.plugins: dict[str, Plugin] = {}
        for ext in _with_defaults(config.plugins):
            cls = _resolve(ext, PLUGIN_GROUP, Plugin, search, config)
            for event_type in cls.event_types:
                self.types.register(event_type)
            try:
                plugin = cls(ext.name, _typed(cls, ext, config), self.context)
            except ConfigError as error:
                raise config.locate(error, ext.path) from None
            self.plugins[ext.name] = plugin
            self.actions.add_plugin(plugin)
        self.backends: dict[str, Backend] = {}
        for ext in config.backends.values():
            if not ext.enabled:
                continue
            bcls = _resolve(ext, BACKEND_GROUP, Backend, search, config)
            for event_type in bcls.event_types:
                self.types.register(event_type)
            try:
                backend = bcls(ext.name, _typed(bcls, ext, config), self.context)
                # A backend's ``@action`` methods are actions named after its entry,
                # as a plugin's are (``mqtt.publish``).
                self.actions.add_plugin(backend, prefix=ext.name)
                self.backends[ext.name] = backend
            except ConfigError as error:
                raise config.locate(error, ext.path) from None
            except ExtensionError as error:
                # e.g. a service declared with a name zeroconf cannot announce
                raise config.source.error(ext.path, str(error)) from None
        for event_type in DISCOVERY_EVENTS:
            self.types.register(event_type)
        self.discovery = Discovery(load_discovery_config(config), node_id=self.id,
                                   version=__version__, bus=self.bus)
        self.context.withdraw_services = self.discovery.withdraw
        self.context.link = _link_of(self.backends.values())
        self.actions.add(ActionSpec.from_function("discovery.peers", self.discovery.peers,
                                                  blocking=False))
        # After plugins and backends, so that hooks can name their actions and events.
        self.automation = Automation(config, self.context)
        self._lock_file: IO[str] | None = None
        self._steps = [
            Phase("lock", self._acquire_lock, lambda _: self._release_lock(), guarded=False),
            Phase("bus", self.bus.start, _by(self.bus.stop), True),
            # Each plugin's stop is guarded on its own, so a hung one is named.
            Phase("plugins", self._start_plugins, self._stop_plugins, True, guarded=False),
            Phase("actions", self.runner.start, _by(self.runner.stop), True),
        ]
        self.notifiers: NotifierManager | None = None
        if config.section("notifiers"):
            from platybus.notify.manager import NotifierManager, OutboxActions

            # Before the backends, so no event they publish at start-up is missed.
            notifiers = self.notifiers = NotifierManager.from_config(config, self.context)
            self.actions.add(ActionSpec.from_function(
                "notifiers.status", notifiers.status, blocking=False))
            outbox = OutboxActions(notifiers)
            for verb, fn in (("list", outbox.list), ("retry", outbox.retry),
                             ("drop", outbox.drop)):
                self.actions.add(ActionSpec.from_function(f"outbox.{verb}", fn))
            self._steps.append(Phase("notifiers", lambda: notifiers.start(self.bus),
                                     _by(notifiers.stop)))
        self.handlers: HandlerSet | None = None
        if config.section("handlers"):
            from platybus.isolation.handlers import HandlerSet

            # Built (classes imported) now, so a bad entry point fails validation;
            # worker processes start on demand once the step has run.
            handlers = self.handlers = HandlerSet.from_config(config, self.context)
            self._steps.append(Phase("handlers", handlers.start, _by(handlers.stop)))
        # Every subscriber before any source: what a transport or backend delivers at
        # start-up (a Redis backlog, a file just created) finds its hooks in place.
        self._steps.append(Phase("automation", lambda: self.automation.start(fire_cron=False),
                                 _by(self.automation.stop)))
        self._steps.append(Phase("transport", lambda: self._start_backends(transport=True),
                                 lambda deadline: self._stop_backends(deadline, True)))
        self._steps.append(Phase("backends", self._start_backends, self._stop_backends))
        self._steps.append(Phase("cron", self.automation.start_cron,
                                 _by(self.automation.stop_cron)))
        self._steps.append(Phase("discovery", lambda: self.discovery.start(self.services()),
                                 lambda _: self.discovery.stop()))
        self._stop_lock = threading.Lock()
        self._stopped = threading.Event()

    # -- lifecycle ---------------------------------------------------------

    def start(self, *, embedded: bool = False) -> None:
        """Start every component in order; on failure stop what started and raise.

        ``embedded=True`` starts only the bus, plugins and actions: enough to run
        actions in this process (``platybus exec``) beside a node that serves.
        """
        if self.state != "created":
            raise NodeError(f"node {self.id} was already started (state {self.state})")
        self.state = "starting"
        began = time.monotonic()
        try:
            for step in self._steps:
                if embedded and not step.embedded:
                    continue
                step.start()
                step.started = True
        except BaseException:
            self.state = "failed"
            self._stop_steps()
            raise
        self.state = "ready"
        self.started_at = time.time()
        log.info("node %s ready in %.3fs (%s, %s, %s)", self.id, time.monotonic() - began,
                 counted(len(self.plugins), "plugin"), counted(len(self.backends), "backend"),
                 counted(len(self.actions.specs()), "action"))
        self.bus.publish(NodeStarted(origin=self.id,
                                     data=NodeEventData(node_id=self.id, version=__version__)))

    def stop(self) -> None:
        """Stop every component in reverse order, all within ``node.stop_timeout``; idempotent.

        What did not stop in time is logged by name (one WARNING line each) and left to
        end on its own.
        """
        with self._stop_lock:
            if self.state in ("stopping", "stopped", "created"):
                return
            was_ready = self.state == "ready"
            self.state = "stopping"
        if was_ready:
            try:
                self.bus.publish(NodeStopped(
                    origin=self.id, data=NodeEventData(node_id=self.id, version=__version__)))
            except PlatybusError:
                log.debug("could not publish node.stopped", exc_info=True)
        self._stop_steps()
        self.state = "stopped"
        self._stopped.set()
        log.info("node %s stopped", self.id)

    def _stop_steps(self) -> None:
        deadline = deadline_after(self.config.node.stop_timeout)
        steps = [step for step in reversed(self._steps) if step.started]
        for i, step in enumerate(steps):
            step.started = False
            # A step keeps back time for the steps after it that take any (not the lock).
            until = _share(deadline, any(s.guarded for s in steps[i + 1:]))
            if step.guarded:
                self._bounded(step.name, step.stop, until)
                continue
            try:
                step.stop(until)
            except Exception:
                log.exception("stopping %s failed", step.name)

    def _bounded(self, label: str, stop: Callable[[float], None], deadline: float) -> bool:
        """Run ``stop(deadline)`` on its own thread until ``deadline``; return if it ended."""
        # The step is given a little less, so that it names what it left behind itself.
        inner = deadline - _STOP_MARGIN * min(1.0, self.config.node.stop_timeout)

        def run() -> None:
            try:
                stop(inner)
            except Exception:
                log.exception("stopping %s failed", label)

        stopper = OwnedThread(f"platybus-stop-{label.replace(' ', '-')}", run, label=label)
        stopper.start()
        return not join_all([stopper], deadline)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the node has stopped; return whether it did."""
        return self._stopped.wait(timeout)

    def run_until_signal(self) -> None:
        """Start, serve until SIGTERM or SIGINT, then stop."""
        # The handler only records the signal: it runs on the main thread between any two
        # bytecodes, so taking a lock there (Event.set, logging) could deadlock that thread.
        received: list[int] = []

        def on_signal(signum: int, frame: FrameType | None) -> None:
            received.append(signum)

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        systemd = SystemdNotifier()
        try:
            self.start()
            systemd.ready(f"node {self.id} ready")
            while not received:
                systemd.ping_if_due()
                time.sleep(0.1)
            log.info("received %s, stopping", signal.Signals(received[0]).name)
        finally:
            systemd.stopping()
            self.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    # -- steps -------------------------------------------------------------

    def _acquire_lock(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / f"{self.id}.lock"
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the node's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise NodeAlreadyRunning(
                f"node {self.id!r} is already running with data dir {self.data_dir} "
                f"(pid {holder}); give this node another node.id or node.data_dir",
                node_id=self.id,
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_file = handle

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def _start_plugins(self) -> None:
        for name, plugin in self.plugins.items():
            plugin.start()
            log.debug("plugin %s started", name)

    def _stop_plugins(self, deadline: float) -> None:
        plugins = list(reversed(self.plugins.items()))
        for i, (name, plugin) in enumerate(plugins):
            self._bounded(f"plugin {name}", _ignoring_deadline(plugin.stop),
                          _share(deadline, i + 1 < len(plugins)))

    def _group(self, transport: bool) -> dict[str, Backend]:
        return {name: b for name, b in self.backends.items() if b.transport == transport}

    def _start_backends(self, transport: bool = False) -> None:
        backends = self._group(transport)
        for backend in backends.values():
            backend.start()
        deadline = time.monotonic() + READY_TIMEOUT
        for name, backend in backends.items():
            backend.ready.wait(max(0.0, deadline - time.monotonic()))
            if backend.failure is not None:
                raise backend.failure
            if not backend.ready.is_set():
                raise NodeError(f"backend {name} was not ready within {READY_TIMEOUT:g}s")

    def _stop_backends(self, deadline: float, transport: bool = False) -> None:
        backends = self._group(transport)
        stop_all(reversed(list(backends.values())), deadline)

    # -- introspection -----------------------------------------------------

    def services(self) -> list[ServiceInfo]:
        """Return the zeroconf services every backend declared."""
        return [service for backend in self.backends.values() for service in backend.services]

    def health(self) -> dict[str, Any]:
        """Return the node state, each component's state and the backends' details."""
        backends: dict[str, str] = {}
        details: dict[str, dict[str, Any]] = {}
        for name, backend in self.backends.items():
            report = dict(backend.health())
            backends[name] = str(report.pop("state", "unknown"))
            if report:
                details[name] = report
        components: dict[str, Any] = {"bus": "ready" if self.bus.running else "stopped",
                                      "backends": backends, "plugins": sorted(self.plugins),
                                      "discovery": self.discovery.state}
        if details:
            components["details"] = details
        return {
            "node": self.id,
            "state": self.state,
            "ready": self.state == "ready",
            "version": __version__,
            "uptime": round(time.time() - self.started_at, 3) if self.started_at else 0.0,
            "config_hash": self.config_hash,
            "components": components,
        }

    def info(self) -> dict[str, Any]:
        """Return what this node is: id, version, pid, plugins, backends, actions."""
        return {
            "id": self.id,
            "version": __version__,
            "pid": os.getpid(),
            "state": self.state,
            "data_dir": str(self.data_dir),
            "plugins": sorted(self.plugins),
            "backends": sorted(self.backends),
            "actions": [spec.name for spec in self.actions.specs()],
        }

    def metrics(self) -> str:
        """Return counters in the Prometheus text format."""
        from platybus.metrics import render_hook_metrics, render_metrics

        text = render_metrics(
            self.bus.stats(), {name: b.events_sent for name, b in self.backends.items()},
            self.actions.specs()) + render_hook_metrics(self.automation.counters())
        # Each backend adds counters of its own (the link's, the HTTP server's).
        return text + "".join(backend.render_metrics() for backend in self.backends.values())


def _share(deadline: float, more_to_come: bool) -> float:
    """The deadline of one stop step: all that is left if it is the last, else a share."""
    if not more_to_come:
        return deadline
    return time.monotonic() + time_left(deadline) * _STEP_SHARE


def _by(stop: Callable[[float], None]) -> Callable[[float], None]:
    """Turn a ``stop(timeout)`` into a step's ``stop(deadline)``."""
    return lambda deadline: stop(time_left(deadline))


def _ignoring_deadline(stop: Callable[[], None]) -> Callable[[float], None]:
    """Turn a ``stop()`` that takes no bound (a plugin's) into a step's ``stop(deadline)``."""
    return lambda _deadline: stop()


def _with_defaults(plugins: dict[str, ExtensionConfig]) -> list[ExtensionConfig]:
    entries = dict(plugins)
    for name in DEFAULT_PLUGINS:
        if name not in entries:
            entries[name] = ExtensionConfig(name, ("plugins", name), None, True, {})
    return [ext for ext in entries.values() if ext.enabled]


def _resolve(ext: ExtensionConfig, group: str, base: type[Any], search: list[Path],
             config: Config) -> Any:
    try:
        return load_class(group, ext.name, base, spec=ext.class_spec, search_path=search)
    except PlatybusError as error:
        raise config.source.error(ext.class_path, str(error)) from None


def _typed(cls: type[Plugin] | type[Backend], ext: ExtensionConfig, config: Config) -> Any:
    prepare = getattr(cls, "prepare_options", None)
    options = prepare(ext.options) if prepare is not None else ext.options
    return config.convert(options, cls.Config, ext.path, also_known=COMMON_KEYS)


def _link_of(backends: Iterable[Backend]) -> LinkConfig | None:
    """The Redis link settings of the node's transport backend, if it has one."""
    for backend in backends:
        link = getattr(backend.config, "link_config", None)
        if backend.transport and callable(link):
            found: LinkConfig = link()
            return found
    return None


def validate(config: Config) -> Node:
    """Build (without starting) a node from ``config``: every check that needs no I/O."""
    return Node(config)


def counted(count: int, noun: str) -> str:
    """``1 plugin``, ``2 plugins``: a count with its noun in the right number."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"

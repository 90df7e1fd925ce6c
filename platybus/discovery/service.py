"""Zeroconf announce and browse: the one ``Zeroconf`` of a node, and its peers.

A node owns one :class:`Discovery`, which owns one shared ``Zeroconf``. On start
it announces the node itself and every service its backends declared (the
records of :mod:`platybus.discovery.records`). Registration runs in zeroconf's
own thread, so the node is ready before probing ends. A :class:`PeerBrowser`
follows the node records of other nodes and turns them into ``node.discovered``
/ ``node.lost`` events. Zeroconf only ever runs on the configured interfaces:
``127.0.0.1`` unless the config names others.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Literal

from platybus.discovery.records import (
    NODE_TYPE,
    DiscoveryConfig,
    NodeDiscovered,
    NodeLost,
    PeerData,
    node_properties,
    peer_from_info,
    service_properties,
)
from platybus.errors import LinkError, PlatybusError
from platybus.extensions import ServiceInfo
from platybus.messages import Event

if TYPE_CHECKING:
    from zeroconf import ServiceInfo as ZeroconfInfo
    from zeroconf import ServiceStateChange, Zeroconf
    from zeroconf.asyncio import AsyncServiceBrowser

    from platybus.bus import Bus

log = logging.getLogger("platybus.discovery")

# Bound on every call made into zeroconf's thread.
LOOP_TIMEOUT = 5.0
RESOLVE_TIMEOUT_MS = 3000
RESOLVE_ATTEMPTS = 3

State = Literal["off", "created", "running", "unavailable", "stopped"]


def open_zeroconf(interfaces: Sequence[str]) -> tuple[Zeroconf, list[str]]:
    """Open zeroconf on exactly those of these IPv4 addresses this host has.

    Returns zeroconf and the addresses it uses; :class:`LinkError` if none is usable.
    """
    import ifaddr
    from zeroconf import IPVersion, Zeroconf

    # Checked first: zeroconf leaks its listening socket when an address is missing.
    present = {ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips}
    usable = [address for address in interfaces if address in present]
    missing = [address for address in interfaces if address not in present]
    if not usable:
        raise LinkError(f"cannot open zeroconf on {', '.join(interfaces)}: no interface of "
                        f"this host has that address")
    if missing:
        log.warning("zeroconf: no interface of this host has the address %s; using %s",
                    ", ".join(missing), ", ".join(usable))
    try:
        zc = Zeroconf(interfaces=list(usable), ip_version=IPVersion.V4Only)
    except (OSError, ValueError) as error:
        raise LinkError(f"cannot open zeroconf on {', '.join(usable)}: {error}") from error
    return zc, usable


def _run_in_loop(zc: Zeroconf, coro: Coroutine[Any, Any, Any]) -> Any:
    loop = zc.loop
    if loop is None or loop.is_closed() or not loop.is_running():
        coro.close()
        return None
    return asyncio.run_coroutine_threadsafe(coro, loop).result(LOOP_TIMEOUT)


PeerCallback = Callable[[PeerData], None]


class PeerBrowser:
    """Follows node records on one zeroconf: peers resolved as they appear, and lost.

    Callbacks run in zeroconf's thread and must not block.
    """

    def __init__(
        self,
        zc: Zeroconf,
        *,
        on_found: PeerCallback | None = None,
        on_lost: PeerCallback | None = None,
        skip: Callable[[PeerData], bool] | None = None,
        resolve_timeout_ms: int = RESOLVE_TIMEOUT_MS,
    ) -> None:
        self._zc = zc
        self._on_found = on_found
        self._on_lost = on_lost
        self._skip = skip
        self._resolve_timeout_ms = resolve_timeout_ms
        self._lock = threading.Lock()
        self._peers: dict[str, PeerData] = {}
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._browser: AsyncServiceBrowser | None = None
        self._active = False

    def start(self) -> None:
        """Start browsing; call from any thread but zeroconf's."""
        _run_in_loop(self._zc, self._async_start())

    def cancel(self) -> None:
        """Stop browsing and drop pending look-ups; idempotent."""
        _run_in_loop(self._zc, self._async_cancel())

    def peers(self) -> list[PeerData]:
        """Return the peers seen and not lost, by node id."""
        with self._lock:
            return sorted(self._peers.values(), key=lambda p: (p.node_id, p.instance))

    async def _async_start(self) -> None:
        from zeroconf.asyncio import AsyncServiceBrowser

        if self._browser is None:
            # Records already in zeroconf's cache are reported while the browser is being
            # built, before it is assigned: accept changes from here on.
            self._active = True
            self._browser = AsyncServiceBrowser(self._zc, [NODE_TYPE], handlers=[self._on_change])

    async def _async_cancel(self) -> None:
        self._active = False
        browser, self._browser = self._browser, None
        if browser is not None:
            await browser.async_cancel()
        for task in self._resolving.values():
            task.cancel()
        self._resolving.clear()

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str,
                   state_change: ServiceStateChange) -> None:
        from zeroconf import ServiceStateChange

        if not self._active:
            return
        if state_change is ServiceStateChange.Removed:
            pending = self._resolving.pop(name, None)
            if pending is not None:
                pending.cancel()
            with self._lock:
                peer = self._peers.pop(name, None)
            if peer is not None and self._on_lost is not None:
                self._call(self._on_lost, peer)
            return
        if name in self._resolving:
            return
        task = asyncio.ensure_future(self._resolve(service_type, name))
        self._resolving[name] = task
        task.add_done_callback(lambda _: self._forget(name, task))

    def _forget(self, name: str, task: asyncio.Task[None]) -> None:
        if self._resolving.get(name) is task:
            del self._resolving[name]

    async def _resolve(self, service_type: str, name: str) -> None:
        from zeroconf.asyncio import AsyncServiceInfo

        # A responder that has just multicast its records stays quiet for a while
        # (RFC 6762 rate limits): ask again rather than miss a peer until it re-announces.
        for attempt in range(1, RESOLVE_ATTEMPTS + 1):
            info = AsyncServiceInfo(service_type, name)
            if await info.async_request(self._zc, self._resolve_timeout_ms):
                break
            log.debug("no answer from %s within %d ms (attempt %d of %d)", name,
                      self._resolve_timeout_ms, attempt, RESOLVE_ATTEMPTS)
        else:
            log.info("peer %s did not answer %d look-ups; it is ignored until it "
                     "announces again", name, RESOLVE_ATTEMPTS)
            return
        peer = peer_from_info(info)
        if peer is None:
            log.debug("ignoring %s: its record carries no node id", name)
            return
        if self._skip is not None and self._skip(peer):
            return
        with self._lock:
            known = self._peers.get(name)
            self._peers[name] = peer
        if known is None and self._on_found is not None:
            self._call(self._on_found, peer)

    def _call(self, callback: PeerCallback, peer: PeerData) -> None:
        try:
            callback(peer)
        except Exception:
            log.exception("handling peer %s failed", peer.node_id)


class Discovery:
    """Announces this node and its services over zeroconf, and follows its peers."""

    def __init__(self, config: DiscoveryConfig, *, node_id: str, version: str,
                 bus: Bus | None = None) -> None:
        self.config = config
        self.node_id = node_id
        self.version = version
        self.state: State = "created" if config.enabled else "off"
        self._bus = bus
        # Tells this process's own node record apart from another node's with the same id.
        self._run = os.urandom(4).hex()
        self._lock = threading.Lock()
        self._zc: Zeroconf | None = None
        self._browser: PeerBrowser | None = None
        self._infos: list[ZeroconfInfo] = []
        self._addresses: list[str] = []
        self._registering: Future[None] | None = None
        self._broadcasts: list[asyncio.Future[Any]] = []
        self.announced = threading.Event()

    def start(self, services: Sequence[ServiceInfo] = ()) -> None:
        """Open zeroconf, announce in its thread (without waiting) and browse for peers.

        If no configured interface can be used, log a warning and run without.
        """
        with self._lock:
            if self.state != "created":
                return
            try:
                zc, self._addresses = open_zeroconf(self.config.interfaces)
            except LinkError as error:
                log.warning("zeroconf discovery is off: %s; the node runs without announcing "
                            "itself or finding peers (set discovery.interfaces to addresses of "
                            "this host)", error)
                self.state = "unavailable"
                return
            self._zc = zc
            self.state = "running"
            failure: BaseException | None = None
            try:
                self._start_on(zc, services)
            except BaseException as error:
                failure = error
        if failure is not None:
            # Nothing else will stop a component whose start raised: close zeroconf's thread.
            self.stop()
            raise failure
        log.info("zeroconf on %s: %s", ", ".join(self._addresses),
                 ", ".join(info.name for info in self._infos) or "browsing only")

    def _start_on(self, zc: Zeroconf, services: Sequence[ServiceInfo]) -> None:
        if self.config.announce:
            self._infos = self._build_infos(services)
            assert zc.loop is not None
            self._registering = asyncio.run_coroutine_threadsafe(
                self._register_all(zc, self._infos), zc.loop)
        if self.config.browse and self._bus is not None:
            self._browser = PeerBrowser(zc, on_found=self._found, on_lost=self._lost,
                                        skip=self._is_own)
            self._browser.start()

    def stop(self) -> None:
        """Stop browsing, unannounce everything and close zeroconf; idempotent."""
        with self._lock:
            zc, self._zc = self._zc, None
            browser, self._browser = self._browser, None
            registering, self._registering = self._registering, None
            if zc is None:
                if self.state == "created":
                    self.state = "stopped"
                return
            self.state = "stopped"
        began = time.monotonic()
        try:
            if browser is not None:
                browser.cancel()
            if registering is not None:
                registering.cancel()
            _run_in_loop(zc, self._cancel_broadcasts())
        except Exception:
            log.exception("stopping zeroconf browsing failed")
        try:
            # Sends goodbyes for every registered record, then joins zeroconf's thread.
            zc.close()
        except Exception:
            log.exception("closing zeroconf failed")
        log.debug("zeroconf closed in %.3fs", time.monotonic() - began)

    def peers(self) -> list[PeerData]:
        """Return the peers this node currently sees."""
        browser = self._browser
        return browser.peers() if browser is not None else []

    def names(self) -> list[str]:
        """Return the instance names announced (after a rename, the new ones)."""
        return [info.name for info in self._infos]

    # -- announce --------------------------------------------------------------

    def _build_infos(self, services: Sequence[ServiceInfo]) -> list[ZeroconfInfo]:
        from zeroconf import ServiceInfo as ZeroconfInfo

        addresses = list(self._addresses)
        server = f"{self.node_id}.local."
        ttl = self.config.ttl
        http = [s.port for s in services if s.name == "http" and not s.udp]
        infos = [ZeroconfInfo(
            NODE_TYPE, f"{self.node_id}.{NODE_TYPE}", port=http[0] if http else 0,
            properties=node_properties(self.node_id, self.version, services, self._run),
            server=server, host_ttl=ttl, other_ttl=ttl, parsed_addresses=addresses)]
        for service in services:
            infos.append(ZeroconfInfo(
                service.srv_type, f"{service.srv_name}.{service.srv_type}", port=service.port,
                properties=service_properties(self.node_id, self.version, service),
                server=server, host_ttl=ttl, other_ttl=ttl, parsed_addresses=addresses))
        return infos

    async def _register_all(self, zc: Zeroconf, infos: list[ZeroconfInfo]) -> None:
        results = await asyncio.gather(*(self._register(zc, info) for info in infos),
                                       return_exceptions=True)
        for info, result in zip(infos, results, strict=True):
            if isinstance(result, BaseException):
                log.error("cannot announce %s: %s: %s", info.name, type(result).__name__, result)
        self.announced.set()

    async def _register(self, zc: Zeroconf, info: ZeroconfInfo) -> None:
        wanted = info.name
        broadcast = await zc.async_register_service(
            info, allow_name_change=True, cooperating_responders=not self.config.probe)
        self._broadcasts.append(asyncio.ensure_future(broadcast))
        if info.name != wanted:
            log.warning("%s is taken on the network: announced as %s instead", wanted, info.name)

    async def _cancel_broadcasts(self) -> None:
        for task in self._broadcasts:
            task.cancel()
        self._broadcasts.clear()

    # -- browse ----------------------------------------------------------------

    def _is_own(self, peer: PeerData) -> bool:
        return peer.run == self._run and peer.node_id == self.node_id

    def _found(self, peer: PeerData) -> None:
        log.info("discovered node %s at %s", peer.node_id, ", ".join(peer.addresses) or peer.host)
        self._publish(NodeDiscovered(origin=self.node_id, data=peer))

    def _lost(self, peer: PeerData) -> None:
        log.info("lost node %s", peer.node_id)
        self._publish(NodeLost(origin=self.node_id, data=peer))

    def _publish(self, event: Event) -> None:
        if self._bus is None:
            return
        try:
            self._bus.publish(event)
        except PlatybusError as error:
            log.warning("cannot publish %s: %s", event.type, error)


def browse_nodes(interfaces: Sequence[str], wait: float) -> list[PeerData]:
    """Browse for ``wait`` seconds on ``interfaces`` and return the nodes that answered."""
    zc, _ = open_zeroconf(interfaces)
    try:
        browser = PeerBrowser(zc)
        browser.start()
        time.sleep(max(0.0, wait))
        browser.cancel()
        return browser.peers()
    finally:
        zc.close()

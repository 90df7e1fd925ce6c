"""What a node announces over zeroconf, and how a peer's records are read back.

A node record (``_platybus-node._tcp.local.``) carries the node's id, version
and run, and one TXT entry per service its backends declared; a service record
(``_platybus-<name>._tcp.local.``) carries the backend's properties. This module
holds that format, the ``discovery`` config section and the ``node.discovered``
/ ``node.lost`` events; it does no I/O (:mod:`platybus.discovery.service` does).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import msgspec

from platybus.extensions import TXT_ENTRY_LIMIT, ServiceInfo
from platybus.messages import Event

if TYPE_CHECKING:
    from zeroconf import ServiceInfo as ZeroconfInfo

    from platybus.config import Config

log = logging.getLogger("platybus.discovery")

NODE_TYPE = "_platybus-node._tcp.local."
# Node record TXT key of each service: ``s.<name>`` = compact JSON.
SERVICE_KEY = "s."


class DiscoveryConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The ``discovery`` section."""

    enabled: bool = True
    interfaces: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1"])
    announce: bool = True
    browse: bool = True
    probe: bool = True
    ttl: Annotated[int, msgspec.Meta(ge=1, le=4500)] = 120


class PeerService(msgspec.Struct, frozen=True):
    """A service a node announces: its name, zeroconf type, port and path."""

    name: str
    type: str
    port: int
    path: str = "/"


class PeerData(msgspec.Struct, frozen=True):
    """What a node announces about itself (data of ``node.discovered`` / ``node.lost``)."""

    node_id: str
    host: str
    addresses: tuple[str, ...] = ()
    port: int = 0
    version: str = ""
    services: tuple[PeerService, ...] = ()
    instance: str = ""
    # Random per process: tells a restarted node, or two nodes sharing an id, apart.
    run: str = ""


class NodeDiscovered(Event, tag="event", frozen=True, kw_only=True):
    """Another node appeared on the network."""

    type: str = "node.discovered"
    data: PeerData


class NodeLost(Event, tag="event", frozen=True, kw_only=True):
    """A node that was discovered left the network (or its records expired)."""

    type: str = "node.lost"
    data: PeerData


EVENT_TYPES: tuple[type[Event], ...] = (NodeDiscovered, NodeLost)


class _ServiceEntry(msgspec.Struct, frozen=True):
    type: str
    port: int
    path: str = "/"


_encode_entry = msgspec.json.Encoder()
_decode_entry = msgspec.json.Decoder(_ServiceEntry)


def load_discovery_config(config: Config) -> DiscoveryConfig:
    """Validate the ``discovery`` section; errors name the file, line and key."""
    raw = config.section("discovery")
    result = config.convert({} if raw is None else raw, DiscoveryConfig, ("discovery",))
    if result.enabled and not result.interfaces:
        raise config.source.error(("discovery", "interfaces"),
                                  "name at least one IPv4 address (127.0.0.1: this host only)")
    for index, text in enumerate(result.interfaces):
        problem = interface_problem(text)
        if problem is not None:
            raise config.source.error(("discovery", "interfaces", index), problem)
    return result


def interface_problem(text: str) -> str | None:
    """Return why ``text`` cannot name an interface to run zeroconf on, or ``None``."""
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        return f"{text!r} is not the IPv4 address of an interface of this host"
    if address.is_unspecified or address.is_multicast:
        return f"{text} is not the address of one interface"
    return None


def node_properties(node_id: str, version: str, services: Sequence[ServiceInfo],
                    run: str = "") -> dict[str, str]:
    """Return the TXT properties of a node record: id, version and one entry per service."""
    properties = {"id": node_id, "version": version}
    if run:
        properties["run"] = run
    for service in services:
        key = SERVICE_KEY + service.name
        entry = _encode_entry.encode(_ServiceEntry(
            service.srv_type, service.port, service.properties.get("path", "/"))).decode()
        if len(f"{key}={entry}".encode()) > TXT_ENTRY_LIMIT:
            log.warning("service %s is left out of the node record: its entry exceeds %d bytes "
                        "(it is still announced as %s)", service.name, TXT_ENTRY_LIMIT,
                        service.srv_type)
            continue
        properties[key] = entry
    return properties


def service_properties(node_id: str, version: str, service: ServiceInfo) -> dict[str, str]:
    """Return the TXT properties of a service record: the backend's, plus id, version, path."""
    return {**service.properties, "id": node_id, "version": version,
            "path": service.properties.get("path", "/")}


def peer_from_info(info: ZeroconfInfo) -> PeerData | None:
    """Read a resolved node record; ``None`` if it is not a platybus node record."""
    from zeroconf import IPVersion

    properties = info.decoded_properties
    node_id = properties.get("id")
    if not node_id:
        return None
    services = []
    for key, value in sorted(properties.items()):
        if not key.startswith(SERVICE_KEY) or not value:
            continue
        try:
            entry = _decode_entry.decode(value)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.debug("node %s: ignoring unreadable service entry %s=%r", node_id, key, value)
            continue
        services.append(PeerService(key[len(SERVICE_KEY):], entry.type, entry.port, entry.path))
    return PeerData(
        node_id=node_id,
        host=info.server or "",
        addresses=tuple(info.parsed_addresses(IPVersion.V4Only)),
        port=info.port or 0,
        version=properties.get("version") or "",
        services=tuple(services),
        instance=info.name,
        run=properties.get("run") or "",
    )

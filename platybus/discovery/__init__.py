"""Zeroconf discovery of platybus nodes.

- :mod:`~platybus.discovery.records`: what a node announces and how a peer is read back
  (``PeerData``, the ``discovery`` section, ``node.discovered`` / ``node.lost``); no I/O.
- :mod:`~platybus.discovery.service`: ``Discovery`` (announce and browse on one zeroconf),
  ``PeerBrowser`` and ``browse_nodes``.
"""

from platybus.discovery.records import (
    EVENT_TYPES,
    NODE_TYPE,
    DiscoveryConfig,
    NodeDiscovered,
    NodeLost,
    PeerData,
    PeerService,
    interface_problem,
    load_discovery_config,
    node_properties,
    peer_from_info,
    service_properties,
)
from platybus.discovery.service import Discovery, PeerBrowser, browse_nodes, open_zeroconf

__all__ = [
    "EVENT_TYPES",
    "NODE_TYPE",
    "Discovery",
    "DiscoveryConfig",
    "NodeDiscovered",
    "NodeLost",
    "PeerBrowser",
    "PeerData",
    "PeerService",
    "browse_nodes",
    "interface_problem",
    "load_discovery_config",
    "node_properties",
    "open_zeroconf",
    "peer_from_info",
    "service_properties",
]

"""Zeroconf discovery on 127.0.0.1: announce, browse, node.discovered / node.lost."""

from __future__ import annotations

import logging
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from zeroconf import IPVersion, Zeroconf

from platybus.config import load_config
from platybus.discovery import (
    NODE_TYPE,
    Discovery,
    DiscoveryConfig,
    NodeDiscovered,
    NodeLost,
    PeerBrowser,
    PeerData,
    open_zeroconf,
)
from platybus.errors import ConfigError, ExtensionError
from platybus.extensions import ServiceInfo
from platybus.messages import Event, Request
from platybus.node import Node

BACKENDS = '''
from platybus.extensions import Backend

class Echo(Backend):
    """Declares one service once it "serves", like a real server backend."""

    def on_start(self):
        self.register_service(port=4321, name="echo",
                              properties={"path": "/echo", "flavour": "plain"})

class Chatty(Backend):
    """Declares a service whose type label zeroconf cannot carry, when built."""

    def __init__(self, name, config, context):
        super().__init__(name, config, context)
        self.register_service(port=1, name="websocket", srv_type="_platybus-websocket._tcp.local.")

class LateChatty(Backend):
    """Declares the same too-long service only once running."""

    def on_start(self):
        self.register_service(port=1, name="websocket", srv_type="_platybus-websocket._tcp.local.")
'''


def unique(prefix: str) -> str:
    # Other test runs on this host share 127.0.0.1's mDNS: ids must not collide with theirs.
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def write_config(tmp_path: Path, node_id: str, extra: str = "") -> Path:
    ext = tmp_path / "ext"
    ext.mkdir(exist_ok=True)
    (ext / "disc_backends.py").write_text(textwrap.dedent(BACKENDS))
    path = tmp_path / f"{node_id}.yaml"
    path.write_text(
        f"node:\n  id: {node_id}\n  data_dir: {tmp_path / node_id}\n"
        f"  extensions_path: [{ext}]\n{extra}"
    )
    return path


def wait_for(predicate: Callable[[], bool], timeout: float = 8.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def browse_until(done: Callable[[list[PeerData]], bool], timeout: float = 10.0) -> list[PeerData]:
    """Browse 127.0.0.1 until ``done(peers)`` holds or ``timeout`` passes; return the peers.

    mDNS answers are rate limited and multicast: how soon they come varies with load.
    """
    zc, _ = open_zeroconf(["127.0.0.1"])
    browser = PeerBrowser(zc)
    try:
        browser.start()
        wait_for(lambda: done(browser.peers()), timeout)
        return browser.peers()
    finally:
        browser.cancel()
        zc.close()


class Recorder:
    """Collects node.discovered / node.lost events seen by one node."""

    def __init__(self, node: Node) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()
        node.bus.subscribe("type=node.discovered or type=node.lost", self._add)

    def _add(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, kind: str, node_id: str) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.type == kind and e.data.node_id == node_id]


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    built: list[Node] = []
    yield built
    for node in built:
        node.stop()


def test_two_nodes_find_each_other_and_see_one_leave(tmp_path: Path, nodes: list[Node]) -> None:
    a_id, b_id = unique("disc-a"), unique("disc-b")
    a = Node(load_config(write_config(tmp_path, a_id)))
    b = Node(load_config(write_config(tmp_path, b_id)))
    nodes += [a, b]
    seen_by_a, seen_by_b = Recorder(a), Recorder(b)
    a.start()
    b.start()

    assert wait_for(lambda: bool(seen_by_a.of("node.discovered", b_id))), seen_by_a.events
    assert wait_for(lambda: bool(seen_by_b.of("node.discovered", a_id))), seen_by_b.events
    found = seen_by_a.of("node.discovered", b_id)[0]
    assert isinstance(found, NodeDiscovered)
    assert found.origin == a_id
    assert found.data.addresses == ("127.0.0.1",)
    assert found.data.version == a.context.version
    assert found.data.host == f"{b_id}.local."
    # A node never discovers itself.
    assert not seen_by_a.of("node.discovered", a_id)
    peers = a.bus.request(Request(action="discovery.peers"), timeout=5).output
    assert b_id in [p.node_id for p in peers]
    assert a.health()["components"]["discovery"] == "running"

    b.stop()
    assert wait_for(lambda: bool(seen_by_a.of("node.lost", b_id))), seen_by_a.events
    lost = seen_by_a.of("node.lost", b_id)[0]
    assert isinstance(lost, NodeLost)
    assert lost.data.node_id == b_id
    assert b_id not in [p.node_id for p in a.discovery.peers()]


def test_a_backend_service_is_announced_with_its_type_and_properties(
    tmp_path: Path, nodes: list[Node]
) -> None:
    node_id = unique("disc-svc")
    node = Node(load_config(write_config(
        tmp_path, node_id,
        "backends:\n  echo:\n    class: disc_backends:Echo\ndiscovery:\n  probe: false\n")))
    nodes.append(node)
    node.start()
    assert node.discovery.announced.wait(5)
    zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        info = zc.get_service_info("_platybus-echo._tcp.local.",
                                   f"{node_id}._platybus-echo._tcp.local.", timeout=3000)
    finally:
        zc.close()
    assert info is not None
    assert info.port == 4321
    assert info.parsed_addresses() == ["127.0.0.1"]
    assert info.decoded_properties == {
        "id": node_id, "version": node.context.version, "path": "/echo", "flavour": "plain"}

    # The node record lists the service too, for `platybus nodes` and node.discovered.
    peers = browse_until(lambda peers: any(p.node_id == node_id for p in peers))
    found = {p.node_id: p for p in peers}
    assert node_id in found
    (service,) = found[node_id].services
    assert (service.name, service.type, service.port, service.path) == (
        "echo", "_platybus-echo._tcp.local.", 4321, "/echo")


def test_a_service_label_over_15_bytes_is_a_config_error_when_the_node_is_built(
    tmp_path: Path
) -> None:
    path = write_config(tmp_path, unique("disc-long"),
                        "backends:\n  chatty:\n    class: disc_backends:Chatty\n")
    with pytest.raises(ConfigError) as info:
        Node(load_config(path))
    error = info.value
    assert error.key == "backends.chatty"
    assert error.file == str(path)
    assert error.line == 6
    assert "'platybus-websocket' is 18 bytes" in str(error)
    assert "at most 15" in str(error)


def test_a_service_label_too_long_declared_at_start_fails_the_start_clearly(
    tmp_path: Path
) -> None:
    node = Node(load_config(write_config(
        tmp_path, unique("disc-late"),
        "backends:\n  late:\n    class: disc_backends:LateChatty\n")))
    with pytest.raises(ExtensionError, match="is 18 bytes, zeroconf allows at most 15"):
        node.start()
    assert node.state == "failed"


def test_service_info_rejects_what_zeroconf_cannot_announce() -> None:
    def info(**changes: object) -> ServiceInfo:
        fields: dict[str, object] = {"port": 80, "name": "http", "srv_name": "n",
                                     "srv_type": "_platybus-http._tcp.local."}
        fields.update(changes)
        return ServiceInfo(**fields)  # type: ignore[arg-type]

    assert info().srv_type == "_platybus-http._tcp.local."
    assert info(srv_type="_platybus-abcdef._tcp.local.").name == "http"
    with pytest.raises(ExtensionError, match="at most 15"):
        info(srv_type="_platybus-abcdefg._tcp.local.")
    with pytest.raises(ExtensionError, match=r"must end with '\._tcp\.local\.'"):
        info(srv_type="_platybus-http._udp.local.")
    with pytest.raises(ExtensionError, match="single inner hyphens"):
        info(srv_type="_platybus_http._tcp.local.")
    with pytest.raises(ExtensionError, match="port 70000"):
        info(port=70000)
    with pytest.raises(ExtensionError, match="longer than 255 bytes"):
        info(properties={"path": "/" + "x" * 300})


def test_discovery_config_errors_name_file_line_and_key(tmp_path: Path) -> None:
    path = write_config(tmp_path, "disc-cfg", "discovery:\n  interfaces: [127.0.0.1, eth0]\n")
    with pytest.raises(ConfigError) as info:
        Node(load_config(path))
    assert info.value.key == "discovery.interfaces[1]"
    assert info.value.line == 6
    assert "'eth0' is not the IPv4 address" in str(info.value)

    path = write_config(tmp_path, "disc-cfg", "discovery:\n  interface: [127.0.0.1]\n")
    with pytest.raises(ConfigError, match="did you mean 'interfaces'"):
        Node(load_config(path))

    path = write_config(tmp_path, "disc-cfg", "discovery:\n  ttl: 0\n")
    with pytest.raises(ConfigError) as info:
        Node(load_config(path))
    assert info.value.key == "discovery.ttl"


def test_no_usable_interface_logs_a_warning_and_the_node_still_starts(
    tmp_path: Path, nodes: list[Node], caplog: pytest.LogCaptureFixture
) -> None:
    # 198.51.100.7 is a documentation address: no interface of this host has it.
    node = Node(load_config(write_config(
        tmp_path, unique("disc-none"), "discovery:\n  interfaces: [198.51.100.7]\n")))
    nodes.append(node)
    with caplog.at_level(logging.WARNING, logger="platybus.discovery"):
        node.start()
    assert node.state == "ready"
    assert node.health()["components"]["discovery"] == "unavailable"
    assert ("zeroconf discovery is off: cannot open zeroconf on 198.51.100.7: no interface "
            "of this host has that address" in caplog.text)
    assert node.bus.request(Request(action="discovery.peers"), timeout=5).output == []


def test_disabled_discovery_opens_nothing(tmp_path: Path, nodes: list[Node]) -> None:
    node = Node(load_config(write_config(
        tmp_path, unique("disc-off"), "discovery:\n  enabled: false\n")))
    nodes.append(node)
    before = threading.active_count()
    node.start()
    assert node.health()["components"]["discovery"] == "off"
    # bus dispatcher and action runner only: no zeroconf thread
    assert all("_run_loop" not in t.name for t in threading.enumerate())
    assert threading.active_count() >= before


def test_a_taken_name_is_renamed_not_fatal() -> None:
    node_id = unique("disc-twin")
    first = Discovery(DiscoveryConfig(), node_id=node_id, version="1")
    second = Discovery(DiscoveryConfig(), node_id=node_id, version="1")
    try:
        first.start()
        assert first.announced.wait(5)
        second.start()
        assert second.announced.wait(8)
        assert first.names() == [f"{node_id}.{NODE_TYPE}"]
        assert second.names() == [f"{node_id}-2.{NODE_TYPE}"]
        peers = browse_until(lambda peers: sum(p.node_id == node_id for p in peers) == 2)
        found = [p for p in peers if p.node_id == node_id]
        assert sorted(p.instance for p in found) == sorted(first.names() + second.names())
    finally:
        second.stop()
        first.stop()


def test_a_peer_already_in_zeroconfs_cache_is_found() -> None:
    # zeroconf reports records it already holds while a browser is being built: a node
    # whose zeroconf heard a peer before it started browsing must not miss that peer.
    from zeroconf import ServiceBrowser

    node_id = unique("disc-cached")
    peer = Discovery(DiscoveryConfig(browse=False), node_id=node_id, version="1")
    zc, _ = open_zeroconf(["127.0.0.1"])
    heard: list[str] = []
    plain = ServiceBrowser(zc, NODE_TYPE, handlers=[
        lambda zeroconf, service_type, name, state_change: heard.append(name)])
    browser = PeerBrowser(zc)
    try:
        peer.start()
        assert peer.announced.wait(5)
        assert wait_for(lambda: f"{node_id}.{NODE_TYPE}" in heard, timeout=10)
        browser.start()
        assert wait_for(lambda: any(p.node_id == node_id for p in browser.peers()), timeout=10)
    finally:
        browser.cancel()
        plain.cancel()
        zc.close()
        peer.stop()


def test_stop_is_idempotent_and_works_before_start() -> None:
    never = Discovery(DiscoveryConfig(), node_id=unique("disc-idle"), version="1")
    never.stop()
    assert never.state == "stopped"
    discovery = Discovery(DiscoveryConfig(browse=False), node_id=unique("disc-stop"), version="1")
    discovery.start([ServiceInfo(port=80, name="http", srv_name="x",
                                 srv_type="_platybus-http._tcp.local.")])
    discovery.stop()
    discovery.stop()
    assert discovery.state == "stopped"
    assert discovery.peers() == []


def test_peer_data_round_trips_through_the_codec(tmp_path: Path) -> None:
    node = Node(load_config(write_config(tmp_path, "disc-codec")))
    event = NodeDiscovered(data=PeerData(node_id="x", host="x.local.", addresses=("127.0.0.1",)))
    decoded = node.codec.decode(node.codec.encode(event))
    assert isinstance(decoded, NodeDiscovered)
    assert decoded.data == event.data


def test_a_missing_address_is_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    discovery = Discovery(DiscoveryConfig(interfaces=["198.51.100.7", "127.0.0.1"], browse=False),
                          node_id=unique("disc-mixed"), version="1")
    try:
        with caplog.at_level(logging.WARNING, logger="platybus.discovery"):
            discovery.start()
        assert discovery.state == "running"
        assert "no interface of this host has the address 198.51.100.7; using 127.0.0.1" \
            in caplog.text
    finally:
        discovery.stop()

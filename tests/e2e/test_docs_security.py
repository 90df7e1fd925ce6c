"""The docs' curl lines, run as written against the default config with its generated token."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "docs" / "backends" / "http.md", REPO / "docs" / "cli.md", REPO / "README.md"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def curl_lines(path: Path) -> list[str]:
    """Each ``curl`` command of a page (``$ curl`` in console blocks, ``curl`` in sh blocks)."""
    commands, current = [], ""
    for line in path.read_text().splitlines():
        text = line.strip()
        if current:
            current += " " + text.rstrip("\\").strip()
            if not text.endswith("\\"):
                commands.append(current)
                current = ""
            continue
        match = re.match(r"^(?:\$ )?(curl .*)$", text)
        if match:
            current = match.group(1).rstrip("\\").strip()
            if not text.endswith("\\"):
                commands.append(current)
                current = ""
    return commands


@pytest.fixture(scope="module")
def default_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    """The repository's config.yaml, on a free port, in a directory of its own."""
    home = tmp_path_factory.mktemp("default-node")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    port = free_port()
    config["backends"]["http"]["port"] = port
    (home / "config.yaml").write_text(yaml.safe_dump(config))
    (home / ".venv").symlink_to(Path(sys.executable).parent.parent)  # the README's path
    log = (home / "node.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "platybus", "run", "-c", "config.yaml"],
                            cwd=home, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (home / "node.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield home, port
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@pytest.mark.slow
@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_the_docs_curl_lines_work_with_the_generated_token(
        default_node: tuple[Path, int], page: Path) -> None:
    home, port = default_node
    token = (home / "data" / "http.token").read_text().strip()
    assert (home / "data" / "http.token").stat().st_mode & 0o777 == 0o600
    commands = curl_lines(page)
    assert commands, page
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "TOKEN": token}  # lines that say $TOKEN were told to set it
    for command in commands:
        if "/dlq" in command:
            continue  # dead letters need the redis backend, which the default config lacks
        line = command.replace("localhost:8008", f"localhost:{port}")
        streaming = " -sN " in f" {line} "
        done = subprocess.run(["bash", "-c", f"timeout 3 {line}" if streaming else line],
                              cwd=home, env=env, capture_output=True, text=True, timeout=60,
                              check=False)
        if streaming:
            assert done.stdout.startswith(": connected"), (line, done.stdout, done.stderr)
            continue
        assert done.returncode == 0, (line, done.stderr)
        answer = json.loads(done.stdout)
        assert not (isinstance(answer, dict) and answer.get("error")), (line, answer)
        assert token not in done.stdout
    assert "Traceback" not in (home / "node.log").read_text()

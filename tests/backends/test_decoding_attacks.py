"""Hostile input to the decoders: nested, huge and broken JSON on HTTP, websocket and streams.

Each attack is refused with a DecodeError, runs nothing, leaves the node serving,
and leaves no traceback in the log.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
import yaml
from platybus.backends.http.backend import HttpBackend

from platybus.client import Client
from platybus.codec import Codec
from platybus.config import load_config
from platybus.link.protocol import Envelope, StreamKeys
from platybus.node import Node

Launcher = Callable[..., Any]

TOKEN = "decoding-test-token-0123456789"
NESTED = b'{"action": "node.ping", "args": {"x": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
NESTED_EVENT = b'{"type": "deep.data", "data": ' + b"[" * 5000 + b"]" * 5000 + b"}"


@pytest.fixture
def node(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Node]:
    caplog.set_level(logging.INFO)
    config = {"node": {"id": "victim", "data_dir": str(tmp_path / "data"), "stop_timeout": 3},
              "backends": {"http": {"port": 0, "token": TOKEN}}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    node = Node(load_config(path))
    node.start()
    yield node
    node.stop()


def port_of(node: Node) -> int:
    backend = node.backends["http"]
    assert isinstance(backend, HttpBackend)
    return backend.port


def post(port: int, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers={
            "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """No log record carries a traceback, and none is an error."""
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]
    assert "Traceback" not in caplog.text


def assert_still_serves(port: int) -> None:
    status, body = post(port, "/execute", b'{"action": "node.ping"}')
    assert status == 200
    assert body["output"]["pong"] is True


def test_nested_json_on_execute_and_events_is_a_400_decode_error(
        node: Node, caplog: pytest.LogCaptureFixture) -> None:
    port = port_of(node)
    seen: list[Any] = []
    node.bus.subscribe("deep.*", seen.append)
    status, body = post(port, "/execute", NESTED)
    assert status == 400
    assert body["error"]["type"] == "DecodeError"
    assert "nested deeper than the maximum of 64 levels" in body["error"]["message"]
    status, body = post(port, "/events", NESTED_EVENT)
    assert (status, body["error"]["type"]) == (400, "DecodeError")
    assert_still_serves(port)
    assert seen == []  # nothing was published
    assert "refused (400 DecodeError)" in caplog.text  # one line naming the peer
    assert "from 127.0.0.1" in caplog.text
    assert_no_traceback(caplog)


def test_text_that_is_not_unicode_or_json_is_a_400(
        node: Node, caplog: pytest.LogCaptureFixture) -> None:
    port = port_of(node)
    for body in (b'{"action": "node.ping", "args": {"s": "\xed\xa0\x80"}}',  # a lone surrogate
                 b"\xff\xfe{", b'{"action": "node.ping"' + b"," * 10000,
                 b"[" * 200_000):
        status, answer = post(port, "/execute", body)
        assert (status, answer["error"]["type"]) == (400, "DecodeError"), body[:40]
    assert_still_serves(port)
    assert_no_traceback(caplog)


def test_nested_json_on_the_websocket_gets_an_error_frame_and_the_socket_stays_open(
        node: Node, caplog: pytest.LogCaptureFixture) -> None:
    port = port_of(node)

    async def run() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        async with aiohttp.ClientSession() as session, session.ws_connect(
                f"http://127.0.0.1:{port}/ws?filter=kind=response",
                headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
            await ws.send_bytes(b'{"kind": "request", ' + NESTED[1:])
            first = await ws.receive_json(timeout=10)
            await ws.send_str('{"kind": "event", "type": "x.y", "data": "\ud800"}'
                              .encode("utf-8", "surrogatepass").decode("utf-8", "replace"))
            await ws.send_str(json.dumps({"kind": "event", "type": "deep.x"})[:-1]
                              + ', "data": ' + "[" * 5000 + "]" * 5000 + "}")
            second = await ws.receive_json(timeout=10)
            await ws.send_str(json.dumps({"kind": "request", "action": "node.ping"}))
            third = await ws.receive_json(timeout=10)
            assert not ws.closed
            return first, second, third

    first, second, third = asyncio.run(run())
    assert first["error"]["type"] == "DecodeError"
    assert "nested deeper" in first["error"]["message"]
    assert second["error"]["type"] == "DecodeError"
    assert third["output"]["pong"] is True  # the same socket still serves
    assert "websocket frame from 127.0.0.1 refused" in caplog.text
    assert_no_traceback(caplog)


def test_a_client_that_disconnects_mid_body_leaves_no_traceback(
        node: Node, caplog: pytest.LogCaptureFixture) -> None:
    port = port_of(node)
    for path in ("/execute", "/events"):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         f"Authorization: Bearer {TOKEN}\r\n"
                         "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
                         '{"action": "node.ping", "args": {"pad": "'.encode())
    # The server notices each reset before it answers the next client on its loop.
    deadline = time.monotonic() + 10
    while node.backends["http"].requests[("/execute", 200)] < 3 and time.monotonic() < deadline:
        assert_still_serves(port)
    assert_still_serves(port)
    assert_no_traceback(caplog)


@pytest.mark.slow
def test_nested_and_broken_stream_entries_are_rejected_and_the_node_keeps_serving(
        launch: Launcher, client: Client, redis_url: str, prefix: str, secret: str) -> None:
    b = launch("B")
    keys = StreamKeys(prefix)
    inbox = keys.inbox("B")
    signed = Envelope(Codec(), secret)
    deep = (b'{"kind": "request", "id": "deep1", "ts": 1.0, "origin": "intruder", '
            b'"target": "B", "action": "probe.mark", "args": {"tag": ' + b"[" * 5000
            + b"]" * 5000 + b"}}")
    r = redis.Redis.from_url(redis_url)
    try:
        r.xadd(inbox, signed.pack(inbox, "intruder", [deep]))
        r.xadd(inbox, signed.pack(inbox, "intruder", [b"[" * 100_000]))
        r.xadd(inbox, {b"v": b"1", b"o": b"intruder", b"m": b"[" * 100_000})
    finally:
        r.close()
    deadline = time.monotonic() + 15
    while True:
        info = client.request("B", "node.info").output
        link = info["components"]["details"]["redis"]
        if link["rejected_total"] >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert link["rejected_total"] >= 3, link
    assert client.request("B", "node.ping").ok  # still serves
    assert b.marks() == []  # nothing ran
    log = b.log.read_text()
    assert "Traceback" not in log
    assert "RecursionError" not in log

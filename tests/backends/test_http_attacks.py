"""The HTTP API played by an attacker: a hostile web page, a rebinding name, a proxy, weak tokens.

A real node serves on a free port; the shell plugin is loaded, as in the default
config, with a command that would leave a file behind if it ever ran. Each
attack is refused before anything runs; the node keeps serving; the log holds
no traceback.
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
import yaml
from platybus.backends.http.backend import HttpBackend

from platybus.config import load_config
from platybus.node import Node

ADMIN = "admin-token-0123456789abcdef"
READER = "reader-token-0123456789abcdef"
NODE_ONLY = "node-only-token-0123456789abc"
PUBLISHER = "publisher-token-0123456789abc"


@pytest.fixture
def make_node(tmp_path: Path, caplog: pytest.LogCaptureFixture
              ) -> Iterator[Callable[..., tuple[Node, int, Path]]]:
    caplog.set_level(logging.INFO)
    nodes: list[Node] = []

    def make(**http: Any) -> tuple[Node, int, Path]:
        marker = tmp_path / "pwned"
        config = {
            "node": {"id": "victim", "data_dir": str(tmp_path / "data"), "stop_timeout": 3},
            "plugins": {"shell": {"timeout": 10}},
            "backends": {"http": {"port": 0, "token": ADMIN, "tokens": {
                "grafana": {"token": READER, "scope": "read"},
                "panel": {"token": NODE_ONLY, "scope": "execute", "execute": ["node.*"]},
                "sensor": {"token": PUBLISHER, "scope": "publish"},
            }, **http}},
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        node = Node(load_config(path))
        nodes.append(node)
        node.start()
        backend = node.backends["http"]
        assert isinstance(backend, HttpBackend)
        return node, backend.port, marker

    yield make
    for node in nodes:
        node.stop()


def send(port: int, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """One raw request; the answer's JSON decoded when it is JSON."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        reply = conn.getresponse()
        raw = reply.read()
        kind = reply.getheader("Content-Type", "")
        return (reply.status, dict(reply.getheaders()),
                json.loads(raw) if kind.startswith("application/json") else raw.decode())
    finally:
        conn.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def shell_exec(marker: Path) -> bytes:
    return json.dumps({"action": "shell.exec",
                       "args": {"command": f"touch {marker}"}}).encode()


def assert_still_serves(port: int) -> None:
    status, _, body = send(port, "POST", "/execute", b'{"action": "node.ping"}',
                           {**bearer(ADMIN), "Content-Type": "application/json"})
    assert status == 200
    assert body["output"]["pong"] is True


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]
    assert "Traceback" not in caplog.text


# -- a hostile web page -----------------------------------------------------------


def test_a_cross_site_text_plain_or_form_post_runs_nothing(
        make_node: Callable[..., tuple[Node, int, Path]],
        caplog: pytest.LogCaptureFixture) -> None:
    _, port, marker = make_node()
    page = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
    # What a browser sends for fetch(..., {mode: "no-cors", body: "..."}) and a <form>.
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        status, _, body = send(port, "POST", "/execute", shell_exec(marker),
                               {**page, "Content-Type": kind})
        assert status == 403, kind
        assert body["error"]["type"] == "RequestForbidden"
    # Even with the token and no Origin, only JSON is accepted: 415.
    status, _, body = send(port, "POST", "/execute", shell_exec(marker),
                           {**bearer(ADMIN), "Content-Type": "text/plain"})
    assert status == 415
    assert body["error"]["type"] == "UnsupportedMediaType"
    status, _, _ = send(port, "POST", "/events", b'{"type": "x.y"}',
                        {**bearer(ADMIN)})  # no Content-Type at all
    assert status == 415
    assert not marker.exists()
    assert_still_serves(port)
    assert_no_traceback(caplog)


def test_a_foreign_origin_is_refused_even_with_a_valid_token(
        make_node: Callable[..., tuple[Node, int, Path]],
        caplog: pytest.LogCaptureFixture) -> None:
    _, port, marker = make_node(cors=["https://panel.example"])
    json_headers = {**bearer(ADMIN), "Content-Type": "application/json"}
    status, _, body = send(port, "POST", "/execute", shell_exec(marker),
                           {**json_headers, "Origin": "http://evil.example"})
    assert (status, body["error"]["type"]) == (403, "RequestForbidden")
    assert "Origin 'http://evil.example' is not allowed" in body["error"]["message"]
    assert send(port, "GET", "/events", None, {**bearer(ADMIN), "Origin": "null"})[0] == 403
    assert send(port, "GET", "/health", None, {"Sec-Fetch-Site": "cross-site"})[0] == 403
    # The listed origin and the server's own origin (its console) pass.
    listed = {**json_headers, "Origin": "https://panel.example",
              "Sec-Fetch-Site": "cross-site"}
    assert send(port, "POST", "/execute", b'{"action": "node.ping"}', listed)[0] == 200
    own = {**json_headers, "Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"}
    assert send(port, "POST", "/execute", b'{"action": "node.ping"}', own)[0] == 200
    assert not marker.exists()
    assert "refused (403 RequestForbidden)" in caplog.text
    assert_no_traceback(caplog)


def test_a_websocket_from_a_foreign_origin_is_refused(
        make_node: Callable[..., tuple[Node, int, Path]],
        caplog: pytest.LogCaptureFixture) -> None:
    _, port, marker = make_node()

    async def attempt() -> int:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(
                        f"http://127.0.0.1:{port}/ws",
                        headers={**bearer(ADMIN), "Origin": "http://evil.example"}):
                    return 101
            except aiohttp.WSServerHandshakeError as error:
                return error.status

    assert asyncio.run(attempt()) == 403
    assert not marker.exists()
    assert_still_serves(port)
    assert_no_traceback(caplog)


def test_a_dns_rebinding_host_is_refused(
        make_node: Callable[..., tuple[Node, int, Path]],
        caplog: pytest.LogCaptureFixture) -> None:
    _, port, marker = make_node(hosts=["hub.home.arpa"])
    json_headers = {**bearer(ADMIN), "Content-Type": "application/json"}
    for host in (f"evil.example:{port}", "evil.example", f"localhost.evil.example:{port}"):
        status, _, body = send(port, "POST", "/execute", shell_exec(marker),
                               {**json_headers, "Host": host})
        assert (status, body["error"]["type"]) == (403, "RequestForbidden"), host
        assert send(port, "GET", "/health", None, {"Host": host})[0] == 403
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"hub.home.arpa:{port}",
                 f"[::1]:{port}"):
        assert send(port, "GET", "/health", None, {"Host": host})[0] == 200, host
    assert not marker.exists()
    assert_still_serves(port)
    assert_no_traceback(caplog)


# -- a proxy on the same host -----------------------------------------------------


def test_a_proxied_request_without_a_token_is_remote_even_from_loopback(
        make_node: Callable[..., tuple[Node, int, Path]],
        caplog: pytest.LogCaptureFixture) -> None:
    _, port, marker = make_node(auth="none", token=None, tokens={})
    json_headers = {"Content-Type": "application/json"}
    for forwarded in ({"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9"},
                      {"X-Real-IP": "203.0.113.9"}, {"X-Forwarded-Host": "hub.example"}):
        status, _, body = send(port, "POST", "/execute", shell_exec(marker),
                               {**json_headers, **forwarded})
        assert (status, body["error"]["type"]) == (401, "Unauthorized"), forwarded
    # The same request straight from this machine is served (auth: none).
    assert send(port, "POST", "/execute", b'{"action": "node.ping"}', json_headers)[0] == 200
    assert not marker.exists()
    assert "auth: none" in caplog.text  # the warning at start
    assert_no_traceback(caplog)


def test_a_trusted_proxy_passes_on_its_local_clients_only(
        make_node: Callable[..., tuple[Node, int, Path]]) -> None:
    _, port, marker = make_node(auth="none", token=None, tokens={},
                                trusted_proxies=["127.0.0.1"])
    json_headers = {"Content-Type": "application/json"}
    ping = b'{"action": "node.ping"}'
    assert send(port, "POST", "/execute", ping,
                {**json_headers, "X-Forwarded-For": "127.0.0.1"})[0] == 200
    assert send(port, "POST", "/execute", shell_exec(marker),
                {**json_headers, "X-Forwarded-For": "198.51.100.7"})[0] == 401
    assert not marker.exists()


# -- tokens and scopes ------------------------------------------------------------


def test_a_read_token_cannot_execute_or_publish(
        make_node: Callable[..., tuple[Node, int, Path]],
        caplog: pytest.LogCaptureFixture) -> None:
    node, port, marker = make_node()
    seen: list[Any] = []
    node.bus.subscribe("sneaky.*", seen.append)
    json_headers = {**bearer(READER), "Content-Type": "application/json"}
    status, _, body = send(port, "POST", "/execute", shell_exec(marker), json_headers)
    assert (status, body["error"]["type"]) == (403, "ScopeMissing")
    assert "needs the 'execute' scope" in body["error"]["message"]
    assert "'grafana' has 'read'" in body["error"]["message"]
    status, _, body = send(port, "POST", "/events", b'{"type": "sneaky.event"}', json_headers)
    assert (status, body["error"]["type"]) == (403, "ScopeMissing")
    assert "'publish'" in body["error"]["message"]
    # What a read token may do: health, metrics (Prometheus), actions, traces, whoami.
    for route in ("/health", "/metrics", "/actions", "/whoami"):
        assert send(port, "GET", route, None, bearer(READER))[0] == 200, route
    assert send(port, "GET", "/whoami", None, bearer(READER))[2] == {
        "name": "grafana", "scope": "read", "execute": []}
    assert not marker.exists()
    assert seen == []
    assert_still_serves(port)
    assert_no_traceback(caplog)


def test_an_execute_token_runs_only_its_actions(
        make_node: Callable[..., tuple[Node, int, Path]],
        caplog: pytest.LogCaptureFixture) -> None:
    _, port, marker = make_node()
    json_headers = {**bearer(NODE_ONLY), "Content-Type": "application/json"}
    status, _, body = send(port, "POST", "/execute", shell_exec(marker), json_headers)
    assert (status, body["error"]["type"]) == (403, "ScopeMissing")
    assert body["error"]["message"] == ("token 'panel' may execute only node.*; "
                                        "not 'shell.exec'")
    assert send(port, "POST", "/execute", b'{"action": "node.ping"}', json_headers)[0] == 200
    assert send(port, "POST", "/events", b'{"type": "panel.pressed"}', json_headers)[0] == 202
    assert send(port, "GET", "/whoami", None, bearer(NODE_ONLY))[2] == {
        "name": "panel", "scope": "execute", "execute": ["node.*"]}

    async def over_websocket() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session, session.ws_connect(
                f"http://127.0.0.1:{port}/ws?filter=kind=response",
                headers=bearer(NODE_ONLY)) as ws:
            await ws.send_bytes(b'{"kind": "request", ' + shell_exec(marker)[1:])
            answer: dict[str, Any] = await ws.receive_json(timeout=10)
            return answer

    assert asyncio.run(over_websocket())["error"]["type"] == "ScopeMissing"
    assert not marker.exists()
    assert_still_serves(port)
    assert_no_traceback(caplog)


def test_a_publish_token_publishes_but_does_not_execute(
        make_node: Callable[..., tuple[Node, int, Path]]) -> None:
    _, port, marker = make_node()
    json_headers = {**bearer(PUBLISHER), "Content-Type": "application/json"}
    assert send(port, "POST", "/events", b'{"type": "sensor.read"}', json_headers)[0] == 202
    assert send(port, "POST", "/execute", shell_exec(marker), json_headers)[0] == 403
    assert not marker.exists()


def test_whoami_names_the_caller_and_needs_a_token(
        make_node: Callable[..., tuple[Node, int, Path]]) -> None:
    _, port, _ = make_node()
    assert send(port, "GET", "/whoami", None, bearer(ADMIN))[2] == {
        "name": "default", "scope": "admin", "execute": ["*"]}
    assert send(port, "GET", "/whoami")[0] == 401
    assert send(port, "GET", "/whoami", None, bearer("guessed-token"))[0] == 401


def test_tokens_never_appear_in_the_log_metrics_or_errors(
        make_node: Callable[..., tuple[Node, int, Path]],
        caplog: pytest.LogCaptureFixture) -> None:
    _, port, marker = make_node(access_log=True)
    send(port, "POST", "/execute", shell_exec(marker),
         {**bearer(READER), "Content-Type": "application/json"})
    send(port, "GET", "/metrics", None, bearer("wrong-" + ADMIN))
    _, _, metrics = send(port, "GET", "/metrics", None, bearer(READER))
    _, _, refusal = send(port, "GET", "/whoami", None, bearer("wrong-" + READER))
    for text in (caplog.text, metrics, json.dumps(refusal)):
        for token in (ADMIN, READER, NODE_ONLY, PUBLISHER):
            assert token not in text


# -- slow and many clients --------------------------------------------------------


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(20)
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received


def test_a_slow_loris_client_is_closed_and_others_are_served(
        make_node: Callable[..., tuple[Node, int, Path]],
        caplog: pytest.LogCaptureFixture) -> None:
    _, port, _ = make_node(read_timeout=0.5)
    with socket.create_connection(("127.0.0.1", port)) as head, \
            socket.create_connection(("127.0.0.1", port)) as body:
        head.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # never ends
        body.sendall(b"POST /execute HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Authorization: Bearer " + ADMIN.encode() + b"\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"act")
        assert read_until_closed(head) == b""  # closed without an answer
        answer = read_until_closed(body)
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"BodyTimeout" in answer
    assert_still_serves(port)
    assert "within read_timeout" in caplog.text
    assert_no_traceback(caplog)


def test_connections_over_the_cap_are_refused_and_the_node_still_serves(
        make_node: Callable[..., tuple[Node, int, Path]],
        caplog: pytest.LogCaptureFixture) -> None:
    _, port, _ = make_node(max_connections=3)
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    try:
        for sock in held:  # each is accepted and served once, then stays open
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert sock.recv(12) == b"HTTP/1.1 200"
        with socket.create_connection(("127.0.0.1", port)) as extra:
            assert read_until_closed(extra).startswith(b"HTTP/1.1 503")
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the server notices the closed ones
        try:
            assert_still_serves(port)
            break
        except (AssertionError, ConnectionError, http.client.HTTPException):
            time.sleep(0.05)
    assert_still_serves(port)
    assert "max_connections" in caplog.text
    assert_no_traceback(caplog)

"""Several node processes over one real Redis: requests, fan-out, crashes, restarts, garbage."""

from __future__ import annotations

import collections
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import redis

from platybus.client import Client
from platybus.codec import Codec
from platybus.link.protocol import Envelope, StreamKeys
from platybus.messages import Event, Request

Launcher = Callable[..., Any]


def relay(client: Client, via: str, node: str, action: str, timeout: float = 15.0,
          **args: Any) -> dict[str, Any]:
    """Have node ``via`` send a request to ``node`` and return what it got back."""
    response = client.request(via, "probe.relay", {"node": node, "action": action,
                                                   "args": args, "timeout": timeout},
                              timeout=timeout + 5)
    assert response.ok, response.error
    result: dict[str, Any] = response.output
    return result


def test_request_between_nodes_and_to_a_node_that_is_down(
        launch: Launcher, client: Client) -> None:
    launch("A")
    launch("B")
    answer = relay(client, "A", "B", "probe.whoami")
    assert answer == {"output": "B", "error": None}
    assert relay(client, "A", "B", "probe.echo", value={"x": [1, 2]})["output"] == {"x": [1, 2]}

    missing = relay(client, "A", "C", "node.ping", timeout=0.5)
    assert missing["output"] is None
    assert missing["error"]["type"] == "RequestTimeout"
    assert "node 'C' did not answer node.ping" in missing["error"]["message"]


def test_three_nodes_request_runs_on_its_target_only_and_events_reach_each_once(
        launch: Launcher, client: Client) -> None:
    a, b, c = launch("A"), launch("B"), launch("C")
    assert relay(client, "A", "B", "probe.mark", tag="only-b") == {"output": "B", "error": None}
    marked = client.request("C", "probe.mark", {"tag": "only-c"})
    assert (marked.output, marked.error) == ("C", None)
    assert a.marks() == []
    assert b.marks() == ["only-b"]
    assert c.marks() == ["only-c"]

    assert client.request("A", "probe.burst", {"count": 300}).ok
    for node in (b, c):
        node.wait_events(300)
        ticks = node.ticks("A")
        assert sorted(ticks) == list(range(300)), f"node {node.id}"
        assert ticks == list(range(300)), "one origin's events arrive in order"
    # A handled its own events locally, once each: nothing echoes back.
    time.sleep(0.3)
    assert sorted(a.ticks("A")) == list(range(300))
    assert len(b.events()) == len(c.events()) == 300


def test_a_node_killed_and_restarted_gets_every_event_once(
        launch: Launcher, client: Client) -> None:
    launch("A")
    b = launch("B")
    b.kill()
    assert client.request("A", "probe.burst", {"count": 1000}).ok
    b.start()
    b.wait_ready(client)
    b.wait_events(1000)
    ticks = b.ticks("A")
    counts = collections.Counter(ticks)
    assert len(counts) == 1000
    assert set(counts.values()) == {1}
    time.sleep(0.3)
    assert len(b.events()) == 1000


def test_redis_stopped_mid_stream_loses_nothing(
        own_redis: Any, launch: Launcher, prefix: str, secret: str) -> None:
    with Client(own_redis.url, prefix=prefix, secret=secret, timeout=15) as observer:
        a = launch("A", url=own_redis.url, wait=False)
        b = launch("B", url=own_redis.url, wait=False)
        a.wait_ready(observer)
        b.wait_ready(observer)
        assert observer.request("A", "probe.burst", {"count": 1500, "interval": 0.001,
                                                     "background": True}).ok
        b.wait_events(100, timeout=10)
        own_redis.stop()
        time.sleep(0.5)
        own_redis.start()
        b.wait_events(1500, timeout=30)
        assert sorted(b.ticks("A")) == list(range(1500))
        for node in ("A", "B"):
            info = observer.request(node, "node.info", timeout=10).output
            link = info["components"]["details"]["redis"]
            assert link["link"] == "up"
            assert link["reconnects"] >= 1, node
    assert "is back after" in a.log.read_text()
    assert "is back after" in b.log.read_text()


def test_garbage_and_forged_entries_are_rejected_and_counted(
        launch: Launcher, client: Client, redis_url: str, prefix: str, secret: str) -> None:
    b = launch("B")
    keys = StreamKeys(prefix)
    inbox, events = keys.inbox("B"), keys.events
    good = Envelope(Codec(), secret)
    forger = Envelope(Codec(), "another-secret-0123456789")
    ping = Request(action="node.ping", target="B", origin="intruder")
    encoded = [Codec().encode(ping)]
    r = redis.Redis.from_url(redis_url)
    try:
        r.xadd(inbox, {"junk": "1"})  # malformed: not protocol 1
        r.xadd(inbox, Envelope(Codec(), None).pack(inbox, "intruder", encoded))  # unsigned
        r.xadd(inbox, forger.pack(inbox, "intruder", encoded))  # bad_signature
        r.xadd(inbox, good.pack(events, "intruder", encoded))  # signed for another stream
        r.xadd(inbox, good.pack(inbox, "intruder", [b'{"kind": "request", "act']))  # malformed
        r.xadd(inbox, good.pack(inbox, "intruder", [b'{"kind": "bogus", "id": "x"}']))
        r.xadd(inbox, good.pack(inbox, "mallory", encoded))  # origin_mismatch
        event = Codec().encode(Event(type="probe.tick", data={"n": -1}, origin="intruder"))
        r.xadd(events, {"v": "1", "o": "intruder", "m": b"[" + event + b"]"})  # unsigned
        r.xadd(events, good.pack(events, "intruder", encoded))  # misrouted: request on events
    finally:
        r.close()
    deadline = time.monotonic() + 10
    while True:
        info = client.request("B", "node.info").output
        link = info["components"]["details"]["redis"]
        if link["rejected_total"] >= 9 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert link["rejected"] == {"malformed": 2, "unsigned": 2, "bad_signature": 2,
                                "unknown_kind": 1, "origin_mismatch": 1, "misrouted": 1}
    assert info["state"] == "ready"
    assert client.request("B", "node.ping").ok
    assert b.ticks("intruder") == []


def test_remote_calls_are_limited_to_allowed_actions(launch: Launcher, client: Client) -> None:
    launch("B", allow_actions=["node.*"])
    assert client.request("B", "node.ping").ok
    refused = client.request("B", "probe.mark", {"tag": "x"})
    assert refused.error is not None
    assert refused.error.type == "ActionNotAllowed"
    assert "does not allow remote calls to 'probe.mark'" in refused.error.message


def test_exec_on_another_node_from_the_command_line(
        launch: Launcher, redis_url: str, prefix: str, secret: str, tmp_path: Any) -> None:
    launch("B")
    env = {"PLATYBUS_SECRET": secret, "PATH": "/usr/bin:/bin"}
    ok = subprocess.run(
        [sys.executable, "-m", "platybus", "exec", "-c", str(tmp_path / "none.yaml"),
         "--node", "B", "--redis", redis_url, "--prefix", prefix, "probe.echo", "value:=[1,2]"],
        capture_output=True, text=True, timeout=30, env=env, check=False)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "[1, 2]"
    missing = subprocess.run(
        [sys.executable, "-m", "platybus", "exec", "-c", str(tmp_path / "none.yaml"),
         "--node", "Z", "--redis", redis_url, "--prefix", prefix, "--timeout", "0.5",
         "node.ping"],
        capture_output=True, text=True, timeout=30, env=env, check=False)
    assert missing.returncode == 1
    assert "node 'Z' did not answer node.ping" in missing.stderr

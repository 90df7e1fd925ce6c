"""Poison entries and the dead-letter stream, with a node process and a real Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from platybus.client import Client
from platybus.codec import Codec
from platybus.link.protocol import Envelope, StreamKeys
from platybus.messages import Event
from tests.backends.conftest import SECRET, NodeProcess, free_port

TOKEN = "dlq-test-token-0123456789"


def signed(keys: StreamKeys, stream: str, payload: bytes,
           origin: str = "intruder") -> dict[bytes, bytes]:
    """An entry with a valid signature over any payload, as a holder of the secret writes."""
    envelope = Envelope(Codec(), SECRET)
    fields = envelope.pack(stream, origin, [b"0"])
    fields[b"m"] = payload
    fields[b"s"] = envelope._mac(stream.encode(), origin.encode(), payload)
    return fields


def tick(n: int, target: str | None = None) -> bytes:
    return Codec().encode(Event(type="probe.tick", data={"n": n}, origin="intruder",
                                target=target))


def poison_shapes(keys: StreamKeys) -> dict[str, dict[bytes, bytes]]:
    """Entries of every shape a node must survive, keyed by what is wrong with them."""
    events = keys.events
    good = b"[" + tick(99) + b"]"
    deep = b"[" + b'{"kind":"event","type":"x","data":' + b'{"a":' * 2000 + b"1" + \
        b"}" * 2000 + b"}]"
    return {
        "kind not a string": signed(keys, events, b'[{"kind": {}}]'),
        "kind a list": signed(keys, events, b'[{"kind": [1, 2]}]'),
        "deep nesting": signed(keys, events, deep),
        "deep arrays": signed(keys, events, b"[" * 5000 + b"]" * 5000),
        "huge number": signed(keys, events, b'[{"kind":"event","type":"x","origin":"intruder",'
                                            b'"ts":' + b"9" * 5000 + b"}]"),
        "huge number in data": signed(keys, events, b'[{"kind":"event","type":"x","origin":'
                                                    b'"intruder","data":{"n":1e999}}]'),
        "wrong types": signed(keys, events, b'[{"kind":"event","type":"x","origin":'
                                            b'"intruder","ts":"yesterday","data":[]}]'),
        "not a message": signed(keys, events, b'[5, "x", null, []]'),
        "unsigned": {b"v": b"1", b"o": b"intruder", b"m": good},
        "bad signature": {**signed(keys, events, good), b"s": b"0" * 32},
        "truncated": signed(keys, events, good[:25]),
        "non-UTF-8": signed(keys, events, b'[{"kind":"event","type":"\xff\xfe","origin":'
                                          b'"intruder"}]'),
        "no fields of protocol 1": {b"junk": b"\x00\xff"},
    }


@pytest.fixture
def node_b(tmp_path: Path, redis_url: str, prefix: str,
           client: Client) -> Iterator[NodeProcess]:
    """Node B with the probe plugin, the redis backend and an HTTP API on a free port."""
    node = NodeProcess(tmp_path, "B", redis_url, prefix, {})
    config = json.loads(node.config.read_text())
    node.http_port = free_port()  # type: ignore[attr-defined]
    config["backends"]["http"] = {"port": node.http_port,  # type: ignore[attr-defined]
                                  "token": TOKEN}
    node.config.write_text(json.dumps(config))
    node.start()
    node.wait_ready(client)
    yield node
    node.stop()


def link_of(client: Client, node: str) -> dict[str, Any]:
    info = client.request(node, "node.info", timeout=10).output
    link: dict[str, Any] = info["components"]["details"]["redis"]
    return link


def wait_for(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


@pytest.mark.slow
def test_poison_entries_are_rejected_the_link_stays_up_and_the_next_entry_is_handled(
        node_b: NodeProcess, client: Client, redis_url: str, prefix: str) -> None:
    keys = StreamKeys(prefix)
    shapes = poison_shapes(keys)
    r = redis.Redis.from_url(redis_url)
    try:
        for n, fields in enumerate(shapes.values()):
            r.xadd(keys.events, fields)  # type: ignore[arg-type]
            r.xadd(keys.events, signed(keys, keys.events, b"[" + tick(n) + b"]"))  # type: ignore[arg-type]
        # Every good entry after a poison one is handled, in order.
        assert wait_for(lambda: len(node_b.ticks("intruder")) >= len(shapes))
        assert node_b.ticks("intruder") == list(range(len(shapes)))
        link = link_of(client, "B")
        assert link["link"] == "up"
        assert link["reconnects"] == 0
        handled = link["rejected_total"] + link["dead_lettered"]
        assert handled >= len(shapes), link["rejected"]
        assert "link reader failed" not in node_b.log.read_text()

        # A restart: the same shapes, written while the node is down, then after it is up.
        node_b.stop()
        for n, fields in enumerate(shapes.values(), start=100):
            r.xadd(keys.events, fields)  # type: ignore[arg-type]
            r.xadd(keys.events, signed(keys, keys.events, b"[" + tick(n) + b"]"))  # type: ignore[arg-type]
        node_b.start()
        node_b.wait_ready(client)
        expected = [*range(len(shapes)), *range(100, 100 + len(shapes))]
        assert wait_for(lambda: node_b.ticks("intruder") == expected), node_b.ticks("intruder")
        r.xadd(keys.events, signed(keys, keys.events, b"[" + tick(500) + b"]"))  # type: ignore[arg-type]
        assert wait_for(lambda: node_b.ticks("intruder")[-1:] == [500])
        assert link_of(client, "B")["link"] == "up"
        # Nothing is left pending in B's group: every poison entry was acknowledged.
        assert r.xpending(keys.events, "B")["pending"] == 0
    finally:
        r.close()


def deliver_repeatedly(r: redis.Redis, stream: str, group: str, fields: dict[bytes, bytes],
                       times: int) -> bytes:
    """Add an entry and leave it pending for ``group`` as if delivered ``times`` times."""
    entry_id: bytes = r.xadd(stream, fields)  # type: ignore[arg-type,assignment]
    r.xreadgroup(group, group, {stream: ">"}, count=1000)
    # XCLAIM ... RETRYCOUNT sets the delivery counter a crash loop would have reached.
    r.xclaim(stream, group, group, 0, [entry_id], retrycount=times)
    return entry_id


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "platybus", *args], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin", **(env or {})})


@pytest.mark.slow
def test_an_entry_delivered_max_deliveries_times_is_dead_lettered_and_dlq_retries_it(
        node_b: NodeProcess, client: Client, redis_url: str, prefix: str,
        tmp_path: Path) -> None:
    keys = StreamKeys(prefix)
    inbox = keys.inbox("B")
    seen: list[Any] = []
    client.subscribe("type=node.link.dead_letter", seen.append)
    node_b.stop()
    r = redis.Redis.from_url(redis_url)
    try:
        ids = [deliver_repeatedly(r, inbox, "B", signed(keys, inbox, b"[" + tick(n, "B") + b"]"),
                                  5) for n in (1, 2, 3)]
        r.xadd(inbox, signed(keys, inbox, b"[" + tick(4, "B") + b"]"))  # type: ignore[arg-type]
        node_b.start()
        node_b.wait_ready(client)
        # The entries delivered 5 times are set aside; the one after them is handled.
        assert wait_for(lambda: node_b.ticks("intruder") == [4])
        assert wait_for(lambda: len(seen) == 3)
        assert {e.data.entry_id for e in seen} == {i.decode() for i in ids}
        assert {e.data.stream for e in seen} == {inbox}
        assert all(e.data.deliveries == 5 and "max_deliveries 5" in e.data.reason
                   for e in seen)
        assert r.xlen(keys.dead("B")) == 3
        assert r.xpending(inbox, "B")["pending"] == 0
        assert link_of(client, "B")["dead_lettered"] == 3

        over_redis = ["-c", str(tmp_path / "none.yaml"), "--redis", redis_url,
                      "--prefix", prefix, "--node", "B"]
        over_http = ["-c", str(tmp_path / "none.yaml"),
                     "--url", f"http://127.0.0.1:{node_b.http_port}",  # type: ignore[attr-defined]
                     "--token", TOKEN]
        listed = cli("dlq", "list", "--json", *over_redis)
        assert listed.returncode == 0, listed.stderr
        entries = json.loads(listed.stdout)["entries"]
        assert [e["entry_id"] for e in entries] == [i.decode() for i in ids]
        assert {e["origin"] for e in entries} == {"intruder"}
        via_http = json.loads(cli("dlq", "list", "--json", *over_http).stdout)
        assert via_http["entries"] == entries
        text = cli("dlq", "list", *over_http)
        assert f"{prefix}:dead:B: 3 dead entries" in text.stdout
        dead = [e["id"] for e in entries]

        shown = cli("dlq", "show", dead[0], "--json", *over_http)
        assert shown.returncode == 0, shown.stderr
        assert '"n":1' in json.loads(shown.stdout)["fields"]["m"]
        assert json.loads(cli("dlq", "show", dead[0], "--json", *over_redis).stdout) == \
            json.loads(shown.stdout)
        missing = cli("dlq", "show", "1-1", *over_http)
        assert missing.returncode == 1
        assert "no dead entry 1-1" in missing.stderr

        # Retry over the node's API and over Redis: each is handled once, and leaves the DLQ.
        assert cli("dlq", "retry", dead[0], *over_http).returncode == 0
        assert wait_for(lambda: sorted(node_b.ticks("intruder")) == [1, 4])
        retried = cli("dlq", "retry", dead[1], *over_redis)
        assert retried.returncode == 0, retried.stderr
        assert f"written back to {inbox}" in retried.stdout
        assert wait_for(lambda: sorted(node_b.ticks("intruder")) == [1, 2, 4])
        assert [e["id"] for e in json.loads(
            cli("dlq", "list", "--json", *over_redis).stdout)["entries"]] == [dead[2]]

        # Drop: over the API one entry, over Redis every entry.
        assert "dropped 1 dead entry" in cli("dlq", "drop", dead[2], *over_http).stdout
        r.xadd(keys.dead("B"), {b"stream": inbox.encode(), b"reason": b"x"})
        dropped = cli("dlq", "drop", "--all", *over_redis)
        assert dropped.returncode == 0, dropped.stderr
        assert "dropped 1 dead entry" in dropped.stdout
        assert r.xlen(keys.dead("B")) == 0
        time.sleep(0.3)
        assert sorted(node_b.ticks("intruder")) == [1, 2, 4]
    finally:
        r.close()


def test_dlq_command_errors_are_one_line(tmp_path: Path, redis_url: str, prefix: str) -> None:
    base = ["-c", str(tmp_path / "none.yaml"), "--redis", redis_url, "--prefix", prefix,
            "--node", "B"]
    assert "give entry ids" in cli("dlq", "retry", *base).stderr
    assert "give one entry id" in cli("dlq", "show", *base).stderr
    bad = cli("dlq", "show", "not-an-id", *base)
    assert bad.returncode == 1
    assert bad.stderr.strip().count("\n") == 0
    assert "is not a stream entry id" in bad.stderr
    empty = cli("dlq", "list", *base)
    assert empty.returncode == 0, empty.stderr
    assert f"{prefix}:dead:B: 0 dead entries" in empty.stdout

"""The ``platybus dlq`` command: a node's dead-letter stream, over its HTTP API or over Redis."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable
from typing import Any

from platybus.cli.common import Add, Load, print_json
from platybus.errors import ArgumentError, LinkError

# ``remote(args)``: the HTTP client of the running node the flags name.
Remote = Callable[[argparse.Namespace], Any]
# ``link_settings(args)``: the LinkConfig of the config, with --redis and --prefix over it.
LinkSettings = Callable[[argparse.Namespace], Any]


def add_commands(add: Add, load: Load, remote: Remote, link_settings: LinkSettings) -> None:
    """Add ``platybus dlq list|show|retry|drop``."""

    def run(args: argparse.Namespace) -> int:
        return cmd_dlq(args, load, remote, link_settings)

    p = add("dlq", run, "list, show, retry or drop the entries a node's link set aside")
    p.add_argument("verb", choices=["list", "show", "retry", "drop"])
    p.add_argument("ids", nargs="*", metavar="ID",
                   help="dead entry ids (show: one; retry/drop: one or more, or --all)")
    p.add_argument("--all", action="store_true", help="retry/drop: every dead entry")
    p.add_argument("--last", type=int, default=20, help="list: how many (default 20)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--redis", metavar="URL",
                   help="read the dead-letter stream in Redis directly, not through the node")
    p.add_argument("--prefix", help="with --redis: the key prefix (default: the config's)")
    p.add_argument("--node", metavar="NODE",
                   help="with --redis: whose dead letters (default: the config's node.id)")
    p.add_argument("--url", help="a running node's HTTP API (default: $PLATYBUS_URL, else the "
                                 "config's backends.http, else http://127.0.0.1:8008)")
    p.add_argument("--token", help="bearer token (default: $PLATYBUS_TOKEN, else the config's)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")


def cmd_dlq(args: argparse.Namespace, load: Load, remote: Remote,
            link_settings: LinkSettings) -> int:
    """Run one ``dlq`` verb and print what it did."""
    verb = args.verb
    if verb == "show" and len(args.ids) != 1:
        raise ArgumentError("dlq show: give one entry id")
    if verb == "list" and args.ids:
        raise ArgumentError("dlq list takes no entry ids")
    if verb in ("retry", "drop") and not args.ids and not args.all:
        raise ArgumentError(f"dlq {verb}: give entry ids (see 'dlq list') or --all")
    call = _over_redis(args, load, link_settings) if args.redis else _over_http(args, remote)
    if verb == "list":
        result = call("list", {"last": args.last})
        _print_list(result, args.json)
    elif verb == "show":
        result = call("show", {"id": args.ids[0]})
        if args.json:
            print_json(result)
        else:
            _print_entry(result)
    elif verb == "retry":
        done = call("retry", {"ids": args.ids, "all": args.all})
        if args.json:
            print_json(done)
        for item in [] if args.json else done:
            print(f"{item['id']}: written back to {item['stream']} as {item['entry_id']}")
        if not done and not args.json:
            print("no dead entries to retry")
    else:
        count = call("drop", {"ids": args.ids, "all": args.all})
        if args.json:
            print_json({"dropped": count})
        else:
            print(f"dropped {count} dead entr{'y' if count == 1 else 'ies'}")
    return 0


def _over_http(args: argparse.Namespace, remote: Remote) -> Callable[[str, dict[str, Any]], Any]:
    node = remote(args)

    def call(verb: str, params: dict[str, Any]) -> Any:
        if verb == "list":
            return node.get_ok(f"/dlq?last={params['last']}")
        if verb == "show":
            return node.get_ok(f"/dlq/{params['id']}")
        return node.post_ok(f"/dlq/{verb}", params)

    return call


def _over_redis(args: argparse.Namespace, load: Load,
                link_settings: LinkSettings) -> Callable[[str, dict[str, Any]], Any]:
    import redis

    from platybus.link.dead_letter import DeadLetters
    from platybus.link.protocol import StreamKeys

    settings = link_settings(args)
    node_id = args.node
    if not node_id:
        try:
            node_id = load(args, True).node.id
        except Exception as error:
            raise ArgumentError(f"dlq --redis: give --node NODE ({error})") from None
    client = redis.Redis.from_url(settings.url, socket_timeout=args.timeout,
                                  socket_connect_timeout=settings.connect_timeout)
    dead = DeadLetters(client, StreamKeys(settings.prefix), node_id)

    def call(verb: str, params: dict[str, Any]) -> Any:
        try:
            if verb == "list":
                return {"node": node_id, "stream": dead.key, "count": dead.count(),
                        "entries": dead.listing(params["last"])}
            if verb == "show":
                return dead.show(params["id"])
            if verb == "retry":
                return dead.retry(params["ids"], params["all"])
            return dead.drop(params["ids"], params["all"])
        except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
            raise LinkError(f"cannot reach Redis at {_masked(settings.url)}: {error}") from None
        finally:
            client.close()

    return call


def _masked(url: str) -> str:
    from platybus.link.protocol import mask_url

    return mask_url(url)


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _print_list(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(result)
        return
    entries = result["entries"]
    print(f"{result['stream']}: {result['count']} dead entr"
          f"{'y' if result['count'] == 1 else 'ies'}")
    for e in entries:
        print(f"{e['id']}  {_when(e['dead_at'])}  from {e['origin'] or '?'} in {e['stream']} "
              f"({e['deliveries']} deliveries, {e['size']} bytes): {e['reason']}")


def _print_entry(entry: dict[str, Any]) -> None:
    for key in ("id", "stream", "entry_id", "origin", "reason", "deliveries", "node"):
        print(f"{key + ':':<12}{entry[key]}")
    print(f"{'dead at:':<12}{_when(entry['dead_at'])}")
    for name, value in entry["fields"].items():
        print(f"{name}: {value}")

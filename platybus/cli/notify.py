"""The ``platybus outbox`` and ``platybus send --from-file`` commands."""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from platybus.cli.common import Add, Load, print_json
from platybus.errors import ArgumentError


def cmd_outbox(args: argparse.Namespace, load: Load) -> int:
    """List the events waiting in the outbox, or push them now."""
    from platybus.codec import Codec
    from platybus.extensions import NodeContext
    from platybus.notify.manager import NotifierManager
    from platybus.notify.outbox import Outbox

    config = load(args, True)
    codec = Codec()
    outbox = Outbox(config.data_dir / "outbox", codec)
    if args.action == "list":
        entries = outbox.entries(args.notifier, expired=True)
        if args.json:
            print_json([{"notifier": e.state.notifier, "event_id": e.event_id,
                         "event_type": e.event_type, "expired": e.expired,
                         "attempts": e.state.attempts, "next_attempt": e.state.next_attempt,
                         "expires": e.state.expires, "last_error": e.state.last_error,
                         "path": str(e.path)} for e in entries])
            return 0
        if not entries:
            print(f"the outbox in {outbox.directory} is empty")
        for e in entries:
            status = "expired" if e.expired else f"next try {_when(e.state.next_attempt)}"
            print(f"{e.state.notifier:<12} {e.event_id}  {e.event_type:<20} "
                  f"{e.state.attempts} tries, {status}: {e.state.last_error}")
        return 0
    manager = NotifierManager.from_config(
        config, NodeContext.detached(config.node.id, config.data_dir, codec))
    names = [args.notifier] if args.notifier else outbox.notifiers()
    left = 0
    for name in names:
        channel = manager.channels.get(name)
        if channel is None:
            count = len(outbox.entries(name, expired=args.expired))
            if count:
                print(f"{name}: {count} event(s) kept, but no notifier of that name is "
                      "configured", file=sys.stderr)
                left += count
            continue
        counts = outbox.retry(name, channel.send_ok, channel.policy,
                              force=True, expired=args.expired, wait=args.wait)
        sent, failed = counts.get("sent", 0), counts.get("failed", 0)
        left += failed
        print(f"{name}: {sent} sent, {failed} still failing")
    return 1 if left else 0


def cmd_send(args: argparse.Namespace, load: Load) -> int:
    """Publish a dumped event through an embedded node: its plugins and notifiers see it."""
    from platybus.node import Node
    from platybus.notify.records import load_event

    if not args.from_file:
        raise ArgumentError("send: give the event with --from-file FILE")
    node = Node(load(args, True))
    event = load_event(args.from_file, node.codec)
    node.start(embedded=True)
    try:
        if node.notifiers is not None:
            node.notifiers.start(node.bus)
        try:
            node.bus.publish(event, synchronous=True, timeout=args.timeout)
        finally:
            if node.notifiers is not None:
                node.notifiers.stop(node.config.node.stop_timeout)
    finally:
        node.stop()
    if node.notifiers is not None:
        failed = [n for n, c in node.notifiers.channels.items() if c.failed or c.stored]
        if failed:
            print(f"event {event.id}: not sent by {', '.join(failed)}; kept in the outbox "
                  "(see platybus outbox list)", file=sys.stderr)
            return 1
    print(f"event {event.id} ({event.type}) published")
    return 0


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch).isoformat(" ", "seconds")


def add_commands(add: Add, load: Load) -> None:
    """Add ``outbox`` to the command line (``send --from-file`` lives in ``platybus send``)."""
    p = add("outbox", lambda a: cmd_outbox(a, load), "show or push events notifiers could not send")
    p.add_argument("action", choices=["list", "retry"])
    p.add_argument("--notifier", help="only this notifier's events")
    p.add_argument("--expired", action="store_true", help="retry: expired events too")
    p.add_argument("--wait", type=float, default=10.0,
                   help="retry: seconds to wait for a node's retry pass to end (default 10)")
    p.add_argument("--json", action="store_true", help="list: print JSON")


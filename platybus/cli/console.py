"""The ``platybus console`` command: the web console's sign-in link."""

from __future__ import annotations

import argparse
import sys
import urllib.parse

from platybus.cli.common import Add, Load
from platybus.errors import LinkError


def console_link(url: str, token: str | None) -> str:
    """The console's address; the token rides in the fragment, which no server sees."""
    base = url.rstrip("/") + "/"
    if not token:
        return base
    return base + "#token=" + urllib.parse.quote(token, safe="")


def cmd_console(args: argparse.Namespace, load: Load) -> int:
    """Print the link that opens the node's console already signed in."""
    # The same look-up as every command that talks to a node: flag, environment, config.
    from platybus.cli.main import _remote

    node = _remote(args)
    print(console_link(node.url, node.token))
    if not args.no_check:
        try:
            status, _ = node.get("/node")
        except LinkError as error:
            print(f"platybus: note: {node.url} does not answer yet ({error}); the link works "
                  "once the node runs", file=sys.stderr)
        else:
            if status == 401:
                print("platybus: note: the node refuses this token; pass the right one with "
                      "--token or $PLATYBUS_TOKEN", file=sys.stderr)
    return 0


def add_commands(add: Add, load: Load) -> None:
    """Add ``console`` to the command line."""
    p = add("console", lambda a: cmd_console(a, load),
            "print the link that opens the node's web console, signed in")
    p.add_argument("--url", help="the node's HTTP API (default: $PLATYBUS_URL, else the "
                                 "config's backends.http, else http://127.0.0.1:8008)")
    p.add_argument("--token", help="bearer token (default: $PLATYBUS_TOKEN, else the config's)")
    p.add_argument("--no-check", action="store_true",
                   help="do not ask the node whether it answers and takes the token")

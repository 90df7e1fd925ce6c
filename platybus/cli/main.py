"""The ``platybus`` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from platybus import __version__
from platybus.cli.common import (
    DEFAULT_CONFIG,
    Add,
    Command,
    Load,
    configure_logging,
    load,
    parse_pairs,
    print_json,
)
from platybus.cli.console import add_commands as add_console_commands
from platybus.cli.notify import add_commands as add_notify_commands
from platybus.cli.ops import add_commands as add_ops_commands
from platybus.config import load_config
from platybus.errors import (
    ArgumentError,
    ConfigError,
    LinkError,
    PlatybusError,
    RemoteError,
    exit_code_for,
)
from platybus.messages import Request, Response

if TYPE_CHECKING:
    from platybus.cli.http_client import RemoteNode

log = logging.getLogger("platybus.cli")

# -- commands -----------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    """Run a node until SIGTERM or SIGINT."""
    from platybus.node import Node

    config = load(args)
    node = Node(config)
    node.run_until_signal()
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Validate a config without starting anything."""
    from platybus.node import counted, validate

    config = load(args)
    node = validate(config)
    print(f"{config.file}: ok (node {node.id}: {counted(len(node.plugins), 'plugin')}, "
          f"{counted(len(node.backends), 'backend')}, "
          f"{counted(len(node.actions.specs()), 'action')})")
    return 0


def cmd_actions(args: argparse.Namespace) -> int:
    """List every action with its signature and one-line doc."""
    from platybus.node import validate

    node = validate(load(args, quiet=True))
    specs = node.actions.specs()
    if args.json:
        print_json([{"name": s.name, "signature": s.signature, "doc": s.doc} for s in specs])
        return 0
    for spec in specs:
        print(f"{spec.name}{spec.signature}")
        if spec.doc:
            print(f"    {spec.doc}")
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    """Run one action and print its response."""
    from platybus.node import Node

    if args.node:
        return _exec_on_node(args)
    if not args.local and (args.url or os.environ.get("PLATYBUS_URL")):
        node_api = _remote(args)
        return _show_response(node_api.execute(
            args.action, parse_pairs(args.args), target=args.target, timeout=args.timeout))
    if args.target:
        raise ArgumentError("--target needs a running node: give --url (or PLATYBUS_URL)")
    request = Request(action=args.action, args=parse_pairs(args.args), timeout=args.timeout)
    node = Node(load(args, quiet=True))
    node.start(embedded=True)
    try:
        response = node.bus.request(request, timeout=args.timeout)
    finally:
        node.stop()
    return _show_response(response)


def _exec_on_node(args: argparse.Namespace) -> int:
    """Run the action on another node through Redis, as a client."""
    from platybus.client import Client

    client = Client(config=_link_settings(args), timeout=args.timeout)
    client.connect()
    try:
        response = client.request(args.node, args.action, parse_pairs(args.args),
                                  timeout=args.timeout)
    finally:
        client.disconnect()
    return _show_response(response)


def _link_settings(args: argparse.Namespace) -> Any:
    """Return the config's Redis link settings, with ``--redis`` and ``--prefix`` over them."""
    from platybus.extensions import BACKEND_GROUP, Backend, load_class
    from platybus.link.protocol import LinkConfig

    options: dict[str, Any] = {}
    if Path(args.config).exists() or not args.redis:
        config = load(args, quiet=True)
        search = [Path(p) for p in config.node.extensions_path]
        for ext in config.backends.values():
            cls = load_class(BACKEND_GROUP, ext.name, Backend, spec=ext.class_spec,
                             search_path=search)
            if isinstance(cls.Config, type) and issubclass(cls.Config, LinkConfig):
                typed = config.convert(ext.options, cls.Config, ext.path)
                options = {name: getattr(typed, name) for name in LinkConfig.__struct_fields__}
                break
        else:
            if not args.redis:
                raise ConfigError(f"{config.file} has no redis backend: give --redis URL")
    else:
        configure_logging(args.log_level or "warning", args.log_format or "text")
    if args.redis:
        options["url"] = args.redis
    if args.prefix:
        options["prefix"] = args.prefix
    if options.get("secret") is None and os.environ.get("PLATYBUS_SECRET"):
        options["secret"] = os.environ["PLATYBUS_SECRET"]
    try:
        return LinkConfig(**options)
    except (TypeError, ValueError) as error:
        raise ArgumentError(f"invalid Redis settings: {error}") from None


def _remote(args: argparse.Namespace) -> RemoteNode:
    """Build the client of a running node from flags, environment and config."""
    from platybus.cli.http_client import RemoteNode, resolve

    url, token = args.url, args.token
    options = None
    need_url = not url and not os.environ.get("PLATYBUS_URL")
    need_token = token is None and not os.environ.get("PLATYBUS_TOKEN")
    if need_url or need_token:
        options = _http_options(args)
    url, token = resolve(url, token, options)
    return RemoteNode(url, token, timeout=getattr(args, "timeout", None) or 30.0)


def _http_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """The ``backends.http`` options of the config, if there is a config to read."""
    explicit = args.config != DEFAULT_CONFIG
    if not explicit and not Path(DEFAULT_CONFIG).is_file():
        return None
    try:
        config = load_config(args.config)
    except PlatybusError as error:
        if explicit:
            raise
        print(f"platybus: ignoring {DEFAULT_CONFIG}: {error}", file=sys.stderr)
        return None
    http = config.backends.get("http")
    return dict(http.options) if http is not None else None


def cmd_send(args: argparse.Namespace) -> int:
    """Publish an event on a running node, or a dumped event file through an embedded node."""
    if args.from_file:
        if args.type or args.data:
            raise ArgumentError("send: give either TYPE key=value ... or --from-file FILE")
        from platybus.cli.notify import cmd_send as send_file

        return send_file(args, load)
    if not args.type:
        raise ArgumentError("send: give the event's TYPE (or --from-file FILE)")
    result = _remote(args).publish(args.type, parse_pairs(args.data), target=args.target)
    print_json(result)
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    """Follow a running node's live events until interrupted."""
    node_api = _remote(args)
    as_json = args.json or not sys.stdout.isatty()
    colour = not as_json and "NO_COLOR" not in os.environ
    seen = 0
    try:
        for item in node_api.stream(args.selector or ""):
            if as_json:
                line = json.dumps(item.data, separators=(",", ":"))
            else:
                line = _format_event(item.data, colour)
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            seen += 1
            if args.count and seen >= args.count:
                return 0
    except KeyboardInterrupt:
        return 0
    print("platybus: the node closed the stream", file=sys.stderr)
    return 0


def _format_event(message: dict[str, Any], colour: bool) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(message.get("ts", 0)))
    millis = int((message.get("ts", 0) % 1) * 1000)
    name = message.get("type") or message.get("action") or message.get("kind", "?")
    origin = message.get("origin") or "-"
    body = message.get("data", message.get("args", message.get("output")))
    detail = json.dumps(body, separators=(",", ":"), default=str) if body not in (None, {}) else ""
    if colour:
        return (f"\033[2m{stamp}.{millis:03d}\033[0m \033[1;36m{name}\033[0m "
                f"\033[33m{origin}\033[0m {detail}")
    return f"{stamp}.{millis:03d} {name} {origin} {detail}"


def _show_response(response: Response) -> int:
    if response.error is None:
        print_json(response.output)
        return 0
    print(f"error: {response.error.type}: {response.error.message}", file=sys.stderr)
    return 1


def cmd_trace(args: argparse.Namespace) -> int:
    """Show recent traces of hooks, procedures and cron jobs: from the node, else its file."""
    from platybus.automation.report import render_trace
    from platybus.automation.trace import Trace, TracesConfig, read_file, select

    config = load(args, quiet=True)
    wanted: dict[str, Any] = {"hook": args.hook, "name": args.name, "kind": args.kind,
                              "last": args.last}
    found: list[Trace] | None = None
    source = ""
    use_node = not args.file and (args.url or os.environ.get("PLATYBUS_URL")
                                  or "http" in config.backends)
    if use_node:
        node_api = _remote(args)
        try:
            response = node_api.execute("trace.list", {k: v for k, v in wanted.items()
                                                       if v is not None}, timeout=10)
        except RemoteError:
            raise
        except LinkError as error:
            print(f"platybus: {error}; reading the trace file instead", file=sys.stderr)
        else:
            if response.error is not None:
                return _show_response(response)
            found = msgspec.convert(response.output, list[Trace])
            source = node_api.url
    if found is None:
        traces = config.convert(config.section("traces") or {}, TracesConfig, ("traces",))
        if not (traces.enabled and traces.disk):
            raise ConfigError("the node is not reachable and traces are not kept on disk "
                              "(traces.disk: false)", file=config.file, key="traces")
        path = config.data_dir / traces.file
        found = select(read_file(path), **wanted)
        source = str(path)
    if args.json:
        print_json(found)
        return 0
    if not found:
        print(f"no traces from {source}" + (f" for hook {args.hook!r}" if args.hook else ""))
        return 0
    for trace in found:
        print("\n".join(render_trace(trace)))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Say which hooks would fire for the event in a JSON file, and why the others would not."""
    from platybus.automation.report import render_explanation
    from platybus.node import validate

    node = validate(load(args, quiet=True))
    try:
        text = sys.stdin.read() if args.event == "-" else Path(args.event).read_text("utf-8")
        event = json.loads(text)
    except OSError as error:
        raise ArgumentError(f"cannot read {args.event}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise ArgumentError(f"{args.event}: invalid JSON: {error}") from None
    result = node.automation.explain_action(event)
    if args.json:
        print_json(result)
    else:
        print("\n".join(render_explanation(result)))
    return 0


def cmd_nodes(args: argparse.Namespace) -> int:
    """Browse for nodes over zeroconf and list them with their services."""
    from pathlib import Path

    from platybus.discovery import browse_nodes, interface_problem, load_discovery_config

    interfaces: list[str] = args.interface or ["127.0.0.1"]
    for text in interfaces:
        problem = interface_problem(text)
        if problem is not None:
            raise ArgumentError(f"--interface: {problem}")
    path = args.config or (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None)
    if path is not None and not args.interface:
        config = load_config(path)
        interfaces = load_discovery_config(config).interfaces
    configure_logging(args.log_level or "warning", args.log_format or "text")
    peers = browse_nodes(interfaces, args.wait)
    if args.json:
        print_json(peers)
        return 0
    if not peers:
        print(f"no platybus node answered on {', '.join(interfaces)} within {args.wait:g}s",
              file=sys.stderr)
        return 0
    rows = [("NODE", "VERSION", "ADDRESSES", "PORT", "SERVICES")]
    for peer in peers:
        services = ", ".join(f"{s.name}:{s.port}{s.path if s.path != '/' else ''}"
                             for s in peer.services)
        rows.append((peer.node_id, peer.version, ",".join(peer.addresses) or peer.host,
                     str(peer.port), services or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip())
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    """Print the version."""
    print(f"platybus {__version__}")
    return 0


# -- parser -------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="platybus", description="An automation message bus.")
    parser.add_argument("--version", action="version", version=f"platybus {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Command, help_: str, config: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(fn=fn)
        if config:
            p.add_argument("-c", "--config", default=DEFAULT_CONFIG,
                           help=f"config file (default: {DEFAULT_CONFIG})")
            p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
            p.add_argument("--log-format", choices=["text", "json"])
        return p

    add("run", cmd_run, "run a node")
    add("check", cmd_check, "validate a config and exit")
    p = add("actions", cmd_actions, "list every action")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = add("exec", cmd_exec, "run one action and print its response")
    p.add_argument("action", help="plugin.action")
    p.add_argument("args", nargs="*", help="key=value (a string) or key:=json")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default 60)")
    p.add_argument("--node", metavar="NODE",
                   help="run the action on this node, through Redis (see docs/multi-node.md)")
    p.add_argument("--redis", metavar="URL",
                   help="with --node: the Redis url (default: the config's backends.redis.url)")
    p.add_argument("--prefix", help="with --node: the key prefix (default: the config's)")
    _add_remote_options(p)
    p.add_argument("--target", help="run it on this node (through the node at --url)")
    p.add_argument("--local", action="store_true",
                   help="run in this process even if PLATYBUS_URL is set")
    p = add("send", cmd_send, "publish an event on a running node (or from a dumped file)")
    p.add_argument("type", nargs="?", help="dotted event type, e.g. garden.watered")
    p.add_argument("data", nargs="*", help="key=value (a string) or key:=json")
    p.add_argument("--target", help="deliver only to this node")
    _add_remote_options(p)
    p.add_argument("--from-file", metavar="FILE",
                   help="publish an event file written by dump() through an embedded node "
                        "built from the config (its plugins and notifiers see it)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="--from-file: seconds to wait (default 30)")
    p = add("monitor", cmd_monitor, "follow a running node's live events")
    p.add_argument("selector", nargs="?", default="",
                   help="which messages, e.g. 'file.*' or 'type=file.* and data.size > 10' "
                        "(default: every event)")
    p.add_argument("--count", type=int, default=0, help="exit after this many events")
    p.add_argument("--json", action="store_true", help="JSON lines even on a terminal")
    _add_remote_options(p)
    p = add("nodes", cmd_nodes, "find nodes over zeroconf and list their services",
            config=False)
    p.add_argument("-c", "--config",
                   help=f"config whose discovery.interfaces to browse on (default: "
                        f"{DEFAULT_CONFIG} if present, else 127.0.0.1)")
    p.add_argument("-i", "--interface", action="append",
                   help="IPv4 address of an interface to browse on (repeatable)")
    p.add_argument("--wait", type=float, default=3.0,
                   help="seconds to listen for answers (default 3)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["text", "json"])
    p = add("trace", cmd_trace, "show why hooks, procedures and cron jobs ran or did not")
    p.add_argument("--hook", help="only this hook: its runs and the events it was checked on")
    p.add_argument("--name", help="only runs of this hook, procedure or cron job")
    p.add_argument("--kind", choices=["event", "hook", "procedure", "cron"])
    p.add_argument("--last", type=int, default=20, help="how many (default 20)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--file", action="store_true",
                   help="read the trace file in the data dir, not the running node")
    _add_remote_options(p)
    p = add("explain", cmd_explain, "say which hooks would fire for an event and why not")
    p.add_argument("event", help="a JSON file with the event ({type, data}), or - for stdin")
    p.add_argument("--json", action="store_true", help="print JSON")
    add("version", cmd_version, "print the version", config=False)
    add_notify_commands(add, load)
    add_console_commands(add, load)
    add_ops_commands(add, load)
    for add_commands in _command_groups():
        add_commands(add, load)
    return parser


COMMAND_GROUP = "platybus.commands"


def _command_groups() -> list[Callable[[Add, Load], None]]:
    """Return the ``add_commands(add, load)`` functions extensions contribute."""
    from platybus.loader import entry_point_index

    eps = entry_point_index().get(COMMAND_GROUP, {})
    return [eps[name].load() for name in sorted(eps)]


def _add_remote_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="a running node's HTTP API (default: $PLATYBUS_URL, else the "
                                 "config's backends.http, else http://127.0.0.1:8008)")
    p.add_argument("--token", help="bearer token (default: $PLATYBUS_TOKEN, else the config's)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.fn(args)
        return code
    except PlatybusError as error:
        print(f"platybus: {error}", file=sys.stderr)
        return exit_code_for(error)
    except KeyboardInterrupt:
        return exit_code_for(KeyboardInterrupt())
    finally:
        logging.shutdown()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

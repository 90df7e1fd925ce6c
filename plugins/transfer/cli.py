"""The ``platybus transfer`` command: one transfer job in the foreground."""

from __future__ import annotations

import argparse
import signal
import threading
import time
from typing import Any

from platybus.cli.common import Add, Load, parse_pairs, print_json
from platybus.errors import ActionFailed, ConfigError, PlatybusError, Terminated, exit_code_for


def add_commands(add: Add, load: Load) -> None:
    """Add ``transfer`` to the command line."""
    p = add("transfer", lambda a: cmd_transfer(a, load), "run a transfer job in the foreground")
    p.add_argument("job", help="a job name from plugins.transfer.jobs")
    p.add_argument("args", nargs="*", help="options that override the job's: key=value or "
                                           "key:=json")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


# How long `platybus transfer` waits for a cancelled job to clean up before it gives up.
TRANSFER_CANCEL_WAIT = 30.0


def cmd_transfer(args: argparse.Namespace, load: Load) -> int:
    """Run a transfer job in the foreground and print what happened to each file."""
    from platybus.node import Node

    config = load(args, True)
    call_args = {**parse_pairs(args.args), "job": args.job}
    node = Node(config)
    if "transfer.run" not in node.actions:
        raise ConfigError("no transfer plugin is configured: add a plugins.transfer section "
                          "with jobs", file=config.file, key="plugins.transfer")
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = node.actions.call("transfer.run", call_args)
        except BaseException as error:  # reported by the main thread
            outcome["error"] = error

    # The job runs on its own thread so that a signal only sets a flag here; the job checks
    # its cancel flag between chunks and removes its temporary file.
    terminated = threading.Event()
    worker = threading.Thread(target=work, name="transfer-job", daemon=True)
    previous = {s: signal.signal(s, lambda signum, frame: terminated.set())
                for s in (signal.SIGTERM, signal.SIGINT)}
    node.start(embedded=True)
    try:
        worker.start()
        deadline = None
        while worker.is_alive():
            worker.join(0.1)
            if terminated.is_set() and deadline is None:
                deadline = time.monotonic() + TRANSFER_CANCEL_WAIT
                node.actions.call("transfer.cancel", {"job": args.job})
            if deadline is not None and time.monotonic() > deadline:
                raise Terminated(f"transfer {args.job}: still running "
                                 f"{TRANSFER_CANCEL_WAIT:g}s after it was cancelled")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        node.stop()
    error = outcome.get("error")
    if error is None:
        result: dict[str, Any] = outcome["result"]
        _show_transfer(result, args.json)
        return 1 if result["status"] == "errors" else 0
    if isinstance(error, ActionFailed) and isinstance(error.__cause__, PlatybusError):
        error = error.__cause__
    if not isinstance(error, PlatybusError):
        raise error
    partial = error.details.get("result")
    if exit_code_for(error) == 0:  # not ready, or already running: nothing to do, not a failure
        status = "busy" if type(error).__name__ == "TransferBusy" else "not_ready"
        if args.json:
            print_json({"job": args.job, "status": status, "message": str(error)})
        else:
            print(error)
        return 0
    if partial is not None:
        if args.json:
            partial["error"] = {"type": type(error).__name__, "message": str(error)}
        _show_transfer(partial, args.json)
    raise error


def _show_transfer(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(result)
        return
    for item in result["files"]:
        tag = item["tag"]
        if tag == "=":
            detail = f"{_size(item.get('size', 0))} in {item.get('duration', 0.0):.3f}s"
        elif tag == "-":
            detail = f"skipped: {item.get('reason', '')}"
        else:
            detail = item.get("error", "")
        print(f"{tag} {item['path']}  {detail}")
    waiting = f", {result['waiting']} waiting" if result.get("waiting") else ""
    print(f"{result['job']}: {result['transferred']} transferred, {result['skipped']} skipped, "
          f"{result['source_errors']} source errors, {result['target_errors']} target errors"
          f"{waiting} ({_size(result['bytes'])} in {result['duration']:.2f}s, "
          f"{result['source']} -> {result['target']})")


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"

"""What every ``platybus`` command shares: logging, argument helpers, config loading."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from platybus.config import Config, load_config
from platybus.errors import ArgumentError

DEFAULT_CONFIG = "config.yaml"

Command = Callable[[argparse.Namespace], int]
# ``load(args, quiet)``: the config a command names, with logging set up for it.
Load = Callable[[argparse.Namespace, bool], Config]
# ``add(name, fn, help, config=True)``: a new subcommand parser.
Add = Callable[..., argparse.ArgumentParser]


class JsonLogFormatter(logging.Formatter):
    """One JSON object per log line."""

    def format(self, record: logging.LogRecord) -> str:
        """Render a record as JSON."""
        entry: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        trace = getattr(record, "trace", None)
        if trace is not None:  # structured detail, e.g. a handler that timed out
            entry["trace"] = trace
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, fmt: str) -> None:
    """Send logs to stderr, readable text by default or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def parse_pairs(pairs: Sequence[str]) -> dict[str, Any]:
    """Parse ``key=value`` (a string) and ``key:=json`` (any JSON value) arguments."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ArgumentError(f"expected key=value or key:=json, got {pair!r}")
        if key.endswith(":"):
            try:
                result[key[:-1]] = json.loads(value)
            except json.JSONDecodeError as error:
                raise ArgumentError(f"{key[:-1]}: invalid JSON {value!r}: {error}") from None
        else:
            result[key] = value
    return result


def print_json(obj: Any) -> None:
    """Print an object as JSON: indented on a terminal, one line when piped."""
    indent = 2 if sys.stdout.isatty() else None
    sys.stdout.write(json.dumps(msgspec.to_builtins(obj), indent=indent, default=str) + "\n")


def load(args: argparse.Namespace, quiet: bool = False) -> Config:
    """Load the config a command names and set up logging for it."""
    config = load_config(args.config)
    # One-shot commands only speak up for warnings unless asked.
    level = args.log_level or ("warning" if quiet else config.node.log_level)
    configure_logging(level, args.log_format or config.node.log_format)
    return config

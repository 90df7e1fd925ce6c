"""platybus: a plugin-based automation message bus.

The names a script or plugin author needs are here, loaded on first use so that
``import platybus`` stays cheap::

    from platybus import Event, Plugin, action

- running a node: :class:`Node`, :class:`Bus`
- messages: :class:`Event`, :class:`Request`, :class:`Response`, :class:`ErrorInfo`
- extending: :class:`Plugin`, :class:`Backend`, :func:`action`, :class:`NodeContext`
- scripts on another machine: :class:`Client`
- errors: :class:`PlatybusError` and every class of :mod:`platybus.errors`
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it; resolved by __getattr__ on first use.
_API = {
    "Node": "platybus.node",
    "Bus": "platybus.bus",
    "Event": "platybus.messages",
    "Request": "platybus.messages",
    "Response": "platybus.messages",
    "ErrorInfo": "platybus.messages",
    "Plugin": "platybus.extensions",
    "Backend": "platybus.extensions",
    "NodeContext": "platybus.extensions",
    "action": "platybus.actions",
    "Client": "platybus.client",
}


def _error_names() -> list[str]:
    errors = importlib.import_module("platybus.errors")
    return [name for name, value in vars(errors).items()
            if isinstance(value, type) and issubclass(value, errors.PlatybusError)]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        if name in _error_names():
            module = "platybus.errors"
        else:
            raise AttributeError(f"module 'platybus' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API, *_error_names()})


if TYPE_CHECKING:
    from platybus.actions import action
    from platybus.bus import Bus
    from platybus.client import Client
    from platybus.errors import PlatybusError
    from platybus.extensions import Backend, NodeContext, Plugin
    from platybus.messages import ErrorInfo, Event, Request, Response
    from platybus.node import Node

__all__ = [  # noqa: RUF022 (grouped as in the docstring)
    "Node", "Bus",
    "Event", "Request", "Response", "ErrorInfo",
    "Plugin", "Backend", "action", "NodeContext",
    "Client",
    "PlatybusError",
    "__version__",
]

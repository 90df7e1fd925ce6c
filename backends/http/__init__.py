"""The ``http`` backend: the HTTP API, with SSE and websocket event streams.

- :mod:`.backend`: ``HttpBackend``, its routes and server thread.
- :mod:`.streams`: the SSE and websocket stream routes.
- :mod:`.gate`: what both share: auth, readiness, error bodies, submitting to the bus.

See ``docs/backends/http.md``.
"""

from .backend import HttpBackend
from .config import HttpConfig

__all__ = ["HttpBackend", "HttpConfig"]

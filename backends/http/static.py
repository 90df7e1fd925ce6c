"""The console's static files: read once from the package, served without a token.

The files are the sign-in page and the code that runs in the browser; every API
call that code makes carries a token, so serving them openly reveals nothing.
They are read into memory when the server starts (a few tens of kilobytes),
so a request costs a dictionary look-up and no file access.
"""

from __future__ import annotations

import hashlib
import html
from importlib import resources

from aiohttp import web

PACKAGE = "platybus.backends.http"
FOLDER = "console"

_TYPES = {
    ".html": "text/html", ".js": "text/javascript", ".css": "text/css",
    ".svg": "image/svg+xml", ".json": "application/json", ".png": "image/png",
}
# The page may load only its own files and talk only to its own origin.
_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
           "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class ConsoleFiles:
    """The console's files by URL path (``/`` and ``/ui/<name>``), with their headers."""

    def __init__(self, rows: int) -> None:
        self.files: dict[str, tuple[bytes, str, str]] = {}
        root = resources.files(PACKAGE).joinpath(FOLDER)
        for entry in root.iterdir():
            name = entry.name
            suffix = name[name.rfind("."):] if "." in name else ""
            if not entry.is_file() or suffix not in _TYPES:
                continue
            body = entry.read_bytes()
            if name == "index.html":
                # The row cap is the one setting the page needs before it signs in.
                body = body.replace(b"{{rows}}", html.escape(str(rows)).encode())
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            self.files["/ui/" + name] = (body, _TYPES[suffix], etag)
        if "/ui/index.html" in self.files:
            self.files["/"] = self.files["/ui/index.html"]
            self.files["/ui/"] = self.files["/ui/index.html"]

    def response(self, request: web.Request) -> web.Response | None:
        """The file a ``GET`` asks for, or ``None`` if there is no such file."""
        found = self.files.get(request.path)
        if found is None:
            return None
        body, content_type, etag = found
        headers = {"ETag": etag, "Cache-Control": "no-cache",
                   "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
        if content_type == "text/html":
            headers["Content-Security-Policy"] = _POLICY
            headers["X-Frame-Options"] = "DENY"
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type=content_type, headers=headers,
                            charset="utf-8" if content_type.startswith("text/") else None)

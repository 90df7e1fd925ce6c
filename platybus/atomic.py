"""Atomic file writes: readers see a file's old content or its new one, never a part.

The content goes to a hidden temporary file beside the target (same directory,
so same file system), is flushed to disk, and is renamed over the target. A new
file gets ``mode`` (through the umask; 0o600 for what may hold secrets, such as
event records and the outbox); a replaced file keeps its mode.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from pathlib import Path

__all__ = ["TEMP_NAME", "temp_name", "write_atomic"]

TEMP_NAME = re.compile(r"\..*\.[0-9a-f]{12}\.tmp")
"""The names :func:`temp_name` gives (so errors and listings can tell them apart)."""


def temp_name(target: Path) -> Path:
    """Return an unused hidden name next to ``target``."""
    return target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")


def write_atomic(target: Path, content: bytes, mode: int = 0o666) -> None:
    """Write ``content`` to ``target`` atomically, flushed to disk before the rename."""
    temp = temp_name(target)
    # O_EXCL never reuses a file someone else placed there (the random name makes a
    # clash unlikely); the default 0o666 lets the umask decide, as open() would.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(temp, stat.S_IMODE(target.stat().st_mode))
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise

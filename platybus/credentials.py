"""Secrets the node reads from files, and the HTTP API token it keeps in its data dir.

A secret option (``token``, ``secret``, ``url``, ``password``) may be given as
``<name>_file:`` naming a file that holds it (a systemd credential, a container
secret): the file is read when the config loads and its trailing newline dropped.

The HTTP API always has a token: when the config names none, the node creates a
random one in its data dir on first start (file mode 0600), where the command
line finds it (``platybus token``).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRET_KEYS = ("token", "secret", "url", "password")
TOKEN_FILE = "http.token"  # noqa: S105 - a file name, not a secret
_TOKEN_BYTES = 32


def read_secret(path: str | os.PathLike[str]) -> str:
    """Return the secret held in a file (its trailing newline dropped); raise ValueError."""
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"cannot read {file}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{file} is not UTF-8 text") from None
    value = text.rstrip("\r\n")
    if not value.strip():
        raise ValueError(f"{file} is empty")
    return value


def token_path(data_dir: str | os.PathLike[str]) -> Path:
    """Where a node keeps its generated HTTP API token."""
    return Path(data_dir) / TOKEN_FILE


def load_or_create_token(data_dir: str | os.PathLike[str]) -> str:
    """Return the token kept in the data dir, creating a random one (mode 0600) if there is none."""
    path = token_path(data_dir)
    if path.exists():
        return read_secret(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    # O_EXCL: two processes starting at once agree on the first one's token.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_secret(path)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(token + "\n")
    return token

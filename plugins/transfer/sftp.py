"""SFTP endpoints of the ``transfer`` plugin, through asyncssh (imported only when used).

An SFTP status error (no such file, permission denied, ...) concerns one file
and becomes a :class:`FileFailure`; a lost connection ends the job with
:class:`TransferFailed`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import posixpath
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncssh

from .engine import (
    Entry,
    FileFailure,
    Location,
    Reader,
    TransferFailed,
    Writer,
    temp_name,
    unsafe_name,
)

log = logging.getLogger("platybus.plugins.transfer")

T = TypeVar("T")

# A silent server is declared dead after about KEEPALIVE * (COUNT + 1) seconds.
KEEPALIVE = 15.0
KEEPALIVE_COUNT = 3
CLOSE_TIMEOUT = 5.0

_DIRECTORY = asyncssh.FILEXFER_TYPE_DIRECTORY
_REGULAR = asyncssh.FILEXFER_TYPE_REGULAR
_SYMLINK = asyncssh.FILEXFER_TYPE_SYMLINK


class SftpEndpoint:
    """A directory on an SFTP server."""

    def __init__(self, location: Location, role: str) -> None:
        self.location = location
        self.root = location.path
        self.display = location.display
        self.role = role
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._posix_rename = True

    @property
    def sftp(self) -> asyncssh.SFTPClient:
        """The open SFTP session."""
        if self._sftp is None:
            raise TransferFailed(f"{self.display}: not connected")
        return self._sftp

    def path(self, rel: str) -> str:
        """The server path of ``rel``."""
        return posixpath.join(self.root, rel) if rel else self.root

    async def connect(self) -> None:
        """Connect and start an SFTP session; raise :class:`TransferFailed` if that fails."""
        loc = self.location
        options: dict[str, Any] = {
            "port": loc.port, "connect_timeout": loc.connect_timeout,
            "keepalive_interval": KEEPALIVE, "keepalive_count_max": KEEPALIVE_COUNT,
        }
        if loc.username:
            options["username"] = loc.username
        if not loc.host_key_check:
            log.warning("%s: host key check disabled (host_key_check: false)", self.display)
            options["known_hosts"] = None
        elif loc.known_hosts:
            options["known_hosts"] = os.path.expanduser(loc.known_hosts)
        if loc.key_file:
            options["client_keys"] = [os.path.expanduser(loc.key_file)]
            if loc.passphrase is not None:
                options["passphrase"] = loc.passphrase
        if loc.password is not None:
            options["password"] = loc.password
        try:
            self._conn = await asyncssh.connect(loc.host, **options)
            self._sftp = await self._conn.start_sftp_client()
        except (OSError, asyncssh.Error, TimeoutError, ValueError) as error:
            await self.close()
            reason = _describe(error) or "timed out"
            raise TransferFailed(f"cannot connect to the {self.role} {self.display}: "
                                 f"{reason}") from None

    async def close(self) -> None:
        """Close the session and the connection; never raises."""
        sftp, conn = self._sftp, self._conn
        self._sftp = self._conn = None
        if sftp is not None:
            sftp.exit()
        if conn is not None:
            conn.close()
            try:
                await asyncio.wait_for(conn.wait_closed(), CLOSE_TIMEOUT)
            except (OSError, asyncssh.Error, TimeoutError):
                log.debug("closing %s", self.display, exc_info=True)

    async def _call(self, step: Awaitable[T], rel: str) -> T:
        try:
            return await step
        except (OSError, asyncssh.Error) as error:
            raise self._convert(error, rel) from None

    def _convert(self, error: BaseException, rel: str) -> Exception:
        """A status error concerns one file; anything else means the connection is gone."""
        if isinstance(error, asyncssh.SFTPError) and not isinstance(
                error, asyncssh.SFTPConnectionLost | asyncssh.SFTPNoConnection):
            return FileFailure(f"{error.reason or type(error).__name__}: {self.path(rel)}")
        return TransferFailed(f"connection to the {self.role} {self.display} failed: "
                              f"{_describe(error)}")

    async def exists(self, rel: str) -> bool:
        """Whether a regular file exists at ``rel``."""
        try:
            attrs = await self._call(self.sftp.stat(self.path(rel)), rel)
        except FileFailure:
            return False
        return attrs.type == _REGULAR

    async def walk(self, recursive: bool,
                   skip_dir: Callable[[str], bool]) -> tuple[list[Entry], list[tuple[str, str]]]:
        """List files; symlinks to files are followed, symlinks to directories are not."""
        try:
            top = await self._call(self.sftp.readdir(self.root), "")
        except FileFailure as failure:
            raise TransferFailed(f"cannot list the {self.role} {self.display}: {failure}") \
                from None
        entries: list[Entry] = []
        problems: list[tuple[str, str]] = []
        stack: list[tuple[str, list[asyncssh.SFTPName]]] = [("", list(top))]
        while stack:
            prefix, names = stack.pop()
            for name in names:
                filename = str(name.filename)
                if filename in (".", ".."):
                    continue
                rel = f"{prefix}{filename}"
                refused = unsafe_name(filename)
                if refused is not None:
                    # The server's own choice of name: never followed, never joined.
                    entries.append(Entry(rel, 0, 0.0, refused=refused))
                    continue
                attrs = name.attrs
                try:
                    if attrs.type == _SYMLINK:
                        try:
                            attrs = await self._call(self.sftp.stat(self.path(rel)), rel)
                        except FileFailure:
                            entries.append(Entry(rel, 0, 0.0))  # dangling: reading reports it
                            continue
                        if attrs.type == _DIRECTORY:
                            continue
                    elif attrs.type == _DIRECTORY:
                        if recursive and not skip_dir(rel):
                            inner = await self._call(self.sftp.readdir(self.path(rel)), rel)
                            stack.append((f"{rel}/", list(inner)))
                        continue
                except FileFailure as failure:
                    problems.append((rel, str(failure)))
                    continue
                entries.append(Entry(rel, attrs.size or 0, float(attrs.mtime or 0)))
        return entries, problems

    async def stat(self, rel: str) -> Entry | None:
        """Return the file at ``rel``, or ``None``."""
        try:
            attrs = await self.sftp.stat(self.path(rel))
        except asyncssh.SFTPNoSuchFile:
            return None
        except (OSError, asyncssh.Error) as error:
            raise self._convert(error, rel) from None
        return Entry(rel, attrs.size or 0, float(attrs.mtime or 0))

    async def open_read(self, rel: str) -> Reader:
        """Open a regular file for reading."""
        attrs = await self._call(self.sftp.stat(self.path(rel)), rel)
        if attrs.type != _REGULAR:
            raise FileFailure(f"not a regular file: {self.path(rel)}")
        file = await self._call(self.sftp.open(self.path(rel), "rb"), rel)
        return _SftpReader(self, file, rel)

    async def open_write(self, rel: str) -> Writer:
        """Create the temporary file beside ``rel``; the root itself must exist."""
        directory = self.root
        for part in posixpath.dirname(rel).split("/") if "/" in rel else ():
            directory = posixpath.join(directory, part)
            try:
                await self._call(self.sftp.mkdir(directory), rel)
            except FileFailure:
                if not await self._call(self.sftp.isdir(directory), rel):
                    raise
        final = self.path(rel)
        temp = posixpath.join(posixpath.dirname(final), temp_name(posixpath.basename(final)))
        file = await self._call(self.sftp.open(temp, "wb"), rel)
        return _SftpWriter(self, file, temp, final, rel)

    async def rename_into_place(self, temp: str, final: str, rel: str) -> None:
        """Rename over ``final``: posix-rename if the server has it, else remove + rename."""
        if self._posix_rename:
            try:
                await self.sftp.posix_rename(temp, final)
                return
            except asyncssh.SFTPOpUnsupported:
                self._posix_rename = False
            except (OSError, asyncssh.Error) as error:
                raise self._convert(error, rel) from None
        try:
            await self.sftp.remove(final)
        except asyncssh.SFTPNoSuchFile:
            pass  # nothing to replace
        except (OSError, asyncssh.Error) as error:
            raise self._convert(error, rel) from None
        await self._call(self.sftp.rename(temp, final), rel)

    async def remove(self, rel: str) -> None:
        """Delete a file."""
        await self._call(self.sftp.remove(self.path(rel)), rel)


class _SftpReader:
    def __init__(self, endpoint: SftpEndpoint, file: asyncssh.SFTPClientFile,
                 rel: str) -> None:
        self.endpoint = endpoint
        self.file = file
        self.rel = rel

    async def read(self, size: int) -> bytes:
        data = await self.endpoint._call(self.file.read(size), self.rel)
        assert isinstance(data, bytes)  # opened in binary mode
        return data

    async def close(self) -> None:
        try:
            await self.file.close()
        except (OSError, asyncssh.Error):
            log.debug("closing %s", self.rel, exc_info=True)


class _SftpWriter:
    def __init__(self, endpoint: SftpEndpoint, file: asyncssh.SFTPClientFile, temp: str,
                 final: str, rel: str) -> None:
        self.endpoint = endpoint
        self.file = file
        self.temp = temp
        self.final = final
        self.rel = rel

    async def write(self, data: bytes) -> None:
        await self.endpoint._call(self.file.write(data), self.rel)

    async def commit(self, mtime: float) -> None:
        call = self.endpoint._call
        await call(self.file.close(), self.rel)
        await call(self.endpoint.sftp.utime(self.temp, (mtime, mtime)), self.rel)
        await self.endpoint.rename_into_place(self.temp, self.final, self.rel)

    async def abort(self) -> None:
        try:
            await self.file.close()
            await self.endpoint.sftp.remove(self.temp)
        except (OSError, asyncssh.Error, TransferFailed):
            log.warning("could not remove the temporary file %s", self.temp, exc_info=True)


def _describe(error: BaseException) -> str:
    if isinstance(error, asyncssh.HostKeyNotVerifiable):
        return (f"{error.reason} (add the server's key to known_hosts, or name the file "
                "with known_hosts:)")
    text = getattr(error, "reason", None) or getattr(error, "strerror", None) or str(error)
    return str(text) or type(error).__name__

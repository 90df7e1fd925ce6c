"""Local directories as sources and targets of the ``transfer`` plugin."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import IO

from .engine import (
    Entry,
    FileFailure,
    Location,
    Reader,
    TransferFailed,
    Writer,
    temp_name,
)


class LocalEndpoint:
    """A local directory."""

    def __init__(self, location: Location, role: str, *, fsync: bool = True) -> None:
        self.root = Path(location.path).expanduser()
        self.display = location.display
        self.role = role
        self.fsync = fsync

    async def connect(self) -> None:
        """Nothing to open for a local directory."""

    async def close(self) -> None:
        """Nothing to close for a local directory."""

    async def exists(self, rel: str) -> bool:
        """Whether a regular file exists at ``rel``."""
        return (self.root / rel).is_file()

    async def walk(self, recursive: bool,
                   skip_dir: Callable[[str], bool]) -> tuple[list[Entry], list[tuple[str, str]]]:
        """List files; symlinks to files are followed, symlinks to directories are not."""
        entries: list[Entry] = []
        problems: list[tuple[str, str]] = []
        try:
            top = list(os.scandir(self.root))
        except OSError as error:
            raise TransferFailed(f"cannot list the {self.role} {self.display}: "
                                 f"{error.strerror or error}") from None
        stack: list[tuple[str, list[os.DirEntry[str]]]] = [("", top)]
        while stack:
            prefix, items = stack.pop()
            for item in items:
                rel = f"{prefix}{item.name}"
                try:
                    if item.is_dir(follow_symlinks=False):
                        if recursive and not skip_dir(rel):
                            with os.scandir(item.path) as inner:
                                stack.append((f"{rel}/", list(inner)))
                        continue
                    info = item.stat()
                except FileNotFoundError:
                    # A dangling symlink: listed, so reading it reports the problem.
                    entries.append(Entry(rel, 0, 0.0))
                    continue
                except OSError as error:
                    problems.append((rel, str(error.strerror or error)))
                    continue
                if not stat.S_ISDIR(info.st_mode):
                    entries.append(Entry(rel, info.st_size, info.st_mtime))
        return entries, problems

    async def stat(self, rel: str) -> Entry | None:
        """Return the file at ``rel``, or ``None``."""
        try:
            info = os.stat(self.root / rel)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as error:
            raise FileFailure(str(error)) from None
        return Entry(rel, info.st_size, info.st_mtime)

    async def open_read(self, rel: str) -> Reader:
        """Open a regular file; FIFOs, devices and sockets are refused without blocking."""
        path = self.root / rel
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError as error:
            if path.is_symlink():
                raise FileFailure(f"broken symbolic link to {os.readlink(path)!r}") from None
            raise FileFailure(str(error)) from None
        except OSError as error:
            raise FileFailure(str(error)) from None
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise FileFailure(f"not a regular file ({_kind(mode)}): {path}")
        return _LocalReader(os.fdopen(fd, "rb", buffering=0))

    async def open_write(self, rel: str) -> Writer:
        """Create the temporary file beside ``rel``; the root itself must exist."""
        final = self.root / rel
        directory = self.root
        root = self.root.resolve()
        try:
            for part in Path(rel).parent.parts:
                directory = directory / part
                try:
                    directory.mkdir()
                except FileExistsError:
                    if not directory.is_dir():
                        raise FileFailure(f"not a directory: {directory}") from None
                # A symlink on the way may lead out of the root: check before going on.
                self._confine(directory, root, rel)
            self._confine(final.parent, root, rel)
            if final.is_symlink():
                self._confine(final, root, rel)
            temp = final.parent / temp_name(final.name)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except OSError as error:
            raise FileFailure(str(error)) from None
        return _LocalWriter(os.fdopen(fd, "wb"), temp, final, self.fsync)

    @staticmethod
    def _confine(path: Path, root: Path, rel: str) -> None:
        resolved = path.resolve()
        if resolved != root and root not in resolved.parents:
            raise FileFailure(f"refused: {rel} resolves outside the target root "
                              f"(to {resolved}, through a symlink)")

    async def remove(self, rel: str) -> None:
        """Delete a file."""
        try:
            os.unlink(self.root / rel)
        except OSError as error:
            raise FileFailure(str(error)) from None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "special"


class _LocalReader:
    def __init__(self, file: IO[bytes]) -> None:
        self.file = file

    async def read(self, size: int) -> bytes:
        try:
            return self.file.read(size) or b""
        except OSError as error:
            raise FileFailure(str(error)) from None

    async def close(self) -> None:
        with contextlib.suppress(OSError):  # nothing was written through it
            self.file.close()


class _LocalWriter:
    def __init__(self, file: IO[bytes], temp: Path, final: Path, fsync: bool) -> None:
        self.file = file
        self.temp = temp
        self.final = final
        self.fsync = fsync

    async def write(self, data: bytes) -> None:
        try:
            self.file.write(data)
        except OSError as error:
            raise FileFailure(str(error)) from None

    async def commit(self, mtime: float) -> None:
        try:
            self.file.flush()
            if self.fsync:
                os.fsync(self.file.fileno())
            self.file.close()
            os.utime(self.temp, (mtime, mtime))
            os.replace(self.temp, self.final)
        except OSError as error:
            raise FileFailure(str(error)) from None

    async def abort(self) -> None:
        with contextlib.suppress(OSError):  # the file is deleted next
            self.file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.temp)

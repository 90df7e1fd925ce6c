"""The copy loop of the ``transfer`` plugin, its errors, locations and results.

An endpoint (``LocalEndpoint`` in :mod:`plugins.transfer_local`, ``SftpEndpoint``
in :mod:`plugins.transfer_sftp`) lists, reads and writes files relative to its
root. Endpoints raise :class:`FileFailure` for one file (the job goes on and
reports it) and :class:`TransferFailed` when the endpoint as a whole is gone
(the job stops).
"""

from __future__ import annotations

import asyncio
import fnmatch
import posixpath
import secrets
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

import msgspec

from platybus.errors import ActionError, LinkError, Terminated
from platybus.messages import Event

T = TypeVar("T")

TRANSFERRED, SOURCE_ERROR, TARGET_ERROR, SKIPPED = "=", ">", "<", "-"

# Temporary files are hidden and carry this suffix, so no pattern a consumer uses for the
# real files picks them up, and a job whose source is another job's target skips them.
TEMP_SUFFIX = ".platybus-part"


# -- errors -------------------------------------------------------------------


class TransferError(ActionError):
    """A transfer job could not run."""


class TransferNotReady(TransferError):
    """The job's ready file is missing: nothing to do yet (not a failure)."""

    exit_code = 0


class TransferBusy(TransferError):
    """The job is already running, in this process or another: nothing to do (not a failure)."""

    exit_code = 0


class UnknownJob(TransferError):
    """No transfer job of that name is configured."""

    exit_code = 3


class TransferFailed(TransferError, LinkError):
    """The source or target could not be reached, or the connection broke."""

    exit_code = 2


class TransferTerminated(TransferError, Terminated):
    """The transfer was cancelled between two chunks; the partial file was removed."""

    exit_code = 5


class FileFailure(Exception):
    """One file could not be read or written (reported; the job goes on)."""


# -- locations and jobs -------------------------------------------------------


class EndpointConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A source or target with its connection options (a plain string is just ``url``)."""

    url: str
    key_file: str | None = None
    passphrase: str | None = None
    password: str | None = None
    known_hosts: str | None = None
    host_key_check: bool = True
    connect_timeout: float = 15.0


@dataclass(frozen=True)
class Location:
    """A parsed endpoint: a local directory or a directory on an SFTP server."""

    kind: Literal["local", "sftp"]
    path: str
    display: str
    host: str = ""
    port: int = 22
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    key_file: str | None = None
    passphrase: str | None = field(default=None, repr=False)
    known_hosts: str | None = None
    host_key_check: bool = True
    connect_timeout: float = 15.0


def parse_location(spec: str | EndpointConfig) -> Location:
    """Parse a local path or an ``sftp://user@host:port/path`` URL; ``ValueError`` if invalid."""
    config = EndpointConfig(url=spec) if isinstance(spec, str) else spec
    url = config.url.strip()
    if not url:
        raise ValueError("expected a local path or an sftp:// URL, got an empty string")
    if config.connect_timeout <= 0:
        raise ValueError("connect_timeout must be more than 0")
    if "://" not in url:
        if config.key_file or config.password or config.passphrase:
            raise ValueError("key_file, passphrase and password only apply to sftp:// URLs")
        return Location("local", url, url)
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"a file:// URL names no host, got {parts.netloc!r}")
        path = urllib.parse.unquote(parts.path)
        return Location("local", path, path)
    if scheme != "sftp":
        raise ValueError(f"unsupported scheme {parts.scheme!r}: use a local path or "
                         "sftp://user@host:port/path")
    if not parts.hostname:
        raise ValueError(f"{url!r} names no host")
    try:
        port = parts.port or 22
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port") from None
    path = urllib.parse.unquote(parts.path)
    # As curl does: /~/dir is relative to the login directory, /dir is absolute.
    if path in ("", "/", "/~", "/~/"):
        path = "/" if path == "/" else "."
    elif path.startswith("/~/"):
        path = path[3:]
    user = urllib.parse.unquote(parts.username) if parts.username else None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    shown_path = parts.path or ""
    display = f"sftp://{f'{user}@' if user else ''}{host}{f':{port}' if parts.port else ''}"
    return Location(
        "sftp", path, display + shown_path, host=parts.hostname, port=port, username=user,
        password=urllib.parse.unquote(parts.password) if parts.password else config.password,
        key_file=config.key_file, passphrase=config.passphrase, known_hosts=config.known_hosts,
        host_key_check=config.host_key_check, connect_timeout=config.connect_timeout,
    )


@dataclass(frozen=True)
class Job:
    """A validated transfer job, ready to run."""

    name: str
    source: Location
    target: Location
    patterns: tuple[str, ...] = ("*",)
    ignore_patterns: tuple[str, ...] = ()
    recursive: bool = False
    ready_file: str | None = None
    ready_suffix: str | None = None
    delete_source: bool = False
    overwrite: Literal["replace", "skip", "newer", "error"] = "replace"
    max_rate: int | None = None
    chunk_size: int = 256 * 1024
    fsync: bool = True


# -- results and events -------------------------------------------------------


class FileResult(msgspec.Struct, frozen=True, omit_defaults=True):
    """What happened to one file: ``=`` transferred, ``>``/``<`` error, ``-`` skipped."""

    path: str
    tag: str
    size: int = 0
    duration: float = 0.0
    error: str | None = None
    reason: str | None = None


class TransferResult(msgspec.Struct, frozen=True):
    """The outcome of one run of a job."""

    job: str
    source: str
    target: str
    status: str
    transferred: int
    skipped: int
    waiting: int
    source_errors: int
    target_errors: int
    bytes: int
    duration: float
    files: list[FileResult]


class TransferSummary(msgspec.Struct, frozen=True):
    """Data of ``transfer.finished``: the counts of a result, without the file list."""

    job: str
    source: str
    target: str
    status: str
    transferred: int = 0
    skipped: int = 0
    source_errors: int = 0
    target_errors: int = 0
    bytes: int = 0
    duration: float = 0.0


class TransferFinished(Event, tag="event", frozen=True, kw_only=True):
    """A transfer job ended: ``ok``, ``errors``, ``failed`` or ``terminated``."""

    type: str = "transfer.finished"
    data: TransferSummary


# -- endpoints ------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """A file found by listing: its path relative to the root, size and mtime."""

    path: str
    size: int
    mtime: float


class Reader(Protocol):
    """An open source file."""

    async def read(self, size: int) -> bytes:
        """Return up to ``size`` bytes; empty at the end."""

    async def close(self) -> None:
        """Close the file."""


class Writer(Protocol):
    """A target file being written under a temporary name."""

    async def write(self, data: bytes) -> None:
        """Append ``data``."""

    async def commit(self, mtime: float) -> None:
        """Give the file ``mtime`` and rename it into place."""

    async def abort(self) -> None:
        """Remove the temporary file; never raises."""


class Endpoint(Protocol):
    """A directory, local or remote, that files are listed in, read from and written to."""

    async def connect(self) -> None:
        """Open the connection; raise :class:`TransferFailed` if it cannot be had."""

    async def close(self) -> None:
        """Close the connection; never raises."""

    async def exists(self, rel: str) -> bool:
        """Whether a regular file exists at ``rel``."""

    async def walk(self, recursive: bool,
                   skip_dir: Callable[[str], bool]) -> tuple[list[Entry], list[tuple[str, str]]]:
        """List files (and directories that could not be read, with the reason)."""

    async def stat(self, rel: str) -> Entry | None:
        """Return the file at ``rel``, or ``None`` if there is none."""

    async def open_read(self, rel: str) -> Reader:
        """Open a regular file for reading."""

    async def open_write(self, rel: str) -> Writer:
        """Start writing ``rel`` under a temporary name, creating subdirectories."""

    async def remove(self, rel: str) -> None:
        """Delete a file."""


def temp_name(name: str) -> str:
    """Return the temporary name under which ``name`` is written."""
    # Cut long names so the temporary one stays within the usual 255-byte limit.
    return f".{name[:200]}.{secrets.token_hex(4)}{TEMP_SUFFIX}"


# -- the copy loop ----------------------------------------------------------------


def matches(rel: str, pattern: str) -> bool:
    """Match a pattern against the relative path if it has a ``/``, else the file name."""
    subject = rel if "/" in pattern else posixpath.basename(rel)
    return fnmatch.fnmatchcase(subject, pattern)


class _Failed(Exception):
    def __init__(self, tag: str, text: str) -> None:
        super().__init__(text)
        self.tag = tag
        self.text = text


async def _on(tag: str, step: Awaitable[T]) -> T:
    try:
        return await step
    except FileFailure as failure:
        raise _Failed(tag, str(failure)) from None


class _Run:
    """One run of a job: the file list so far, pacing and cancellation."""

    def __init__(self, job: Job, source: Endpoint, target: Endpoint,
                 cancel: threading.Event, action: str) -> None:
        self.job = job
        self.source = source
        self.target = target
        self.cancel = cancel
        self.action = action
        self.files: list[FileResult] = []
        self.waiting = 0
        self.started = time.monotonic()
        self.sent = 0

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            raise TransferTerminated(f"transfer {self.job.name}: cancelled; no partial file "
                                     "was left behind", action=self.action, job=self.job.name)

    async def pace(self, size: int) -> None:
        self.sent += size
        rate = self.job.max_rate
        while rate is not None:
            self.check_cancel()
            ahead = self.sent / rate - (time.monotonic() - self.started)
            if ahead <= 0:
                return
            await asyncio.sleep(min(ahead, 0.05))

    def result(self, status: str | None = None) -> TransferResult:
        tags = [f.tag for f in self.files]
        source_errors, target_errors = tags.count(SOURCE_ERROR), tags.count(TARGET_ERROR)
        if status is None:
            status = "errors" if source_errors or target_errors else "ok"
        return TransferResult(
            job=self.job.name, source=self.job.source.display, target=self.job.target.display,
            status=status, transferred=tags.count(TRANSFERRED), skipped=tags.count(SKIPPED),
            waiting=self.waiting, source_errors=source_errors, target_errors=target_errors,
            bytes=sum(f.size for f in self.files if f.tag == TRANSFERRED),
            duration=round(time.monotonic() - self.started, 6), files=self.files,
        )

    def selected(self, rel: str) -> bool:
        job = self.job
        name = posixpath.basename(rel)
        if name.startswith(".") and name.endswith(TEMP_SUFFIX):
            return False
        if rel == job.ready_file or (job.ready_suffix and rel.endswith(job.ready_suffix)):
            return False
        return (any(matches(rel, p) for p in job.patterns)
                and not any(matches(rel, p) for p in job.ignore_patterns))

    async def run(self) -> TransferResult:
        job = self.job
        if job.ready_file and not await self.source.exists(job.ready_file):
            raise TransferNotReady(
                f"transfer {job.name}: not ready: {job.ready_file} is missing in "
                f"{job.source.display}; nothing was transferred", action=self.action,
                job=job.name)
        entries, problems = await self.source.walk(
            job.recursive, lambda rel: any(matches(rel, p) for p in job.ignore_patterns))
        names = {entry.path for entry in entries}
        chosen = sorted((e for e in entries if self.selected(e.path)), key=lambda e: e.path)
        if job.ready_suffix:
            ready = [e for e in chosen if e.path + job.ready_suffix in names]
            self.waiting = len(chosen) - len(ready)
            if chosen and not ready:
                raise TransferNotReady(
                    f"transfer {job.name}: not ready: none of the {len(chosen)} matching "
                    f"file(s) has its {job.ready_suffix} marker yet", action=self.action,
                    job=job.name)
            chosen = ready
        self.files.extend(FileResult(rel, SOURCE_ERROR, error=f"cannot list: {text}")
                          for rel, text in sorted(problems))
        for entry in chosen:
            self.check_cancel()
            self.files.append(await self.copy(entry))
        if job.ready_file and job.delete_source and self.result().status == "ok":
            try:
                await self.source.remove(job.ready_file)
            except FileFailure as failure:
                self.files.append(FileResult(job.ready_file, SOURCE_ERROR,
                                             error=f"cannot delete the ready file: {failure}"))
        return self.result()

    async def copy(self, entry: Entry) -> FileResult:
        job = self.job
        began = time.monotonic()
        try:
            existing = await _on(TARGET_ERROR, self.target.stat(entry.path))
            if existing is not None and job.overwrite != "replace":
                if job.overwrite == "error":
                    raise _Failed(TARGET_ERROR, "exists on the target (overwrite: error)")
                if job.overwrite == "skip":
                    return FileResult(entry.path, SKIPPED, reason="exists on the target")
                if existing.size == entry.size and int(entry.mtime) <= int(existing.mtime):
                    return FileResult(entry.path, SKIPPED, reason="the target is up to date")
            reader = await _on(SOURCE_ERROR, self.source.open_read(entry.path))
            size = 0
            try:
                writer: Writer | None = await _on(TARGET_ERROR,
                                                  self.target.open_write(entry.path))
                assert writer is not None
                try:
                    while True:
                        self.check_cancel()
                        data = await _on(SOURCE_ERROR, reader.read(job.chunk_size))
                        if not data:
                            break
                        await _on(TARGET_ERROR, writer.write(data))
                        size += len(data)
                        await self.pace(len(data))
                    await _on(TARGET_ERROR, writer.commit(entry.mtime))
                    writer = None
                finally:
                    if writer is not None:
                        await writer.abort()
            finally:
                await reader.close()
            if job.delete_source:
                await self.delete_source(entry)
        except _Failed as failed:
            return FileResult(entry.path, failed.tag, duration=_since(began), error=failed.text)
        return FileResult(entry.path, TRANSFERRED, size=size, duration=_since(began))

    async def delete_source(self, entry: Entry) -> None:
        try:
            await self.source.remove(entry.path)
            if self.job.ready_suffix:
                await self.source.remove(entry.path + self.job.ready_suffix)
        except FileFailure as failure:
            raise _Failed(SOURCE_ERROR, f"transferred, but the source could not be "
                                        f"deleted: {failure}") from None


def _since(began: float) -> float:
    return round(time.monotonic() - began, 6)


async def run_job(job: Job, source: Endpoint, target: Endpoint, cancel: threading.Event,
                  *, action: str) -> TransferResult:
    """Transfer the job's files; a failure or cancellation keeps the partial result."""
    run = _Run(job, source, target, cancel, action)
    try:
        return await run.run()
    except (TransferFailed, TransferTerminated) as error:
        status = "terminated" if isinstance(error, TransferTerminated) else "failed"
        error.details["result"] = msgspec.to_builtins(run.result(status))
        error.details.setdefault("job", job.name)
        if error.action is None:
            error.action = action
        raise


__all__ = [
    "SKIPPED", "SOURCE_ERROR", "TARGET_ERROR", "TRANSFERRED", "EndpointConfig", "Entry",
    "FileFailure", "FileResult", "Job", "Location", "TransferBusy",
    "TransferError", "TransferFailed", "TransferFinished", "TransferNotReady",
    "TransferResult", "TransferSummary", "TransferTerminated", "UnknownJob",
    "parse_location", "run_job", "temp_name",
]

"""The ``transfer`` plugin: copy files matching patterns between local directories and SFTP.

A job names a source and a target (a local path or an ``sftp://`` URL), which
files to take, and what to do with what is already there. Each file is written
under a temporary name in the target directory and renamed into place, so a
reader never sees half a file. One instance of a job runs at a time, across
processes (a ``flock`` in the node's data dir). The copy loop lives in
:mod:`plugins.transfer_engine`, local directories in :mod:`plugins.transfer_local`,
SFTP in :mod:`plugins.transfer_sftp` (imported only when a job uses it).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import importlib.util
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, Literal

import msgspec

from platybus.errors import ArgumentError, ConfigError
from platybus.extensions import NodeContext, Plugin, action

from .engine import (
    Endpoint,
    EndpointConfig,
    Job,
    Location,
    TransferBusy,
    TransferFailed,
    TransferFinished,
    TransferResult,
    TransferSummary,
    TransferTerminated,
    UnknownJob,
    parse_location,
    run_job,
)
from .local import LocalEndpoint

__all__ = ["EndpointConfig", "JobConfig", "TransferConfig", "TransferPlugin"]

Overwrite = Literal["replace", "skip", "newer", "error"]

_JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")

# How long stopping the plugin waits for cancelled transfers to clean up.
STOP_WAIT = 10.0


class JobConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One entry of ``plugins.transfer.jobs``."""

    source: str | EndpointConfig
    target: str | EndpointConfig
    patterns: list[str] = msgspec.field(default_factory=lambda: ["*"])
    ignore_patterns: list[str] = msgspec.field(default_factory=list)
    recursive: bool = False
    ready_file: str | None = None
    ready_suffix: str | None = None
    delete_source: bool = False
    overwrite: Overwrite = "replace"
    max_rate: int | None = None
    chunk_size: int | None = None
    # ``x:NAME`` sections: kept for the job's Python caller, never read here.
    x: dict[str, Any] = msgspec.field(default_factory=dict)


class TransferConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Options of the ``transfer`` plugin."""

    jobs: dict[str, JobConfig] = msgspec.field(default_factory=dict)
    chunk_size: int = 256 * 1024
    fsync: bool = True
    x: dict[str, Any] = msgspec.field(default_factory=dict)


# The prefix of the sections a job's caller keeps for itself.
EXTRA_PREFIX = "x:"


def _gather_extra(options: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in options.items() if not k.startswith(EXTRA_PREFIX)}
    extra = {k[len(EXTRA_PREFIX):]: v for k, v in options.items() if k.startswith(EXTRA_PREFIX)}
    if extra:
        out["x"] = {**(out.get("x") or {}), **extra}
    return out


class TransferPlugin(Plugin):
    """Runs file transfer jobs between local directories and SFTP servers."""

    Config: ClassVar[type[msgspec.Struct]] = TransferConfig
    event_types = (TransferFinished,)
    config: TransferConfig

    def __init__(self, name: str, config: Any, context: NodeContext) -> None:
        super().__init__(name, config, context)
        if config.chunk_size < 1:
            raise ConfigError("must be at least 1", key=f"plugins.{name}.chunk_size")
        self._jobs = {
            job_name: self._build_job(job_name, job, f"plugins.{name}.jobs.{job_name}",
                                      ConfigError)
            for job_name, job in config.jobs.items()
        }
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._running: dict[str, threading.Event] = {}
        self._stopping = False

    @classmethod
    def prepare_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Gather ``x:NAME`` sections of the plugin and of each job under ``x``."""
        out = _gather_extra(options)
        jobs = out.get("jobs")
        if isinstance(jobs, dict):
            out["jobs"] = {name: _gather_extra(job) if isinstance(job, dict) else job
                           for name, job in jobs.items()}
        return out

    def extras(self, job: str) -> dict[str, Any]:
        """The ``x:`` sections of the plugin and of ``job``, merged (the job's keys win)."""
        if job not in self.config.jobs:
            raise self._unknown(job)
        app, own = self.config.x, self.config.jobs[job].x
        merged = dict(app)
        for name, value in own.items():
            base = app.get(name)
            merged[name] = ({**base, **value} if isinstance(base, dict) and isinstance(value, dict)
                            else value)
        return merged

    def report_failure(self, job: str, error: BaseException) -> None:
        """Publish ``transfer.finished`` with status ``failed`` for an error of the job's caller."""
        spec = self._jobs.get(job)
        if spec is None:
            raise self._unknown(job)
        self.log.error("transfer %s failed: %s: %s", job, type(error).__name__, error)
        self._announce(spec, None, "failed", 0.0)

    def _unknown(self, job: str) -> UnknownJob:
        known = ", ".join(sorted(self._jobs)) or "none configured"
        return UnknownJob(f"no transfer job named {job!r} in plugins.{self.name}.jobs "
                          f"(jobs: {known})", action=f"{self.name}.run", job=job)

    def _build_job(self, name: str, job: JobConfig, where: str,
                   error: type[ConfigError] | type[ArgumentError]) -> Job:
        def fail(key: str, reason: str) -> Exception:
            if error is ConfigError:
                return ConfigError(reason, key=".".join(p for p in (where, key) if p))
            what = f"{key}: " if key else ""
            return ArgumentError(f"{self.name}.run: {what}{reason}", action=f"{self.name}.run")

        if where and not _JOB_NAME.fullmatch(name):
            raise fail("", "a job name is 1-63 letters, digits, '.', '_' or '-'")
        locations: dict[str, Location] = {}
        for key in ("source", "target"):
            try:
                locations[key] = parse_location(getattr(job, key))
            except ValueError as reason:
                raise fail(key, str(reason)) from None
            if locations[key].kind == "sftp" and importlib.util.find_spec("asyncssh") is None:
                raise fail(key, "SFTP needs the asyncssh package: pip install 'platybus[sftp]'")
        if not job.patterns:
            raise fail("patterns", "give at least one pattern ('*' takes every file)")
        for key in ("ready_file", "ready_suffix"):
            value = getattr(job, key)
            if value is not None and (not value or "/" in value):
                raise fail(key, "must be a plain file name (no '/')")
        if job.ready_file and job.ready_suffix:
            raise fail("ready_suffix", "use either ready_file or ready_suffix, not both")
        for key in ("max_rate", "chunk_size"):
            value = getattr(job, key)
            if value is not None and value < 1:
                raise fail(key, "must be at least 1")
        return Job(
            name=name, source=locations["source"], target=locations["target"],
            patterns=tuple(job.patterns), ignore_patterns=tuple(job.ignore_patterns),
            recursive=job.recursive, ready_file=job.ready_file, ready_suffix=job.ready_suffix,
            delete_source=job.delete_source, overwrite=job.overwrite, max_rate=job.max_rate,
            chunk_size=job.chunk_size or self.config.chunk_size, fsync=self.config.fsync,
        )

    def stop(self) -> None:
        """Cancel running transfers and wait (bounded) until they cleaned up; idempotent."""
        with self._idle:
            self._stopping = True
            for cancel in self._running.values():
                cancel.set()
            deadline = time.monotonic() + STOP_WAIT
            while self._running and time.monotonic() < deadline:
                self._idle.wait(deadline - time.monotonic())
            if self._running:
                self.log.error("transfers still running after %.0fs: %s", STOP_WAIT,
                               ", ".join(sorted(self._running)))

    # -- actions -----------------------------------------------------------

    @action
    def run(
        self,
        job: str | None = None,
        source: str | EndpointConfig | None = None,
        target: str | EndpointConfig | None = None,
        patterns: list[str] | None = None,
        ignore_patterns: list[str] | None = None,
        recursive: bool | None = None,
        ready_file: str | None = None,
        ready_suffix: str | None = None,
        delete_source: bool | None = None,
        overwrite: Overwrite | None = None,
        max_rate: int | None = None,
        chunk_size: int | None = None,
    ) -> dict[str, Any]:
        """Run a configured ``job`` (other arguments override it), or an ad-hoc transfer."""
        given = {k: v for k, v in {
            "source": source, "target": target, "patterns": patterns,
            "ignore_patterns": ignore_patterns, "recursive": recursive,
            "ready_file": ready_file, "ready_suffix": ready_suffix,
            "delete_source": delete_source, "overwrite": overwrite, "max_rate": max_rate,
            "chunk_size": chunk_size,
        }.items() if v is not None}
        spec = self._resolve(job, given)
        key = spec.name if job is not None else _adhoc_key(spec)
        with self._job_lock(spec, key) as cancel:
            return self._execute(spec, cancel)

    @action(blocking=False)
    def cancel(self, job: str | None = None) -> dict[str, Any]:
        """Cancel a running job (every running transfer without ``job``); return which."""
        with self._lock:
            names = [n for n in self._running if job is None or n == job]
            for name in names:
                self._running[name].set()
        return {"cancelled": sorted(names)}

    @action(blocking=False)
    def jobs(self) -> list[dict[str, Any]]:
        """List the configured jobs with their source, target and whether they run now."""
        with self._lock:
            running = set(self._running)
        return [
            {"name": name, "source": job.source.display, "target": job.target.display,
             "patterns": list(job.patterns), "recursive": job.recursive,
             "running": name in running}
            for name, job in sorted(self._jobs.items())
        ]

    # -- running -----------------------------------------------------------

    def _resolve(self, job: str | None, given: dict[str, Any]) -> Job:
        if job is None:
            missing = [k for k in ("source", "target") if k not in given]
            if missing:
                raise ArgumentError(
                    f"{self.name}.run: give a job name, or source and target "
                    f"(missing {' and '.join(missing)})", action=f"{self.name}.run")
            return self._build_job("adhoc", JobConfig(**given), "", ArgumentError)
        base = self._jobs.get(job)
        if base is None:
            raise self._unknown(job)
        if not given:
            return base
        merged = msgspec.structs.asdict(self.config.jobs[job]) | given
        return self._build_job(job, JobConfig(**merged), "", ArgumentError)

    @contextmanager
    def _job_lock(self, job: Job, key: str) -> Iterator[threading.Event]:
        cancel = threading.Event()
        with self._lock:
            if self._stopping:
                raise TransferTerminated(f"transfer {key}: the node is stopping",
                                         action=f"{self.name}.run", job=job.name)
            if key in self._running:
                raise self._busy(job, key, "this node")
            self._running[key] = cancel
        try:
            directory = self.context.data_dir / "transfer"
            directory.mkdir(parents=True, exist_ok=True)
            with open(directory / f"{key}.lock", "a+", encoding="utf-8") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.seek(0)
                    raise self._busy(job, key, f"pid {handle.read().strip() or '?'}") from None
                try:
                    handle.seek(0)
                    handle.truncate()
                    handle.write(str(os.getpid()))
                    handle.flush()
                    yield cancel
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            with self._idle:
                del self._running[key]
                self._idle.notify_all()

    def _busy(self, job: Job, key: str, holder: str) -> TransferBusy:
        return TransferBusy(f"transfer job {key!r} is already running ({holder})",
                            action=f"{self.name}.run", job=job.name)

    def _execute(self, job: Job, cancel: threading.Event) -> dict[str, Any]:
        started = time.monotonic()
        self.log.info("transfer %s: %s -> %s", job.name, job.source.display, job.target.display)
        try:
            result = asyncio.run(self._transfer(job, cancel))
        except (TransferFailed, TransferTerminated) as error:
            partial = error.details.get("result")
            status = "terminated" if isinstance(error, TransferTerminated) else "failed"
            self._announce(job, partial, status, time.monotonic() - started)
            raise
        output: dict[str, Any] = msgspec.to_builtins(result)
        self._announce(job, output, result.status, result.duration)
        level = "warning" if result.status == "errors" else "info"
        getattr(self.log, level)(
            "transfer %s: %d transferred, %d skipped, %d source errors, %d target errors",
            job.name, result.transferred, result.skipped, result.source_errors,
            result.target_errors)
        return output

    async def _transfer(self, job: Job, cancel: threading.Event) -> TransferResult:
        source = open_endpoint(job.source, "source", fsync=job.fsync)
        target = open_endpoint(job.target, "target", fsync=job.fsync)
        await source.connect()
        try:
            await target.connect()
            try:
                return await run_job(job, source, target, cancel, action=f"{self.name}.run")
            finally:
                await target.close()
        finally:
            await source.close()

    def _announce(self, job: Job, result: dict[str, Any] | None, status: str,
                  duration: float) -> None:
        counts = {k: (result or {}).get(k, 0) for k in (
            "transferred", "skipped", "source_errors", "target_errors", "bytes")}
        try:
            self.send_event(TransferFinished(data=TransferSummary(
                job=job.name, source=job.source.display, target=job.target.display,
                status=status, duration=round(duration, 6), **counts)))
        except Exception:
            self.log.warning("could not publish transfer.finished", exc_info=True)


def open_endpoint(location: Location, role: str, *, fsync: bool = True) -> Endpoint:
    """Build the endpoint for a location (SFTP support is imported only here)."""
    if location.kind == "sftp":
        from .sftp import SftpEndpoint

        return SftpEndpoint(location, role)
    return LocalEndpoint(location, role, fsync=fsync)


def _adhoc_key(job: Job) -> str:
    # An ad-hoc transfer is one "job" per source/target pair.
    digest = hashlib.sha256(f"{job.source.display}\0{job.target.display}".encode())
    return f"adhoc-{digest.hexdigest()[:12]}"

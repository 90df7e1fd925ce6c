"""The transfer plugin as a Python API: ``configure`` a job, ``transfer`` once, exit codes.

For scripts written against a file transfer job API: :func:`configure` reads a
config file and returns ``(run, extra)``; ``run(exc=None)`` runs the job and
returns ``(result, exit_code)``; :func:`transfer` copies once without a config
file. ``x:`` sections of the plugin and of the job come back as ``extra``.
See ``docs/coming-from/filetransfer.md``.
"""

from __future__ import annotations

import enum
import logging
import signal
import socket
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import msgspec

from platybus.errors import ActionFailed, PlatybusError, exit_code_for
from platybus.extensions import NodeContext

from .engine import TransferTerminated, UnknownJob
from .plugin import EndpointConfig, TransferConfig, TransferPlugin

__all__ = ["FileTags", "TransferOutcome", "configure", "set_sigterm_handler", "transfer"]

log = logging.getLogger("platybus.plugins.transfer")

Run = Callable[..., tuple["TransferOutcome | None", int]]


class FileTags(enum.Enum):
    """What happened to a file: transferred, a source error, a target error (or skipped)."""

    TRANSFERRED = "="
    SOURCE_ERROR = ">"
    TARGET_ERROR = "<"
    SKIPPED = "-"


@dataclass(frozen=True)
class TransferOutcome:
    """The result of a transfer: its counts and, if collected, each file's ``(path, info, tag)``."""

    files_cnt: int
    src_error_cnt: int
    tgt_error_cnt: int
    status: str
    file_list: list[tuple[str, dict[str, Any], FileTags]] | None = None
    result: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_result(cls, result: Mapping[str, Any], collect_data: bool) -> TransferOutcome:
        """Build it from a ``transfer.run`` result."""
        files = None
        if collect_data:
            files = [(item["path"], {k: v for k, v in item.items() if k not in ("path", "tag")},
                      FileTags(item["tag"])) for item in result.get("files", [])]
        return cls(files_cnt=result.get("transferred", 0),
                   src_error_cnt=result.get("source_errors", 0),
                   tgt_error_cnt=result.get("target_errors", 0),
                   status=result.get("status", ""), file_list=files, result=dict(result))

    @property
    def exit_code(self) -> int:
        """0 when every file went, 1 when some failed."""
        return 1 if self.src_error_cnt or self.tgt_error_cnt else 0


def configure(cfg_file: str | Path, job_id: str, **kwargs: Any) -> tuple[Run, dict[str, Any]]:
    """Load ``cfg_file``'s transfer job ``job_id``; return ``(run, extra)``.

    ``kwargs`` override the job's options for this run. ``extra`` holds the
    ``x:`` sections of the plugin and of the job, merged (the job's keys win).
    ``run(exc=None)`` runs the job in this process and returns ``(result,
    exit_code)``; given ``exc``, it logs it, publishes the job's failure and
    raises it again instead.
    """
    from platybus.config import load_config
    from platybus.node import Node

    node = Node(load_config(cfg_file))
    plugin = next((p for p in node.plugins.values() if isinstance(p, TransferPlugin)), None)
    if plugin is None:
        raise UnknownJob(f"{cfg_file}: no transfer plugin is configured", job=job_id)
    extra = plugin.extras(job_id)
    collect = bool(kwargs.pop("collect_data", True))

    def run(exc: BaseException | None = None) -> tuple[TransferOutcome | None, int]:
        """Run the job (or report ``exc`` and raise it); return ``(result, exit_code)``."""
        node.start(embedded=True)
        notifiers = node.notifiers
        if notifiers is not None:
            notifiers.start(node.bus)
        try:
            if exc is not None:
                log.error("transfer %s: %s: %s", job_id, type(exc).__name__, exc)
                plugin.report_failure(job_id, exc)
                raise exc
            try:
                result = node.actions.call(f"{plugin.name}.run", {**kwargs, "job": job_id})
            except ActionFailed as error:
                cause = error.__cause__ if isinstance(error.__cause__, PlatybusError) else error
                log.log(logging.INFO if exit_code_for(cause) == 0 else logging.ERROR,
                        "transfer %s: %s", job_id, cause)
                partial = cause.details.get("result") if isinstance(cause, PlatybusError) else None
                outcome = TransferOutcome.from_result(partial, collect) if partial else None
                return outcome, exit_code_for(cause)
            except PlatybusError as error:
                log.error("transfer %s: %s", job_id, error)
                return None, exit_code_for(error)
            outcome = TransferOutcome.from_result(result, collect)
            return outcome, outcome.exit_code
        finally:
            if notifiers is not None:
                notifiers.stop(node.config.node.stop_timeout)
            node.stop()

    return run, extra


def transfer(src_cfg: str | Mapping[str, Any], tgt_cfg: str | Mapping[str, Any] | None = None,
             *, collect_data: bool = False) -> TransferOutcome:
    """Copy once from ``src_cfg`` to ``tgt_cfg``, without a config file; return the outcome.

    Each is a local path, an ``sftp://`` URL or an endpoint mapping (``url``,
    ``key_file``, ...). Without ``tgt_cfg``, ``src_cfg`` is a whole job mapping
    (``source``, ``target``, ``patterns``, ...). ``file_list`` is ``None`` unless
    ``collect_data``. Raises the job's error (``TransferFailed``, ...) if it could
    not run.
    """
    if tgt_cfg is None:
        if not isinstance(src_cfg, Mapping):
            raise TypeError("transfer(src_cfg) alone needs a job mapping with source and target")
        args = dict(src_cfg)
    else:
        args = {"source": _endpoint(src_cfg), "target": _endpoint(tgt_cfg)}
    data_dir = Path(tempfile.gettempdir()) / "platybus-transfer"
    context = NodeContext.detached(socket.gethostname(), data_dir)
    plugin = TransferPlugin("transfer", TransferConfig(), context)
    try:
        result = plugin.run(**args)
    finally:
        plugin.stop()
    return TransferOutcome.from_result(result, collect_data)


def _endpoint(value: str | Mapping[str, Any]) -> str | EndpointConfig:
    if isinstance(value, str):
        return value
    return msgspec.convert(dict(value), EndpointConfig)


def set_sigterm_handler() -> None:
    """Make SIGTERM raise :class:`TransferTerminated` (exit code 5) in the main thread."""

    def terminated(signum: int, frame: FrameType | None) -> None:
        raise TransferTerminated(f"terminated by signal {signum}")

    signal.signal(signal.SIGTERM, terminated)

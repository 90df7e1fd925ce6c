"""The parent's side of one worker process: started fresh, fed frames, always reaped.

A worker is a fresh interpreter started with ``subprocess`` (never a fork: the
node has threads) on one end of a socket pair, framed by
``multiprocessing.connection``; it runs :func:`platybus.isolation.child.worker_main`.
Unlike ``multiprocessing``'s spawn context this does not re-run the parent's
``__main__`` in each worker, and leaves no resource-tracker process behind.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import subprocess
import sys
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path

import msgspec

from platybus.codec import Codec
from platybus.isolation.child import ResultFrame, TaskFrame, WorkerInit
from platybus.isolation.tasks import Task
from platybus.messages import EventTypes

log = logging.getLogger("platybus.isolation")

# How long a terminated worker gets to exit before it is killed, and the kill to land.
TERM_GRACE = 0.5
KILL_WAIT = 2.0
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)
# What a worker interpreter runs: find platybus where the node found it, then serve.
_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
         "from platybus.isolation.child import worker_main; worker_main(int(sys.argv[2]))")


def init_frame(codec: Codec, search_path: Sequence[str | Path]) -> bytes:
    """The first frame every worker gets: where to import from, event types, size limit."""
    return msgspec.msgpack.encode(WorkerInit(
        search_path=[str(Path(p).resolve()) for p in search_path] + sys.path,
        event_types=_type_refs(codec.types),
        max_size=codec.max_size,
    ))


class Worker:
    """One worker process, its pipe, and the task it runs (if any)."""

    __slots__ = ("conn", "pid", "process", "task")

    def __init__(self, process: subprocess.Popen[bytes], conn: Connection) -> None:
        self.process = process
        self.pid = process.pid
        self.conn = conn
        self.task: Task | None = None

    @classmethod
    def spawn(cls, label: str, init: bytes) -> Worker:
        """Start a worker interpreter named ``label`` and send it ``init``."""
        ours, theirs = socket.socketpair()
        try:
            process = subprocess.Popen(  # noqa: S603 - this interpreter, our own boot code
                [sys.executable, "-c", _BOOT, _PACKAGE_ROOT, str(theirs.fileno()), label],
                stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        worker = cls(process, Connection(ours.detach()))
        with contextlib.suppress(OSError):  # if it died at once, the supervisor sees EOF
            worker.conn.send_bytes(init)
        return worker

    def send(self, frame: TaskFrame) -> None:
        """Hand the worker a task; raises ``OSError`` if its pipe is gone."""
        self.conn.send_bytes(msgspec.msgpack.encode(frame))

    def receive(self) -> ResultFrame:
        """Read a result; raises ``EOFError``/``OSError`` if it died, ``DecodeError`` on garbage."""
        return msgspec.msgpack.decode(self.conn.recv_bytes(), type=ResultFrame)

    def end(self, grace: float) -> int | None:
        """Close the pipe and reap the process (terminated, then killed); its exit code."""
        code = end_process(self.process, grace=grace)
        self.conn.close()
        return code

    def unregister(self, selector: selectors.BaseSelector) -> None:
        """Stop watching the worker's pipe."""
        with contextlib.suppress(KeyError, ValueError, OSError):
            selector.unregister(self.conn)


def end_process(process: subprocess.Popen[bytes], *, grace: float) -> int | None:
    """Reap a worker: wait ``grace`` for it to exit, then terminate it, then kill it."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        return process.wait(grace)
    process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        return process.wait(TERM_GRACE)
    process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        return process.wait(KILL_WAIT)
    log.error("worker process %s did not exit after SIGKILL", process.pid)
    return None


def _type_refs(types: EventTypes) -> list[str]:
    refs = []
    for name in types.names():
        cls = types.get(name)
        if cls is not None and "<locals>" not in cls.__qualname__:
            refs.append(f"{cls.__module__}:{cls.__qualname__}")
    return refs

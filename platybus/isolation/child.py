"""The worker side of :mod:`platybus.isolation`: runs in a fresh interpreter.

It reads a :class:`WorkerInit`, then serves :class:`TaskFrame` tasks from its
pipe until the pipe closes: resolve ``module:qualname`` (named by the node's
config), decode the message with the codec, call ``fn(configuration, message)``
and send a :class:`ResultFrame` back.
"""

from __future__ import annotations

import importlib
import logging
import pickle
import signal
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import msgspec

from platybus.codec import Codec
from platybus.messages import EventTypes

log = logging.getLogger("platybus.isolation")


class TaskFrame(msgspec.Struct, array_like=True):
    """A task sent to a worker."""

    seq: int
    fn_ref: str
    configuration: bytes
    payload: bytes


class ResultFrame(msgspec.Struct, array_like=True):
    """A worker's answer: a result, or (type, message, traceback)."""

    seq: int
    ok: bool
    value: Any
    run_time: float


class WorkerInit(msgspec.Struct):
    """What a worker is told first: where to import from, which event types exist."""

    search_path: list[str]
    event_types: list[str]
    max_size: int
    max_depth: int = 64


def resolve_ref(ref: str) -> Any:
    """Import ``module:qualname`` and return the object it names."""
    module_name, _, qualname = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def worker_main(fd: int) -> None:
    """Serve tasks from the pipe ``fd`` until it closes (runs in a worker process)."""
    # The node handles Ctrl-C and stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(fd)
    try:
        settings = msgspec.msgpack.decode(conn.recv_bytes(), type=WorkerInit)
    except (EOFError, OSError):
        return
    for path in reversed(settings.search_path):
        if path not in sys.path:
            sys.path.insert(0, path)
    types = EventTypes()
    for ref in settings.event_types:
        try:
            types.register(resolve_ref(ref))
        except Exception as error:  # an unknown type decodes as a generic event instead
            log.debug("worker cannot import event type %s: %s", ref, error)
    codec = Codec(types, settings.max_size, settings.max_depth)
    functions: dict[str, Callable[[Any, Any], Any]] = {}
    decoder = msgspec.msgpack.Decoder(TaskFrame)
    encoder = msgspec.msgpack.Encoder()
    while True:
        try:
            frame = decoder.decode(conn.recv_bytes())
        except (EOFError, OSError):
            return
        started = time.perf_counter()
        ok, value = True, None
        try:
            fn = functions.get(frame.fn_ref)
            if fn is None:
                fn = functions[frame.fn_ref] = resolve_ref(frame.fn_ref)
            # The configuration was pickled by the node that started this process.
            configuration = pickle.loads(frame.configuration)  # noqa: S301
            value = fn(configuration, codec.decode(frame.payload))
        except BaseException as error:  # anything the code raises goes back to the node
            ok, value = False, _describe(error)
        run_time = time.perf_counter() - started
        try:
            out = encoder.encode(ResultFrame(frame.seq, ok, value, run_time))
        except (TypeError, ValueError, OverflowError) as error:
            failure = TypeError(f"the result of {frame.fn_ref} cannot be sent back: {error}")
            out = encoder.encode(ResultFrame(frame.seq, False, _describe(failure), run_time))
        try:
            conn.send_bytes(out)
        except OSError:
            return


def _describe(error: BaseException) -> tuple[str, str, str]:
    trace = "".join(traceback.format_exception(error))
    return (type(error).__name__, str(error), trace)

"""ProcessPool: real worker processes, real deadlines, real crashes."""

from __future__ import annotations

import os
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from platybus.codec import Codec
from platybus.errors import (
    HandlerError,
    HandlerTimeout,
    IsolationError,
    NodeNotReady,
    QueueFullError,
    WorkerCrashed,
)
from platybus.isolation.pool import ProcessPool
from platybus.messages import Event, NodeEventData, NodeStarted

JOBS = '''
import os
import time

def echo(configuration, event):
    return {"pid": os.getpid(), "configuration": configuration, "type": event.type,
            "data": event.data}

def span(configuration, event):
    start = time.time()
    time.sleep(configuration)
    return {"pid": os.getpid(), "start": start, "end": time.time()}

def hang(configuration, event):
    time.sleep(3600)

def boom(configuration, event):
    raise ValueError("bad value in " + event.type)

def crash(configuration, event):
    os._exit(7)

def opaque(configuration, event):
    return object()

def kind(configuration, event):
    return [type(event).__name__, event.data.node_id]
'''


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    (tmp_path / "isojobs.py").write_text(textwrap.dedent(JOBS))
    return tmp_path


@pytest.fixture
def pool(jobs: Path, no_leaked_processes: None) -> Iterator[ProcessPool]:
    pool = ProcessPool("test", size=2, search_path=[jobs], timeout=20.0)
    pool.start()
    yield pool
    pool.stop(1.0)


def ev(type_: str = "test.ping", **data: object) -> Event:
    return Event(type=type_, data=data)


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def test_runs_in_another_process_with_its_configuration(pool: ProcessPool) -> None:
    config = {"threshold": 3, "names": ["a", "b"]}
    future = pool.submit("isojobs:echo", config, ev("garden.watered", litres=2))
    result = future.result(15)
    assert result["pid"] != os.getpid()
    assert result["configuration"] == config
    assert result["type"] == "garden.watered"
    assert result["data"] == {"litres": 2}
    assert future.worker_pid == result["pid"]
    assert future.run_time is not None


def test_pool_size_bounds_concurrency_and_the_rest_queue(pool: ProcessPool) -> None:
    futures = [pool.submit("isojobs:span", 0.4, ev()) for _ in range(5)]
    results = [f.result(20) for f in futures]
    assert len({r["pid"] for r in results}) <= 2
    # At no moment did more than two of them run at once.
    for r in results:
        running = [o for o in results if o["start"] <= r["start"] < o["end"]]
        assert len(running) <= 2
    assert pool.stats().completed == 5


def test_hard_limit_kills_a_hung_handler_and_replaces_its_worker(pool: ProcessPool) -> None:
    hung = pool.submit("isojobs:hang", None, ev(), timeout=1.0)
    with pytest.raises(HandlerTimeout, match="hard limit of 1s"):
        hung.result(15)
    pid = hung.worker_pid
    assert pid is not None
    assert not alive(pid), "the hung worker still runs"
    after = pool.submit("isojobs:echo", None, ev()).result(15)
    assert after["pid"] != pid
    assert pool.stats().timeouts == 1


def test_the_limit_covers_queueing(jobs: Path, no_leaked_processes: None) -> None:
    pool = ProcessPool("one", size=1, search_path=[jobs], timeout=1.0)
    pool.start()
    try:
        first = pool.submit("isojobs:hang", None, ev())
        # Its limit passes while the only worker is still busy with the first, whatever
        # the load: it cannot have started.
        second = pool.submit("isojobs:echo", None, ev(), timeout=0.5)
        with pytest.raises(HandlerTimeout):
            first.result(15)
        with pytest.raises(HandlerTimeout, match="never ran"):
            second.result(15)
    finally:
        pool.stop(1.0)


def test_a_crashed_worker_is_replaced_and_the_queue_survives(
    jobs: Path, no_leaked_processes: None
) -> None:
    pool = ProcessPool("one", size=1, search_path=[jobs], timeout=20.0)
    pool.start()
    try:
        crash = pool.submit("isojobs:crash", None, ev())
        queued = [pool.submit("isojobs:echo", None, ev(n=i)) for i in range(3)]
        with pytest.raises(WorkerCrashed, match="exit code 7") as info:
            crash.result(15)
        assert info.value.details["exit_code"] == 7
        results = [f.result(15) for f in queued]
        assert [r["data"] for r in results] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert results[0]["pid"] != crash.worker_pid
        assert pool.stats().crashes == 1
    finally:
        pool.stop(1.0)


def test_an_exception_comes_back_with_its_type_and_traceback(pool: ProcessPool) -> None:
    with pytest.raises(HandlerError) as info:
        pool.submit("isojobs:boom", None, ev("door.opened")).result(15)
    assert info.value.remote_type == "ValueError"
    assert info.value.remote_message == "bad value in door.opened"
    assert "isojobs.py" in info.value.traceback
    # The worker survives a handler's exception.
    assert pool.submit("isojobs:echo", None, ev()).result(15)["pid"] in pool.pids
    assert pool.stats().crashes == 0


def test_a_result_that_is_not_data_is_an_error(pool: ProcessPool) -> None:
    with pytest.raises(HandlerError, match="cannot be sent back"):
        pool.submit("isojobs:opaque", None, ev()).result(15)


def test_missing_function_is_an_error_not_a_crash(pool: ProcessPool) -> None:
    with pytest.raises(HandlerError) as info:
        pool.submit("isojobs:nothing_here", None, ev()).result(15)
    assert info.value.remote_type == "AttributeError"
    with pytest.raises(ValueError, match="module:qualname"):
        pool.submit("isojobs.echo", None, ev())


def test_typed_events_decode_to_their_class_in_the_worker(jobs: Path) -> None:
    pool = ProcessPool("typed", size=1, codec=Codec(), search_path=[jobs])
    pool.start()
    try:
        started = NodeStarted(data=NodeEventData(node_id="n1"))
        assert pool.submit("isojobs:kind", None, started).result(15) == ["NodeStarted", "n1"]
    finally:
        pool.stop(1.0)


def test_queue_limit_and_stop(jobs: Path, no_leaked_processes: None) -> None:
    pool = ProcessPool("small", size=1, search_path=[jobs], queue_size=2)
    with pytest.raises(NodeNotReady):
        pool.submit("isojobs:echo", None, ev())
    pool.start()
    running = pool.submit("isojobs:hang", None, ev())
    deadline = time.monotonic() + 15
    while pool.stats().busy == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    waiting = [pool.submit("isojobs:echo", None, ev()) for _ in range(2)]
    with pytest.raises(QueueFullError):
        pool.submit("isojobs:echo", None, ev())
    pid = running.worker_pid
    pool.stop(0.2)
    pool.stop(0.2)  # idempotent
    with pytest.raises(IsolationError, match="stopped while the task ran"):
        running.result(1)
    for future in waiting:
        with pytest.raises(IsolationError, match="stopped before the task ran"):
            future.result(1)
    assert pid is not None
    assert not alive(pid)
    with pytest.raises(NodeNotReady):
        pool.submit("isojobs:echo", None, ev())


def test_many_threads_submitting_at_once_lose_no_wake_up(
    pool: ProcessPool
) -> None:
    # Submitters and the supervisor race on the wake-up pipe: none may be lost, or tasks
    # sit queued and stop() waits for a supervisor that never wakes.
    futures = []
    lock = threading.Lock()
    # Switch threads as often as possible, so that the racy interleavings happen.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        _submit_from_threads(pool, futures, lock)
    finally:
        sys.setswitchinterval(previous)
    for future in futures:
        future.result(30)
    assert pool.stats().completed == len(futures) == 4000
    pool.stop(1.0)
    assert pool.stats().workers == 0


def _submit_from_threads(pool: ProcessPool, futures: list[Any], lock: threading.Lock) -> None:

    def submit(n: int) -> None:
        for i in range(n):
            future = pool.submit("isojobs:echo", {"i": i}, ev())
            with lock:
                futures.append(future)

    for _ in range(5):
        threads = [threading.Thread(target=submit, args=(200,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

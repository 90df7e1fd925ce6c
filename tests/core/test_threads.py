"""The owned-thread base: idempotent stop that wakes a loop, one deadline for a group."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import pytest

from platybus.threads import OwnedThread, WorkerPool, deadline_after, join_all, stop_all


def test_stop_wakes_a_loop_blocked_on_its_condition_and_is_idempotent() -> None:
    cond = threading.Condition()
    items: deque[int] = deque()
    seen: list[int] = []
    thread: OwnedThread

    def loop() -> None:
        while True:
            with cond:
                while not items and thread.should_keep_running():
                    cond.wait()  # no timeout: only the wake hook can end this wait
                if not items:
                    return
                seen.append(items.popleft())

    thread = OwnedThread("test-loop", loop, wake=cond)
    thread.start()
    with cond:
        items.append(1)
        cond.notify_all()
    thread.stop()
    thread.stop()
    assert stop_all([thread], deadline_after(10)) == []
    assert not thread.is_alive()
    assert thread.should_keep_running() is False


def test_wait_for_stop_returns_when_stopped() -> None:
    woke: list[bool] = []
    thread: OwnedThread = OwnedThread("test-sleeper", lambda: woke.append(
        thread.wait_for_stop()))
    thread.start()
    thread.stop()
    assert join_all([thread], deadline_after(10)) == []
    assert woke == [True]


def test_join_all_returns_and_names_every_thread_still_alive(
    caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    deaf = [OwnedThread(f"test-deaf-{i}", release.wait, label=f"deaf {i}") for i in range(3)]
    done = OwnedThread("test-done", lambda: None)
    for thread in [*deaf, done]:
        thread.start()
    caplog.set_level(logging.WARNING, logger="platybus.threads")
    try:
        stuck = stop_all([*deaf, done], deadline_after(0.2))
        assert stuck == deaf
        assert [r.getMessage() for r in caplog.records] == [
            f"deaf {i} did not stop in time" for i in range(3)]
        assert all(r.exc_info is None for r in caplog.records)
    finally:
        release.set()
    assert join_all(deaf, deadline_after(10)) == []


def test_a_failing_target_is_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture
) -> None:
    def boom() -> None:
        raise ValueError("broken loop")

    thread = OwnedThread("test-boom", boom)
    thread.start()
    assert join_all([thread], deadline_after(10)) == []
    [record] = [r for r in caplog.records if r.name == "platybus.threads"]
    assert record.getMessage() == "thread test-boom failed"
    assert record.exc_info is not None


def test_a_thread_never_started_or_the_caller_counts_as_stopped() -> None:
    assert join_all([OwnedThread("test-idle"), threading.current_thread()],
                    deadline_after(0)) == []


def test_worker_pool_stop_is_bounded_and_names_a_hung_task(
    caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    pool = WorkerPool(2, "test-pool")
    ran = pool.submit(lambda: 42)
    hung = pool.submit(release.wait)
    assert ran.result(10) == 42
    while not hung.running():
        time.sleep(0.01)
    caplog.set_level(logging.WARNING, logger="platybus.threads")
    try:
        stuck = pool.stop_by(deadline_after(0.2))
        assert len(stuck) == 1
        assert "worker pool test-pool" in caplog.records[0].getMessage()
        pool.stop()  # idempotent
        with pytest.raises(RuntimeError, match="stopped"):
            pool.submit(lambda: None)
    finally:
        release.set()
    assert join_all(pool.threads, deadline_after(10)) == []

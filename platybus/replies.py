"""Reply bookkeeping: the requests a bus waits on, their callbacks and their deadlines.

The bus registers a request here before it sends it (:meth:`Replies.expect`) and
hands every response it sees to :meth:`Replies.resolve`. Deadlines sit in a heap:
the dispatcher sleeps at most until the earliest (:meth:`Replies.next_deadline`)
and then calls the overdue callbacks with a timeout error (:meth:`Replies.expire`).
Callbacks run without the lock held, since they may publish.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from platybus.errors import RequestTimeout
from platybus.messages import ErrorInfo, Request, Response

log = logging.getLogger("platybus.bus")

ReplyCallback = Callable[[Response], Any]


class _Pending:
    __slots__ = ("callback", "deadline", "request", "wait")

    def __init__(self, request: Request, callback: ReplyCallback, wait: float) -> None:
        self.request = request
        self.callback = callback
        self.wait = wait
        self.deadline = time.monotonic() + wait


def error_response(node_id: str, request: Request, error: BaseException) -> Response:
    """The response of ``node_id`` that answers ``request`` with ``error``."""
    return Response(
        request_id=request.id,
        origin=node_id,
        target=request.origin,
        parent_id=request.id,
        error=ErrorInfo.from_exception(error),
    )


def timeout_error(node_id: str, request: Request, wait: float) -> RequestTimeout:
    """The error of a request that got no answer within ``wait`` seconds."""
    if request.target not in (None, node_id, "*"):
        text = (f"node {request.target!r} did not answer {request.action} within {wait:g}s "
                "(is it running and linked to the same Redis?)")
    else:
        text = f"no response from this node to {request.action} within {wait:g}s"
    return RequestTimeout(text, action=request.action, message_id=request.id,
                          target=request.target)


class Replies:
    """The requests waiting for a response: who to call, and when to give up."""

    def __init__(self, node_id: str, default_timeout: float) -> None:
        self.node_id = node_id
        self.default_timeout = default_timeout
        self.callback_errors = 0
        self._pending: dict[str, _Pending] = {}
        # (deadline, request id); entries of answered requests are skipped lazily.
        self.deadlines: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._pending)

    def wait_for(self, request: Request, timeout: float | None) -> float:
        """The seconds to wait for ``request``: ``timeout``, else its own, else the default."""
        wait = timeout if timeout is not None else request.timeout
        return self.default_timeout if wait is None else wait

    def expect(self, request: Request, callback: ReplyCallback, timeout: float | None) -> bool:
        """Call ``callback`` with the response to ``request``, or a timeout error.

        Returns whether this deadline is now the earliest, so the dispatcher must wake.
        """
        pending = _Pending(request, callback, self.wait_for(request, timeout))
        deadlines = self.deadlines
        with self._lock:
            self._pending[request.id] = pending
            # A request under the same timeout as the ones before it never comes sooner.
            sooner = not deadlines or pending.deadline < deadlines[0][0]
            heapq.heappush(deadlines, (pending.deadline, request.id))
        return sooner

    def drop(self, request_id: str) -> None:
        """Forget a request; its callback is never called."""
        with self._lock:
            self._pending.pop(request_id, None)

    def resolve(self, response: Response) -> None:
        """Call the callback of the request that ``response`` answers, if one waits."""
        with self._lock:
            pending = self._pending.pop(response.request_id, None)
        if pending is not None:
            self._call(pending, response)

    def next_deadline(self) -> float | None:
        """Seconds until the next reply deadline, or ``None`` if nothing waits."""
        with self._lock:
            if not self.deadlines:
                return None
            return max(0.0, self.deadlines[0][0] - time.monotonic())

    def expire(self) -> None:
        """Call the callbacks of overdue requests with a timeout error."""
        now = time.monotonic()
        expired: list[_Pending] = []
        deadlines = self.deadlines
        with self._lock:
            while deadlines:
                deadline, request_id = deadlines[0]
                pending = self._pending.get(request_id)
                if pending is None or pending.deadline != deadline:
                    heapq.heappop(deadlines)
                    continue
                if deadline > now:
                    break
                heapq.heappop(deadlines)
                del self._pending[request_id]
                expired.append(pending)
        for pending in expired:
            error = timeout_error(self.node_id, pending.request, pending.wait)
            self._call(pending, error_response(self.node_id, pending.request, error))

    def fail_all(self, error: BaseException) -> None:
        """Answer every waiting request with ``error`` (the bus is stopping)."""
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
            self.deadlines.clear()
        for item in pending:
            self._call(item, error_response(self.node_id, item.request, error))

    def _call(self, pending: _Pending, response: Response) -> None:
        try:
            pending.callback(response)
        except Exception:
            self.callback_errors += 1
            log.exception("reply callback for request %s failed", pending.request.id)

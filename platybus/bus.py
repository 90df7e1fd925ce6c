"""The central bus: publish from any thread, one dispatcher, ordered delivery.

``publish()`` only enqueues. One dispatcher thread drains the queue in batches
and runs each message's matching handlers in priority order, so a handler that
publishes enqueues behind the current message instead of recursing. Handlers
marked ``blocking`` run on a worker pool and never hold up the dispatcher.
Requests for another node go to the attached transport; responses resolve the
callbacks of the requests they answer (:mod:`platybus.replies` keeps those).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Literal, Protocol

import msgspec

from platybus.errors import (
    BusError,
    NodeNotReady,
    NoRouteError,
    PlatybusError,
    QueueFullError,
)
from platybus.expr import Selector, parse_selector
from platybus.messages import Message, Request, Response, _cause, _dispatch
from platybus.receipts import Receipt, when_safe
from platybus.replies import Replies, ReplyCallback, error_response, timeout_error
from platybus.subscriptions import MessageHandler, Subscription, Subscriptions
from platybus.threads import WorkerPool

__all__ = ["Bus", "BusConfig", "BusStats", "MessageHandler", "Receipt", "Subscription",
           "Transport"]

log = logging.getLogger("platybus.bus")

Policy = Literal["block", "reject"]

_LATENCY_SAMPLES = 4096
_now = time.perf_counter


class Transport(Protocol):
    """Carries messages to other nodes (the Redis link implements it)."""

    def send(self, message: Message) -> None:
        """Queue a message for another node; must not block."""


class BusConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Tuning of the bus (``node.bus`` in config)."""

    queue_size: int = 100_000
    policy: Policy = "block"
    block_timeout: float = 5.0
    workers: int = 16
    request_timeout: float = 30.0


class _DispatchState:
    __slots__ = ("event", "stopped", "tracked")

    def __init__(self) -> None:
        self.event: Message | None = None
        self.stopped = False
        self.tracked = False


class _Sync:
    """A queued synchronous publish: the message and the future of its results."""

    __slots__ = ("future", "message")

    def __init__(self, message: Message, future: Future[list[Any]]) -> None:
        self.message = message
        self.future = future


class BusStats(msgspec.Struct):
    """What the bus has done since it was built."""

    published: int
    delivered: int
    rejected: int
    handler_errors: int
    queue_depth: int
    pending_replies: int
    subscribers: int
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float


class Bus:
    """Publish/subscribe/request between the parts of one node."""

    def __init__(self, node_id: str, config: BusConfig | None = None) -> None:
        self.node_id = node_id
        self.config = config or BusConfig()
        self._queue_size = self.config.queue_size
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        # Items are messages, or _Sync wrappers for synchronous publishes.
        self._queue: deque[Message | _Sync] = deque()
        self._oldest = 0.0  # when the oldest queued message was enqueued
        self._waiting = False
        self._blocked_producers = 0
        # Threads that must never wait for room (an event loop): refused at once when full.
        self._never_wait: set[int] = set()
        self._subs = Subscriptions()
        self._replies = Replies(node_id, self.config.request_timeout)
        self._direct_lock = threading.Lock()
        self._transport: Transport | None = None
        self._pool = WorkerPool(self.config.workers, "platybus-handler")
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._stopped = False
        self._latencies: deque[float] = deque(maxlen=_LATENCY_SAMPLES)
        self._dispatched = 0
        self._direct = 0  # responses answered at publish, never queued
        self.delivered = 0
        self.rejected = 0
        self.handler_errors = 0

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Start the dispatcher thread; messages published before this wait in the queue."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="platybus-dispatcher")
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is queued, then stop the dispatcher and the workers. Idempotent."""
        with self._cond:
            if self._stopped:
                return
            self._stopped = self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("bus dispatcher did not stop within %.1fs", timeout)
        self._pool.stop(max(0.1, deadline - time.monotonic()))
        self._replies.fail_all(NodeNotReady("the node stopped before a response arrived"))

    @property
    def published(self) -> int:
        """Messages accepted so far (dispatched or still queued)."""
        return self._dispatched + len(self._queue) + self._direct

    @property
    def running(self) -> bool:
        """Whether the dispatcher is running."""
        return self._thread is not None and not self._stopping

    def in_dispatcher(self) -> bool:
        """Whether the calling thread is the dispatcher."""
        return threading.current_thread() is self._thread

    @contextlib.contextmanager
    def never_wait(self) -> Iterator[None]:
        """Within this block, the calling thread's publishes never wait for room.

        A full queue refuses them at once with :class:`QueueFullError`, whatever
        ``policy`` says: an event loop serving many clients must not stall for one.
        """
        ident = threading.get_ident()
        with self._cond:
            self._never_wait.add(ident)
        try:
            yield
        finally:
            with self._cond:
                self._never_wait.discard(ident)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every message published before this call was dispatched.

        A component calls it before it unsubscribes at stop, so that nothing
        already published misses it. Returns whether that happened in time.
        """
        if not self.running or self.in_dispatcher():
            return True
        # Delivery is in order: once this marker is through, so is all before it.
        # A response that answers no request reaches only response subscribers.
        marker = Response(request_id="platybus.flush", origin=self.node_id)
        try:
            self.publish(marker, synchronous=True, timeout=timeout)
        except (FutureTimeout, PlatybusError):
            return False
        return True

    def attach_transport(self, transport: Transport | None) -> None:
        """Route messages for other nodes through ``transport`` (``None`` detaches)."""
        self._transport = transport

    # -- subscribe ---------------------------------------------------------

    def subscribe(
        self,
        selector: str | Selector,
        handler: MessageHandler,
        *,
        priority: int = 100,
        id: str | None = None,
        blocking: bool = False,
    ) -> Subscription:
        """Call ``handler(message)`` for every message that ``selector`` matches.

        Lower ``priority`` runs first. ``blocking=True`` runs the handler on the
        worker pool. Returns a handle whose ``unsubscribe()`` removes it.
        """
        sel = parse_selector(selector) if isinstance(selector, str) else selector
        return self._subs.add(sel, handler, priority=priority, id=id, blocking=blocking)

    def unsubscribe(self, id: str) -> bool:
        """Remove the subscription ``id``; return whether it existed."""
        return self._subs.remove(id)

    # -- publish -----------------------------------------------------------

    def publish(
        self,
        message: Message,
        *,
        synchronous: bool = False,
        on_reply: ReplyCallback | None = None,
        timeout: float | None = None,
    ) -> list[Any] | None:
        """Queue a message for delivery; return at once.

        With ``synchronous=True`` wait until it was delivered and return the
        local handlers' results in order. With ``on_reply`` (requests only),
        call it with the response, or with a timeout error after ``timeout``.
        A message without a ``parent_id`` published inside :func:`caused_by` gets
        that block's message id.
        """
        if message.parent_id is None and (cause := _cause.get()) is not None:
            message = message.replace(parent_id=cause)
        if on_reply is None and not synchronous:
            if message.kind == "response" and message.target in (None, self.node_id):
                # The caller waiting for this answer gets it now, without a queue hop;
                # the queue only carries it on if someone subscribed to responses.
                self._replies.resolve(message)  # type: ignore[arg-type]
                if not self._subs.candidates("response", None):
                    with self._direct_lock:
                        self._direct += 1
                    return None
            # The hot path, inlined: one lock, one append.
            with self._lock:
                queue = self._queue
                depth = len(queue)
                if depth < self._queue_size and not self._stopping:
                    if not depth:
                        self._oldest = _now()
                    queue.append(message)
                    if self._waiting:
                        self._cond.notify()
                    return None
            self._enqueue(message, None)
            return None
        if on_reply is not None:
            if not isinstance(message, Request):
                raise BusError("on_reply only applies to requests")
            self._expect_reply(message, on_reply, timeout)
        if synchronous:
            if self.in_dispatcher():
                return self._dispatch(message, collect=True)
            future: Future[list[Any]] = Future()
            self._enqueue(message, future)
            return [self._result_of(r) for r in future.result(timeout)]
        self._enqueue(message, None)
        return None

    def publish_tracked(self, message: Message) -> Future[list[Any]]:
        """Queue a message; the future resolves once the dispatcher has run its handlers.

        Its result holds the handlers' raw results (a blocking handler's is a future
        of its own). A transport acknowledges received messages with it.
        """
        future: Future[list[Any]] = Future()
        self._enqueue(message, future)
        return future

    def deliver(self, message: Message) -> Future[None]:
        """Queue a message from a source that acknowledges it (Redis XACK, MQTT PUBACK).

        The future resolves once the dispatcher has run the message's handlers and
        every handler that took it on for later work holds it safely (its receipt is
        settled: the intake journal committed it); the source acknowledges then. It
        fails if the message was refused or the node stopped first: do not acknowledge.
        Messages published earlier from the same thread are covered too (one queue,
        handled in order), so a source may ``publish()`` a batch and ``deliver()`` its
        last message only.
        """
        return when_safe(self.publish_tracked(message))

    def receipt(self) -> Receipt | None:
        """On the dispatcher, while it delivers a message from :meth:`deliver`: a new receipt.

        ``None`` for any other delivery (nobody waits to acknowledge it).
        """
        state: _DispatchState | None = getattr(_dispatch, "state", None)
        if state is None or not state.tracked:
            return None
        return Receipt()

    def _enqueue(self, message: Message, future: Future[list[Any]] | None) -> None:
        with self._cond:
            if self._stopping:
                raise NodeNotReady("the bus is stopped", message_id=message.id)
            if len(self._queue) >= self._queue_size:
                self._wait_for_room(message)
            if not self._queue:
                self._oldest = _now()
            self._queue.append(message if future is None else _Sync(message, future))
            if self._waiting:
                self._cond.notify()

    def _wait_for_room(self, message: Message) -> None:
        # Called with the condition held. The dispatcher itself never blocks:
        # it would wait for room that only it can make.
        limit = self.config.queue_size
        if (self.config.policy == "block" and not self.in_dispatcher()
                and threading.get_ident() not in self._never_wait):
            deadline = time.monotonic() + self.config.block_timeout
            self._blocked_producers += 1
            try:
                while len(self._queue) >= limit and not self._stopping:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            finally:
                self._blocked_producers -= 1
            if len(self._queue) < limit:
                return
        self.rejected += 1
        raise QueueFullError(
            f"bus queue is full ({limit} messages); message {message.id} rejected",
            message_id=message.id,
        )

    # -- requests ----------------------------------------------------------

    def request(self, request: Request, timeout: float | None = None) -> Response:
        """Send a request and wait for its response (a timeout error response after ``timeout``)."""
        if self.in_dispatcher():
            raise BusError(
                "request() would block the dispatcher: use on_reply or a blocking handler"
            )
        if request.parent_id is None and (cause := _cause.get()) is not None:
            request = request.replace(parent_id=cause)
        done = threading.Event()
        box: list[Response] = []

        def deliver(response: Response) -> None:
            box.append(response)
            done.set()

        replies = self._replies
        wait = replies.wait_for(request, timeout)
        self._expect_reply(request, deliver, wait)
        try:
            self._enqueue(request, None)
        except Exception as error:
            replies.drop(request.id)
            return error_response(self.node_id, request, error)
        # The dispatcher fires the timeout; the margin only guards against a stuck dispatcher.
        if not done.wait(wait + 1.0):
            replies.drop(request.id)
            return error_response(self.node_id, request,
                                  timeout_error(self.node_id, request, wait))
        return box[0]

    def _expect_reply(
        self, request: Request, callback: ReplyCallback, timeout: float | None
    ) -> None:
        # The dispatcher sleeps at most until the earliest deadline it knows: wake it
        # only when this one comes sooner.
        if self._replies.expect(request, callback, timeout):
            with self._cond:
                if self._waiting:
                    self._cond.notify()

    # -- dispatch ----------------------------------------------------------

    def _run(self) -> None:
        cond = self._cond
        state = _DispatchState()
        _dispatch.state = state
        latencies = self._latencies
        dispatch = self._dispatch
        replies = self._replies
        deadlines = replies.deadlines
        while True:
            with cond:
                if not self._queue and not self._stopping:
                    self._waiting = True
                    cond.wait(replies.next_deadline())
                    self._waiting = False
                if not self._queue:
                    if self._stopping:
                        break
                    batch = None
                else:
                    batch = self._queue
                    self._queue = deque()
                    # One sample per batch: the wait of its oldest message, an upper bound.
                    latencies.append(_now() - self._oldest)
                    if self._blocked_producers:
                        cond.notify_all()
            # Reply callbacks may publish, so they run without the queue lock held.
            if deadlines:
                replies.expire()
            if batch is None:
                continue
            self._dispatched += len(batch)
            for item in batch:
                if type(item) is _Sync:
                    self._dispatch_sync(item, state)
                    continue
                try:
                    dispatch(item, state)  # type: ignore[arg-type]
                except Exception:  # never lose the dispatcher
                    log.exception("dispatch of %r failed", item)
        _dispatch.state = None

    def _dispatch(
        self, message: Message, state: _DispatchState | None = None, collect: bool = False
    ) -> list[Any]:
        target = message.target
        if target is not None and target not in (self.node_id, "*"):
            self._route_remote(message)
            return []
        kind = message.kind
        if kind == "event":
            type_: str | None = message.type  # type: ignore[attr-defined]
        else:
            type_ = None
            if kind == "response":
                self._replies.resolve(message)  # type: ignore[arg-type]
        subs = self._subs.index.get((kind, type_))
        if subs is None:
            subs = self._subs.candidates(kind, type_)
        results: list[Any] = []
        if not subs:
            return results
        if state is None:  # a synchronous publish from inside a handler
            state = getattr(_dispatch, "state", None) or _DispatchState()
        previous_event, previous_stopped = state.event, state.stopped
        state.event = message
        state.stopped = False
        delivered = 0
        try:
            for sub in subs:
                check = sub.check
                if check is not None and not check(message):
                    continue
                delivered += 1
                if sub.blocking:
                    future = self._pool.submit(self._call_blocking, sub, message)
                    if collect:
                        results.append(future)
                    continue
                try:
                    result = sub.handler(message)
                except Exception:
                    self.handler_errors += 1
                    log.exception("handler %s failed on %s %s", sub.id, kind, message.id)
                    result = None
                if collect:
                    results.append(result)
                if state.stopped:
                    break
        finally:
            state.event, state.stopped = previous_event, previous_stopped
            self.delivered += delivered
        return results

    def _dispatch_sync(self, item: _Sync, state: _DispatchState) -> None:
        state.tracked = True
        try:
            results = self._dispatch(item.message, state, collect=True)
        except Exception as error:
            log.exception("dispatch of %s %s failed", item.message.kind, item.message.id)
            item.future.set_exception(error)
        else:
            item.future.set_result(results)
        finally:
            state.tracked = False

    def _call_blocking(self, sub: Subscription, message: Message) -> Any:
        try:
            return sub.handler(message)
        except Exception:
            self.handler_errors += 1
            log.exception("handler %s failed on %s %s", sub.id, message.kind, message.id)
            return None

    def _result_of(self, result: Any) -> Any:
        # A blocking handler's result arrives as a future; wait for it in the caller.
        if isinstance(result, Future):
            try:
                return result.result(self.config.request_timeout)
            except FutureTimeout:
                return None
        return result

    def _route_remote(self, message: Message) -> None:
        if self._transport is not None:
            self._transport.send(message)
            return
        if isinstance(message, Request):
            error = NoRouteError(
                f"no route to node {message.target!r}: this node has no link to other nodes "
                "(configure the redis backend)",
                target=message.target, message_id=message.id,
            )
            self._enqueue(error_response(self.node_id, message, error).replace(target=None),
                          None)
        else:
            log.warning("dropped %s %s for node %r: no link to other nodes",
                        message.kind, message.id, message.target)

    # -- stats -------------------------------------------------------------

    def stats(self) -> BusStats:
        """Return the bus counters and recent dispatch latency percentiles."""
        samples = sorted(self._latencies)
        def pct(p: float) -> float:
            if not samples:
                return 0.0
            return samples[min(len(samples) - 1, int(p * len(samples)))] * 1000
        return BusStats(
            published=self.published,
            delivered=self.delivered,
            rejected=self.rejected,
            handler_errors=self.handler_errors + self._replies.callback_errors,
            queue_depth=len(self._queue),
            pending_replies=len(self._replies),
            subscribers=len(self._subs),
            latency_p50_ms=round(pct(0.5), 4),
            latency_p99_ms=round(pct(0.99), 4),
            latency_max_ms=round(samples[-1] * 1000, 4) if samples else 0.0,
        )

    def subscriptions(self) -> list[Subscription]:
        """Return the current subscriptions in delivery order."""
        return self._subs.ordered()


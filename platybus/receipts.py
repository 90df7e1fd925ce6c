"""Receipts: a source acknowledges a message only once it is safe with every subscriber.

A subscriber that takes a delivered message on for later work (the hook runner,
which journals it) returns a :class:`Receipt` from its handler and settles it
once the message would survive a crash. :func:`when_safe` turns the future of a
tracked publish (the handlers' results) into one future that resolves when the
dispatcher is done and every receipt among the results is settled, and fails
with the first failure.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

__all__ = ["Receipt", "when_safe"]


class Receipt(Future[None]):
    """A subscriber's word that a delivered message is safe with it (e.g. journaled).

    A subscriber that takes a message on for later work returns one from its
    handler (see :meth:`platybus.bus.Bus.receipt`) and settles it once the message
    would survive a crash; :meth:`platybus.bus.Bus.deliver` waits for every receipt.
    """


def when_safe(dispatched: Future[list[Any]]) -> Future[None]:
    """A future that resolves once ``dispatched`` did and every receipt in its result settled."""
    safe: Future[None] = Future()

    def on_dispatched(done: Future[list[Any]]) -> None:
        error = done.exception()
        if error is not None:
            safe.set_exception(error)
            return
        receipts = [r for r in done.result() if type(r) is Receipt]
        if not receipts:
            safe.set_result(None)
            return
        left = [len(receipts)]
        lock = threading.Lock()

        def settled(receipt: Future[None]) -> None:
            failure = receipt.exception()
            with lock:
                left[0] -= 1
                last = left[0] == 0
                if safe.done():
                    return
                if failure is not None:
                    safe.set_exception(failure)
                elif last:
                    safe.set_result(None)

        for receipt in receipts:
            receipt.add_done_callback(settled)

    dispatched.add_done_callback(on_dispatched)
    return safe

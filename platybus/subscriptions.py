"""Who receives what: a bus's subscriptions, indexed by message kind and event type.

The dispatcher looks a message's ``(kind, type)`` up in :attr:`Subscriptions.index`
(one dict lookup on the hot path); a miss builds that entry from every
subscription whose selector could match, in delivery order (priority, then
subscription order). Any change of the subscriptions starts a new, empty index.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

from platybus.errors import DuplicateSubscriberError
from platybus.expr import Selector

MessageHandler = Callable[[Any], Any]
"""What a subscription calls with each message it matches."""

_INDEX_LIMIT = 4096


class Subscription:
    """A registered handler; ``unsubscribe()`` (or calling it) removes it."""

    __slots__ = ("_owner", "blocking", "check", "handler", "id", "priority", "selector", "seq")

    def __init__(
        self,
        owner: Subscriptions,
        id: str,
        selector: Selector,
        handler: MessageHandler,
        priority: int,
        blocking: bool,
        seq: int,
    ) -> None:
        self._owner = owner
        self.id = id
        self.selector = selector
        self.handler = handler
        self.priority = priority
        self.blocking = blocking
        self.seq = seq
        # The index already selects by kind and exact type; skip a test it makes redundant.
        self.check: Callable[[Any], bool] | None = (
            None if selector.implied_by_index else selector.matches)

    def unsubscribe(self) -> None:
        """Remove this subscription; does nothing if already removed."""
        self._owner.remove(self.id)

    __call__ = unsubscribe

    def __repr__(self) -> str:
        return f"<Subscription {self.id} {self.selector.source!r} priority={self.priority}>"


class Subscriptions:
    """The subscriptions of one bus and the index the dispatcher reads."""

    def __init__(self) -> None:
        self._subs: dict[str, Subscription] = {}
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self.index: dict[tuple[str, str | None], list[Subscription]] = {}

    def __len__(self) -> int:
        return len(self._subs)

    def add(self, selector: Selector, handler: MessageHandler, *, priority: int,
            id: str | None, blocking: bool) -> Subscription:
        """Register a handler; raise :class:`DuplicateSubscriberError` if ``id`` is taken."""
        with self._lock:
            seq = next(self._seq)
            sub_id = id if id is not None else f"sub-{seq}"
            if sub_id in self._subs:
                raise DuplicateSubscriberError(
                    f"a subscriber with id {sub_id!r} already exists", subscriber=sub_id
                )
            sub = Subscription(self, sub_id, selector, handler, priority, blocking, seq)
            self._subs[sub_id] = sub
            self.index = {}
        return sub

    def remove(self, id: str) -> bool:
        """Remove the subscription ``id``; return whether it existed."""
        with self._lock:
            if self._subs.pop(id, None) is None:
                return False
            self.index = {}
        return True

    def candidates(self, kind: str, type_: str | None) -> list[Subscription]:
        """The subscriptions that may match a message of ``kind`` (and event ``type_``)."""
        index = self.index
        key = (kind, type_)
        subs = index.get(key)
        if subs is not None:
            return subs
        with self._lock:
            subs = sorted(
                (
                    s
                    for s in self._subs.values()
                    if (s.selector.kinds is None or kind in s.selector.kinds)
                    and (s.selector.exact_types is None or type_ in s.selector.exact_types)
                ),
                key=lambda s: (s.priority, s.seq),
            )
            if self.index is index:
                if len(index) >= _INDEX_LIMIT:
                    index.clear()
                index[key] = subs
        return subs

    def ordered(self) -> list[Subscription]:
        """Every subscription in delivery order."""
        with self._lock:
            return sorted(self._subs.values(), key=lambda s: (s.priority, s.seq))

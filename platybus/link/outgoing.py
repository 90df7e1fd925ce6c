"""What waits to be written to Redis: the link's outgoing messages and pending acks.

:class:`Outgoing` is a bounded buffer shared by the threads that send (the
dispatcher, through the link's ``send``) and the link's writer thread. When it
is full, the ``buffer_policy`` drops the oldest or the newest message; while
Redis is up a sender first waits a moment for room, since the writer is
draining. Acknowledgements of handled entries ride along with the next write,
or go alone after a short delay.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from platybus.link.inbound import LinkStats
from platybus.link.protocol import LinkConfig
from platybus.messages import Message

WRITE_BATCH = 5000
_FULL_WAIT = 1.0
_ACK_DELAY = 0.01

Acks = dict[str, list[bytes]]


class Outgoing:
    """Messages and acks for the writer, bounded by ``buffer_size``; ``close()`` ends ``take``."""

    def __init__(self, config: LinkConfig, stats: LinkStats) -> None:
        self.config = config
        self.stats = stats
        self._cond = threading.Condition(threading.Lock())
        self._messages: deque[Message] = deque()
        self._acks: Acks = {}
        self._acks_since = 0.0
        self._ack_count = 0
        self.closed = False

    def __len__(self) -> int:
        return len(self._messages)

    def open(self) -> None:
        """Accept messages again (the link restarts); what was buffered is still there."""
        with self._cond:
            self.closed = False

    def close(self) -> None:
        """Refuse new messages; ``take`` returns what is left, then ``None``."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def wake(self) -> None:
        """Wake the writer, wherever it waits (the link is up again, or retries now)."""
        with self._cond:
            self._cond.notify_all()

    def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``; :meth:`wake` or :meth:`close` ends it early."""
        with self._cond:
            self._cond.wait(seconds)

    def put(self, message: Message, link_up: bool) -> tuple[bool, Message | None]:
        """Buffer a message; return whether it was taken, and the message dropped for it."""
        limit = self.config.buffer_size
        dropped: Message | None = None
        with self._cond:
            if self.closed:
                return False, None
            out = self._messages
            if len(out) >= limit and link_up:
                # The writer is draining: back-pressure rather than loss, for a bounded time.
                self._cond.wait_for(lambda: len(out) < limit, _FULL_WAIT)
            if len(out) >= limit:
                self.stats.dropped += 1
                if self.config.buffer_policy == "drop_oldest":
                    dropped = out.popleft()
                    out.append(message)
                else:
                    dropped = message
            else:
                out.append(message)
            self._cond.notify_all()
        return True, dropped

    def ack(self, stream: str, ids: list[bytes]) -> None:
        """Queue the acknowledgement of handled entries of ``stream``."""
        with self._cond:
            first = not self._acks
            if first:
                self._acks_since = time.monotonic()
            self._acks.setdefault(stream, []).extend(ids)
            self._ack_count += len(ids)
            if first or self._ack_count >= self.config.read_count:
                self._cond.notify_all()

    def take(self) -> tuple[list[Message], Acks] | None:
        """Wait for work; return a batch and the acks to write with it, ``None`` once closed."""
        cond = self._cond
        with cond:
            while not self._messages and not self.closed:
                if not self._acks:
                    cond.wait()
                    continue
                # Acks ride along with the next write, or go alone after a short delay:
                # a round trip of their own would sit in front of the next reply.
                left = self._acks_since + _ACK_DELAY - time.monotonic()
                if left <= 0 or self._ack_count >= self.config.read_count:
                    break
                cond.wait(left)
            if not (self._messages or self._acks):
                return None
            out = self._messages
            batch = [out.popleft() for _ in range(min(len(out), WRITE_BATCH))]
            acks, self._acks = self._acks, {}
            self._ack_count = 0
            cond.notify_all()
        return batch, acks

    def put_back(self, batch: list[Message], acks: Acks) -> list[Message]:
        """Return a batch that could not be written to the front; give back what overflowed."""
        dropped: list[Message] = []
        with self._cond:
            out = self._messages
            out.extendleft(reversed(batch))
            for stream, ids in acks.items():
                self._acks.setdefault(stream, []).extend(ids)
                self._ack_count += len(ids)
            while len(out) > self.config.buffer_size:
                self.stats.dropped += 1
                dropped.append(out.popleft() if self.config.buffer_policy == "drop_oldest"
                               else out.pop())
        return dropped

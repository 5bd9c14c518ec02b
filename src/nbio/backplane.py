"""Backplanes: how a publish on a topic reaches every subscription, in this process or others.

A backplane knows *topics* and *subscriptions*. ``subscribe(topic, handler)`` returns a
:class:`Subscription`; ``publish(topic, data)`` calls ``handler(topic, data, False)`` of every
subscription to ``topic`` exactly once, wherever it lives; ``publish_to_one(topic, data)``
calls exactly one of them with ``to_one=True`` (round-robin), moving on to another while a
handler returns False ("nobody here took it"). ``data`` is opaque bytes.

The layers above use one subscription per topic per server and fan out to their own
connections: RPC pub/sub (:class:`nbio.rpc.PubSubServer`) and WebSocket rooms alike.

* :class:`LocalBackplane` (the default) connects the subscriptions of one process; delivery is
  synchronous, inside ``publish``.
* :class:`nbio.backplane_redis.RedisBackplane` (the ``[redis]`` extra) connects processes
  and machines through Redis pub/sub; it is importable from here lazily as
  ``nbio.backplane.RedisBackplane``.

Every method except :meth:`Subscription.ready` and ``close`` is non-blocking: a networked
backplane queues its I/O. ``stats()`` returns counters (ints/bools, plus an optional
``last_outage`` dict) so that losses are visible, never silent.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from nbio.backplane_redis import RedisBackplane

__all__ = [
    "Backplane",
    "Handler",
    "LocalBackplane",
    "LossWindow",
    "RedisBackplane",
    "Subscription",
    "TopicTable",
]

logger = logging.getLogger("nbio.backplane")

#: ``handler(topic, data, to_one) -> taken``. The return value only matters for
#: ``publish_to_one``: False passes the message on to another subscription.
Handler = Callable[[str, bytes, bool], bool]


class _Owner(Protocol):
    def unsubscribe(self, sub: Subscription) -> None: ...

    def _is_live(self, sub: Subscription) -> bool: ...

    async def _wait_live(self, sub: Subscription) -> None: ...


class Subscription:
    """One subscription to ``topic`` on a backplane (returned by ``subscribe``)."""

    __slots__ = ("_owner", "active", "handler", "topic")

    def __init__(self, owner: _Owner, topic: str, handler: Handler) -> None:
        self._owner = owner
        self.topic = topic
        self.handler = handler
        #: False once unsubscribed.
        self.active = True

    def __repr__(self) -> str:
        return f"<Subscription {self.topic!r} active={self.active}>"

    @property
    def live(self) -> bool:
        """True when publishes from every process reach this subscription now."""
        return self.active and self._owner._is_live(self)

    async def ready(self) -> None:
        """Wait until :attr:`live` (at once for a local backplane; for a broker, until it
        confirmed the subscription; across an outage, until it reconnected)."""
        if self.active and not self.live:
            await self._owner._wait_live(self)

    def close(self) -> None:
        """Unsubscribe (idempotent)."""
        if self.active:
            self._owner.unsubscribe(self)


@dataclass
class LossWindow:
    """A span during which a networked backplane could not carry messages.

    ``start``/``end`` are ``time.time()`` stamps (``end`` is None while it lasts);
    ``dropped`` counts the publishes of this process that were dropped meanwhile. Messages
    published by other processes in that window did not arrive here either (the broker
    does not keep them); only the window itself tells about those.
    """

    start: float
    end: Optional[float] = None
    dropped: int = 0

    @property
    def duration(self) -> Optional[float]:
        return None if self.end is None else self.end - self.start

    def as_dict(self) -> Dict[str, Any]:
        return {"start": self.start, "end": self.end, "dropped": self.dropped}


class Backplane(Protocol):
    """The interface every backplane implements (see the module docstring)."""

    def subscribe(self, topic: str, handler: Handler) -> Subscription: ...

    def unsubscribe(self, sub: Subscription) -> None: ...

    def publish(self, topic: str, data: bytes) -> None: ...

    def publish_to_one(self, topic: str, data: bytes) -> None: ...

    def stats(self) -> Dict[str, Any]: ...

    async def close(self) -> None: ...


class TopicTable:
    """The subscriptions of one process by topic, and delivery to them.

    Shared by the backplane implementations: a handler that raises is logged and counted
    (``handler_errors``) and never stops delivery to the others.
    """

    def __init__(self) -> None:
        self.topics: Dict[str, List[Subscription]] = {}
        self._rr: Dict[str, int] = {}
        self.delivered = 0
        self.handler_errors = 0

    def add(self, sub: Subscription) -> bool:
        """Add ``sub``; True when it is the first subscription to its topic."""
        subs = self.topics.get(sub.topic)
        if subs is None:
            self.topics[sub.topic] = [sub]
            return True
        subs.append(sub)
        return False

    def remove(self, sub: Subscription) -> bool:
        """Remove ``sub``; True when its topic has no subscription left."""
        sub.active = False
        subs = self.topics.get(sub.topic)
        if subs is None or sub not in subs:
            return False
        subs.remove(sub)
        if subs:
            return False
        del self.topics[sub.topic]
        self._rr.pop(sub.topic, None)
        return True

    def count(self) -> int:
        return sum(len(s) for s in self.topics.values())

    def _call(self, sub: Subscription, topic: str, data: bytes, to_one: bool) -> bool:
        try:
            taken = bool(sub.handler(topic, data, to_one))
        except Exception:
            self.handler_errors += 1
            logger.exception("nbio.backplane: handler %r for %r raised", sub.handler, topic)
            return False
        self.delivered += 1
        return taken

    def deliver(self, topic: str, data: bytes) -> int:
        """Call every subscription to ``topic`` once; the number called."""
        subs = self.topics.get(topic)
        if not subs:
            return 0
        snapshot = list(subs)
        for sub in snapshot:
            if sub.active:
                self._call(sub, topic, data, False)
        return len(snapshot)

    def deliver_one(self, topic: str, data: bytes) -> bool:
        """Call subscriptions to ``topic`` round-robin until one takes ``data``."""
        subs = self.topics.get(topic)
        if not subs:
            return False
        snapshot = list(subs)
        n = len(snapshot)
        start = self._rr.get(topic, 0)
        for i in range(n):
            sub = snapshot[(start + i) % n]
            if sub.active and self._call(sub, topic, data, True):
                if topic in self.topics:
                    self._rr[topic] = (start + i + 1) % n
                return True
        return False


class LocalBackplane:
    """Topics shared by the subscriptions of one process (the default backplane).

    ``publish`` calls the handlers synchronously; there is nothing to lose, so
    ``stats()`` only counts.
    """

    def __init__(self) -> None:
        self._table = TopicTable()
        self._published = 0
        self._unrouted = 0

    def subscribe(self, topic: str, handler: Handler) -> Subscription:
        """Subscribe ``handler`` to ``topic``; live at once."""
        sub = Subscription(self, topic, handler)
        self._table.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._table.remove(sub)

    def publish(self, topic: str, data: bytes) -> None:
        """Deliver ``data`` to every subscription to ``topic``."""
        self._published += 1
        self._table.deliver(topic, data)

    def publish_to_one(self, topic: str, data: bytes) -> None:
        """Deliver ``data`` to one subscription to ``topic`` (round-robin)."""
        self._published += 1
        if not self._table.deliver_one(topic, data):
            self._unrouted += 1

    def stats(self) -> Dict[str, Any]:
        """Counters: ``published``, ``delivered`` (handler calls), ``to_one_unrouted`` (a
        publish_to_one nobody took), ``handler_errors``, ``topics``, ``subscriptions``."""
        t = self._table
        return {
            "connected": True,
            "published": self._published,
            "delivered": t.delivered,
            "to_one_unrouted": self._unrouted,
            "handler_errors": t.handler_errors,
            "topics": len(t.topics),
            "subscriptions": t.count(),
        }

    async def close(self) -> None:
        """Drop every subscription."""
        for subs in list(self._table.topics.values()):
            for sub in list(subs):
                self._table.remove(sub)

    def _is_live(self, sub: Subscription) -> bool:
        return True

    async def _wait_live(self, sub: Subscription) -> None:
        await asyncio.sleep(0)


def __getattr__(name: str) -> Any:
    if name == "RedisBackplane":  # lazy: the redis package is an optional dependency
        from nbio.backplane_redis import RedisBackplane

        return RedisBackplane
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

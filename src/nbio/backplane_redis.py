"""A backplane over Redis pub/sub: N processes or machines share topics.

``RedisBackplane(url)`` implements :class:`nbio.backplane.Backplane` with the ``redis``
package's asyncio client (the ``[redis]`` extra). Each instance (a *node*, one per worker
process, say) holds two Redis connections: one subscribed connection that receives, one
command connection that publishes.

Publish to all
    A topic is the Redis channel ``{prefix}:t:{topic}``. A node SUBSCRIBEs to it while it has
    at least one local subscription and fans a message out to those locally, once each.
    Redis delivers a PUBLISH once to every subscribed connection, so every subscription
    anywhere gets it exactly once. Every publish goes through Redis, the publishing node's
    own subscribers included: all subscribers see one order per topic.

Publish to one
    Each node SUBSCRIBEs to its own channel ``{prefix}:n:{node_id}`` and registers itself in
    the sorted set ``{prefix}:m:{topic}`` for every topic it has subscribers for.
    ``publish_to_one`` runs a Lua script, atomically in Redis: advance the topic's round-robin
    counter (hash ``{prefix}:rr``), then PUBLISH the message to the node channel of the next
    member; PUBLISH answers how many connections received it, so a member that is gone (a
    crashed process) answers 0: the script removes it and tries the next one. Exactly one node
    gets the message; that node hands it to one local subscription (round-robin). Should
    none take it (its last subscriber just left), the node routes it again, excluding
    itself, at most ``max_hops`` times. No subscriber anywhere: counted as
    ``to_one_unrouted``.

Failures are reported, never silent
    Redis pub/sub keeps nothing for absent subscribers, so an outage is a loss window. When a
    connection breaks the backplane calls ``on_error(BackplaneUnavailable)``, counts the
    disconnect, drops (and counts) publishes until it is back, reconnects with backoff,
    SUBSCRIBEs again and re-registers its topics, then calls ``on_reconnect(LossWindow)``.
    ``stats()`` holds the counters and the last window. Nothing is retried, so nothing is
    delivered twice: at-most-once with the losses counted.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import struct
import time
import uuid
from typing import Any, Callable, Deque, Dict, List, Optional, Set, Tuple

from nbio.backplane import Handler, LossWindow, Subscription, TopicTable
from nbio.errors import BackplaneError, BackplaneUnavailable

__all__ = ["TO_ONE_SCRIPT", "RedisBackplane"]

logger = logging.getLogger("nbio.backplane")

#: KEYS: members zset, round-robin hash. ARGV: envelope, excluded node, topic, node channel prefix.
TO_ONE_SCRIPT = """
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local n = #members
if n == 0 then
  redis.call('HDEL', KEYS[2], ARGV[3])
  return 0
end
local start = redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
for k = 0, n - 1 do
  local node = members[((start + k) % n) + 1]
  if node ~= ARGV[2] then
    if redis.call('PUBLISH', ARGV[4] .. node, ARGV[1]) > 0 then
      return 1
    end
    redis.call('ZREM', KEYS[1], node)
  end
end
return 0
"""

_ENVELOPE = struct.Struct(">BH")  # hops, len(topic)
_BATCH = 512

_PUB = 0  # (_PUB, channel, data)
_ONE = 1  # (_ONE, topic, envelope, excluded)
_SUB = 2  # (_SUB, topic)
_UNSUB = 3  # (_UNSUB, topic)

Op = Tuple[Any, ...]


def _enc(topic: str) -> bytes:
    return topic.encode("utf-8", "surrogateescape")


class RedisBackplane:
    """Topics shared through Redis by every process/machine using the same ``url`` and
    ``prefix`` (see the module docstring for the design).

    ``on_error(exc)`` gets a :class:`~nbio.errors.BackplaneUnavailable` when the connection
    is lost or cannot be made (once per outage), and a :class:`~nbio.errors.BackplaneError`
    for other trouble; ``on_reconnect(window)`` gets the :class:`~nbio.backplane.LossWindow`
    once subscriptions are back. ``max_pending`` bounds the publishes queued while
    connected (beyond it they are dropped and counted). ``client_options`` go to
    ``redis.asyncio.Redis.from_url``.

    Methods are non-blocking and need a running event loop; the connection starts with the
    first call (or ``await start()``, which also waits until it is live).
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "nbio",
        on_error: Optional[Callable[[BaseException], Any]] = None,
        on_reconnect: Optional[Callable[[LossWindow], Any]] = None,
        reconnect_interval: float = 0.1,
        max_reconnect_interval: float = 2.0,
        connect_timeout: float = 5.0,
        command_timeout: Optional[float] = 10.0,
        max_pending: int = 100_000,
        max_hops: int = 8,
        client_options: Optional[Dict[str, Any]] = None,
    ) -> None:
        try:
            import redis.asyncio  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "RedisBackplane needs the redis package: pip install 'nbio[redis]'"
            ) from exc
        self.url = url
        self.prefix = prefix
        self.node_id = uuid.uuid4().hex
        self.on_error = on_error
        self.on_reconnect = on_reconnect
        self.reconnect_interval = reconnect_interval
        self.max_reconnect_interval = max_reconnect_interval
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.max_pending = max_pending
        self.max_hops = max_hops
        self.client_options = dict(client_options or {})

        self._table = TopicTable()
        self._topic_prefix = _enc(f"{prefix}:t:")
        self._node_prefix = _enc(f"{prefix}:n:")
        self._node_channel = self._node_prefix + self.node_id.encode()
        self._rr_key = _enc(f"{prefix}:rr")

        self._ops: Deque[Op] = collections.deque()
        self._wake: Optional[asyncio.Event] = None
        self._task: Optional[asyncio.Task] = None
        self._closing = False
        self._connected = False  # live: subscribed, registered, publishing
        self._went_live = False
        self._stop_writer = False
        self._live: Set[bytes] = set()  # channels Redis confirmed on the current connection
        self._confirm: Set[bytes] = set()
        self._confirmed: Optional[asyncio.Future] = None
        self._registered: Set[str] = set()  # topics this node registered for publish_to_one
        self._waiters: List[asyncio.Future] = []
        self._window: Optional[LossWindow] = None
        self._last_window: Optional[LossWindow] = None
        self._outage_reported = False
        self._counts: Dict[str, int] = dict.fromkeys(
            (
                "disconnects",
                "reconnects",
                "connect_failures",
                "dropped",
                "published",
                "received",
                "to_one_unrouted",
                "to_one_rerouted",
                "errors",
            ),
            0,
        )

    def __repr__(self) -> str:
        state = "live" if self._connected else "down"
        return f"<RedisBackplane {self.url} prefix={self.prefix!r} node={self.node_id[:8]} {state}>"

    # -- public API -----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while connected with every subscription confirmed by Redis."""
        return self._connected

    async def start(self, timeout: Optional[float] = None) -> None:
        """Start connecting (if not yet) and wait until live; on ``timeout`` raise
        :class:`~nbio.errors.BackplaneUnavailable` (reconnecting goes on in the background)."""
        self._ensure_started()
        try:
            await asyncio.wait_for(self._wait(lambda: self._connected), timeout)
        except asyncio.TimeoutError:
            raise BackplaneUnavailable(
                f"redis backplane: {self.url} not reachable within {timeout}s"
            ) from None

    def subscribe(self, topic: str, handler: Handler) -> Subscription:
        """Subscribe ``handler`` to ``topic``; ``await sub.ready()`` until Redis confirmed it."""
        if self._closing:
            raise BackplaneError("redis backplane is closed")
        sub = Subscription(self, topic, handler)
        if self._table.add(sub):
            self._queue_state((_SUB, topic))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub.active and self._table.remove(sub):
            self._queue_state((_UNSUB, sub.topic))

    def publish(self, topic: str, data: bytes) -> None:
        """Queue ``data`` for every subscription to ``topic`` (dropped and counted while
        Redis is unreachable)."""
        self._queue_publish((_PUB, self._topic_prefix + _enc(topic), bytes(data)))

    def publish_to_one(self, topic: str, data: bytes) -> None:
        """Queue ``data`` for exactly one subscription to ``topic``, in whichever process."""
        self._queue_publish((_ONE, topic, self._envelope(topic, data, 0), ""))

    def stats(self) -> Dict[str, Any]:
        """Counters: ``connected``; ``disconnects``, ``reconnects``, ``connect_failures``;
        ``dropped`` (publishes not sent: disconnected, queue full, or in flight when the
        connection broke); ``published``, ``received`` (messages from Redis),
        ``delivered`` (handler calls), ``handler_errors``; ``to_one_unrouted`` (no
        subscriber anywhere), ``to_one_rerouted``; ``errors`` (reported to ``on_error``);
        ``pending``, ``topics``, ``subscriptions``; ``last_outage`` (a
        :class:`~nbio.backplane.LossWindow` as a dict, or None)."""
        out: Dict[str, Any] = {"connected": self._connected, "node": self.node_id}
        out.update(self._counts)
        t = self._table
        out.update(
            delivered=t.delivered,
            handler_errors=t.handler_errors,
            pending=len(self._ops),
            topics=len(t.topics),
            subscriptions=t.count(),
        )
        window = self._window or self._last_window
        out["last_outage"] = None if window is None else window.as_dict()
        return out

    async def close(self) -> None:
        """Stop: unregister this node, close the Redis connections, drop subscriptions."""
        if self._closing:
            return
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._registered:
            await self._unregister_on_close()
        self._counts["dropped"] += sum(1 for op in self._ops if op[0] in (_PUB, _ONE))
        self._ops.clear()
        for subs in list(self._table.topics.values()):
            for sub in list(subs):
                self._table.remove(sub)
        self._connected = False
        self._notify()

    # -- Subscription hooks ---------------------------------------------------------------------

    def _is_live(self, sub: Subscription) -> bool:
        return self._connected and (self._topic_prefix + _enc(sub.topic)) in self._live

    async def _wait_live(self, sub: Subscription) -> None:
        self._ensure_started()
        await self._wait(lambda: not sub.active or self._is_live(sub) or self._closing)

    # -- queueing -------------------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._task is not None or self._closing:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # started by the first call made inside a loop
        self._wake = asyncio.Event()
        self._task = loop.create_task(self._supervise())

    def _queue_state(self, op: Op) -> None:
        self._ensure_started()
        if self._connected:  # else the next connection syncs from the table
            self._ops.append(op)
            self._kick()

    def _queue_publish(self, op: Op) -> None:
        self._ensure_started()
        if not self._connected:
            self._drop(1)
            return
        if len(self._ops) >= self.max_pending:
            self._drop(1)
            self._report(BackplaneError("redis backplane: publish queue full, message dropped"))
            return
        self._ops.append(op)
        self._kick()

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _drop(self, n: int) -> None:
        self._counts["dropped"] += n
        if self._window is not None:
            self._window.dropped += n

    def _envelope(self, topic: str, data: bytes, hops: int) -> bytes:
        name = _enc(topic)
        return b"".join((_ENVELOPE.pack(hops, len(name)), name, data))

    # -- reporting and waiting ------------------------------------------------------------------

    def _report(self, exc: BaseException) -> None:
        self._counts["errors"] += 1
        logger.warning("nbio.backplane: %s", exc)
        if self.on_error is not None:
            try:
                self.on_error(exc)
            except Exception:
                logger.exception("nbio.backplane: on_error raised")

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def _wait(self, cond: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        while not cond():
            fut = loop.create_future()
            self._waiters.append(fut)
            await fut

    # -- connection lifecycle -------------------------------------------------------------------

    async def _supervise(self) -> None:
        delay = self.reconnect_interval
        while not self._closing:
            self._went_live = False
            try:
                await self._serve()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._closing:
                    break
                self._lost(exc)
            if self._went_live:
                delay = self.reconnect_interval
            await asyncio.sleep(delay)  # reconnect backoff
            delay = min(delay * 2, self.max_reconnect_interval)

    def _lost(self, exc: BaseException) -> None:
        was_live = self._connected
        self._connected = False
        self._live.clear()
        dropped = sum(1 for op in self._ops if op[0] in (_PUB, _ONE))
        self._ops.clear()
        if was_live:
            self._counts["disconnects"] += 1
            self._window = LossWindow(time.time())
            self._outage_reported = False
        else:
            self._counts["connect_failures"] += 1
        self._drop(dropped)
        if not self._outage_reported:
            self._outage_reported = True
            what = "lost" if was_live else "cannot be made"
            self._report(
                BackplaneUnavailable(
                    f"redis backplane: connection {what}: {type(exc).__name__}: {exc}"
                )
            )
        self._notify()

    async def _serve(self) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        client = aioredis.Redis.from_url(
            self.url,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=self.command_timeout,
            single_connection_client=False,
            **self.client_options,
        )
        pubsub = client.pubsub()
        reader: Optional[asyncio.Task] = None
        try:
            loop = asyncio.get_running_loop()
            channels = [self._node_channel] + [
                self._topic_prefix + _enc(t) for t in self._table.topics
            ]
            self._confirm = set(channels)
            self._confirmed = loop.create_future()
            await pubsub.subscribe(*channels)
            reader = loop.create_task(self._read(pubsub))
            await self._race(reader, self._confirmed)
            await self._sync_registrations(client)
            self._connected = True
            self._went_live = True
            # topics (un)subscribed while connecting: catch up through the op queue
            subscribed = {c[len(self._topic_prefix) :] for c in channels[1:]}
            for topic in self._table.topics:
                if _enc(topic) not in subscribed:
                    self._ops.append((_SUB, topic))
            for name in subscribed:
                topic = name.decode("utf-8", "surrogateescape")
                if topic not in self._table.topics:
                    self._ops.append((_UNSUB, topic))
            window, self._window = self._window, None
            self._outage_reported = False
            if window is not None:
                window.end = time.time()
                self._last_window = window
                self._counts["reconnects"] += 1
                logger.info("nbio.backplane: reconnected after %.3fs", window.duration or 0.0)
                if self.on_reconnect is not None:
                    try:
                        self.on_reconnect(window)
                    except Exception:
                        logger.exception("nbio.backplane: on_reconnect raised")
            self._notify()
            await self._race(reader, loop.create_task(self._write(client, pubsub)))
        finally:
            if reader is not None:
                reader.cancel()
                try:
                    await reader
                except (asyncio.CancelledError, Exception):
                    pass
            for closer in (pubsub.aclose, client.aclose):
                try:
                    await closer()
                except Exception:
                    pass

    async def _race(self, reader: asyncio.Task, other: asyncio.Future[Any]) -> Any:
        """Await ``other``; raise at once if ``reader`` fails first."""
        try:
            await asyncio.wait({reader, other}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not other.done():
                # redis-py can swallow a cancellation in flight: the writer also checks a flag
                self._stop_writer = True
                self._kick()
                other.cancel()
                await asyncio.wait({other}, timeout=self.connect_timeout)
        if other.cancelled() or not other.done():
            reader.result()  # raises the connection error
            raise ConnectionError("redis backplane: subscriber connection ended")
        return other.result()

    async def _sync_registrations(self, client: Any) -> None:
        """After (re)connecting: register for every local topic, unregister stale ones."""
        wanted = set(self._table.topics)
        stale = self._registered - wanted
        if not wanted and not stale:
            return
        self._registered |= wanted  # before the await: close() must unregister them
        pipe = client.pipeline(transaction=False)
        for topic in stale:
            pipe.zrem(self._members_key(topic), self.node_id)
        for topic in wanted:
            pipe.zadd(self._members_key(topic), {self.node_id: 0})
        await pipe.execute()
        self._registered = wanted

    async def _unregister_on_close(self) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        client = aioredis.Redis.from_url(
            self.url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=1.0, socket_timeout=1.0
        )
        try:
            pipe = client.pipeline(transaction=False)
            for topic in self._registered:
                pipe.zrem(self._members_key(topic), self.node_id)
            await pipe.execute()
        except Exception:  # Redis gone: the members are cleaned when next routed to
            pass
        finally:
            self._registered.clear()
            try:
                await client.aclose()
            except Exception:
                pass

    def _members_key(self, topic: str) -> bytes:
        return _enc(f"{self.prefix}:m:") + _enc(topic)

    # -- receiving ------------------------------------------------------------------------------

    async def _read(self, pubsub: Any) -> None:
        table = self._table
        tp = self._topic_prefix
        cut = len(tp)
        while True:
            msg = await pubsub.get_message(timeout=None)
            if msg is None:
                continue
            kind = msg["type"]
            channel = msg["channel"]
            if kind == "message":
                self._counts["received"] += 1
                if channel == self._node_channel:
                    self._on_direct(msg["data"])
                elif channel.startswith(tp):
                    table.deliver(channel[cut:].decode("utf-8", "surrogateescape"), msg["data"])
            elif kind == "subscribe":
                self._live.add(channel)
                confirm = self._confirm
                if confirm:
                    confirm.discard(channel)
                    if not confirm and self._confirmed is not None and not self._confirmed.done():
                        self._confirmed.set_result(None)
                self._notify()
            elif kind == "unsubscribe":
                self._live.discard(channel)

    def _on_direct(self, envelope: bytes) -> None:
        try:
            hops, n = _ENVELOPE.unpack_from(envelope)
            start = _ENVELOPE.size
            topic = envelope[start : start + n].decode("utf-8", "surrogateescape")
            data = envelope[start + n :]
        except (struct.error, UnicodeDecodeError) as exc:
            self._report(BackplaneError(f"redis backplane: malformed direct message: {exc}"))
            return
        if self._table.deliver_one(topic, data):
            return
        # Nobody here took it (the last local subscriber just left): route it again.
        if hops + 1 >= self.max_hops:
            self._counts["to_one_unrouted"] += 1
            return
        self._counts["to_one_rerouted"] += 1
        if topic not in self._table.topics and topic in self._registered:
            self._queue_state((_UNSUB, topic))  # make sure we are not picked again
        self._queue_publish((_ONE, topic, self._envelope(topic, data, hops + 1), self.node_id))

    # -- sending --------------------------------------------------------------------------------

    async def _write(self, client: Any, pubsub: Any) -> None:
        ops = self._ops
        wake = self._wake
        assert wake is not None
        self._stop_writer = False
        while not self._stop_writer:
            if not ops:
                wake.clear()
                await wake.wait()
                continue
            pipe = client.pipeline(transaction=False)
            sent: List[Op] = []
            while ops and len(sent) < _BATCH:
                op = ops[0]
                kind = op[0]
                if kind == _PUB:
                    pipe.publish(op[1], op[2])
                elif kind == _ONE:
                    topic = op[1]
                    pipe.eval(
                        TO_ONE_SCRIPT,
                        2,
                        self._members_key(topic),
                        self._rr_key,
                        op[2],
                        op[3],
                        _enc(topic),
                        self._node_prefix,
                    )
                else:
                    if sent:
                        break  # flush what came before, in order
                    ops.popleft()
                    await self._change_subscription(client, pubsub, kind, op[1])
                    continue
                sent.append(ops.popleft())
            if not sent:
                continue
            try:
                results = await pipe.execute(raise_on_error=False)
            except (asyncio.CancelledError, Exception):
                self._drop(len(sent))
                raise
            self._counts["published"] += len(sent)
            for op, result in zip(sent, results):
                if isinstance(result, Exception):
                    self._report(BackplaneError(f"redis backplane: {result}"))
                elif op[0] == _ONE and not result:
                    self._counts["to_one_unrouted"] += 1

    async def _change_subscription(self, client: Any, pubsub: Any, kind: int, topic: str) -> None:
        channel = self._topic_prefix + _enc(topic)
        if kind == _SUB:
            if topic not in self._table.topics:
                return  # gone again before we got to it
            # register first: Redis confirming the SUBSCRIBE (what makes a subscription
            # live) then also means publish_to_one can pick this node
            self._registered.add(topic)  # before the await: close() must unregister it
            await client.zadd(self._members_key(topic), {self.node_id: 0})
            await pubsub.subscribe(channel)
        else:
            if topic in self._table.topics:
                return  # subscribed again meanwhile
            await client.zrem(self._members_key(topic), self.node_id)
            self._registered.discard(topic)
            await pubsub.unsubscribe(channel)
            self._live.discard(channel)

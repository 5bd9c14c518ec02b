"""Pub/sub compatible with arpc's extension (``extension/pubsub``).

Routes (requests from clients to the server): ``in_A`` authenticate (raw password),
``in_S`` subscribe, ``in_U`` unsubscribe, ``in_P`` publish, ``in_P1`` publish to one
subscriber; the server delivers a topic to subscribers as a notify on ``in_P``. Topic
payloads are ``data || name || uint16 LE len(name) || int64 LE UnixNano``
(:mod:`nbio.rpc.pubsub_wire`).

:class:`PubSubServer` adds the routes to an RPC :class:`~nbio.rpc.server.Server`; every
publish goes through a backplane (:mod:`nbio.backplane`), so that several servers (processes,
machines) can share topics: :class:`~nbio.backplane.LocalBackplane` (the default) connects
the servers of one process, :class:`~nbio.backplane_redis.RedisBackplane` those sharing a
Redis server. A server holds one backplane subscription per topic its clients subscribed to.

:class:`PubSubClient` wraps a :class:`~nbio.rpc.client.Client`: it authenticates on every
(re)connect and subscribes again to its topics.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Dict, List, Optional

from nbio.backplane import Backplane, LocalBackplane, Subscription
from nbio.errors import ProtocolError
from nbio.rpc.client import Client, Peer
from nbio.rpc.codec import payload_to_value, value_to_payload
from nbio.rpc.coder import encode_frame
from nbio.rpc.context import Context
from nbio.rpc.message import CMD_NOTIFY, encode
from nbio.rpc.pubsub_wire import (
    ERR_INVALID_PASSWORD,
    ROUTE_AUTHENTICATE,
    ROUTE_PUBLISH,
    ROUTE_PUBLISH_TO_ONE,
    ROUTE_SUBSCRIBE,
    ROUTE_UNSUBSCRIBE,
    Topic,
    decode_topic,
    encode_topic,
)
from nbio.rpc.server import Server

__all__ = [
    "ERR_NOT_AUTHENTICATED",
    "Backplane",
    "LocalBackplane",
    "PubSubClient",
    "PubSubServer",
    "Topic",
]

logger = logging.getLogger("nbio.rpc")

#: Error answered to pub/sub requests of a connection that has not authenticated
#: (arpc leaves them unanswered).
ERR_NOT_AUTHENTICATED = "pubsub: not authenticated"

_TOPICS_KEY = "nbio.pubsub.topics"


class PubSubServer:
    """arpc's pub/sub server routes on ``server`` (an RPC :class:`Server`).

    ``password``: what ``in_A`` must carry; None or empty lets every connection in
    without authenticating. ``publish(topic, value)`` / ``publish_to_one`` publish from
    the server itself. ``backplane``: shared with other servers (default: a
    :class:`~nbio.backplane.LocalBackplane` of its own), e.g.
    ``RedisBackplane("redis://host:6379")`` for several processes or machines. A subscribe
    is answered once the backplane subscription is live (at most ``ready_timeout`` seconds
    during a broker outage; it goes live when the broker is back).
    """

    def __init__(
        self,
        server: Server,
        password: Optional[str] = None,
        backplane: Optional[Backplane] = None,
        *,
        ready_timeout: float = 5.0,
    ) -> None:
        self.server = server
        self.password = password or ""
        self.backplane: Backplane = backplane if backplane is not None else LocalBackplane()
        self.ready_timeout = ready_timeout
        self._topics: Dict[str, Dict[Peer, None]] = {}
        self._subs: Dict[str, Subscription] = {}
        self._seq = 1
        self._rr: Dict[str, int] = {}
        router = server.router
        router.handle(ROUTE_AUTHENTICATE, self._on_authenticate)
        router.handle(ROUTE_SUBSCRIBE, self._on_subscribe)
        router.handle(ROUTE_UNSUBSCRIBE, self._on_unsubscribe)
        router.handle(ROUTE_PUBLISH, self._on_publish)
        router.handle(ROUTE_PUBLISH_TO_ONE, self._on_publish_to_one)
        router.on_disconnect(self._on_disconnect)

    def close(self) -> None:
        """Drop this server's backplane subscriptions (the backplane itself stays open)."""
        subs, self._subs = self._subs, {}
        for sub in subs.values():
            sub.close()

    def subscribers(self, topic: str) -> List[Peer]:
        return list(self._topics.get(topic, ()))

    # -- publishing -----------------------------------------------------------------------------

    def publish(self, topic: str, value: Any) -> None:
        """Publish ``value`` (str/bytes raw, else via the server's codec) on ``topic``."""
        self.backplane.publish(
            topic, encode_topic(topic, value_to_payload(value, self.server.codec))
        )

    def publish_to_one(self, topic: str, value: Any) -> None:
        raw = encode_topic(topic, value_to_payload(value, self.server.codec))
        self.backplane.publish_to_one(topic, raw)

    def _deliver(self, topic: str, raw: bytes, to_one: bool) -> bool:
        subs = self._topics.get(topic)
        if not subs:
            return False
        seq = self._seq
        self._seq = seq + 1
        frame = encode(CMD_NOTIFY, ROUTE_PUBLISH, seq, raw)
        if self.server.coders:
            frame = encode_frame(frame, self.server.coders)
        peers = list(subs)
        if to_one:
            start = self._rr.get(topic, 0)
            n = len(peers)
            for i in range(n):
                peer = peers[(start + i) % n]
                if peer.connected:
                    self._rr[topic] = (start + i + 1) % n
                    try:
                        peer._send_raw(frame)
                    except ConnectionError:
                        continue
                    return True
            return False
        sent = False
        for peer in peers:
            try:
                peer._send_raw(frame)
                sent = True
            except ConnectionError:
                pass
        return sent

    # -- routes ---------------------------------------------------------------------------------

    def _topics_of(self, ctx: Context) -> Optional[Dict[str, None]]:
        peer = ctx.client
        mine = peer.get(_TOPICS_KEY)
        if mine is None and not self.password:
            mine = {}
            peer.set(_TOPICS_KEY, mine)
        if mine is None:
            ctx.error(ERR_NOT_AUTHENTICATED)
        return mine

    def _on_authenticate(self, ctx: Context) -> None:
        try:
            password = ctx.bind(str)
        except UnicodeDecodeError:
            ctx.error(ERR_INVALID_PASSWORD)
            return
        if password != self.password:
            ctx.error(ERR_INVALID_PASSWORD)
            return
        if ctx.client.get(_TOPICS_KEY) is None:
            ctx.client.set(_TOPICS_KEY, {})
        ctx.write(None)

    def _topic(self, ctx: Context) -> Optional[Topic]:
        try:
            topic = decode_topic(ctx.message.payload)
        except ProtocolError as exc:
            ctx.error(str(exc))
            return None
        if not topic.name:
            ctx.error('invalid topic, should not be ""')
            return None
        return topic

    def _on_subscribe(self, ctx: Context) -> Optional[Awaitable[None]]:
        mine = self._topics_of(ctx)
        if mine is None:
            return None
        topic = self._topic(ctx)
        if topic is None:
            return None
        mine[topic.name] = None
        self._topics.setdefault(topic.name, {})[ctx.client] = None
        sub = self._subs.get(topic.name)
        if sub is None:
            sub = self._subs[topic.name] = self.backplane.subscribe(topic.name, self._deliver)
        if sub.live:
            ctx.write(None)
            return None
        return self._answer_when_live(ctx, sub)

    async def _answer_when_live(self, ctx: Context, sub: Subscription) -> None:
        try:
            await asyncio.wait_for(sub.ready(), self.ready_timeout)
        except asyncio.TimeoutError:
            logger.warning("nbio.rpc: backplane subscription to %r not live yet", sub.topic)
        if not ctx.answered:
            ctx.write(None)

    def _on_unsubscribe(self, ctx: Context) -> None:
        mine = self._topics_of(ctx)
        if mine is None:
            return
        topic = self._topic(ctx)
        if topic is None:
            return
        mine.pop(topic.name, None)
        self._remove(topic.name, ctx.client)
        ctx.write(None)

    def _on_publish(self, ctx: Context) -> None:
        if self._topics_of(ctx) is None:
            return
        topic = self._topic(ctx)
        if topic is None:
            return
        ctx.write(None)
        self.backplane.publish(topic.name, ctx.message.payload)

    def _on_publish_to_one(self, ctx: Context) -> None:
        if self._topics_of(ctx) is None:
            return
        topic = self._topic(ctx)
        if topic is None:
            return
        ctx.write(None)
        self.backplane.publish_to_one(topic.name, ctx.message.payload)

    def _remove(self, name: str, peer: Peer) -> None:
        subs = self._topics.get(name)
        if subs is not None:
            subs.pop(peer, None)
            if not subs:
                del self._topics[name]
                self._rr.pop(name, None)
                sub = self._subs.pop(name, None)
                if sub is not None:
                    sub.close()

    def _on_disconnect(self, peer: Peer) -> None:
        mine = peer.get(_TOPICS_KEY)
        if mine:
            for name in list(mine):
                self._remove(name, peer)


TopicHandler = Callable[[Topic], Any]


class PubSubClient:
    """arpc's pub/sub client on top of ``client`` (connected or not yet).

    On every (re)connect it authenticates with ``password`` and subscribes again to its
    topics. ``await subscribe(name, handler)`` - ``handler(topic)`` (plain or coroutine)
    gets every :class:`~nbio.rpc.pubsub_wire.Topic` published there; ``decode(topic)``
    turns its data into a value. ``on_publish`` (if set) gets every topic instead.
    """

    def __init__(self, client: Client, password: str = "", timeout: Optional[float] = 10.0) -> None:
        self.client = client
        self.password = password
        self.timeout = timeout
        self.on_publish: Optional[TopicHandler] = None
        self._handlers: Dict[str, TopicHandler] = {}
        self._ready: Optional[Awaitable[Any]] = None
        client.router.handle(ROUTE_PUBLISH, self._on_topic)
        client.router.on_connect(self._on_connected)
        if client.connected:
            self._on_connected(client)

    @classmethod
    async def connect(
        cls,
        host: Optional[str] = None,
        port: Optional[int] = None,
        *,
        password: str = "",
        **options: Any,
    ) -> PubSubClient:
        """Create a :class:`Client`, connect it and authenticate."""
        ps = cls(Client(host, port, **options), password)
        await ps.client.connect()
        await ps.ready()
        return ps

    def _on_connected(self, client: Any) -> None:
        self._ready = self.client._spawn(self._setup())

    async def _setup(self) -> None:
        await self.client.call(ROUTE_AUTHENTICATE, self.password, timeout=self.timeout)
        for name in list(self._handlers):
            await self.client.call(ROUTE_SUBSCRIBE, encode_topic(name), timeout=self.timeout)

    async def ready(self) -> None:
        """Wait until the current connection is authenticated and re-subscribed."""
        if self._ready is not None:
            await asyncio.shield(self._ready)

    def decode(self, topic: Topic, as_type: Any = None) -> Any:
        """The value carried by ``topic`` (via the codec, or raw with ``as_type``)."""
        return payload_to_value(topic.data, self.client.codec, as_type)

    async def subscribe(self, name: str, handler: TopicHandler) -> None:
        self._handlers[name] = handler
        try:
            await self.ready()
            await self.client.call(ROUTE_SUBSCRIBE, encode_topic(name), timeout=self.timeout)
        except BaseException:
            if self._handlers.get(name) is handler:
                del self._handlers[name]
            raise

    async def unsubscribe(self, name: str) -> None:
        await self.ready()
        await self.client.call(ROUTE_UNSUBSCRIBE, encode_topic(name), timeout=self.timeout)
        self._handlers.pop(name, None)

    async def publish(self, name: str, value: Any) -> None:
        await self.ready()
        raw = encode_topic(name, value_to_payload(value, self.client.codec))
        await self.client.call(ROUTE_PUBLISH, raw, timeout=self.timeout)

    async def publish_to_one(self, name: str, value: Any) -> None:
        await self.ready()
        raw = encode_topic(name, value_to_payload(value, self.client.codec))
        await self.client.call(ROUTE_PUBLISH_TO_ONE, raw, timeout=self.timeout)

    def _on_topic(self, ctx: Context) -> None:
        try:
            topic = decode_topic(ctx.message.payload)
        except ProtocolError as exc:
            logger.warning("nbio.rpc: bad topic from %r: %s", ctx.client, exc)
            return
        handler = self.on_publish or self._handlers.get(topic.name)
        if handler is None:
            return
        result = handler(topic)
        if asyncio.iscoroutine(result):
            self.client._spawn(result)

    async def close(self) -> None:
        await self.client.close()

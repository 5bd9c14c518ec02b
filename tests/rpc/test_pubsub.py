"""Pub/sub compatible with arpc's extension: routes, auth, fan-out, publish-to-one,
re-subscribe after reconnect, several servers over a shared backplane."""

from __future__ import annotations

import asyncio
from typing import Any, List

import pytest
from tests.rpc._support import BACKENDS, open_raw, serving

from nbio.errors import RpcError
from nbio.rpc import Client, LocalBackplane, PubSubClient, PubSubServer, Server
from nbio.rpc.message import CMD_NOTIFY, CMD_REQUEST, encode
from nbio.rpc.pubsub_wire import (
    ERR_INVALID_PASSWORD,
    ROUTE_AUTHENTICATE,
    ROUTE_PUBLISH,
    ROUTE_SUBSCRIBE,
    decode_topic,
    encode_topic,
)

pytestmark = pytest.mark.parametrize("backend", BACKENDS)


class Inbox:
    def __init__(self) -> None:
        self.items: List[Any] = []
        self.event = asyncio.Event()

    def __call__(self, topic: Any) -> None:
        self.items.append((topic.name, topic.data))
        self.event.set()

    async def next(self) -> Any:
        while not self.items:
            self.event.clear()
            await self.event.wait()
        return self.items.pop(0)


async def test_subscribe_publish_unsubscribe(backend: str) -> None:
    async with serving(backend) as (server, engine, addr):
        ps_server = PubSubServer(server, password="secret")
        a = await PubSubClient.connect(*addr, password="secret", engine=engine)
        b = await PubSubClient.connect(*addr, password="secret", engine=engine)
        inbox_a, inbox_b = Inbox(), Inbox()
        await a.subscribe("news", inbox_a)
        await b.subscribe("news", inbox_b)
        await a.publish("news", {"headline": 1})
        assert await inbox_a.next() == ("news", b'{"headline":1}')
        assert await inbox_b.next() == ("news", b'{"headline":1}')
        assert a.decode(Any_topic("news", b'{"headline":1}')) == {"headline": 1}
        ps_server.publish("news", "from server")
        assert await inbox_a.next() == ("news", b"from server")
        assert await inbox_b.next() == ("news", b"from server")
        await b.unsubscribe("news")
        await a.publish("news", "only a")
        assert await inbox_a.next() == ("news", b"only a")
        assert inbox_b.items == []
        assert len(ps_server.subscribers("news")) == 1
        await a.close()
        await b.close()


def Any_topic(name: str, data: bytes) -> Any:
    from nbio.rpc.pubsub_wire import Topic

    return Topic(name, data, 0)


async def test_publish_to_one_and_disconnect_cleanup(backend: str) -> None:
    async with serving(backend) as (server, engine, addr):
        ps_server = PubSubServer(server)  # no password
        subs = [await PubSubClient.connect(*addr, engine=engine) for _ in range(3)]
        inboxes = [Inbox() for _ in subs]
        for s, box in zip(subs, inboxes):
            await s.subscribe("jobs", box)
        for i in range(3):
            await subs[0].publish_to_one("jobs", f"job{i}")
        got = [await box.next() for box in inboxes]  # round-robin: one each
        assert sorted(d for _, d in got) == [b"job0", b"job1", b"job2"]
        gone = asyncio.Event()
        server.router.on_disconnect(lambda p: gone.set())
        await subs[2].close()
        await gone.wait()
        assert len(ps_server.subscribers("jobs")) == 2
        for s in subs[:2]:
            await s.close()


async def test_authentication(backend: str) -> None:
    async with serving(backend) as (server, engine, addr):
        PubSubServer(server, password="pw")
        with pytest.raises(RpcError, match=ERR_INVALID_PASSWORD):
            await PubSubClient.connect(*addr, password="wrong", engine=engine)
        # a raw peer that never authenticated is refused
        raw = await open_raw(addr)
        raw.send(encode(CMD_REQUEST, ROUTE_SUBSCRIBE, 2, encode_topic("t", b"", 1)))
        msg = await raw.read()
        assert msg.is_error and "not authenticated" in msg.error
        raw.send(encode(CMD_REQUEST, ROUTE_AUTHENTICATE, 3, b"pw"))
        assert not (await raw.read()).is_error
        raw.send(encode(CMD_REQUEST, ROUTE_SUBSCRIBE, 4, b"short"))
        msg = await raw.read()
        assert msg.error == "invalid topic bytes, should be more than 10 bytes"
        await raw.close()
    # Python client leaves after a failed auth: nothing to clean


async def test_wire_format_of_delivery(backend: str) -> None:
    async with serving(backend) as (server, _engine, addr):
        ps_server = PubSubServer(server)
        raw = await open_raw(addr)
        raw.send(encode(CMD_REQUEST, ROUTE_AUTHENTICATE, 2, b""))
        await raw.read()
        raw.send(encode(CMD_REQUEST, ROUTE_SUBSCRIBE, 3, encode_topic("room", b"", 5)))
        await raw.read()
        body = encode_topic("room", b"hello", 1234)
        raw.send(encode(CMD_REQUEST, ROUTE_PUBLISH, 4, body))
        first, second = await raw.read(), await raw.read()
        answer, delivery = (first, second) if first.cmd != CMD_NOTIFY else (second, first)
        assert (answer.seq, answer.payload) == (4, b"")
        assert delivery.cmd == CMD_NOTIFY and delivery.method == ROUTE_PUBLISH
        assert delivery.payload == body  # the publisher's topic bytes, timestamp included
        assert decode_topic(delivery.payload) == ("room", b"hello", 1234)
        assert ps_server.subscribers("room")
        await raw.close()


async def test_resubscribe_after_reconnect(backend: str) -> None:
    async with serving(backend) as (server, engine, addr):
        ps_server = PubSubServer(server, password="pw")
        reconnected = asyncio.Event()
        client = Client(
            *addr,
            engine=engine,
            reconnect=True,
            reconnect_interval=0.01,
            on_reconnect=lambda c: reconnected.set(),
        )
        ps = PubSubClient(client, password="pw")
        await client.connect()
        inbox = Inbox()
        await ps.subscribe("t", inbox)
        server.clients[0].close()
        await reconnected.wait()
        await ps.ready()  # authenticated and re-subscribed on the new connection
        assert len(ps_server.subscribers("t")) == 1
        ps_server.publish("t", "again")
        assert await inbox.next() == ("t", b"again")
        await ps.close()


async def test_servers_share_topics_over_a_backplane(backend: str) -> None:
    from nbio.engine import Engine

    engine = Engine(backend=backend)
    plane = LocalBackplane()
    servers = [Server(engine=engine) for _ in range(2)]
    addrs = [await s.listen() for s in servers]
    for s in servers:
        PubSubServer(s, backplane=plane)
    a = await PubSubClient.connect(*addrs[0], engine=engine)
    b = await PubSubClient.connect(*addrs[1], engine=engine)
    box_a, box_b = Inbox(), Inbox()
    await a.subscribe("x", box_a)
    await b.subscribe("x", box_b)
    await a.publish("x", "across")
    assert await box_b.next() == ("x", b"across")
    assert await box_a.next() == ("x", b"across")
    await a.close()
    await b.close()
    for s in servers:
        await s.close()
    await engine.close()

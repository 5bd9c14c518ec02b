"""The backplane contract, run against both implementations: LocalBackplane (one process)
and RedisBackplane (two nodes sharing a real redis-server).

Delivery through Redis is asynchronous, so "exactly once" is checked with a marker: after
the messages under test, each node publishes a marker; Redis keeps the order of a channel,
so once every subscription saw the markers, any duplicate would already have arrived.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable, List, Tuple

import pytest
from tests.rpc._support import wait_until

from nbio.backplane import Backplane, LocalBackplane, Subscription


class Recorder:
    """A handler recording (topic, data, to_one); ``accept=False`` refuses to_one messages."""

    def __init__(self, accept: bool = True) -> None:
        self.got: List[Tuple[str, bytes, bool]] = []
        self.accept = accept

    def __call__(self, topic: str, data: bytes, to_one: bool) -> bool:
        self.got.append((topic, bytes(data), to_one))
        return self.accept or not to_one

    def data(self, to_one: bool = False) -> List[bytes]:
        return [d for _, d, one in self.got if one == to_one and not d.startswith(b"marker")]

    def markers(self) -> int:
        return sum(1 for _, d, _ in self.got if d.startswith(b"marker"))


Nodes = Tuple[Backplane, Backplane]


@pytest.fixture(params=["local", "redis"])
def make_nodes(request: Any) -> Callable[[], Any]:
    """An async context factory yielding two nodes (the same object for the local backplane)."""
    kind = request.param
    if kind == "redis":
        server = request.getfixturevalue("redis_server")

    import contextlib

    @contextlib.asynccontextmanager
    async def nodes() -> AsyncIterator[Nodes]:
        if kind == "local":
            plane = LocalBackplane()
            yield plane, plane
            await plane.close()
            return
        from nbio.backplane_redis import RedisBackplane

        a, b = RedisBackplane(server.url), RedisBackplane(server.url)
        await asyncio.gather(a.start(5), b.start(5))
        try:
            yield a, b
        finally:
            await a.close()
            await b.close()

    return nodes


async def live(*subs: Subscription) -> None:
    for sub in subs:
        await asyncio.wait_for(sub.ready(), 5)
        assert sub.live


async def flush(nodes: Nodes, topic: str, recorders: List[Recorder]) -> None:
    """Publish a marker from each node and wait until every recorder saw them all."""
    expected = {r: r.markers() + len(set(map(id, nodes))) for r in recorders}
    for i, node in enumerate(dict.fromkeys(nodes)):
        node.publish(topic, b"marker%d" % i)
    await wait_until(lambda: all(r.markers() >= n for r, n in expected.items()))
    assert all(r.markers() == n for r, n in expected.items())


async def test_publish_reaches_every_subscription_once(make_nodes: Any) -> None:
    async with make_nodes() as (a, b):
        recs = [Recorder() for _ in range(4)]
        other = Recorder()
        subs = [a.subscribe("news", recs[0]), a.subscribe("news", recs[1])]
        subs += [b.subscribe("news", recs[2]), b.subscribe("news", recs[3])]
        subs.append(b.subscribe("sport", other))
        await live(*subs)
        for i in range(5):
            a.publish("news", b"a%d" % i)
            b.publish("news", b"b%d" % i)
        await wait_until(lambda: all(len(r.data()) >= 10 for r in recs))
        await flush((a, b), "news", recs)
        for r in recs:
            assert sorted(r.data()) == sorted(
                [b"a%d" % i for i in range(5)] + [b"b%d" % i for i in range(5)]
            )
            # each publisher's messages arrive in its order
            assert [d for d in r.data() if d.startswith(b"a")] == [b"a%d" % i for i in range(5)]
            assert all(t == "news" for t, _, _ in r.got)
        assert other.got == []
        assert a.stats()["subscriptions"] + (b.stats()["subscriptions"] if a is not b else 0) == 5


async def test_publish_to_one_reaches_exactly_one(make_nodes: Any) -> None:
    async with make_nodes() as (a, b):
        recs = [Recorder() for _ in range(4)]
        subs = [a.subscribe("jobs", recs[0]), a.subscribe("jobs", recs[1])]
        subs += [b.subscribe("jobs", recs[2]), b.subscribe("jobs", recs[3])]
        await live(*subs)
        jobs = [b"job%d" % i for i in range(8)]
        for i, job in enumerate(jobs):
            (a if i % 2 else b).publish_to_one("jobs", job)
        await wait_until(lambda: sum(len(r.data(True)) for r in recs) >= 8)
        await flush((a, b), "jobs", recs)
        taken = [d for r in recs for d in r.data(True)]
        assert sorted(taken) == sorted(jobs)  # every job once, nobody twice
        assert [len(r.data(True)) for r in recs] == [2, 2, 2, 2]  # round-robin


async def test_publish_to_one_skips_refusing_handlers(make_nodes: Any) -> None:
    async with make_nodes() as (a, b):
        refusing, taking = Recorder(accept=False), Recorder()
        await live(a.subscribe("q", refusing), b.subscribe("q", taking))
        for i in range(4):
            a.publish_to_one("q", b"m%d" % i)
        await wait_until(lambda: len(taking.data(True)) >= 4)
        await flush((a, b), "q", [refusing, taking])
        # a message refused by one node is routed again (order across nodes not kept)
        assert sorted(taking.data(True)) == [b"m0", b"m1", b"m2", b"m3"]


async def test_publish_to_one_without_subscribers_is_counted(make_nodes: Any) -> None:
    async with make_nodes() as (a, _b):
        a.publish_to_one("nobody", b"x")
        await wait_until(lambda: a.stats()["to_one_unrouted"] == 1)


async def test_unsubscribe_stops_delivery(make_nodes: Any) -> None:
    async with make_nodes() as (a, b):
        gone, stays = Recorder(), Recorder()
        sub = a.subscribe("t", gone)
        await live(sub, b.subscribe("t", stays))
        a.publish("t", b"1")
        await wait_until(lambda: gone.data() == [b"1"] and stays.data() == [b"1"])
        sub.close()
        sub.close()  # idempotent
        assert not sub.active and not sub.live
        b.publish("t", b"2")
        await wait_until(lambda: stays.data() == [b"1", b"2"])
        await flush((a, b), "t", [stays])
        assert gone.data() == [b"1"]
        # a new subscription to the topic on the same node is live again
        again = Recorder()
        await live(a.subscribe("t", again))
        b.publish("t", b"3")
        await wait_until(lambda: again.data() == [b"3"])


async def test_handler_errors_are_isolated_and_counted(make_nodes: Any) -> None:
    async with make_nodes() as (a, b):

        def broken(topic: str, data: bytes, to_one: bool) -> bool:
            raise RuntimeError("boom")

        ok = Recorder()
        await live(a.subscribe("t", broken), a.subscribe("t", ok))
        b.publish("t", b"x")
        await wait_until(lambda: ok.data() == [b"x"])
        assert a.stats()["handler_errors"] == 1
        assert a.stats()["delivered"] >= 1


async def test_close_drops_subscriptions(make_nodes: Any) -> None:
    async with make_nodes() as (a, _b):
        sub = a.subscribe("t", Recorder())
        await live(sub)
        await a.close()
        assert not sub.active
        assert a.stats()["subscriptions"] == 0

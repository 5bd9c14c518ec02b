"""Two worker processes, each an RPC pub/sub server, share topics through Redis: RPC clients
subscribed on either get every publish exactly once, publish_to_one reaches exactly one,
and a Redis restart is survived (reconnect, resubscribe) with the loss window reported."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import pytest
from tests.backplane._redis import RedisProcess
from tests.backplane._worker_proc import WorkerProcess, running_workers
from tests.rpc._support import wait_until

from nbio.rpc import PubSubClient

pytest.importorskip("redis.asyncio")

class Worker(WorkerProcess):
    script = Path(__file__).with_name("_worker.py")


@pytest.fixture
def workers(redis_server: RedisProcess) -> Iterator[List[Worker]]:
    yield from running_workers(Worker, redis_server.url)


class Inbox:
    def __init__(self) -> None:
        self.items: List[Tuple[str, bytes]] = []

    def __call__(self, topic: Any) -> None:
        self.items.append((topic.name, topic.data))

    def data(self) -> List[bytes]:
        return [d for _, d in self.items if not d.startswith(b"marker")]

    def markers(self) -> int:
        return sum(1 for _, d in self.items if d.startswith(b"marker"))


async def subscribers(
    workers: List[Worker], topic: str, per_worker: int = 2
) -> Tuple[List[PubSubClient], List[Inbox]]:
    clients, inboxes = [], []
    for w in workers:
        for _ in range(per_worker):
            ps = await PubSubClient.connect("127.0.0.1", w.port)
            box = Inbox()
            await ps.subscribe(topic, box)  # answered once the Redis subscription is live
            clients.append(ps)
            inboxes.append(box)
    return clients, inboxes


async def flush(publishers: List[PubSubClient], topic: str, inboxes: List[Inbox]) -> None:
    """A marker from each publisher; Redis keeps channel order, so once every inbox has
    them, any duplicate of an earlier message would already be there."""
    want = [box.markers() + len(publishers) for box in inboxes]
    for i, p in enumerate(publishers):
        await p.publish(topic, b"marker%d" % i)
    await wait_until(lambda: all(b.markers() >= n for b, n in zip(inboxes, want)), 10)
    assert [b.markers() for b in inboxes] == want


async def stats(client: PubSubClient) -> Any:
    return await client.client.call("/bp/stats", None, timeout=5)


async def connected(clients: List[PubSubClient]) -> List[bool]:
    return [(await stats(c))["connected"] for c in clients]


async def close_all(clients: List[PubSubClient]) -> None:
    for c in clients:
        await c.close()


async def test_publishes_from_either_worker_reach_all_subscribers_once(
    workers: List[Worker],
) -> None:
    subs, inboxes = await subscribers(workers, "news")
    pub = [await PubSubClient.connect("127.0.0.1", w.port) for w in workers]
    for i in range(5):
        await pub[0].publish("news", b"w0-%d" % i)
        await pub[1].publish("news", b"w1-%d" % i)
    expected = sorted([b"w0-%d" % i for i in range(5)] + [b"w1-%d" % i for i in range(5)])
    await wait_until(lambda: all(len(b.data()) >= 10 for b in inboxes), 10)
    await flush(pub, "news", inboxes)
    for box in inboxes:
        assert sorted(box.data()) == expected
        assert [d for d in box.data() if d.startswith(b"w0")] == [b"w0-%d" % i for i in range(5)]
    await close_all(subs + pub)


async def test_publish_to_one_reaches_exactly_one_subscriber(workers: List[Worker]) -> None:
    subs, inboxes = await subscribers(workers, "jobs")
    pub = [await PubSubClient.connect("127.0.0.1", w.port) for w in workers]
    jobs = [b"job%d" % i for i in range(8)]
    for i, job in enumerate(jobs):
        await pub[i % 2].publish_to_one("jobs", job)
    await wait_until(lambda: sum(len(b.data()) for b in inboxes) >= 8, 10)
    await flush(pub, "jobs", inboxes)
    assert sorted(d for b in inboxes for d in b.data()) == sorted(jobs)
    info = [b.data() for b in inboxes], [await stats(p) for p in pub]
    assert sorted(len(b.data()) for b in inboxes) == [2, 2, 2, 2], info  # round-robin over both
    await close_all(subs + pub)


async def test_redis_restart_is_survived_and_reported(
    workers: List[Worker], redis_server: RedisProcess
) -> None:
    subs, inboxes = await subscribers(workers, "room")
    pub = [await PubSubClient.connect("127.0.0.1", w.port) for w in workers]
    await pub[0].publish("room", b"before")
    await wait_until(lambda: all(b.data() == [b"before"] for b in inboxes), 10)

    redis_server.stop()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while any(await connected(pub)):
        assert loop.time() < deadline, "workers did not notice that Redis went away"
    await pub[0].publish("room", b"lost")  # the RPC call succeeds; the backplane drops it
    s0 = await stats(pub[0])
    assert s0["dropped"] == 1 and s0["disconnects"] == 1
    assert s0["last_outage"]["end"] is None

    redis_server.start()
    deadline = loop.time() + 10
    while not all(await connected(pub)):
        assert loop.time() < deadline, "workers did not reconnect"
    await pub[1].publish("room", b"after")
    await wait_until(lambda: all(len(b.data()) >= 2 for b in inboxes), 10)
    await flush(pub, "room", inboxes)
    for box in inboxes:  # resubscribed: "after" arrives; "lost" was dropped, not delayed
        assert box.data() == [b"before", b"after"]
    await pub[1].publish_to_one("room", b"one")  # registrations were restored too
    await wait_until(lambda: sum(b.data().count(b"one") for b in inboxes) == 1, 10)

    for i, p in enumerate(pub):
        s = await stats(p)
        assert s["connected"] and s["disconnects"] == 1 and s["reconnects"] == 1
        assert s["last_outage"]["end"] >= s["last_outage"]["start"]
        assert s["last_outage"]["dropped"] == (1 if i == 0 else 0)
        assert len(s["errors_reported"]) == 1 and "BackplaneUnavailable" in s["errors_reported"][0]
    await close_all(subs + pub)

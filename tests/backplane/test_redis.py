"""RedisBackplane specifics: outages (reported, counted, recovered), routing of
publish_to_one around dead or empty nodes, registration bookkeeping."""

from __future__ import annotations

import asyncio
import socket
from typing import Any, List

import pytest
from tests.backplane._redis import RedisProcess, require_redis_server
from tests.backplane.test_contract import Recorder
from tests.rpc._support import wait_until

from nbio.backplane import LossWindow
from nbio.errors import BackplaneError, BackplaneUnavailable

redis_asyncio = pytest.importorskip("redis.asyncio")
from nbio.backplane_redis import RedisBackplane  # noqa: E402

FAST = {"reconnect_interval": 0.02, "max_reconnect_interval": 0.1}


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_lazy_import_from_nbio_backplane() -> None:
    import nbio.backplane

    assert nbio.backplane.RedisBackplane is RedisBackplane


async def test_redis_restart_reconnects_resubscribes_and_reports(
    redis_server: RedisProcess,
) -> None:
    errors: List[BaseException] = []
    windows: List[LossWindow] = []
    a = RedisBackplane(
        redis_server.url, on_error=errors.append, on_reconnect=windows.append, **FAST
    )
    b = RedisBackplane(redis_server.url, **FAST)
    await asyncio.gather(a.start(5), b.start(5))
    ra, rb = Recorder(), Recorder()
    sa, sb = a.subscribe("t", ra), b.subscribe("t", rb)
    await asyncio.gather(sa.ready(), sb.ready())
    a.publish("t", b"before")
    await wait_until(lambda: ra.data() == [b"before"] and rb.data() == [b"before"])

    redis_server.stop()
    await wait_until(lambda: not a.connected and not b.connected)
    assert not sa.live
    a.publish("t", b"lost")  # dropped while down: counted in the stats and the window
    a.publish_to_one("t", b"lost too")
    stats = a.stats()
    assert stats["disconnects"] == 1 and stats["dropped"] == 2
    assert stats["last_outage"]["end"] is None and stats["last_outage"]["dropped"] == 2
    assert len(errors) == 1 and isinstance(errors[0], BackplaneUnavailable)

    redis_server.start()
    await asyncio.wait_for(asyncio.gather(sa.ready(), sb.ready()), 10)
    assert a.connected and b.connected
    b.publish("t", b"after")
    await wait_until(lambda: b"after" in ra.data() and b"after" in rb.data())
    assert ra.data() == [b"before", b"after"] and rb.data() == [b"before", b"after"]
    # publish_to_one works again: the registrations came back with the subscriptions
    b.publish_to_one("t", b"one")
    await wait_until(lambda: len(ra.data(True)) + len(rb.data(True)) == 1)

    stats = a.stats()
    assert stats["reconnects"] == 1 and stats["disconnects"] == 1 and stats["connected"]
    outage = stats["last_outage"]
    assert outage["end"] is not None and outage["end"] >= outage["start"] and outage["dropped"] == 2
    assert len(windows) == 1 and windows[0].dropped == 2 and windows[0].duration is not None
    assert len(errors) == 1  # one report per outage, however many reconnect attempts
    assert b.stats()["reconnects"] == 1
    await a.close()
    await b.close()


async def test_unreachable_redis_is_reported_and_start_times_out() -> None:
    errors: List[BaseException] = []
    plane = RedisBackplane(f"redis://127.0.0.1:{_unused_port()}/0", on_error=errors.append, **FAST)
    with pytest.raises(BackplaneUnavailable):
        await plane.start(timeout=0.3)
    await wait_until(lambda: plane.stats()["connect_failures"] >= 2)
    plane.publish("t", b"x")
    assert plane.stats()["dropped"] == 1 and not plane.connected
    assert len(errors) == 1 and "cannot be made" in str(errors[0])
    await plane.close()


async def test_comes_up_when_redis_starts_later() -> None:
    require_redis_server()
    server = RedisProcess()
    plane = RedisBackplane(server.url, **FAST)
    rec = Recorder()
    sub = plane.subscribe("t", rec)
    await wait_until(lambda: plane.stats()["connect_failures"] >= 1)
    try:
        server.start()
        await asyncio.wait_for(sub.ready(), 10)
        plane.publish("t", b"x")
        await wait_until(lambda: rec.data() == [b"x"])
    finally:
        await plane.close()
        server.stop()


async def test_publish_to_one_skips_and_removes_dead_members(redis_server: RedisProcess) -> None:
    a = RedisBackplane(redis_server.url, **FAST)
    await a.start(5)
    rec = Recorder()
    await a.subscribe("jobs", rec).ready()
    r = redis_asyncio.Redis.from_url(redis_server.url)
    # a crashed process left its registration behind (nobody listens on its channel)
    await r.zadd("nbio:m:jobs", {"0" * 32: 0, "f" * 32: 0})
    for i in range(3):
        a.publish_to_one("jobs", b"j%d" % i)
    await wait_until(lambda: len(rec.data(True)) == 3)
    assert await r.zrange("nbio:m:jobs", 0, -1) == [a.node_id.encode()]
    await r.aclose()
    await a.close()


async def test_node_without_local_subscriber_routes_again(redis_server: RedisProcess) -> None:
    a = RedisBackplane(redis_server.url, **FAST)
    b = RedisBackplane(redis_server.url, **FAST)
    await asyncio.gather(a.start(5), b.start(5))
    rec = Recorder()
    await b.subscribe("jobs", rec).ready()
    # hand node a a publish_to_one for a topic it has no subscriber for (as after a race)
    r = redis_asyncio.Redis.from_url(redis_server.url)
    assert await r.publish(f"nbio:n:{a.node_id}", a._envelope("jobs", b"stray", 0)) == 1
    await wait_until(lambda: rec.data(True) == [b"stray"])
    assert a.stats()["to_one_rerouted"] == 1
    # malformed direct messages are reported, not raised
    errors: List[BaseException] = []
    a.on_error = errors.append
    await r.publish(f"nbio:n:{a.node_id}", b"\x00")
    await wait_until(lambda: len(errors) == 1)
    assert isinstance(errors[0], BackplaneError)
    await r.aclose()
    await a.close()
    await b.close()


async def test_registration_follows_subscriptions_and_close(redis_server: RedisProcess) -> None:
    a = RedisBackplane(redis_server.url, prefix="app1", **FAST)
    await a.start(5)
    r = redis_asyncio.Redis.from_url(redis_server.url)
    s1 = a.subscribe("t", Recorder())
    s2 = a.subscribe("t", Recorder())
    await asyncio.gather(s1.ready(), s2.ready())
    assert await r.zrange("app1:m:t", 0, -1) == [a.node_id.encode()]
    assert (await r.pubsub_numsub("app1:t:t"))[0][1] == 1  # one Redis subscription per node
    s1.close()
    s2.close()
    await wait_until(lambda: a.stats()["pending"] == 0)

    async def gone() -> bool:
        return (
            await r.zrange("app1:m:t", 0, -1) == []
            and (await r.pubsub_numsub("app1:t:t"))[0][1] == 0
        )

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not await gone():
        assert loop.time() < deadline
    await a.subscribe("u", Recorder()).ready()
    await a.close()
    assert await r.zrange("app1:m:u", 0, -1) == []  # close unregisters
    await r.aclose()


async def test_publish_queue_bound(redis_server: RedisProcess) -> None:
    errors: List[Any] = []
    a = RedisBackplane(redis_server.url, max_pending=2, on_error=errors.append, **FAST)
    await a.start(5)
    for i in range(5):  # queued synchronously: the writer has not run yet
        a.publish("t", b"%d" % i)
    assert a.stats()["dropped"] == 3 and len(errors) == 3
    await wait_until(lambda: a.stats()["published"] == 2)
    await a.close()

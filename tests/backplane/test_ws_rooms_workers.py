"""Two worker processes serve WebSocket rooms (nbio.ws.Rooms) on a Redis backplane: clients
of either worker, on either WebSocket API, get every publish of either worker exactly once;
a Redis restart is survived (reconnect, resubscribe) and the loss window is reported.

The clients are the ``websockets`` library. A member client receives only room messages;
each worker also has a control client (not a member) that publishes and reads stats.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Iterator, List

import pytest
import websockets
from tests.backplane._redis import RedisProcess
from tests.backplane._worker_proc import WorkerProcess, running_workers

pytest.importorskip("redis.asyncio")

ROOM = "lobby"


class WsWorker(WorkerProcess):
    """A ``_ws_worker.py`` process."""

    script = Path(__file__).with_name("_ws_worker.py")

    def url(self, api: str) -> str:
        return f"ws://127.0.0.1:{self.port}/{api}"


@pytest.fixture
def workers(redis_server: RedisProcess) -> Iterator[List[WsWorker]]:
    yield from running_workers(WsWorker, redis_server.url)


async def ask(client: Any, command: str) -> str:
    await client.send(command)
    return str(await asyncio.wait_for(client.recv(), 10))


async def stats(control: Any) -> Any:
    answer = await ask(control, "stats")
    assert answer.startswith("!stats ")
    return json.loads(answer[len("!stats ") :])


async def members(workers: List[WsWorker]) -> List[Any]:
    """Two members per worker: one on the callback API, one on the async API."""
    clients = []
    for w in workers:
        for api in ("cb", "async"):
            c = await websockets.connect(w.url(api))
            assert await ask(c, f"join {ROOM}") == f"!joined {ROOM}"  # live in Redis
            clients.append(c)
    return clients


async def controls(workers: List[WsWorker]) -> List[Any]:
    return [await websockets.connect(w.url("async")) for w in workers]


async def receive_until_markers(client: Any, markers: int) -> List[str]:
    """Room messages up to and including ``markers`` markers (one per publisher: Redis keeps
    each channel's order, so a duplicate of an earlier message would be in here)."""
    got: List[str] = []
    seen = 0
    while seen < markers:
        msg = str(await asyncio.wait_for(client.recv(), 10))
        if msg.startswith("marker"):
            seen += 1
        else:
            got.append(msg)
    return got


async def flush(ctl: List[Any], clients: List[Any]) -> List[List[str]]:
    for i, c in enumerate(ctl):
        await c.send(f"pub {ROOM} marker{i}")
    return [await receive_until_markers(c, len(ctl)) for c in clients]


async def close_all(clients: List[Any]) -> None:
    for c in clients:
        await c.close()


async def test_publishes_from_either_worker_reach_every_client_once(
    workers: List[WsWorker],
) -> None:
    clients = await members(workers)
    ctl = await controls(workers)
    for i in range(5):
        await ctl[0].send(f"pub {ROOM} w0-{i}")
        await ctl[1].send(f"pub {ROOM} w1-{i}")
    expected = sorted([f"w0-{i}" for i in range(5)] + [f"w1-{i}" for i in range(5)])
    for got in await flush(ctl, clients):
        assert sorted(got) == expected
        assert [m for m in got if m.startswith("w0")] == [f"w0-{i}" for i in range(5)]
        assert [m for m in got if m.startswith("w1")] == [f"w1-{i}" for i in range(5)]
    for c in ctl:
        s = await stats(c)
        # one backplane subscription per room per worker, two local members each
        assert (s["rooms"], s["members"]) == (1, 2)
        assert s["backplane"]["subscriptions"] == 1
        assert s["published"] == 6 and s["received"] == 12 and s["sent"] == 24
    # a member that leaves stops receiving; the others still get everything once
    assert await ask(clients[0], f"leave {ROOM}") == f"!left {ROOM}"
    await ctl[1].send(f"pub {ROOM} after-leave")
    for got in await flush(ctl, clients[1:]):
        assert got == ["after-leave"]
    assert (await stats(ctl[0]))["members"] == 1
    await close_all(clients + ctl)


async def test_redis_restart_resubscribes_and_reports_the_loss_window(
    workers: List[WsWorker], redis_server: RedisProcess
) -> None:
    clients = await members(workers)
    ctl = await controls(workers)
    await ctl[0].send(f"pub {ROOM} before")
    for got in await flush(ctl, clients):
        assert got == ["before"]

    redis_server.stop()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while any([(await stats(c))["backplane"]["connected"] for c in ctl]):
        assert loop.time() < deadline, "workers did not notice that Redis went away"
    await ctl[0].send(f"pub {ROOM} lost")  # dropped by the backplane, and counted
    s0 = await stats(ctl[0])
    assert s0["backplane"]["dropped"] == 1 and s0["backplane"]["disconnects"] == 1
    assert s0["backplane"]["last_outage"]["end"] is None
    assert any("BackplaneUnavailable" in e for e in s0["errors_reported"])

    redis_server.start()
    for c in ctl:  # ready: the rooms' subscriptions are live again
        assert await ask(c, f"ready {ROOM}") == f"!ready {ROOM}"
    await ctl[1].send(f"pub {ROOM} after")
    for got in await flush(ctl, clients):  # "lost" was dropped, not delayed nor duplicated
        assert got == ["after"]

    for i, c in enumerate(ctl):
        s = await stats(c)
        bp = s["backplane"]
        assert bp["connected"] and bp["disconnects"] == 1 and bp["reconnects"] == 1
        assert bp["last_outage"]["end"] >= bp["last_outage"]["start"]
        assert bp["last_outage"]["dropped"] == (1 if i == 0 else 0)
        assert len(s["loss_windows"]) == 1  # on_reconnect(LossWindow) was called once
        assert s["loss_windows"][0]["dropped"] == (1 if i == 0 else 0)
        assert len(s["errors_reported"]) == 1
        assert (s["rooms"], s["members"]) == (1, 2)
    await close_all(clients + ctl)

"""HttpClient's HTTP/2 connection health: ``keepalive_expiry`` (a connection without open
streams for that long is closed with GOAWAY NO_ERROR and leaves the pool) and keepalive PINGs
(``http2_ping_interval`` / ``http2_ping_timeout``: a peer that stops answering fails the
connection with ConnectionLost). Against hypercorn, and a scripted h2 peer where a behaviour
must be shown on demand (recording the client's GOAWAY, a peer that stops answering). Time is
made short and every wait is a bounded poll of a condition or an event."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List

import _h2_client_support
import h2.events
import pytest
from _h2_client_support import H2Peer, Req, ScriptedServer, client_context, hypercorn_server
from tests._waiting import until

from nbio.engine import BACKENDS, Engine
from nbio.errors import ConnectionLost
from nbio.http.client import HttpClient
from nbio.http.h2_client import H2ClientConnection

pytestmark = pytest.mark.parametrize("backend", BACKENDS)
over_tls_and_h2c = pytest.mark.parametrize("tls", [pytest.param(True, id="tls-alpn"),
                                                   pytest.param(False, id="h2c")])

EXPIRY = 0.2


class App:
    """ASGI app: ``/slow`` waits for ``gate``; every response is ``ok``."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.waiting = 0

    async def __call__(self, scope: Dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        if scope["path"] == "/slow":
            self.waiting += 1
            await self.gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def client(engine: Engine, **kw: Any) -> HttpClient:
    return HttpClient(engine=engine, ssl=client_context(), http2_prior_knowledge=True, **kw)


def only_h2(c: HttpClient) -> H2ClientConnection:
    (h2c,) = c._h2.values()
    return h2c


# -- keepalive_expiry --------------------------------------------------------------------------


async def test_reused_within_expiry(backend: str) -> None:
    async with hypercorn_server(App(), tls=False) as base, Engine(backend=backend) as engine, \
            client(engine, keepalive_expiry=30.0) as c:
        for _ in range(3):
            assert (await c.get(base + "/")).http_version == "2"
        assert c.connections_opened == 1 and only_h2(c).streams_opened == 3


@over_tls_and_h2c
async def test_not_reused_after_expiry(backend: str, tls: bool) -> None:
    async with hypercorn_server(App(), tls=tls) as base, Engine(backend=backend) as engine, \
            client(engine, keepalive_expiry=EXPIRY) as c:
        await c.get(base + "/")
        h2c = only_h2(c)
        idle_from = asyncio.get_running_loop().time()
        await until(lambda: not c._h2 and h2c.conn.closed)
        assert asyncio.get_running_loop().time() - idle_from >= EXPIRY - 0.01
        assert "idle" in str(h2c.error)
        assert (await c.get(base + "/")).status == 200
        assert c.connections_opened == 2 and only_h2(c) is not h2c


async def test_expiry_none_keeps_the_connection(backend: str) -> None:
    async with hypercorn_server(App(), tls=False) as base, Engine(backend=backend) as engine, \
            client(engine, keepalive_expiry=None) as keeper, \
            client(engine, keepalive_expiry=EXPIRY) as clock:
        await keeper.get(base + "/")
        await clock.get(base + "/")
        kept = only_h2(keeper)
        await until(lambda: not clock._h2)  # pooled later, expired: more than EXPIRY passed
        assert only_h2(keeper) is kept and kept.usable
        await keeper.get(base + "/")
        assert keeper.connections_opened == 1


async def test_open_stream_keeps_the_connection(backend: str) -> None:
    app = App()
    async with hypercorn_server(app, tls=False) as base, Engine(backend=backend) as engine, \
            client(engine, keepalive_expiry=EXPIRY) as c, \
            client(engine, keepalive_expiry=EXPIRY) as clock:
        slow = asyncio.ensure_future(c.get(base + "/slow"))
        await until(lambda: app.waiting == 1)
        await clock.get(base + "/")
        await until(lambda: not clock._h2)  # more than EXPIRY with the slow stream open
        app.gate.set()
        assert (await slow).content == b"ok"
        assert only_h2(c).usable and c.connections_opened == 1


class GoawayRecorder(H2Peer):
    """A scripted server connection that records the GOAWAY frames it receives."""

    goaways: List[Any] = []

    async def on_event(self, ev: Any) -> None:
        if isinstance(ev, h2.events.ConnectionTerminated):
            self.goaways.append(ev.error_code)
        await super().on_event(ev)


async def ok(req: Req) -> None:
    await req.conn.respond(req.stream_id, 200, b"ok")


async def test_idle_close_sends_goaway_no_error(backend: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_h2_client_support, "H2Peer", GoawayRecorder)
    monkeypatch.setattr(GoawayRecorder, "goaways", [])
    server = ScriptedServer(ok)
    async with server as base, Engine(backend=backend) as engine, \
            client(engine, keepalive_expiry=EXPIRY) as c:
        assert (await c.get(base + "/")).content == b"ok"
        await until(lambda: GoawayRecorder.goaways == [0] and not c._h2)


# -- keepalive PINGs ---------------------------------------------------------------------------


async def test_pings_keep_a_healthy_connection(backend: str) -> None:
    app = App()
    async with hypercorn_server(app, tls=False) as base, Engine(backend=backend) as engine, \
            client(engine, keepalive_expiry=None, http2_ping_interval=0.05,
                   http2_ping_timeout=30.0) as c:
        slow = asyncio.ensure_future(c.get(base + "/slow"))
        await until(lambda: app.waiting == 1)
        h2c = only_h2(c)
        # a PING every interval (the next one once the one before is answered: well before
        # the ping timeout); were one not answered, the connection would fail
        await until(lambda: h2c.keepalive_pings >= 3, timeout=5.0)
        app.gate.set()
        assert (await slow).content == b"ok"
        assert h2c.usable and only_h2(c) is h2c and c.connections_opened == 1


async def test_no_ping_while_frames_arrive(backend: str) -> None:
    async with hypercorn_server(App(), tls=False) as base, Engine(backend=backend) as engine, \
            client(engine, http2_ping_interval=30.0) as c:
        for _ in range(3):
            await c.get(base + "/")
        assert only_h2(c).keepalive_pings == 0


async def test_dead_peer_fails_in_flight_request(backend: str) -> None:
    interval, timeout = 0.2, 0.3
    release = asyncio.Event()

    async def stop_answering_first(req: Req) -> None:
        if req.conn is server.peers[0]:
            await release.wait()  # the peer reads nothing more: no PING ACK, no response

    server = ScriptedServer(ok, on_headers=stop_answering_first)
    async with server as base, Engine(backend=backend) as engine, \
            client(engine, http2_ping_interval=interval, http2_ping_timeout=timeout,
                   read_timeout=30.0) as c:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(ConnectionLost, match="PING"):
            await c.get(base + "/stuck")
        elapsed = loop.time() - start
        assert interval + timeout - 0.05 <= elapsed < interval + timeout + 1.5
        assert not c._h2
        assert server.peers[0].h2.open_inbound_streams == 1  # it never answered
        # a new request gets a new connection
        assert (await c.get(base + "/next")).content == b"ok"
        assert c.connections_opened == 2
        release.set()

"""HttpClient speaking HTTP/2 to hypercorn (an independent server on the h2 package): over TLS
with ALPN h2, and h2c with prior knowledge; both engine backends."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, AsyncIterator, Dict

import pytest
from _h2_client_support import Seen, client_context, hypercorn_server

from nbio.engine import BACKENDS, Engine
from nbio.errors import DeadlineExceeded
from nbio.http.client import HttpClient
from nbio.http.h1 import Data
from nbio.http.h2_client import STREAM_WINDOW

MODES = [pytest.param(True, id="tls-alpn"), pytest.param(False, id="h2c")]
pytestmark = pytest.mark.parametrize("backend", BACKENDS)
over_tls_and_h2c = pytest.mark.parametrize("tls", MODES)

BIG = bytes(range(256)) * 20_000  # 5,120,000 bytes: far beyond the 65,535 default windows


class App:
    """ASGI app: records every request, and counts the requests in progress at once."""

    def __init__(self) -> None:
        self.seen = Seen()
        self.active = 0
        self.max_active = 0
        self.gate = asyncio.Event()
        self.sent = 0

    async def __call__(self, scope: Dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        self.seen.requests.append((scope["client"], scope["http_version"], scope["method"], path))
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            body = bytearray()
            while True:
                msg = await receive()
                body += msg.get("body", b"")
                if not msg.get("more_body"):
                    break
            if path == "/slow":
                await self.gate.wait()
            elif path.startswith("/hold"):
                await asyncio.sleep(0)  # let other streams in while this one is open
                await asyncio.sleep(0)
            elif path == "/redirect":
                await send({"type": "http.response.start", "status": 302,
                            "headers": [(b"location", b"/hold/after-redirect")]})
                await send({"type": "http.response.body", "body": b""})
                return
            if path == "/big":
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-length", b"%d" % len(BIG))]})
                for i in range(0, len(BIG), 65536):
                    await send({"type": "http.response.body", "body": BIG[i:i + 65536],
                                "more_body": True})
                    self.sent = i + 65536
                await send({"type": "http.response.body", "body": b""})
                return
            out = b"%s %s %d %s" % (scope["method"].encode(), path.encode(), len(body),
                                     hashlib.sha256(body).hexdigest()[:16].encode())
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain"),
                                    (b"x-version", scope["http_version"].encode())]})
            await send({"type": "http.response.body", "body": out})
        finally:
            self.active -= 1


def client(engine: Engine, **kw: Any) -> HttpClient:
    return HttpClient(engine=engine, ssl=client_context(), http2_prior_knowledge=True, **kw)


@over_tls_and_h2c
async def test_response_api_is_the_same(backend: str, tls: bool) -> None:
    app = App()
    async with hypercorn_server(app, tls=tls) as base, Engine(backend=backend) as engine:
        async with client(engine) as c:
            r = await c.get(base + "/hold/a?x=1")
            assert (r.status, r.reason, r.http_version) == (200, "", "2")
            assert r.content == b"GET /hold/a 0 e3b0c44298fc1c14"
            assert r.header("Content-Type") == "text/plain"
            assert r.header("x-version") == "2"
            assert r.text() == r.content.decode()
            assert all(k == k.lower() and not k.startswith(b":") for k, _ in r.headers)
            r = await c.post(base + "/hold/j", json={"a": 1})
            assert r.content.startswith(b"POST /hold/j 7 ")
            r = await c.request("PUT", base + "/hold/s", body=iter([b"ab", b"cd", b""]))
            assert r.content == b"PUT /hold/s 4 " + hashlib.sha256(b"abcd").hexdigest()[
                :16].encode()
            r = await c.get(base + "/redirect")
            assert r.url.endswith("/hold/after-redirect") and r.history[0].status == 302
            assert c.connections_opened == 1
    assert {v for _, v, _, _ in app.seen.requests} == {"2"}


@over_tls_and_h2c
async def test_concurrent_requests_share_one_connection(backend: str, tls: bool) -> None:
    app = App()
    async with hypercorn_server(app, tls=tls, h2_max_concurrent_streams=8) as base, \
            Engine(backend=backend) as engine:
        async with client(engine, max_connections=4) as c:
            rs = await asyncio.gather(*[c.post(base + f"/hold/{i}", body=b"x" * (i * 1000))
                                        for i in range(100)])
            assert [r.status for r in rs] == [200] * 100
            assert [r.content.split()[1:3] for r in rs] == [
                [b"/hold/%d" % i, b"%d" % (i * 1000)] for i in range(100)]
            assert c.connections_opened == 1
    assert len(app.seen.connections) == 1  # one TCP connection, seen from the server
    assert len(app.seen.requests) == 100
    assert 1 < app.max_active <= 8  # multiplexed, within the server's MAX_CONCURRENT_STREAMS


@over_tls_and_h2c
async def test_large_request_and_response_bodies(backend: str, tls: bool) -> None:
    app = App()
    async with hypercorn_server(app, tls=tls) as base, Engine(backend=backend) as engine:
        async with client(engine) as c:
            up, down = await asyncio.gather(c.post(base + "/up", body=BIG),
                                            c.get(base + "/big"))
            assert up.content == b"POST /up %d %s" % (
                len(BIG), hashlib.sha256(BIG).hexdigest()[:16].encode())
            assert down.content == BIG

            async def gen() -> AsyncIterator[bytes]:
                for i in range(0, len(BIG), 100_000):
                    yield BIG[i:i + 100_000]

            r = await c.post(base + "/gen", body=gen())
            assert r.content.split()[2] == b"%d" % len(BIG)
            assert c.connections_opened == 1


@over_tls_and_h2c
async def test_streamed_response_read_slowly(backend: str, tls: bool) -> None:
    app = App()
    async with hypercorn_server(app, tls=tls) as base, Engine(backend=backend) as engine:
        async with client(engine) as c:
            async with await c.get(base + "/big", stream=True) as r:
                assert r.http_version == "2"
                got = bytearray()
                peak = 0
                async for chunk in r.iter_bytes():
                    got += chunk
                    for _ in range(3):
                        await asyncio.sleep(0)  # a consumer slower than the loopback
                    # flow control: what arrived and was not read yet stays within the
                    # stream's window (hypercorn itself buffers the rest of the body)
                    peak = max(peak, sum(len(e.data) for e in r._link.events  # type: ignore
                                         if isinstance(e, Data)))
                    assert peak <= STREAM_WINDOW
                assert bytes(got) == BIG
            # meanwhile and after, the connection serves other requests
            r2 = await c.get(base + "/hold/next")
            assert r2.status == 200 and c.connections_opened == 1


@over_tls_and_h2c
async def test_timeouts_reset_only_their_stream(backend: str, tls: bool) -> None:
    app = App()
    async with hypercorn_server(app, tls=tls) as base, Engine(backend=backend) as engine:
        async with client(engine) as c:
            with pytest.raises(DeadlineExceeded) as info:
                await c.get(base + "/slow", read_timeout=0.05)
            assert info.value.kind == "read"
            with pytest.raises(DeadlineExceeded) as info:
                await c.get(base + "/slow", timeout=0.05)
            assert info.value.kind == "total"
            r = await c.get(base + "/hold/after")
            assert r.status == 200 and c.connections_opened == 1
            app.gate.set()


@over_tls_and_h2c
async def test_http2_false_keeps_http11(backend: str, tls: bool) -> None:
    app = App()
    async with hypercorn_server(app, tls=tls) as base, Engine(backend=backend) as engine:
        async with HttpClient(engine=engine, ssl=client_context(), http2=False) as c:
            r = await c.get(base + "/hold/x")
            assert r.http_version == "1.1" and r.header("x-version") == "1.1"


async def test_fallback_to_http11_when_alpn_offers_only_http11(backend: str) -> None:
    # (TLS only: ALPN is what offers the protocols)
    app = App()
    async with hypercorn_server(app, alpn=("http/1.1",)) as base, \
            Engine(backend=backend) as engine:
        async with client(engine, max_connections=3) as c:
            rs = await asyncio.gather(*[c.get(base + f"/hold/{i}") for i in range(6)])
            assert {(r.status, r.http_version, r.header("x-version")) for r in rs} == {
                (200, "1.1", "1.1")}
            assert 1 <= c.connections_opened <= 3  # the HTTP/1.1 pool, as before
            r = await c.post(base + "/up", body=BIG)
            assert r.content.split()[2] == b"%d" % len(BIG)
    assert {v for _, v, _, _ in app.seen.requests} == {"1.1"}

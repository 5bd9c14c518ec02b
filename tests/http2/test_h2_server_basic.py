"""HTTP/2 server: the three ways in (prior knowledge, Upgrade: h2c, ALPN over TLS), the native
handler API on streams, multiplexing, SETTINGS limits, RST_STREAM, PING and GOAWAY (RFC 9113),
with the ``h2`` package as the client, on both engine backends."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest
import trustme
from _h2_server_support import BACKENDS, H2Client, h2_serving

from nbio.http.server import FileResponse, HttpRequest, HttpServer, Response, StreamingResponse

pytestmark = pytest.mark.parametrize("backend", BACKENDS)


async def app(req: HttpRequest) -> Any:
    if req.path == b"/slow":
        await asyncio.sleep(0.05)
        return Response(b"slow")
    if req.path == b"/stream":
        async def gen() -> Any:
            for i in range(3):
                yield f"part {i};"
        return StreamingResponse(gen(), headers=[("X-Kind", "stream")],
                                 trailers=[("x-done", "yes")])
    if req.path == b"/fail":
        raise ValueError("boom")
    if req.path == b"/headers":
        return Response(repr(sorted(req.headers)).encode() + b" " + req.http_version)
    if req.method == b"POST":
        return Response(b"got %d" % len(req.body))
    return Response(b"hello " + req.target, headers=[("Connection", "keep-alive")])


# -- 3.4 prior knowledge ------------------------------------------------------------------------


async def test_prior_knowledge_get(backend: str) -> None:
    async with h2_serving(app, backend) as (_server, addr):
        c = await H2Client.connect(addr)
        sid = c.request("/a?x=1")
        headers, body = await c.response(sid)
        assert headers[b":status"] == b"200"
        assert headers[b"content-length"] == b"12"
        assert b"date" in headers and b"connection" not in headers
        assert body == b"hello /a?x=1"
        await c.close()


async def test_request_head_mapping(backend: str) -> None:
    async with h2_serving(app, backend) as (_server, addr):
        c = await H2Client.connect(addr)
        sid = c.request("/headers", headers=[("cookie", "a=1"), ("cookie", "b=2")])
        _, body = await c.response(sid)
        # :authority becomes host; split cookies are joined (RFC 9113 8.2.3); version b"2"
        assert b"(b'host', b'localhost')" in body
        assert b"(b'cookie', b'a=1; b=2')" in body
        assert body.endswith(b" 2")
        await c.close()


async def test_multiplexed_streams_answered_out_of_order(backend: str) -> None:
    async with h2_serving(app, backend) as (_server, addr):
        c = await H2Client.connect(addr)
        slow = c.request("/slow")
        fast = [c.request(f"/f{i}") for i in range(10)]
        ends = []
        while len(ends) < 11:
            for ev in await c.pump():
                if isinstance(ev, h2.events.StreamEnded):
                    ends.append(ev.stream_id)
        assert ends[-1] == slow and sorted(ends[:-1]) == fast
        await c.close()


async def test_streaming_response_with_trailers(backend: str) -> None:
    async with h2_serving(app, backend) as (_server, addr):
        c = await H2Client.connect(addr)
        sid = c.request("/stream")
        headers, body = await c.response(sid)
        assert body == b"part 0;part 1;part 2;"
        assert headers[b"x-kind"] == b"stream" and b"content-length" not in headers
        await c.close()


async def test_trailers_arrive(backend: str) -> None:
    async with h2_serving(app, backend) as (_server, addr):
        c = await H2Client.connect(addr)
        sid = c.request("/stream")
        ev = await c.until(h2.events.TrailersReceived)
        assert ev.stream_id == sid and dict(ev.headers) == {b"x-done": b"yes"}
        await c.close()


async def test_post_body_and_head(backend: str) -> None:
    async with h2_serving(app, backend) as (_server, addr):
        c = await H2Client.connect(addr)
        sid = c.request("/p", "POST", body=b"x" * 1000)
        assert (await c.response(sid))[1] == b"got 1000"
        sid = c.request("/h", "HEAD")
        headers, body = await c.response(sid)
        assert body == b"" and headers[b"content-length"] == b"8"
        await c.close()


async def test_handler_failure_is_500_and_connection_survives(backend: str) -> None:
    async with h2_serving(app, backend) as (_server, addr):
        c = await H2Client.connect(addr)
        headers, _ = await c.response(c.request("/fail"))
        assert headers[b":status"] == b"500"
        assert (await c.response(c.request("/ok")))[1] == b"hello /ok"
        await c.close()


@pytest.mark.parametrize("field", [
    (b"x-split", b"a\r\ninjected: 1"),
    (b"x-nul", b"a\x00b"),
    (b"x-padded", b" a"),
    (b"Bad Name", b"v"),
    (b":status", b"204"),
])
async def test_invalid_response_header_is_500(backend: str, field: Any) -> None:
    """An app's response field that HTTP/2 forbids (RFC 9113 8.2.1) is never sent: 500."""
    async with h2_serving(lambda req: Response(b"x", headers=[field]), backend) as (_s, addr):
        c = await H2Client.connect(addr)
        headers, _ = await c.response(c.request("/"))
        assert headers[b":status"] == b"500"
        assert field[1] not in headers.values()
        await c.close()


async def test_file_response(backend: str, tmp_path: Any) -> None:
    path = tmp_path / "f.bin"
    data = bytes(range(256)) * 1000
    path.write_bytes(data)
    async with h2_serving(lambda req: FileResponse(path), backend) as (_server, addr):
        c = await H2Client.connect(addr)
        headers, body = await c.response(c.request("/f"))
        assert body == data and headers[b"content-length"] == str(len(data)).encode()
        await c.close()


async def test_body_too_large_is_413(backend: str) -> None:
    async with h2_serving(app, backend, max_body_size=100) as (_server, addr):
        c = await H2Client.connect(addr)
        headers, _ = await c.response(c.request("/p", "POST", body=b"x" * 1000))
        assert headers[b":status"] == b"413"
        assert (await c.response(c.request("/ok")))[1] == b"hello /ok"
        await c.close()


# -- 3.2 Upgrade: h2c ---------------------------------------------------------------------------


async def test_upgrade_h2c(backend: str) -> None:
    async with h2_serving(app, backend) as (_server, addr):
        r, w = await asyncio.open_connection(*addr)
        cc = h2.connection.H2Connection()
        settings = cc.initiate_upgrade_connection()
        assert settings is not None
        w.write(b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                b"Upgrade: h2c\r\nHTTP2-Settings: " + settings + b"\r\n\r\n")
        w.write(cc.data_to_send())
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += await asyncio.wait_for(r.read(65536), 10)
        head, _, rest = buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ")
        body = b""
        events = cc.receive_data(rest) if rest else []
        while not any(isinstance(e, h2.events.StreamEnded) for e in events):
            for e in events:
                if isinstance(e, h2.events.DataReceived):
                    body += e.data
            w.write(cc.data_to_send())
            events = cc.receive_data(await asyncio.wait_for(r.read(65536), 10))
        body += b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
        assert body == b"hello /up"
        w.close()


async def test_upgrade_h2c_without_settings_stays_http11(backend: str) -> None:
    async with h2_serving(app, backend) as (_server, addr):
        r, w = await asyncio.open_connection(*addr)
        w.write(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
        data = await asyncio.wait_for(r.read(65536), 10)
        assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"hello /x")
        w.close()


async def test_http2_disabled(backend: str) -> None:
    async with h2_serving(app, backend, http2=False) as (_server, addr):
        r, w = await asyncio.open_connection(*addr)
        w.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        data = await asyncio.wait_for(r.read(), 10)
        assert data.startswith(b"HTTP/1.1 ")
        w.close()


async def test_preface_in_pieces(backend: str) -> None:
    async with h2_serving(app, backend) as (_server, addr):
        r, w = await asyncio.open_connection(*addr)
        cc = h2.connection.H2Connection()
        cc.initiate_connection()
        cc.send_headers(1, [(":method", "GET"), (":path", "/p"), (":scheme", "http"),
                            (":authority", "x")], end_stream=True)
        data = cc.data_to_send()
        for i in range(0, 30, 3):
            w.write(data[i:i + 3])
            await w.drain()
            await asyncio.sleep(0)
        w.write(data[30:])
        got = b""
        while True:
            evs = cc.receive_data(await asyncio.wait_for(r.read(65536), 10))
            got += b"".join(e.data for e in evs if isinstance(e, h2.events.DataReceived))
            if any(isinstance(e, h2.events.StreamEnded) for e in evs):
                break
        assert got == b"hello /p"
        w.close()


# -- 6.5 SETTINGS, 6.4 RST_STREAM, 6.7 PING, 6.8 GOAWAY -------------------------------------------


async def test_settings_advertised(backend: str) -> None:
    async with h2_serving(app, backend, max_concurrent_streams=7,
                          max_header_bytes=4096) as (_server, addr):
        c = await H2Client.connect(addr)
        ev = await c.until(h2.events.RemoteSettingsChanged)
        got = {k: v.new_value for k, v in ev.changed_settings.items()}
        assert got[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 7
        assert got[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE] == 4096
        assert got[h2.settings.SettingCodes.ENABLE_PUSH] == 0
        await c.close()


async def test_header_list_too_large_closes(backend: str) -> None:
    async with h2_serving(app, backend, max_header_bytes=1024) as (_server, addr):
        c = await H2Client.connect(addr)
        c.request("/", headers=[("x-big", "a" * 4000)])
        ev = await c.until(h2.events.ConnectionTerminated)
        assert ev is not None and ev.error_code != h2.errors.ErrorCodes.NO_ERROR
        await c.close()


async def test_too_many_streams(backend: str) -> None:
    started = asyncio.Event()

    async def hold(req: HttpRequest) -> Response:
        started.set()
        await asyncio.sleep(10)
        return Response(b"")

    async with h2_serving(hold, backend, max_concurrent_streams=2) as (_server, addr):
        c = await H2Client.connect(addr)
        for _ in range(3):  # sent before the server's SETTINGS arrive
            c.request("/")
        ev = await c.until(h2.events.ConnectionTerminated)
        assert ev is not None and ev.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
        await c.close()


async def test_client_reset_cancels_handler(backend: str) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def hold(req: HttpRequest) -> Response:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return Response(b"")

    async with h2_serving(hold, backend) as (server, addr):
        c = await H2Client.connect(addr)
        sid = c.request("/")
        await asyncio.wait_for(started.wait(), 5)
        c.h2.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        c.flush()
        await asyncio.wait_for(cancelled.wait(), 5)
        assert server.busy_connections == 0
        await c.close()


async def test_ping_answered(backend: str) -> None:
    async with h2_serving(app, backend) as (_server, addr):
        c = await H2Client.connect(addr)
        c.h2.ping(b"12345678")
        c.flush()
        ev = await c.until(h2.events.PingAckReceived)
        assert ev.ping_data == b"12345678"
        await c.close()


# -- TLS with ALPN h2 ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _server_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    return ctx


async def test_alpn_h2_over_tls(backend: str, ca: trustme.CA) -> None:
    cctx = ssl.create_default_context()
    ca.configure_trust(cctx)
    cctx.set_alpn_protocols(["h2"])

    def tls_app(req: HttpRequest) -> Response:
        return Response(b"alpn=" + req.conn.selected_alpn_protocol().encode())

    async with h2_serving(tls_app, backend, ssl_ctx=_server_ctx(ca)) as (_server, addr):
        c = await H2Client.connect(addr, cctx)
        sids = [c.request(f"/{i}") for i in range(5)]
        for sid in sids:
            assert (await c.response(sid))[1] == b"alpn=h2"
        await c.close()


async def test_start_sets_alpn(backend: str, ca: trustme.CA) -> None:
    from nbio.engine import Engine

    ctx = _server_ctx(ca)
    async with Engine(backend=backend) as engine:
        server = await HttpServer.start(app, engine=engine, ssl=ctx)
        cctx = ssl.create_default_context()
        ca.configure_trust(cctx)
        cctx.set_alpn_protocols(["h2", "http/1.1"])
        _r, w = await asyncio.open_connection(*server.address[:2], ssl=cctx,
                                             server_hostname="localhost")
        assert w.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        w.close()
        server.close()
        await server.wait_closed()

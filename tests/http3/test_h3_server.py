"""H3Server checked with an independent peer: aioquic's own HTTP/3 client (RFC 9114), for
native handlers and ASGI apps (Starlette), on both engine backends; Alt-Svc from the
HTTP/1.1 server."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.responses import StreamingResponse as StarletteStreaming
from starlette.routing import Route
from tests.http3._h3_support import BACKENDS, Certs, aioquic_client, make_certs

from nbio.engine import Engine
from nbio.http import FileResponse, HttpServer, Response, StreamingResponse
from nbio.http3 import H3Server


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path)


@contextlib.asynccontextmanager
async def serving(app: Any, certs: Certs, backend: str = "native",
                  **options: Any) -> AsyncIterator[H3Server]:
    engine = Engine(backend=backend)
    server = await H3Server.start(app, "127.0.0.1", 0, certfile=certs.certfile,
                                  keyfile=certs.keyfile, engine=engine, **options)
    try:
        yield server
    finally:
        server.close()
        await server.wait_closed()
        await engine.close()


async def native_app(req: Any) -> Any:
    if req.path == b"/echo":
        body = await req.read()
        return Response(body, headers=[("x-method", req.method), ("x-len", len(body))])
    if req.path == b"/info":
        return Response(json.dumps({
            "version": req.http_version.decode(),
            "host": (req.get_header(b"host") or b"").decode(),
            "query": req.query.decode(),
            "client": list(req.client[:2]),
            "ua": (req.get_header("user-agent") or b"").decode(),
        }), content_type="application/json")
    if req.path == b"/stream":
        async def parts() -> Any:
            for i in range(3):
                yield f"part{i};"
        return StreamingResponse(parts(), trailers=[("x-checksum", "abc")])
    if req.path == b"/sync-stream":
        return StreamingResponse([b"a", "b", b"c"])
    if req.path == b"/boom":
        raise RuntimeError("handler failure")
    if req.path == b"/late-boom":
        async def broken() -> Any:
            yield b"first"
            raise RuntimeError("failure after the head")
        return StreamingResponse(broken())
    if req.path == b"/conn":
        return Response(b"x", headers=[("connection", "keep-alive"), ("Transfer-Encoding", "x"),
                                       ("X-Upper", "v")])
    return Response(b"Not Found", 404)


# -- RFC 9114 4.1: request and response messages ------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
async def test_get_and_request_attributes(certs: Certs, backend: str) -> None:
    async with serving(native_app, certs, backend) as server:
        async with aioquic_client(*server.address[:2], certs.ca_pem) as client:
            reply = await client.request(b"GET", b"/info?a=1",
                                         headers=[(b"user-agent", b"aioquic")])
    assert reply.status == 200
    assert reply.header(b"content-type") == b"application/json"
    assert reply.header(b"content-length") == str(len(reply.body)).encode()
    assert reply.header(b"date") is not None
    info = json.loads(reply.body)
    assert info["version"] == "3"
    assert info["host"] == "localhost"  # :authority exposed as host
    assert info["query"] == "a=1"
    assert info["ua"] == "aioquic"
    assert info["client"][0] == "127.0.0.1"


async def test_post_body_both_ways_large(certs: Certs) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB: many QUIC packets, flow control updates
    async with serving(native_app, certs) as server:
        async with aioquic_client(*server.address[:2], certs.ca_pem) as client:
            reply = await client.request(b"POST", b"/echo", body=body)
    assert reply.status == 200
    assert reply.body == body
    assert reply.header(b"x-method") == b"POST"
    assert reply.header(b"x-len") == str(len(body)).encode()


async def test_head_has_no_body(certs: Certs) -> None:
    async with serving(native_app, certs) as server:
        async with aioquic_client(*server.address[:2], certs.ca_pem) as client:
            reply = await client.request(b"HEAD", b"/echo")
            stream = await client.request(b"HEAD", b"/stream")
    assert reply.status == 200 and reply.body == b""
    assert stream.status == 200 and stream.body == b""


async def test_streaming_response_with_trailers(certs: Certs) -> None:
    async with serving(native_app, certs) as server:
        async with aioquic_client(*server.address[:2], certs.ca_pem) as client:
            reply = await client.request(b"GET", b"/stream")
            plain = await client.request(b"GET", b"/sync-stream")
    assert reply.body == b"part0;part1;part2;"
    assert reply.trailers == [(b"x-checksum", b"abc")]
    assert reply.header(b"content-length") is None
    assert plain.body == b"abc"


async def test_file_response(certs: Certs, tmp_path: Path) -> None:
    data = b"0123456789" * 50000
    (tmp_path / "f.bin").write_bytes(data)

    def app(req: Any) -> Any:
        return FileResponse(tmp_path / "f.bin")

    async with serving(app, certs) as server:
        async with aioquic_client(*server.address[:2], certs.ca_pem) as client:
            reply = await client.request(b"GET", b"/f.bin")
    assert reply.body == data
    assert reply.header(b"content-length") == b"500000"
    assert reply.header(b"content-type") == b"application/octet-stream"


async def test_many_concurrent_requests_on_one_connection(certs: Certs) -> None:
    async with serving(native_app, certs) as server:
        async with aioquic_client(*server.address[:2], certs.ca_pem) as client:
            replies = await asyncio.gather(
                *[client.request(b"POST", b"/echo", body=b"n%d" % i) for i in range(40)]
            )
    assert [r.body for r in replies] == [b"n%d" % i for i in range(40)]


# -- RFC 9114 4.2: fields ---------------------------------------------------------------------


async def test_connection_specific_fields_are_dropped_and_names_lowercased(certs: Certs) -> None:
    async with serving(native_app, certs) as server:
        async with aioquic_client(*server.address[:2], certs.ca_pem) as client:
            reply = await client.request(b"GET", b"/conn")
    names = [k for k, _ in reply.headers]
    assert b"connection" not in names and b"transfer-encoding" not in names
    assert reply.header(b"x-upper") == b"v"


# -- errors and limits ------------------------------------------------------------------------


async def test_handler_errors(certs: Certs) -> None:
    async with serving(native_app, certs) as server:
        async with aioquic_client(*server.address[:2], certs.ca_pem) as client:
            boom = await client.request(b"GET", b"/boom")
            late = await client.request(b"GET", b"/late-boom")
            missing = await client.request(b"GET", b"/nope")
            after = await client.request(b"GET", b"/sync-stream")
    assert boom.status == 500
    assert late.reset == 0x102  # H3_INTERNAL_ERROR: the head was already sent
    assert missing.status == 404
    assert after.body == b"abc"  # the connection survives


async def test_body_over_limit_is_413(certs: Certs) -> None:
    async with serving(native_app, certs, max_body_size=1000) as server:
        async with aioquic_client(*server.address[:2], certs.ca_pem) as client:
            declared = await client.request(
                b"POST", b"/echo", body=b"x" * 2000, headers=[(b"content-length", b"2000")]
            )
            undeclared = await client.request(b"POST", b"/echo", body=b"y" * 5000)
            ok = await client.request(b"POST", b"/echo", body=b"z" * 1000)
    assert declared.status == 413
    assert undeclared.status == 413
    assert ok.status == 200 and ok.body == b"z" * 1000


async def test_stream_request_body(certs: Certs) -> None:
    async def app(req: Any) -> Any:
        assert not req.complete or req.content_length == 0
        chunks = [c async for c in req.stream()]
        return Response(b"%d chunks, %d bytes" % (len(chunks) > 0, sum(map(len, chunks))))

    async with serving(app, certs, stream_request_body=True) as server:
        async with aioquic_client(*server.address[:2], certs.ca_pem) as client:
            reply = await client.request(b"POST", b"/", body=b"q" * 300000)
    assert reply.body == b"1 chunks, 300000 bytes"


# -- ASGI ---------------------------------------------------------------------------------------


def starlette_app() -> Starlette:
    async def home(request: StarletteRequest) -> Any:
        return PlainTextResponse(f"hello {request.url.path} {request.scope['http_version']}")

    async def echo_json(request: StarletteRequest) -> Any:
        data = await request.json()
        return JSONResponse({"got": data, "scheme": request.url.scheme})

    async def stream(request: StarletteRequest) -> Any:
        async def gen() -> Any:
            for i in range(4):
                yield f"s{i}"
        return StarletteStreaming(gen(), media_type="text/plain")

    return Starlette(routes=[
        Route("/", home),
        Route("/json", echo_json, methods=["POST"]),
        Route("/stream", stream),
    ])


@pytest.mark.parametrize("backend", BACKENDS)
async def test_starlette_over_h3(certs: Certs, backend: str) -> None:
    async with serving(starlette_app(), certs, backend, asgi=True) as server:
        async with aioquic_client(*server.address[:2], certs.ca_pem) as client:
            home = await client.request(b"GET", b"/")
            posted = await client.request(b"POST", b"/json", body=b'{"a": [1, 2]}',
                                          headers=[(b"content-type", b"application/json")])
            streamed = await client.request(b"GET", b"/stream")
            missing = await client.request(b"GET", b"/missing")
    assert (home.status, home.body) == (200, b"hello / 3")
    assert json.loads(posted.body) == {"got": {"a": [1, 2]}, "scheme": "https"}
    assert streamed.body == b"s0s1s2s3"
    assert missing.status == 404


async def test_asgi_trailers_pathsend_and_lifespan(certs: Certs, tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_bytes(b"from a file")
    events = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                events.append(msg["type"])
                await send({"type": msg["type"] + ".complete"})
                if msg["type"] == "lifespan.shutdown":
                    return
        assert scope["http_version"] == "3" and scope["scheme"] == "https"
        if scope["path"] == "/file":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.pathsend", "path": str(tmp_path / "p.txt")})
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 201, "trailers": True,
                    "headers": [(b"x-len", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body[:3], "more_body": True})
        await send({"type": "http.response.body", "body": body[3:]})
        await send({"type": "http.response.trailers", "headers": [(b"x-t", b"1")]})

    async with serving(app, certs, asgi=True) as server:
        assert events == ["lifespan.startup"]
        async with aioquic_client(*server.address[:2], certs.ca_pem) as client:
            reply = await client.request(b"POST", b"/", body=b"abcdefgh")
            file = await client.request(b"GET", b"/file")
    assert events == ["lifespan.startup", "lifespan.shutdown"]
    assert (reply.status, reply.body, reply.trailers) == (201, b"abcdefgh", [(b"x-t", b"1")])
    assert reply.header(b"x-len") == b"8"
    assert file.body == b"from a file" and file.header(b"content-length") == b"11"


async def test_asgi_app_failure_is_500(certs: Certs) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("no lifespan")
        raise ValueError("broken app")

    async with serving(app, certs, asgi=True) as server:
        async with aioquic_client(*server.address[:2], certs.ca_pem) as client:
            reply = await client.request(b"GET", b"/")
    assert reply.status == 500


# -- Alt-Svc from the HTTP/1.1 server (RFC 7838) -------------------------------------------------


async def test_http1_server_advertises_h3(certs: Certs) -> None:
    async with serving(native_app, certs) as h3:
        value = f'h3=":{h3.address[1]}"; ma=86400'
        http = await HttpServer.start(lambda req: Response(b"h1"), alt_svc=value)
        try:
            reader, writer = await asyncio.open_connection(*http.address[:2])
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            writer.close()
        finally:
            http.close()
            await http.wait_closed()
        assert http.alt_svc == value
        assert f"alt-svc: {value}\r\n".encode() in head
        port = int(value.split(":")[1].split('"')[0])
        async with aioquic_client("127.0.0.1", port, certs.ca_pem) as client:
            assert (await client.request(b"GET", b"/sync-stream")).body == b"abc"


async def test_http2_server_advertises_h3(certs: Certs) -> None:
    """The same ``alt_svc`` option puts the field in every HTTP/2 response (h2c here)."""
    import h2.config
    import h2.connection
    import h2.events

    async with serving(native_app, certs) as h3:
        value = f'h3=":{h3.address[1]}"; ma=86400'
        http = await HttpServer.start(lambda req: Response(b"h2"), alt_svc=value)
        try:
            reader, writer = await asyncio.open_connection(*http.address[:2])
            client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            client.initiate_connection()
            client.send_headers(
                1, [(":method", "GET"), (":path", "/"), (":scheme", "http"),
                    (":authority", "x")], end_stream=True)
            writer.write(client.data_to_send())
            headers: dict = {}
            while not headers:
                data = await asyncio.wait_for(reader.read(65536), 5)
                assert data, "server closed before answering"
                for ev in client.receive_data(data):
                    if isinstance(ev, h2.events.ResponseReceived):
                        headers = dict(ev.headers)
            writer.close()
        finally:
            http.close()
            await http.wait_closed()
        assert headers[b":status"] == b"200"
        assert headers[b"alt-svc"] == value.encode()

"""Our HTTP/2 server against independent peers: nghttp2's h2load (h2c, multiplexed) and
curl (--http2-prior-knowledge, Upgrade via --http2, ALPN h2 over TLS with a trustme CA)."""

from __future__ import annotations

import re
import ssl
from typing import Any

import pytest
import trustme
from _h2_server_support import BACKENDS, curl, h2_serving, run_tool

from nbio.http.asgi import AsgiServer
from nbio.http.server import HttpRequest, Response

pytestmark = pytest.mark.parametrize("backend", BACKENDS)


def hello(req: HttpRequest) -> Response:
    if req.path == b"/big":
        return Response(b"z" * 300000)
    return Response(b"hello " + req.path + b" " + req.http_version)


async def hello_asgi(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello asgi " +
                scope["http_version"].encode()})


def _h2load_ok(out: bytes, n: int) -> None:
    text = out.decode()
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored", text)
    assert m, text
    assert int(m.group(4)) == n and int(m.group(5)) == 0 and int(m.group(6)) == 0, text
    assert f"{n} 2xx" in text, text


async def test_h2load_native(backend: str) -> None:
    async with h2_serving(hello, backend) as (_s, addr):
        rc, out, err = await run_tool("h2load", "-n", "1000", "-c", "4", "-m", "16",
                                      f"http://{addr[0]}:{addr[1]}/", timeout=60)
        assert rc == 0, err
        _h2load_ok(out, 1000)


async def test_h2load_asgi(backend: str) -> None:
    server = AsgiServer(hello_asgi, lifespan="off")
    async with h2_serving(None, backend, server=server) as (_s, addr):
        rc, out, err = await run_tool("h2load", "-n", "1000", "-c", "4", "-m", "16",
                                      f"http://{addr[0]}:{addr[1]}/", timeout=60)
        assert rc == 0, err
        _h2load_ok(out, 1000)


async def test_h2load_large_responses(backend: str) -> None:
    # 300 KB responses with a 64 KiB client window: WINDOW_UPDATE paces every stream
    async with h2_serving(hello, backend) as (_s, addr):
        rc, out, err = await run_tool("h2load", "-n", "40", "-c", "2", "-m", "8", "-w", "16",
                                      "-W", "16", f"http://{addr[0]}:{addr[1]}/big",
                                      timeout=60)
        assert rc == 0, err
        _h2load_ok(out, 40)


async def test_curl_h2c(backend: str) -> None:
    async with h2_serving(hello, backend) as (_s, addr):
        base = f"http://{addr[0]}:{addr[1]}"
        out = await curl("--http2-prior-knowledge", "-w", " v=%{http_version}", base + "/a")
        assert out == b"hello /a 2 v=2"
        out = await curl("--http2", "-w", " v=%{http_version}", base + "/up")
        assert out == b"hello /up 2 v=2"  # Upgrade: h2c, answered as stream 1
        out = await curl("--http2-prior-knowledge", base + "/big")
        assert out == b"z" * 300000
        out = await curl("--http1.1", "-w", " v=%{http_version}", base + "/h1")
        assert out == b"hello /h1 1.1 v=1.1"


async def test_curl_alpn_h2_over_tls(backend: str, tmp_path: Any) -> None:
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    async with h2_serving(hello, backend, ssl_ctx=ctx) as (_s, addr):
        base = f"https://localhost:{addr[1]}"
        out = await curl("--http2", "--cacert", str(pem), "-w", " v=%{http_version}\n",
                         base + "/a", base + "/b")
        assert out == b"hello /a 2 v=2\nhello /b 2 v=2\n"
        out = await curl("--http1.1", "--cacert", str(pem), "-w", " v=%{http_version}",
                         base + "/c")
        assert out == b"hello /c 1.1 v=1.1"

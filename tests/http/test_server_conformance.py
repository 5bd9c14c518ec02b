"""HttpServer against independent peers: curl, and h11 as a client with
hypothesis-generated requests round-tripped through an echo handler."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from typing import Any, Iterator, List, Tuple

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests._programs import require
from tests.http._server_support import serving

from nbio.engine import BACKENDS, Engine
from nbio.http import HttpRequest, HttpServer, Response


def echo_json(req: HttpRequest) -> Response:
    return Response(
        json.dumps({
            "method": req.method.decode(),
            "target": req.target.decode("latin-1"),
            "version": req.http_version.decode(),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in req.headers],
            "body": req.body.decode("latin-1"),
            "trailers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in req.trailers],
        }),
        content_type="application/json",
    )


# -- curl ------------------------------------------------------------------------------------------

async def run_curl(*args: str) -> Tuple[int, bytes]:
    proc = await asyncio.create_subprocess_exec(
        require("curl"), "-s", "-S", "--max-time", "10", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    return proc.returncode, out


@pytest.mark.parametrize("backend", BACKENDS)
async def test_curl(backend: str, tmp_path: Any) -> None:
    upload = tmp_path / "up.bin"
    upload.write_bytes(bytes(range(256)) * 100)
    async with serving(echo_json, backend) as (_, (host, port)):
        base = f"http://{host}:{port}"
        _, out = await run_curl(f"{base}/p?q=1")
        got = json.loads(out)
        assert (got["method"], got["target"], got["version"]) == ("GET", "/p?q=1", "1.1")
        _, out = await run_curl("-d", "a=1&b=2", f"{base}/form")
        assert json.loads(out)["body"] == "a=1&b=2"
        # chunked upload of a file
        _, out = await run_curl("-H", "Transfer-Encoding: chunked", "--data-binary",
                                f"@{upload}", f"{base}/up")
        assert json.loads(out)["body"].encode("latin-1") == upload.read_bytes()
        # HEAD, HTTP/1.0, two URLs on one keep-alive connection, Expect: 100-continue
        _, out = await run_curl("-I", f"{base}/h")
        assert out.startswith(b"HTTP/1.1 200 OK") and b"Content-Length:" in out
        _, out = await run_curl("-0", f"{base}/old")
        assert json.loads(out)["version"] == "1.0"
        _, out = await run_curl("-v", f"{base}/1", f"{base}/2")
        assert out.count(b'"method"') == 2
        _, out = await run_curl("-H", "Expect: 100-continue", "--data-binary",
                                f"@{upload}", f"{base}/e")
        assert len(json.loads(out)["body"]) == 25600


# -- h11 client, hypothesis ------------------------------------------------------------------------


class ThreadedServer:
    """An HttpServer on its own loop in a thread (for synchronous hypothesis tests)."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.ready = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.addr: Any = None

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        server = HttpServer(echo_json)
        async with Engine(backend=self.backend) as engine:
            self.addr = engine.listen(server, "127.0.0.1", 0).address[:2]
            self.ready.set()
            await self.stop.wait()
            server.close()

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)


@pytest.fixture(scope="module", params=BACKENDS)
def threaded(request: Any) -> Iterator[ThreadedServer]:
    with ThreadedServer(request.param) as srv:
        yield srv


TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12)
VALUE = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)
PATH = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~/%=&?",
               max_size=40).map(lambda s: "/" + s)
RESERVED = {"host", "content-length", "transfer-encoding", "connection", "expect", "upgrade",
            "te", "trailer", "keep-alive"}
HEADERS = st.lists(st.tuples(TOKEN, VALUE), max_size=8).map(
    lambda hs: [(k, v) for k, v in hs if k not in RESERVED])
BODY = st.lists(st.binary(max_size=300), max_size=4)


def exchange(addr: Any, requests: List[Tuple[h11.Request, List[bytes], List[Any]]]) -> List[Any]:
    conn = h11.Connection(h11.CLIENT)
    out = []
    with socket.create_connection(addr, timeout=10) as sock:
        for req, chunks, trailers in requests:
            data = conn.send(req)
            for c in chunks:
                if c:
                    data += conn.send(h11.Data(data=c))
            data += conn.send(h11.EndOfMessage(headers=trailers))
            sock.sendall(data)
            body = b""
            while True:
                ev = conn.next_event()
                if ev is h11.NEED_DATA:
                    conn.receive_data(sock.recv(65536))
                elif isinstance(ev, h11.Data):
                    body += ev.data
                elif isinstance(ev, h11.EndOfMessage):
                    break
                elif isinstance(ev, h11.Response):
                    assert ev.status_code == 200
            out.append(json.loads(body))
            conn.start_next_cycle()
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reqs=st.lists(st.tuples(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
                               PATH, HEADERS, BODY, st.booleans(), HEADERS),
                     min_size=1, max_size=4))
def test_h11_requests_round_trip(threaded: ThreadedServer, reqs: List[Any]) -> None:
    batch = []
    for method, path, headers, chunks, chunked, trailers in reqs:
        body = b"".join(chunks)
        hs = [("host", "example.test"), *headers]
        if chunked:
            hs.append(("transfer-encoding", "chunked"))
        else:
            hs.append(("content-length", str(len(body))))
            trailers = []
        batch.append((h11.Request(method=method, target=path, headers=hs), chunks, trailers))
    results = exchange(threaded.addr, batch)
    for (req, chunks, trailers), got in zip(batch, results):
        assert got["method"] == req.method.decode()
        assert got["target"] == req.target.decode()
        assert got["body"].encode("latin-1") == b"".join(chunks)
        want = [[k.decode(), v.decode()] for k, v in req.headers]
        assert got["headers"] == want
        assert got["trailers"] == [[k.decode(), v.decode()] for k, v in
                                   h11.EndOfMessage(headers=trailers).headers]

"""HTTP/2 server: graceful shutdown with two GOAWAY frames and a PING (RFC 9113 section 6.8),
and the lingering close after every GOAWAY (sections 5.4.1 and 6.8: the GOAWAY and the last
responses must reach a client that is still sending, not be lost to a TCP reset).

The client is the independent ``h2`` package over a plain socket (its state machine is kept
open after a GOAWAY, which h2 would otherwise treat as the end of everything), or curl.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from typing import Any, AsyncIterator, List, Optional, Tuple

import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest
import trustme
from _h2_server_support import BACKENDS, H2Client, curl, h2_serving
from h2.connection import ConnectionInputs, ConnectionState
from tests._waiting import until

from nbio.http import h2_server
from nbio.http.server import HttpRequest, Response

pytestmark = pytest.mark.parametrize("backend", BACKENDS)

MAX_ID = 2**31 - 1
NO_ERROR = h2.errors.ErrorCodes.NO_ERROR


class _OpenAfterGoaway(h2.connection.H2ConnectionStateMachine):
    """h2's state machine, except that a GOAWAY received leaves the connection open: the
    streams at or below its last stream id are still answered (RFC 9113 section 6.8)."""

    def process_input(self, input_: ConnectionInputs) -> List[Any]:
        if input_ is ConnectionInputs.RECV_GOAWAY:
            return []
        return super().process_input(input_)


class _ResetSpy:
    """A StreamReader that notes a read ending in ECONNRESET (which H2Client takes as EOF)."""

    def __init__(self, reader: asyncio.StreamReader, client: Client) -> None:
        self.reader = reader
        self.client = client

    async def read(self, n: int) -> bytes:
        try:
            return await self.reader.read(n)
        except ConnectionResetError:
            self.client.reset = True
            raise


class Client(H2Client):
    """H2Client that survives GOAWAY, can hold back its answers (PING ACK) and tells a
    reset (ECONNRESET) from a clean end of stream."""

    hold = False        # keep h2's output (e.g. PING ACK) instead of sending it
    held = b""
    reset = False       # the connection ended with ECONNRESET

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        sm = _OpenAfterGoaway()
        sm.state = ConnectionState.CLIENT_OPEN
        self.h2.state_machine = sm
        self.reader = _ResetSpy(self.reader, self)  # type: ignore[assignment]

    @classmethod
    async def open(cls, addr: Any) -> Client:
        r, w = await asyncio.open_connection(*addr)
        return cls(r, w)

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if self.hold:
            self.held += data
        elif data and not self.writer.is_closing():
            self.writer.write(data)

    async def goaway(self) -> Any:
        ev = await self.until(h2.events.ConnectionTerminated)
        assert ev is not None, "no GOAWAY"
        return ev

    async def until_eof(self) -> None:
        while await self.pump():
            pass

    async def ends_without_reset(self) -> None:
        """Read until the server's end of stream, which must be a FIN, not an RST."""
        await self.until_eof()
        assert not self.reset, "the connection was reset"

    def send_goaway(self, code: int = 0) -> None:
        """A raw GOAWAY(last stream 0, ``code``), past h2's state machine."""
        self.writer.write(struct.pack(">HBBBIII", 0, 8, 7, 0, 0, 0, code))


def held_app() -> Tuple[Any, asyncio.Event, List[int]]:
    """A handler that answers only once ``release`` is set; ``started`` lists its streams."""
    release = asyncio.Event()
    started: List[int] = []

    async def app(req: HttpRequest) -> Response:
        started.append(1)
        await release.wait()
        return Response(b"finished " + req.path)

    return app, release, started


@contextlib.asynccontextmanager
async def sending(c: Client, chunk: bytes, pause: float = 0.0) -> AsyncIterator[None]:
    """While in the block, the client keeps writing ``chunk`` (every ``pause`` s), as a
    client that has not acted on a GOAWAY yet, until the server closes the connection."""
    async def send() -> None:
        try:
            while True:
                c.writer.write(chunk)
                await c.writer.drain()
                await asyncio.sleep(pause)
        except OSError:
            pass  # closed by the server

    task = asyncio.ensure_future(send())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# -- 6.8 GOAWAY: graceful shutdown ---------------------------------------------------------


async def test_drain_two_goaways_in_flight_streams_complete_then_eof(backend: str) -> None:
    app, release, started = held_app()
    async with h2_serving(app, backend) as (server, addr):
        c = await Client.open(addr)
        s1 = c.request("/one")
        await until(lambda: len(started) == 1)
        server.close()
        drained = asyncio.ensure_future(server.drain(5))
        c.hold = True  # the PING ACK waits: a request the client sent meanwhile goes first
        first = await c.goaway()
        assert (first.error_code, first.last_stream_id) == (NO_ERROR, MAX_ID)
        await c.until(h2.events.PingReceived)
        c.hold = False
        ack, c.held = c.held, b""
        s3 = c.request("/three")  # sent before the client "saw" the GOAWAY
        c.writer.write(ack)
        second = await c.goaway()
        assert (second.error_code, second.last_stream_id) == (NO_ERROR, s3)
        await until(lambda: len(started) == 2)  # the stream taken in that round trip runs
        release.set()
        assert (await c.response(s1))[1] == b"finished /one"
        assert (await c.response(s3))[1] == b"finished /three"
        await c.until_eof()
        assert c.closed and not c.reset
        await c.close()  # the server, lingering, closes as soon as the client does
        assert await drained is True


async def test_drain_streams_after_the_final_goaway_are_refused(backend: str) -> None:
    app, release, started = held_app()
    async with h2_serving(app, backend) as (server, addr):
        c = await Client.open(addr)
        s1 = c.request("/one")
        await until(lambda: len(started) == 1)
        server.close()
        drained = asyncio.ensure_future(server.drain(5))
        assert (await c.goaway()).last_stream_id == MAX_ID
        assert (await c.goaway()).last_stream_id == s1
        s3 = c.request("/late")
        ev = await c.until(h2.events.StreamReset)
        assert ev.stream_id == s3 and ev.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
        release.set()
        assert (await c.response(s1))[1] == b"finished /one"
        await c.until_eof()
        assert not c.reset and len(started) == 1
        await c.close()  # the server, lingering, closes as soon as the client does
        assert await drained is True


async def test_drain_unanswered_ping_final_goaway_after_bound(
        backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h2_server, "DRAIN_PING_TIMEOUT", 0.05)
    app, release, started = held_app()
    async with h2_serving(app, backend) as (server, addr):
        c = await Client.open(addr)
        s1 = c.request("/one")
        await until(lambda: len(started) == 1)
        c.hold = True  # never answers the PING
        server.close()
        drained = asyncio.ensure_future(server.drain(5))
        assert (await c.goaway()).last_stream_id == MAX_ID
        assert (await c.goaway()).last_stream_id == s1
        c.hold = False
        c.held = b""
        release.set()
        assert (await c.response(s1))[1] == b"finished /one"
        await c.ends_without_reset()
        await c.close()  # the server, lingering, closes as soon as the client does
        assert await drained is True


async def test_drain_idle_connection(backend: str) -> None:
    async with h2_serving(held_app()[0], backend) as (server, addr):
        c = await Client.open(addr)
        await c.until(h2.events.RemoteSettingsChanged)
        server.close()
        drained = asyncio.ensure_future(server.drain(5))
        assert (await c.goaway()).last_stream_id == MAX_ID
        assert (await c.goaway()).last_stream_id == 0
        await c.ends_without_reset()
        await c.close()  # the server, lingering, closes as soon as the client does
        assert await drained is True


async def _drain_while_curl_fetches(backend: str, path: str, *curl_args: str,
                                    ssl_ctx: Optional[ssl.SSLContext] = None) -> None:
    """curl (given the URL's scheme and port by ``curl_args``' format) fetches ``path``
    while the server drains: the response completes and the drain ends."""
    app, release, started = held_app()
    async with h2_serving(app, backend, ssl_ctx=ssl_ctx) as (server, addr):
        args = [a.format(host=addr[0], port=addr[1], path=path) for a in curl_args]
        fetch = asyncio.ensure_future(curl(*args))
        await until(lambda: len(started) == 1)
        server.close()
        drained = asyncio.ensure_future(server.drain(5))
        await until(lambda: all(getattr(s, "going_away", False) for s in server.sessions))  # both GOAWAYs sent
        release.set()
        assert await fetch == f"finished {path}".encode()
        assert await drained is True


async def test_drain_with_curl_completes_the_response(backend: str) -> None:
    await _drain_while_curl_fetches(backend, "/curl", "--http2-prior-knowledge",
                                    "http://{host}:{port}{path}")


async def test_drain_over_tls_with_curl(backend: str, tmp_path: Any) -> None:
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    await _drain_while_curl_fetches(backend, "/tls", "--http2", "--cacert", str(cafile),
                                    "--resolve", "localhost:{port}:127.0.0.1",
                                    "https://localhost:{port}{path}", ssl_ctx=ctx)


# -- 5.4.1 connection error handling: GOAWAY, then a lingering close ------------------------

# PING on stream 1 (PING must be on stream 0): a connection error PROTOCOL_ERROR
_BAD_FRAME = struct.pack(">HBBBI", 0, 8, 6, 0, 1) + b"\0" * 8


def _data_frame(sid: int, size: int) -> bytes:
    return struct.pack(">HBBBI", size >> 8, size & 0xFF, 0, 0, sid) + b"x" * size


async def _open_upload(addr: Any) -> Tuple[Client, int]:
    c = await Client.open(addr)
    await c.until(h2.events.RemoteSettingsChanged)
    return c, c.request("/upload", method="POST", end=False)


async def test_client_sending_after_error_goaway_still_reads_it(backend: str) -> None:
    async with h2_serving(held_app()[0], backend) as (server, addr):
        c, sid = await _open_upload(addr)
        # the bad frame, then more DATA right behind it: unread when the server gives up
        c.writer.write(_BAD_FRAME + _data_frame(sid, 16384) * 64)
        ev = await c.goaway()
        assert ev.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
        assert not c.reset
        # the client goes on sending (it has not acted on the GOAWAY yet): the server reads
        # and discards, and closes within the bound (here: the byte limit)
        async with sending(c, _data_frame(sid, 16384)):
            await asyncio.wait_for(server.drain(), 3)  # the connection is gone
        await c.close()


async def test_queued_response_and_goaway_not_lost_to_a_reset(backend: str) -> None:
    # The client is busy sending and has not read a large response yet when its bad frame
    # arrives: a plain close (unread bytes -> RST) would discard what the server's kernel had
    # not delivered yet, the end of the response and the GOAWAY.
    size = 3 * 1024 * 1024
    served = asyncio.Event()

    def big(req: HttpRequest) -> Response:
        served.set()
        return Response(b"b" * size)

    async with h2_serving(big, backend) as (_server, addr):
        r, w = await asyncio.open_connection(*addr)
        c = Client(r, w)
        c.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        c.h2.increment_flow_control_window(2**30)
        c.flush()
        await c.until(h2.events.RemoteSettingsChanged)
        up = c.request("/upload", method="POST", end=False)
        sid = c.request("/big")
        await asyncio.wait_for(served.wait(), 5)
        c.writer.write(_BAD_FRAME)
        body = b""
        goaway = None
        more = _data_frame(up, 16384) * 3  # sent once the server has stopped reading
        while not c.closed:
            evs = await c.pump()
            if more:
                c.writer.write(more)
                more = b""
            for ev in evs:
                if isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    body += ev.data
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    goaway = ev
        assert len(body) == size
        assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
        assert not c.reset
        await c.close()


async def test_lingering_close_is_bounded_for_a_client_that_never_closes(backend: str) -> None:
    async with h2_serving(held_app()[0], backend) as (server, addr):
        server._h2_parts()[0].lingering.timeout = 0.2
        c, _sid = await _open_upload(addr)
        c.writer.write(_BAD_FRAME)
        assert (await c.goaway()).error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
        await c.until_eof()  # the server half-closed: FIN after the GOAWAY
        assert not c.reset
        # the client keeps its side open and silent: the server closes anyway
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.wait_for(server.drain(), 3)
        assert loop.time() - t0 < 1.5
        await c.close()


async def test_lingering_bound_not_pushed_back_by_reads(backend: str) -> None:
    async with h2_serving(held_app()[0], backend) as (server, addr):
        lingering = server._h2_parts()[0].lingering
        lingering.timeout = 0.2
        lingering.max_bytes = 1 << 40
        c, sid = await _open_upload(addr)
        c.writer.write(_BAD_FRAME)
        assert (await c.goaway()).error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        async with sending(c, _data_frame(sid, 100), pause=0.01):  # a read every 10 ms
            await asyncio.wait_for(server.drain(), 3)
        assert loop.time() - t0 < 1.5
        await c.close()


# -- 6.8: a GOAWAY from the client -----------------------------------------------------------


async def test_client_goaway_answered_with_goaway_then_lingering_close(backend: str) -> None:
    async with h2_serving(held_app()[0], backend) as (server, addr):
        c = await Client.open(addr)
        await c.until(h2.events.RemoteSettingsChanged)
        c.send_goaway()
        ev = await c.goaway()
        assert (ev.error_code, ev.last_stream_id) == (NO_ERROR, 0)
        await c.ends_without_reset()
        await c.close()
        await asyncio.wait_for(server.drain(), 3)


async def test_client_goaway_streams_in_flight_still_answered(backend: str) -> None:
    app, release, started = held_app()
    async with h2_serving(app, backend) as (server, addr):
        c = await Client.open(addr)
        s1 = c.request("/one")
        await until(lambda: len(started) == 1)
        c.send_goaway()
        await until(lambda: all(getattr(s, "going_away", False) for s in server.sessions))
        release.set()
        assert (await c.response(s1))[1] == b"finished /one"
        ev = await c.goaway()
        assert (ev.error_code, ev.last_stream_id) == (NO_ERROR, s1)
        await c.ends_without_reset()
        await c.close()
        await asyncio.wait_for(server.drain(), 3)


async def test_client_error_goaway_drops_streams_and_closes(backend: str) -> None:
    app, _release, started = held_app()
    async with h2_serving(app, backend) as (server, addr):
        c = await Client.open(addr)
        c.request("/one")
        await until(lambda: len(started) == 1)
        code = h2.errors.ErrorCodes.INTERNAL_ERROR
        c.send_goaway(code)
        ev = await c.goaway()
        assert ev.last_stream_id == 1
        await c.until_eof()
        await c.close()
        await asyncio.wait_for(server.drain(), 3)


# -- 6.8: GOAWAY before closing an idle connection (keep_alive_timeout) ----------------------


def _terminated(c: Client) -> bool:
    return any(isinstance(ev, h2.events.ConnectionTerminated) for ev in c.events)


async def test_idle_connection_gets_goaway_last_stream_then_eof(backend: str) -> None:
    app, release, _ = held_app()
    release.set()
    async with h2_serving(app, backend, keep_alive_timeout=0.1) as (server, addr):
        c = await Client.open(addr)
        s1 = c.request("/one")
        s3 = c.request("/two")
        assert (await c.response(s1))[1] == b"finished /one"
        assert (await c.response(s3))[1] == b"finished /two"
        ev = await c.goaway()
        assert (ev.error_code, ev.last_stream_id) == (NO_ERROR, s3)
        await c.until_eof()  # the lingering close: FIN, no reset
        assert c.closed and not c.reset
        await c.close()
        await until(lambda: not server.sessions)


async def test_idle_connection_without_streams_gets_goaway_0(backend: str) -> None:
    async with h2_serving(held_app()[0], backend, keep_alive_timeout=0.1) as (server, addr):
        c = await Client.open(addr)
        ev = await c.goaway()
        assert (ev.error_code, ev.last_stream_id) == (NO_ERROR, 0)
        await c.ends_without_reset()
        await c.close()
        await until(lambda: not server.sessions)


async def test_stream_in_flight_is_not_timed_out(backend: str) -> None:
    app, release, started = held_app()
    async with h2_serving(app, backend, keep_alive_timeout=0.1) as (server, addr):
        c = await Client.open(addr)
        s1 = c.request("/slow")
        await until(lambda: len(started) == 1)
        # a second, idle connection opened later is the clock: once it is timed out, the
        # first connection's keep-alive timer has fired too (with the stream running)
        clock = await Client.open(addr)
        assert (await clock.goaway()).last_stream_id == 0
        await clock.close()
        assert not _terminated(c) and not c.closed
        release.set()
        assert (await c.response(s1))[1] == b"finished /slow"
        assert not _terminated(c)  # no GOAWAY before the response
        ev = await c.goaway()      # idle from the end of the stream on
        assert (ev.error_code, ev.last_stream_id) == (NO_ERROR, s1)
        await c.ends_without_reset()
        await c.close()
        await until(lambda: not server.sessions)


async def test_requests_keep_the_connection_from_idling(backend: str) -> None:
    """Streams ending less than keep_alive_timeout apart: no GOAWAY however long it lasts."""
    app, release, _ = held_app()
    release.set()
    async with h2_serving(app, backend, keep_alive_timeout=0.5) as (_server, addr):
        c = await Client.open(addr)
        loop = asyncio.get_running_loop()
        end = loop.time() + 1.1
        last = 0
        while loop.time() < end:
            last = c.request("/again")
            assert (await c.response(last))[1] == b"finished /again"
            assert not _terminated(c)
        ev = await c.goaway()
        assert (ev.error_code, ev.last_stream_id) == (NO_ERROR, last)
        await c.until_eof()
        await c.close()


async def test_idle_timer_cancelled_when_the_client_closes(backend: str) -> None:
    async with h2_serving(held_app()[0], backend, keep_alive_timeout=30) as (server, addr):
        c = await Client.open(addr)
        await c.until(h2.events.RemoteSettingsChanged)
        session = next(iter(server.sessions))
        assert isinstance(session, h2_server.H2Session) and session.idle_timer is not None
        timer = session.idle_timer
        await c.close()
        await until(lambda: not server.sessions)
        assert session.idle_timer is None and timer.cancelled()

"""Packet loss, simulated in-process: a UDP relay between client and server drops every Nth
datagram in each direction; QUIC retransmits and no request is lost (RFC 9002)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from tests.http3._h3_support import Certs, LossyRelay, aioquic_client, make_certs

from nbio.engine import Engine
from nbio.http.server import Response
from nbio.http3 import H3Client, H3Server


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path)


async def echo(req: Any) -> Any:
    body = await req.read()
    return Response(req.path + b":" + body)


@pytest.mark.parametrize("every", [5, 10])
async def test_our_client_and_server_lose_no_request(certs: Certs, every: int) -> None:
    async with Engine() as engine:
        server = await H3Server.start(echo, certfile=certs.certfile, keyfile=certs.keyfile,
                                      engine=engine)
        relay = await LossyRelay.start(server.address[:2], every)
        try:
            async with H3Client(cadata=certs.ca_pem, engine=engine) as client:
                base = f"https://localhost:{relay.address[1]}"
                small = await asyncio.gather(
                    *[client.post(f"{base}/{i}", body=b"v%d" % i) for i in range(30)]
                )
                assert [r.content for r in small] == [b"/%d:v%d" % (i, i) for i in range(30)]
                payload = bytes(range(256)) * 400  # 100 kB each way: many packets lost
                big = await client.post(base + "/big", body=payload)
                assert big.content == b"/big:" + payload
        finally:
            relay.close()
            server.close()
            await server.wait_closed()
    assert relay.dropped_up > 3 and relay.dropped_down > 3


async def test_aioquic_client_through_loss(certs: Certs) -> None:
    async with Engine() as engine:
        server = await H3Server.start(echo, certfile=certs.certfile, keyfile=certs.keyfile,
                                      engine=engine)
        relay = await LossyRelay.start(server.address[:2], 6)
        try:
            async with aioquic_client(*relay.address, certs.ca_pem) as client:
                replies = await asyncio.gather(
                    *[client.request(b"POST", b"/%d" % i, body=b"x" * (i * 1000))
                      for i in range(20)]
                )
        finally:
            relay.close()
            server.close()
            await server.wait_closed()
    assert [r.body for r in replies] == [b"/%d:" % i + b"x" * (i * 1000) for i in range(20)]
    assert relay.dropped_up > 0 and relay.dropped_down > 0

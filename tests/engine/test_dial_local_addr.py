"""``Engine.dial(local_addr=...)``: binding the client socket's source address (both backends)."""

from __future__ import annotations

import errno
import os
import socket

import pytest
from tests.engine._engine_support import Recorder, make_engine


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_dial_binds_the_source_address(engine: str) -> None:
    async with make_engine(engine) as eng:
        srv = Recorder(echo=True)
        lst = eng.listen(srv, "127.0.0.1", 0)
        cli = Recorder()
        conn = await eng.dial(cli, *lst.address, local_addr=("127.0.0.2", 0), timeout=5)
        assert conn.local_address[0] == "127.0.0.2"
        assert conn.local_address[1] != 0
        await srv.wait_for(lambda: srv.opened)
        assert srv.opened[0].remote_address == conn.local_address
        conn.write(b"ping")
        await cli.wait_for(lambda: bytes(cli.data) == b"ping")


async def test_dials_from_one_source_address_get_distinct_ports(engine: str) -> None:
    async with make_engine(engine) as eng:
        srv = Recorder()
        lst = eng.listen(srv, "127.0.0.1", 0)
        conns = [
            await eng.dial(Recorder(), *lst.address, local_addr=("127.0.0.3", 0), timeout=5)
            for _ in range(5)
        ]
        assert {c.local_address[0] for c in conns} == {"127.0.0.3"}
        assert len({c.local_address[1] for c in conns}) == 5
        await srv.wait_for(lambda: len(srv.opened) == 5)


async def test_dial_binds_an_explicit_source_port(engine: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.4", 0))
        port = probe.getsockname()[1]
    async with make_engine(engine) as eng:
        lst = eng.listen(Recorder(), "127.0.0.1", 0)
        conn = await eng.dial(Recorder(), *lst.address, local_addr=("127.0.0.4", port), timeout=5)
        assert conn.local_address == ("127.0.0.4", port)


async def test_unusable_source_address_raises_and_leaks_nothing(engine: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        async with make_engine(engine) as eng:
            lst = eng.listen(Recorder(), "127.0.0.1", 0)
            before = _open_fds()
            with pytest.raises(OSError) as info:
                await eng.dial(Recorder(), *lst.address, local_addr=taken.getsockname(), timeout=5)
            assert info.value.errno == errno.EADDRINUSE
            assert _open_fds() == before
            assert eng.stats()["open"] == 0


async def test_local_addr_with_a_unix_path_is_refused(engine: str) -> None:
    async with make_engine(engine) as eng:
        with pytest.raises(ValueError):
            await eng.dial(Recorder(), path="/nonexistent.sock", local_addr=("127.0.0.1", 0))

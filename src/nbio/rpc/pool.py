"""A pool of RPC clients with round-robin over the healthy (connected) ones."""

from __future__ import annotations

import asyncio
from typing import Any, Iterator, List, Optional, Sequence

from nbio.errors import NotConnected
from nbio.rpc.client import Client

__all__ = ["ClientPool"]


class ClientPool:
    """Round-robin over ``clients``, skipping those not connected (e.g. reconnecting).

    ``await ClientPool.connect(n, host, port, **client_options)`` builds and connects
    ``n`` clients. ``pool.next()`` picks a client; ``call``/``call_async``/``notify`` go
    through it; with no healthy client they raise :class:`~nbio.errors.NotConnected`.
    """

    def __init__(self, clients: Sequence[Client]) -> None:
        if not clients:
            raise ValueError("ClientPool needs at least one client")
        self.clients: List[Client] = list(clients)
        self._next = 0

    @classmethod
    async def connect(
        cls, size: int, host: Optional[str] = None, port: Optional[int] = None, **options: Any
    ) -> ClientPool:
        clients = [Client(host, port, **options) for _ in range(size)]
        try:
            await asyncio.gather(*(c.connect() for c in clients))
        except BaseException:
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
            raise
        return cls(clients)

    def __len__(self) -> int:
        return len(self.clients)

    def __iter__(self) -> Iterator[Client]:
        return iter(self.clients)

    @property
    def healthy(self) -> List[Client]:
        return [c for c in self.clients if c.connected]

    def next(self) -> Client:
        """The next connected client in round-robin order."""
        clients = self.clients
        n = len(clients)
        for _ in range(n):
            c = clients[self._next % n]
            self._next = (self._next + 1) % n
            if c.connected:
                return c
        raise NotConnected("no client of the pool is connected")

    async def call(self, method: str, value: Any = None, **kw: Any) -> Any:
        return await self.next().call(method, value, **kw)

    def call_async(self, method: str, value: Any, callback: Any, **kw: Any) -> None:
        self.next().call_async(method, value, callback, **kw)

    def notify(self, method: str, value: Any = None) -> None:
        self.next().notify(method, value)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)

    async def __aenter__(self) -> ClientPool:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

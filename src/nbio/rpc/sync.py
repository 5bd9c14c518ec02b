"""A synchronous RPC client for code that is not async: it runs an event loop in a thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Callable, Coroutine, Optional

from nbio.rpc.client import Client
from nbio.rpc.router import Router

__all__ = ["SyncClient"]


class SyncClient:
    """Blocking wrapper of :class:`~nbio.rpc.client.Client`::

        with SyncClient("127.0.0.1", port) as c:
            print(c.call("/echo", "hi", as_type=str))

    A daemon thread runs a private event loop with the client (same options as
    ``Client``); ``call`` / ``notify`` block the calling thread only. Handlers of the
    ``router`` (calls from the server) run in that loop's thread.
    """

    def __init__(
        self,
        host: Optional[str] = None,
        port: Optional[int] = None,
        *,
        connect_timeout: float = 10.0,
        **options: Any,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="nbio-rpc-sync", daemon=True)
        self._thread.start()
        self._closed = False
        options["connect_timeout"] = connect_timeout

        async def make() -> Client:
            return Client(host, port, **options)

        try:
            self.client: Client = self._submit(make(), None)
            self._submit(self.client.connect(), None)
        except BaseException:
            self._closed = True
            self._stop()
            raise

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _submit(self, coro: Coroutine[Any, Any, Any], timeout: Optional[float]) -> Any:
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise

    @property
    def router(self) -> Router:
        return self.client.router

    @property
    def connected(self) -> bool:
        return self.client.connected

    def call(
        self,
        method: str,
        value: Any = None,
        *,
        timeout: Optional[float] = None,
        as_type: Any = None,
    ) -> Any:
        """Call ``method`` and block until the answer (RpcError / RpcTimeout /
        ConnectionLost as for the async client)."""
        return self._submit(self.client.call(method, value, timeout=timeout, as_type=as_type), None)

    def notify(self, method: str, value: Any = None) -> None:
        async def go() -> None:
            self.client.notify(method, value)

        self._submit(go(), None)

    def call_async(
        self,
        method: str,
        value: Any,
        callback: Callable[[Any, Optional[BaseException]], Any],
        **kw: Any,
    ) -> None:
        """Callback-style call; the callback runs in the client's loop thread."""

        async def go() -> None:
            self.client.call_async(method, value, callback, **kw)

        self._submit(go(), None)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._submit(self.client.close(), 10.0)
        finally:
            self._stop()

    def _stop(self) -> None:
        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            engine = self._engine_of_client()
            if engine is not None:
                await engine.close()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10.0)
        except Exception:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10.0)
        self._loop.close()

    def _engine_of_client(self) -> Any:
        client = getattr(self, "client", None)
        return None if client is None else client._engine

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        if not getattr(self, "_closed", True) and self._loop.is_running():
            try:
                self.close()
            except Exception:
                pass

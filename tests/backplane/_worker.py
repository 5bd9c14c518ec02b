"""A worker process for the multi-process tests: an RPC pub/sub server whose backplane is
Redis. Prints its port, serves until stdin closes. ``/bp/stats`` answers the backplane's
stats plus the errors its ``on_error`` callback received.

Usage: python _worker.py REDIS_URL
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, List


async def main(url: str) -> None:
    from nbio.backplane_redis import RedisBackplane
    from nbio.rpc import PubSubServer, Server

    errors: List[str] = []
    plane = RedisBackplane(
        url,
        on_error=lambda exc: errors.append(f"{type(exc).__name__}: {exc}"),
        reconnect_interval=0.02,
        max_reconnect_interval=0.1,
    )
    await plane.start(timeout=10)
    server = Server()
    pubsub = PubSubServer(server, backplane=plane)

    def stats(ctx: Any) -> Any:
        return {**plane.stats(), "errors_reported": errors}

    server.handle("/bp/stats", stats)
    _host, port = await server.listen("127.0.0.1", 0)
    print(port, flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the test closes our stdin
    pubsub.close()
    await server.close()
    await plane.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

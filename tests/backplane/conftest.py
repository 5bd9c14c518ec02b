"""Fixtures for the backplane tests: a real redis-server per test, on a free port."""

from __future__ import annotations

from typing import Iterator

import pytest
from tests.backplane._redis import RedisProcess, require_redis_server


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    """A fresh redis-server (no persistence), killed at the end of the test."""
    require_redis_server()
    server = RedisProcess()
    server.start()
    try:
        yield server
    finally:
        server.stop()

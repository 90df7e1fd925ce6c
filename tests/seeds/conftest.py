"""Fixtures of the examples translated from other systems: a real Redis on a free port."""

from __future__ import annotations

from typing import Any

import pytest
from pytest_redis import factories

from tests.backends.conftest import redis_binary

redis_server = factories.redis_proc(executable=redis_binary(), port=None)


@pytest.fixture
def redis_url(redis_server: Any) -> str:
    """The URL of a throwaway redis-server of this test session."""
    return f"redis://{redis_server.host}:{redis_server.port}/0"

"""The router against the emulator through real boto3 clients, redis-server as the fleet store, and the
emulator's AppConfig extension stand-in: one LocalWorld per module, reset before every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local.localrun import Latency, LocalWorld


@pytest.fixture(scope="module")
def world_started() -> Iterator[LocalWorld]:
    with LocalWorld(latency=Latency(ttft_ms=5.0, ms_per_token=0.0), config_ttl_s=0.3) as world:
        yield world


@pytest.fixture
def world(world_started: LocalWorld) -> LocalWorld:
    world_started.reset()
    return world_started

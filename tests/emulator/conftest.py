"""Fixtures for the emulator's tests: a running emulator, real boto3 clients, a fake clock, thread checks."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

from local.emulator import Emulator, TargetSpec
from tests.fakes import FakeClock

PT_ARN = "arn:aws:bedrock:us-east-1:111122223333:provisioned-model/abc123def456"
PROFILE = "us.anthropic.claude-sonnet-4-v1:0"
MODEL = "anthropic.claude-sonnet-4-v1:0"
ENDPOINT = "llama-escrow"
EAST, WEST = "us-east-1", "us-west-2"


def default_targets() -> list[TargetSpec]:
    return [
        TargetSpec(EAST, "bedrock", PT_ARN, name="sonnet-pt"),
        TargetSpec(EAST, "bedrock", PROFILE, name="sonnet-od", echo=True),
        TargetSpec(WEST, "bedrock", MODEL, aliases=(f"us.{MODEL}",)),
        TargetSpec(EAST, "sagemaker", ENDPOINT, echo=True),
        TargetSpec(WEST, "sagemaker", ENDPOINT),
    ]


def _emulator_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("emulator-") or "process_request" in t.name]


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every test must leave no emulator thread behind once its emulators are stopped."""
    before = set(_emulator_threads())
    yield
    deadline = time.monotonic() + 2.0
    leaked = [t for t in _emulator_threads() if t not in before]
    while leaked and time.monotonic() < deadline:
        time.sleep(0.01)
        leaked = [t for t in _emulator_threads() if t not in before and t.is_alive()]
    assert not leaked, f"leaked threads: {leaked}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def emu(clock: FakeClock) -> Iterator[Emulator]:
    with Emulator(default_targets(), clock=clock) as emulator:
        yield emulator


ClientFactory = Callable[..., Any]


@pytest.fixture
def client(emu: Emulator) -> ClientFactory:
    """``client("bedrock-runtime", region, read_timeout=..., retries=...)``: a real boto3 client on the emulator.

    Retries are off: in botocore ``max_attempts`` counts retries, ``total_max_attempts`` counts attempts.
    """
    return make_factory(emu)


def make_factory(emu: Emulator) -> ClientFactory:
    made: dict[tuple[str, str, float, str], Any] = {}

    def make(service: str, region: str = EAST, read_timeout: float = 5.0, retries: dict[str, Any] | None = None) -> Any:
        key = (service, region, read_timeout, json.dumps(retries, sort_keys=True))
        if key not in made:  # one client per kind: creating clients is the slow part of these tests
            made[key] = _new_client(emu, service, region, read_timeout, retries)
        return made[key]

    return make


def _new_client(emu: Emulator, service: str, region: str, read_timeout: float, retries: dict[str, Any] | None) -> Any:
    return boto3.client(
        service,
        region_name=region,
        endpoint_url=emu.endpoint_url(region),
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(
            retries=retries or {"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=2,
            read_timeout=read_timeout,
            max_pool_connections=32,
        ),
    )


def converse_kwargs(model_id: str, text: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"modelId": model_id, "messages": [{"role": "user", "content": [{"text": text}]}], **extra}


def chat_body(text: str = "hello there", max_tokens: int | None = None) -> bytes:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": text}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return json.dumps(body).encode()

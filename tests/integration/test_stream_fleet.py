"""The converse-stream route through the Lambda-shaped fleet world: each chunk leaves the execution environment
as the function yields it, and the environment is idle (frozen) again once its stream has ended."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from botocore.credentials import Credentials

from local.localrun import FleetWorld, Latency
from tools.stream_router import converse_stream

CREDS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
FEATURE = "summarize-thread"
PT = "claude-sonnet/provisioned/us-east-1"
REQUEST = {"messages": [{"role": "user", "content": [{"text": "stream through the fleet"}]}]}


@pytest.fixture(scope="module")
def fleet() -> Iterator[FleetWorld]:
    with FleetWorld(
        reserved_concurrency=1,
        latency=Latency(ttft_ms=5.0, ms_per_token=40.0),
        config_ttl_s=0.3,
    ) as world:
        yield world


def test_chunks_pass_through_as_they_come(fleet: FleetWorld) -> None:
    model_id = fleet.table_doc["targets"][PT]["backend"]["model_id"]
    key = ("us-east-1", "bedrock", model_id)
    status, headers, events = converse_stream(fleet.url, FEATURE, REQUEST, "us-east-1", credentials=CREDS)
    assert status == 200
    assert {k.lower(): v for k, v in headers.items()}["x-spillway-target"] == PT
    first_name, _ = next(events)
    second_name, _ = next(events)
    assert (first_name, second_name) == ("messageStart", "contentBlockDelta")
    # The first token reached the caller while the model was still streaming: nothing waited for the end.
    assert fleet.emu.target_stats(key)["in_flight"] == 1
    rest = list(events)
    assert rest[-1][0] == "spillway"
    assert rest[-1][1]["complete"] is True
    # The environment went back to idle: a buffered call after it is served by the same (only) environment.
    reply = fleet.http.converse(FEATURE)
    assert reply.status == 200
    [environment] = fleet.functions.environments()
    assert environment.api.nexts == 3  # both events through the Runtime API, streamed and buffered
    assert environment.api.violations == []


def test_the_openai_doors_chunks_pass_through_as_they_come(fleet: FleetWorld) -> None:
    """The `openai` package with stream=True in the production shape: its first content chunk arrives while the
    model is still streaming, and the stream ends with its finish_reason."""
    pytest.importorskip("openai", reason="the openai package is in requirements-dev.txt only")
    from tools.openai_client import client  # noqa: PLC0415 (needs the openai package)

    model_id = fleet.table_doc["targets"][PT]["backend"]["model_id"]
    key = ("us-east-1", "bedrock", model_id)
    stream = client(fleet.url, "us-east-1", credentials=CREDS).chat.completions.create(
        model=FEATURE, messages=[{"role": "user", "content": "stream through the fleet"}], stream=True
    )
    chunks = iter(stream)
    assert next(chunks).choices[0].delta.role == "assistant"
    assert next(chunks).choices[0].delta.content
    assert fleet.emu.target_stats(key)["in_flight"] == 1  # nothing waited for the end
    rest = list(chunks)
    assert rest[-1].choices[0].finish_reason == "stop"

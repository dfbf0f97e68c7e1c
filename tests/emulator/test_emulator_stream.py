"""Streams: ConverseStream and InvokeEndpointWithResponseStream read by real boto3 clients, and their faults."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from botocore.exceptions import ClientError, EventStreamError
from urllib3.exceptions import ReadTimeoutError  # botocore does not wrap read errors while iterating a stream

from local.emulator import Emulator, Fault, TargetSpec
from local.emulator.eventstream import encode_message, event, exception
from local.emulator.eventstream_replies import tokens_of
from tests.emulator.conftest import (
    EAST,
    ENDPOINT,
    PROFILE,
    PT_ARN,
    ClientFactory,
    chat_body,
    converse_kwargs,
)


def _drain(stream: Any, seen: list[str]) -> None:
    """Read a stream to its end, noting each event's name as it arrives."""
    for item in stream:
        seen.append(next(iter(item)))


def _events(client: Any, **kwargs: Any) -> list[dict[str, Any]]:
    return list(client.converse_stream(**kwargs)["stream"])


def _sse_chunks(client: Any, body: bytes) -> tuple[dict[str, Any], list[str]]:
    """(the response's headers, the container's `data:` lines) of an InvokeEndpointWithResponseStream."""
    response = client.invoke_endpoint_with_response_stream(
        EndpointName=ENDPOINT, Body=body, ContentType="application/json"
    )
    raw = b"".join(part["PayloadPart"]["Bytes"] for part in response["Body"])
    lines = [line[len("data: ") :] for line in raw.decode().split("\n") if line.startswith("data: ")]
    return response, lines


# Framing -------------------------------------------------------------------------------------------


def test_frames_decode_with_botocore_and_carry_the_aws_headers() -> None:
    buffer = EventStreamBuffer()
    buffer.add_data(event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "hi"}}))
    buffer.add_data(exception("throttlingException", {"message": "slow down"}))
    first, second = list(buffer)
    assert first.headers == {
        ":event-type": "contentBlockDelta",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert json.loads(first.payload) == {"contentBlockIndex": 0, "delta": {"text": "hi"}}
    assert second.headers[":message-type"] == "exception"
    assert second.headers[":exception-type"] == "throttlingException"


def test_a_flipped_byte_fails_botocores_crc_check() -> None:
    good = encode_message({":event-type": "x"}, b"payload")
    bad = good[:-5] + bytes([good[-5] ^ 1]) + good[-4:]
    buffer = EventStreamBuffer()
    buffer.add_data(bad)
    with pytest.raises(ChecksumMismatch):
        list(buffer)


def test_tokens_join_to_the_text_and_respect_the_count() -> None:
    text = "one two three four five"
    assert "".join(tokens_of(text, 3)) == text
    assert len(tokens_of(text, 3)) == 3
    assert tokens_of(text, 10) == ["one ", "two ", "three ", "four ", "five"]


# ConverseStream ------------------------------------------------------------------------------------


def test_converse_stream_events_in_bedrocks_order(client: ClientFactory, emu: Emulator) -> None:
    events = _events(client("bedrock-runtime"), **converse_kwargs(PROFILE, "echo this back please"))
    names = [next(iter(e)) for e in events]
    assert names[0] == "messageStart"
    assert names[-3:] == ["contentBlockStop", "messageStop", "metadata"]
    assert set(names[1:-3]) == {"contentBlockDelta"}
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == "echo this back please"  # the echo target repeats the last user message
    assert events[-2]["messageStop"]["stopReason"] == "end_turn"
    usage = events[-1]["metadata"]["usage"]
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]
    assert emu.target_stats((EAST, "bedrock", PROFILE))["served"] == 1


def test_converse_stream_token_cap_is_max_tokens(client: ClientFactory) -> None:
    kwargs = converse_kwargs(PT_ARN, inferenceConfig={"maxTokens": 3})
    events = _events(client("bedrock-runtime"), **kwargs)
    deltas = [e for e in events if "contentBlockDelta" in e]
    assert len(deltas) == 3
    assert events[-2]["messageStop"]["stopReason"] == "max_tokens"


def test_error_before_the_first_token_is_an_http_error(client: ClientFactory, emu: Emulator) -> None:
    emu.set_fault((EAST, "bedrock", PT_ARN), Fault.throttle(count=1))
    with pytest.raises(ClientError) as caught:
        client("bedrock-runtime").converse_stream(**converse_kwargs(PT_ARN))
    assert caught.value.response["Error"]["Code"] == "ThrottlingException"


@pytest.mark.parametrize(
    ("alias", "code"),
    [
        ("throttling", "throttlingException"),
        ("model_stream_error", "modelStreamErrorException"),
        ("internal", "internalServerException"),
        ("unavailable", "serviceUnavailableException"),
        ("validation", "validationException"),
    ],
)
def test_modeled_exception_event_mid_stream(client: ClientFactory, emu: Emulator, alias: str, code: str) -> None:
    emu.set_fault((EAST, "bedrock", PT_ARN), Fault.stream_error(alias, after_tokens=2, count=1))
    seen: list[str] = []
    stream = client("bedrock-runtime").converse_stream(**converse_kwargs(PT_ARN))["stream"]
    with pytest.raises(EventStreamError) as caught:
        _drain(stream, seen)
    assert caught.value.response["Error"]["Code"] == code
    assert seen == ["messageStart", "contentBlockDelta", "contentBlockDelta"]


def test_connection_dropped_mid_stream(client: ClientFactory, emu: Emulator) -> None:
    emu.set_fault((EAST, "bedrock", PT_ARN), Fault.drop(after_tokens=1, count=1))
    seen: list[str] = []
    stream = client("bedrock-runtime").converse_stream(**converse_kwargs(PT_ARN))["stream"]
    with pytest.raises(Exception) as caught:  # noqa: PT011 (urllib3's error class depends on the moment)
        _drain(stream, seen)
    assert "messageStop" not in seen
    assert seen[:2] == ["messageStart", "contentBlockDelta"]
    assert not isinstance(caught.value, EventStreamError)


def test_stall_mid_stream_hits_the_read_timeout(client: ClientFactory, emu: Emulator) -> None:
    emu.set_fault((EAST, "bedrock", PT_ARN), Fault.stall(seconds=5, after_tokens=1, count=1))
    seen: list[str] = []
    stream = client("bedrock-runtime", read_timeout=0.3).converse_stream(**converse_kwargs(PT_ARN))["stream"]
    with pytest.raises(ReadTimeoutError):
        _drain(stream, seen)
    assert seen == ["messageStart", "contentBlockDelta"]


def test_a_short_stall_delays_then_completes(client: ClientFactory, emu: Emulator) -> None:
    emu.set_fault((EAST, "bedrock", PT_ARN), Fault.stall(seconds=0.05, after_tokens=1, count=1))
    names = [next(iter(e)) for e in _events(client("bedrock-runtime"), **converse_kwargs(PT_ARN))]
    assert names[-1] == "metadata"


def test_slow_first_token_comes_after_messagestart(client: ClientFactory, emu: Emulator) -> None:
    """The headers and messageStart leave at once; the first delta waits: first byte is not first token."""
    emu.set_fault((EAST, "bedrock", PT_ARN), Fault.slow_first_token(30.0, count=1))
    stream = client("bedrock-runtime", read_timeout=10.0).converse_stream(**converse_kwargs(PT_ARN))["stream"]
    first = next(iter(stream))  # would time out (10 s < 30 s) if messageStart waited for the first token
    assert "messageStart" in first
    stats = emu.target_stats((EAST, "bedrock", PT_ARN))
    assert stats["in_flight"] == 1  # still before its first token
    assert stats["output_tokens"] == 0
    stream.close()


def test_malformed_stream_fails_botocores_checksum(client: ClientFactory, emu: Emulator) -> None:
    emu.set_fault((EAST, "bedrock", PT_ARN), Fault.malformed_body(count=1))
    with pytest.raises(ChecksumMismatch):
        _events(client("bedrock-runtime"), **converse_kwargs(PT_ARN))


def test_per_token_latency_model() -> None:
    spec = TargetSpec(EAST, "bedrock", "m", ttft_ms=0, ms_per_token=40, output_tokens=6)
    with Emulator([spec], appconfig=False) as emu:
        client = boto3.client(
            "bedrock-runtime",
            region_name=EAST,
            endpoint_url=emu.endpoint_url(EAST),
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
        )
        stamps: list[float] = []
        for item in client.converse_stream(**converse_kwargs("m"))["stream"]:
            if "contentBlockDelta" in item:
                stamps.append(time.monotonic())
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert len(stamps) == 6
    assert min(gaps) >= 0.035  # each later token waits its ms_per_token


# InvokeEndpointWithResponseStream ------------------------------------------------------------------


def test_sagemaker_stream_carries_chat_completion_chunks(client: ClientFactory) -> None:
    body = json.loads(chat_body("stream me please"))
    body.update(stream=True, stream_options={"include_usage": True})
    response, lines = _sse_chunks(client("sagemaker-runtime"), json.dumps(body).encode())
    assert response["ContentType"] == "text/event-stream"
    assert response["InvokedProductionVariant"] == "AllTraffic"
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "stream me please"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] > 0


def test_sagemaker_stream_without_usage_option_has_no_usage_chunk(client: ClientFactory) -> None:
    _, lines = _sse_chunks(client("sagemaker-runtime"), chat_body("hi"))
    assert all("usage" not in json.loads(line) for line in lines[:-1])


@pytest.mark.parametrize(
    ("alias", "code"), [("model_stream_error", "ModelStreamError"), ("internal", "InternalStreamFailure")]
)
def test_sagemaker_exception_event_mid_stream(client: ClientFactory, emu: Emulator, alias: str, code: str) -> None:
    emu.set_fault((EAST, "sagemaker", ENDPOINT), Fault.stream_error(alias, after_tokens=1, count=1))
    response = client("sagemaker-runtime").invoke_endpoint_with_response_stream(
        EndpointName=ENDPOINT, Body=chat_body(), ContentType="application/json"
    )
    seen: list[str] = []
    with pytest.raises(EventStreamError) as caught:
        _drain(response["Body"], seen)
    assert caught.value.response["Error"]["Code"] == code
    assert seen == ["PayloadPart"]


def test_stream_error_fault_on_a_buffered_call_is_an_error(client: ClientFactory, emu: Emulator) -> None:
    emu.set_fault((EAST, "bedrock", PT_ARN), Fault.stream_error("internal", count=1))
    with pytest.raises(ClientError) as caught:
        client("bedrock-runtime").converse(**converse_kwargs(PT_ARN))
    assert caught.value.response["Error"]["Code"] == "InternalServerException"


def test_unknown_stream_error_is_refused(emu: Emulator) -> None:
    with pytest.raises(ValueError, match="unknown stream error"):
        emu.set_fault("*", Fault.stream_error("bogus"))


def test_abandoned_stream_frees_capacity(client: ClientFactory, emu: Emulator) -> None:
    emu.update_target((EAST, "bedrock", PT_ARN), max_in_flight=1, ms_per_token=50, output_tokens=20)
    stream = client("bedrock-runtime").converse_stream(**converse_kwargs(PT_ARN))["stream"]
    next(iter(stream))
    stream.close()  # the caller walks away: the emulator's writes fail and the slot frees
    deadline = time.monotonic() + 3
    while emu.target_stats((EAST, "bedrock", PT_ARN))["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert emu.target_stats((EAST, "bedrock", PT_ARN))["in_flight"] == 0

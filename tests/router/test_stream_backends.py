"""Streaming backends: Bedrock ConverseStream and SageMaker InvokeEndpointWithResponseStream on the emulator, read
with the router's own boto3 clients, and the openai kind's chat completions stream over http.client; the chat-chunk
translation on its own, chunk by chunk."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from local.emulator import Emulator, Fault, TargetSpec
from local.emulator.openai_compat import base_path
from spillway.backends import ClientPool
from spillway.backends.bedrock import BedrockBackend
from spillway.backends.chat_stream import ChatChunkTranslator, SseLines, translate
from spillway.backends.kinds import BedrockRef, OpenAIRef, SageMakerRef
from spillway.backends.openai_compat import OpenAICompatBackend, StaticKeys
from spillway.backends.sagemaker import SageMakerBackend
from spillway.config import Target
from spillway.errors import BackendError, ErrorClass
from spillway.streaming import Pump, StreamEvent, StreamTimeout

REGION = "us-east-1"
MODEL = "anthropic.claude-sonnet-4-v1:0"
ENDPOINT = "llama-escrow"
BEDROCK = Target(f"sonnet/on_demand/{REGION}", "sonnet", "on_demand", REGION, BedrockRef(MODEL))
SAGEMAKER = Target(f"llama/provisioned/{REGION}", "llama", "provisioned", REGION, SageMakerRef(ENDPOINT))
GPT = "gpt-oss-120b"
REQUEST = {"messages": [{"role": "user", "content": [{"text": "stream this answer"}]}]}


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    targets = [
        TargetSpec(REGION, "bedrock", MODEL, echo=True),
        TargetSpec(REGION, "sagemaker", ENDPOINT, echo=True),
        TargetSpec(REGION, "openai", GPT, echo=True),
    ]
    with Emulator(targets, appconfig=False) as emulator:
        yield emulator


@pytest.fixture
def pool(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> ClientPool:
    emu.clear_faults()
    monkeypatch.setenv("SPILLWAY_ENDPOINT_URL", emu.endpoint_url(REGION))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return ClientPool()


def _names(events: list[StreamEvent]) -> list[str]:
    return [name for name, _ in events]


def _text(events: list[StreamEvent]) -> str:
    return "".join(m["delta"].get("text", "") for n, m in events if n == "contentBlockDelta")


def openai_target(emu: Emulator, model: str = GPT) -> Target:
    base_url = emu.endpoint_url(REGION).rstrip("/") + base_path(model)
    return Target(f"gpt/on_demand/{REGION}", "gpt", "on_demand", REGION, OpenAIRef(base_url, model, "secret", "k"))


def openai_backend(_pool: ClientPool | None = None) -> OpenAICompatBackend:
    return OpenAICompatBackend(keys=StaticKeys({"k": "local-key"}))


@pytest.mark.parametrize(
    ("backend_class", "target"),
    [(BedrockBackend, BEDROCK), (SageMakerBackend, SAGEMAKER), (openai_backend, None)],
    ids=["bedrock", "sagemaker", "openai"],
)
def test_every_kind_streams_the_same_converse_events(
    backend_class: Any, target: Target | None, pool: ClientPool, emu: Emulator
) -> None:
    stream = backend_class(pool).open_stream(target or openai_target(emu), REQUEST, 5.0)
    events = list(stream)
    stream.close()
    names = _names(events)
    assert names[0] == "messageStart"
    assert names[-3:] == ["contentBlockStop", "messageStop", "metadata"]
    assert set(names[1:-3]) == {"contentBlockDelta"}
    assert _text(events) == "stream this answer"
    assert events[-2][1] == {"stopReason": "end_turn"}
    usage = events[-1][1]["usage"]
    assert usage["outputTokens"] > 0  # SageMaker's usage comes from the include_usage chunk the backend asks for
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]


@pytest.mark.parametrize(
    ("alias", "code", "error_class"),
    [
        ("throttling", "ThrottlingException", ErrorClass.CAPACITY),
        ("model_stream_error", "ModelStreamErrorException", ErrorClass.UNAVAILABLE),
        ("internal", "InternalServerException", ErrorClass.UNAVAILABLE),
        ("unavailable", "ServiceUnavailableException", ErrorClass.UNAVAILABLE),
        ("validation", "ValidationException", ErrorClass.CLIENT),
    ],
)
def test_bedrock_stream_exceptions_are_classified_as_their_operation_errors(
    emu: Emulator, pool: ClientPool, alias: str, code: str, error_class: ErrorClass
) -> None:
    emu.set_fault((REGION, "bedrock", MODEL), Fault.stream_error(alias, after_tokens=1, count=1))
    stream = BedrockBackend(pool).open_stream(BEDROCK, REQUEST, 5.0)
    seen: list[str] = []
    with pytest.raises(BackendError) as caught:
        seen.extend(name for name, _ in stream)
    assert (caught.value.code, caught.value.error_class) == (code, error_class)
    assert "message" not in str(caught.value).lower()  # codes only


def test_sagemaker_stream_error_mid_stream(emu: Emulator, pool: ClientPool) -> None:
    emu.set_fault((REGION, "sagemaker", ENDPOINT), Fault.stream_error("internal", after_tokens=1, count=1))
    stream = SageMakerBackend(pool).open_stream(SAGEMAKER, REQUEST, 5.0)
    with pytest.raises(BackendError) as caught:
        list(stream)
    assert caught.value.code == "InternalStreamFailure"


def test_error_before_the_stream_is_raised_by_open(emu: Emulator, pool: ClientPool) -> None:
    emu.set_fault((REGION, "bedrock", MODEL), Fault.throttle(count=1))
    with pytest.raises(BackendError) as caught:
        BedrockBackend(pool).open_stream(BEDROCK, REQUEST, 5.0)
    assert caught.value.error_class is ErrorClass.CAPACITY


def test_dropped_connection_is_unavailable(emu: Emulator, pool: ClientPool) -> None:
    emu.set_fault((REGION, "sagemaker", ENDPOINT), Fault.drop(after_tokens=1, count=1))
    stream = SageMakerBackend(pool).open_stream(SAGEMAKER, REQUEST, 5.0)
    with pytest.raises(BackendError) as caught:
        list(stream)
    assert caught.value.error_class is ErrorClass.UNAVAILABLE


def test_pump_times_out_on_a_stall_and_close_drops_the_connection(emu: Emulator, pool: ClientPool) -> None:
    emu.set_fault((REGION, "bedrock", MODEL), Fault.stall(seconds=10, after_tokens=1, count=1))
    pump = Pump(BedrockBackend(pool).open_stream(BEDROCK, REQUEST, 20.0))
    assert pump.next(5.0) is not None  # messageStart
    assert pump.next(5.0) is not None  # the first token
    with pytest.raises(StreamTimeout):
        pump.next(0.2)
    pump.close()
    assert pump.done.is_set()  # the blocked read ended with the connection (close waited for it)


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (Fault.stream_error("model_stream_error", after_tokens=1, count=1), "ModelStreamError"),
        (Fault.drop(after_tokens=1, count=1), None),  # a reset: its code is the socket's (ConnectionResetError...)
        (Fault.malformed_body(count=1), "MalformedOpenAIStream"),
    ],
    ids=["error-chunk", "drop", "malformed"],
)
def test_an_openai_stream_that_breaks_is_unavailable(emu: Emulator, fault: Fault, code: str | None) -> None:
    emu.set_fault((REGION, "openai", GPT), fault)
    stream = openai_backend().open_stream(openai_target(emu), REQUEST, 5.0)
    with pytest.raises(BackendError) as caught:
        list(stream)
    stream.close()
    assert caught.value.error_class is ErrorClass.UNAVAILABLE
    assert code is None or caught.value.code == code


@pytest.mark.parametrize(
    ("fault", "error_class", "status"),
    [
        (Fault.throttle(count=1), ErrorClass.CAPACITY, 429),
        (Fault.error_response("unavailable", count=1), ErrorClass.UNAVAILABLE, 503),
        (Fault.error_response("access_denied", count=1), ErrorClass.OURS, 403),
        (Fault.error_response("validation", count=1), ErrorClass.CLIENT, 400),
    ],
)
def test_an_openai_stream_refused_before_it_starts_is_raised_by_open(
    emu: Emulator, fault: Fault, error_class: ErrorClass, status: int
) -> None:
    emu.set_fault((REGION, "openai", GPT), fault)
    with pytest.raises(BackendError) as caught:
        openai_backend().open_stream(openai_target(emu), REQUEST, 5.0)
    assert (caught.value.error_class, caught.value.http_status) == (error_class, status)
    if error_class is ErrorClass.CAPACITY:
        assert caught.value.retry_after_s == 1.0  # from Retry-After, as for a buffered call


def test_an_openai_stream_of_an_unknown_model_is_ours(emu: Emulator) -> None:
    with pytest.raises(BackendError) as caught:
        openai_backend().open_stream(openai_target(emu, "no-such-model"), REQUEST, 5.0)
    assert (caught.value.error_class, caught.value.http_status) == (ErrorClass.OURS, 404)


def test_an_openai_stall_times_the_pump_out_and_close_ends_the_read(emu: Emulator) -> None:
    emu.set_fault((REGION, "openai", GPT), Fault.stall(seconds=10, after_tokens=1, count=1))
    pump = Pump(openai_backend().open_stream(openai_target(emu), REQUEST, 20.0))
    assert pump.next(5.0) == ("messageStart", {"role": "assistant"})
    assert pump.next(5.0) is not None  # the first token
    with pytest.raises(StreamTimeout):
        pump.next(0.2)
    pump.close()
    assert pump.done.is_set()  # the blocked read ended with the connection (close waited for it)


def test_an_openai_slow_first_token_holds_the_first_chunk_not_the_answers_head(emu: Emulator) -> None:
    """The emulator's time to first token applies to this kind too: the stream opens (status and headers) at once,
    and its first chunk waits for the fault's 10 s, past which the pump gives up first."""
    emu.set_fault((REGION, "openai", GPT), Fault.slow_first_token(10.0, count=1))
    pump = Pump(openai_backend().open_stream(openai_target(emu), REQUEST, 20.0))  # open_stream returned: 200 came
    with pytest.raises(StreamTimeout):
        pump.next(0.3)
    pump.close()
    assert pump.done.is_set()


def test_the_openai_stream_asks_for_the_stream_and_its_usage(emu: Emulator) -> None:
    list(openai_backend().open_stream(openai_target(emu), REQUEST, 5.0))
    sent = json.loads(emu.received((REGION, "openai", GPT))[-1])
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["model"] == GPT


def _netloc(target: Target) -> str:
    assert isinstance(target.backend, OpenAIRef)
    return target.backend.base_url.split("/")[2]


def test_a_stream_read_to_its_end_leaves_its_connection_for_the_next_one(emu: Emulator) -> None:
    backend, target = openai_backend(), openai_target(emu)
    netloc = _netloc(target)
    first = backend.open_stream(target, REQUEST, 5.0)
    list(first)
    first.close()
    assert backend._idle.count(netloc) == 1
    kept = backend._idle._idle[netloc][0]
    second = backend.open_stream(target, REQUEST, 5.0)
    assert backend._idle.count(netloc) == 0
    assert second._conn is kept  # type: ignore[attr-defined]  # no new handshake
    assert _text(list(second)) == "stream this answer"
    second.close()
    assert backend._idle.count(netloc) == 1


def test_an_abandoned_stream_does_not_give_its_connection_back(emu: Emulator) -> None:
    backend, target = openai_backend(), openai_target(emu)
    netloc = _netloc(target)
    stream = backend.open_stream(target, REQUEST, 5.0)
    events = iter(stream)
    assert next(events)[0] == "messageStart"
    stream.close()  # the caller left mid-stream: the rest of the body is unread
    assert backend._idle.count(netloc) == 0


def test_a_kept_connection_the_server_closed_is_replaced_once(emu: Emulator) -> None:
    backend, target = openai_backend(), openai_target(emu)
    netloc = _netloc(target)
    stream = backend.open_stream(target, REQUEST, 5.0)
    list(stream)
    stream.close()
    emu.close_region(REGION)  # drops every open connection
    emu.open_region(REGION)
    again = backend.open_stream(target, REQUEST, 5.0)
    assert _text(list(again)) == "stream this answer"
    again.close()
    assert backend._idle.count(netloc) == 1


# The translation, chunk by chunk ----------------------------------------------------------------------------------


def _sse(*chunks: Any) -> bytes:
    return b"".join(b"data: " + (c if isinstance(c, bytes) else json.dumps(c).encode()) + b"\n\n" for c in chunks)


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_lines_split_across_parts_are_joined() -> None:
    lines = SseLines()
    assert lines.feed(b'data: {"a"') == []
    assert lines.feed(b": 1}\n\ndata: [DO") == ['{"a": 1}']
    assert lines.feed(b"NE]\n\n") == ["[DONE]"]
    assert not lines.leftover()


def test_tool_calls_become_tool_use_blocks() -> None:
    raw = _sse(
        _chunk({"role": "assistant", "content": "Let me look."}),
        _chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "lookup", "arguments": '{"q"'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ': "x"}'}}]}),
        _chunk({}, "tool_calls"),
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 9}},
        b"[DONE]",
    )
    events = list(translate(iter([raw[:17], raw[17:]]), clock=lambda: 0.0))
    assert _names(events) == [
        "messageStart",
        "contentBlockDelta",
        "contentBlockStart",
        "contentBlockDelta",
        "contentBlockDelta",
        "contentBlockStop",
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]
    assert events[2][1] == {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "call_1", "name": "lookup"}}}
    arguments = "".join(
        m["delta"]["toolUse"]["input"] for n, m in events if n == "contentBlockDelta" and "toolUse" in m["delta"]
    )
    assert json.loads(arguments) == {"q": "x"}
    assert events[-2][1] == {"stopReason": "tool_use"}
    assert events[-1][1]["usage"] == {"inputTokens": 5, "outputTokens": 9, "totalTokens": 14}


def test_reasoning_content_is_kept_in_its_own_block() -> None:
    translator = ChatChunkTranslator(clock=lambda: 0.0)
    events = translator.data(json.dumps(_chunk({"reasoning_content": "thinking"})))
    assert events[1] == (
        "contentBlockDelta",
        {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "thinking"}}},
    )


@pytest.mark.parametrize(
    "raw",
    [
        _sse(_chunk({"content": "half"})),  # cut before [DONE]
        _sse(b"not json"),
        _sse({"choices": "nope"}),
        _sse({"error": {"message": "container failed"}}),
        _sse(_chunk({"content": 5})),
        _sse(b"[DONE]"),  # no answer at all
        _sse(_chunk({"content": "a"}), b"[DONE]", _chunk({"content": "after the end"})),
    ],
)
def test_a_broken_container_stream_fails_loudly(raw: bytes) -> None:
    with pytest.raises(BackendError) as caught:
        list(translate(iter([raw]), clock=lambda: 0.0))
    assert caught.value.error_class is ErrorClass.UNAVAILABLE

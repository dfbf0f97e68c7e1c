"""The OpenAI door's streamed answer (``stream: true``): ConverseStream events rendered as chat.completion.chunk
lines by spillway/openai_stream.py, and the whole path through handler.lambda_stream_handler (the streaming entry)
and handler.lambda_handler (the buffered one): the prelude, failover before the first token, the explicit error
after it, refusals in OpenAI's shape. Scripted streaming backends; no sockets, no sleeps."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

import handler
from spillway import openai_api, openai_stream, sse
from spillway.backends.chat_stream import translate
from spillway.backends.contract import BackendReply, Usage
from spillway.config import Target
from spillway.engine import RouteResult, Status
from spillway.errors import BackendError, ErrorClass
from spillway.stream_route import KEEP_ALIVE, StreamHead, StreamTail
from tests.router.conftest import Harness, LambdaContext, api_event, ok_reply

PT = "claude-sonnet/provisioned/us-east-1"
OD = "claude-sonnet/on_demand/us-east-1"
Event = tuple[str, Mapping[str, Any]]


def text_stream(*pieces: str, stop: str = "end_turn", usage: tuple[int, int] = (9, 3)) -> list[Event]:
    events: list[Event] = [("messageStart", {"role": "assistant"})]
    events += [("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": p}}) for p in pieces]
    counts = {"inputTokens": usage[0], "outputTokens": usage[1], "totalTokens": sum(usage)}
    return [
        *events,
        ("contentBlockStop", {"contentBlockIndex": 0}),
        ("messageStop", {"stopReason": stop}),
        ("metadata", {"usage": counts, "metrics": {"latencyMs": 5}}),
    ]


TOOL_STREAM: list[Event] = [
    ("messageStart", {"role": "assistant"}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Let me look."}}),
    ("contentBlockStop", {"contentBlockIndex": 0}),
    ("contentBlockStart", {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tu-1", "name": "lookup"}}}),
    ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"q":'}}}),
    ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '"x"}'}}}),
    ("contentBlockStop", {"contentBlockIndex": 1}),
    ("contentBlockStart", {"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "tu-2", "name": "fetch"}}}),
    ("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": "{}"}}}),
    ("contentBlockStop", {"contentBlockIndex": 2}),
    ("messageStop", {"stopReason": "tool_use"}),
    ("metadata", {"usage": {"inputTokens": 4, "outputTokens": 6, "totalTokens": 10}, "metrics": {"latencyMs": 5}}),
]


# -- the chunk writer ---------------------------------------------------------------------------------------------


def _write(events: list[Event], *, include_usage: bool = False, usage: Usage | None = None) -> list[dict[str, Any]]:
    writer = openai_stream.ChunkWriter(request_id="rid", feature="summarize-thread", include_usage=include_usage, now=7)
    chunks = [chunk for name, members in events for chunk in writer.event(name, members)]
    return chunks + writer.end(usage)


def _deltas(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks if c["choices"]]


def test_a_text_stream_is_role_first_then_content_then_finish() -> None:
    chunks = _write(text_stream("Hel", "lo"))
    assert {c["id"] for c in chunks} == {"chatcmpl-rid"}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {(c["model"], c["created"]) for c in chunks} == {("summarize-thread", 7)}
    assert _deltas(chunks) == [{"role": "assistant", "content": ""}, {"content": "Hel"}, {"content": "lo"}, {}]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]
    assert all("usage" not in c for c in chunks)  # not asked for: OpenAI leaves the member out


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("content_filtered", "content_filter"),
    ],
)
def test_the_finish_reason_is_the_buffered_answers(stop: str, finish: str) -> None:
    assert _write(text_stream("x", stop=stop))[-1]["choices"][0]["finish_reason"] == finish


def test_tool_calls_open_with_id_and_name_then_stream_their_arguments() -> None:
    deltas = _deltas(_write(TOOL_STREAM))
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls == [
        {"index": 0, "id": "tu-1", "type": "function", "function": {"name": "lookup", "arguments": ""}},
        {"index": 0, "function": {"arguments": '{"q":'}},
        {"index": 0, "function": {"arguments": '"x"}'}},
        {"index": 1, "id": "tu-2", "type": "function", "function": {"name": "fetch", "arguments": ""}},
        {"index": 1, "function": {"arguments": "{}"}},
    ]
    assert deltas[1] == {"content": "Let me look."}


def test_reasoning_text_streams_as_reasoning_content() -> None:
    events: list[Event] = [
        ("messageStart", {"role": "assistant"}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "think"}}}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "sig"}}}),
        ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": "answer"}}),
        ("messageStop", {"stopReason": "end_turn"}),
    ]
    assert _deltas(_write(events))[1:3] == [{"reasoning_content": "think"}, {"content": "answer"}]


def test_with_include_usage_every_chunk_says_usage_null_and_a_last_one_counts() -> None:
    chunks = _write(text_stream("a"), include_usage=True, usage=Usage(9, 3))
    *body, last = chunks
    assert all(c["usage"] is None for c in body)
    assert last["choices"] == []
    assert last["usage"] == {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}


def test_a_stream_without_message_start_or_stop_still_opens_and_finishes() -> None:
    chunks = _write([("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "x"}})])
    assert _deltas(chunks) == [{"role": "assistant", "content": ""}, {"content": "x"}, {}]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_tool_input_for_a_block_that_never_opened_is_malformed() -> None:
    with pytest.raises(openai_stream.MalformedStream):
        _write([("contentBlockDelta", {"contentBlockIndex": 3, "delta": {"toolUse": {"input": "{}"}}})])


# -- through the handler ------------------------------------------------------------------------------------------


class ScriptedStream:
    def __init__(self, events: list[Event], error: BackendError | None) -> None:
        self.events, self.error, self.closed = events, error, False

    def __iter__(self) -> Iterator[Event]:
        yield from self.events
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.closed = True


class StreamingBackend:
    """Per target id: a list of events (a clean stream), (events, error) (fails after them), or a BackendError
    raised when the stream is opened."""

    def __init__(self) -> None:
        self.plan: dict[str, Any] = {}
        self.opened: list[str] = []
        self.invoked: list[str] = []

    def invoke(self, target: Target, request: Mapping[str, Any], timeout_s: float) -> BackendReply:
        self.invoked.append(target.id)
        return ok_reply("a whole answer")

    def open_stream(self, target: Target, request: Mapping[str, Any], timeout_s: float) -> ScriptedStream:
        self.opened.append(target.id)
        action = self.plan.get(target.id, text_stream("fine ", "answer"))
        if isinstance(action, BackendError):
            raise action
        events, error = action if isinstance(action, tuple) else (action, None)
        return ScriptedStream(events, error)


@pytest.fixture
def streaming(harness: Harness) -> StreamingBackend:
    backend = StreamingBackend()
    harness.router.backends["bedrock"] = backend
    return backend


def _chat_event(**extra: Any) -> dict[str, Any]:
    body = {"model": "summarize-thread", "messages": [{"role": "user", "content": "hi"}], **extra}
    return api_event("POST", "/v1/chat/completions", body=body, request_id="rid-9")


def _streamed(harness: Harness, **extra: Any) -> tuple[dict[str, Any], list[bytes]]:
    """The prelude and the body's chunks as the streaming entry yields them."""
    chunks = list(harness.handler.lambda_stream_handler(_chat_event(**extra), LambdaContext()))
    split = sse.split_prelude(chunks[0])
    assert split is not None
    prelude, first = split
    return prelude, ([first] if first else []) + chunks[1:]


def _data_lines(body: bytes) -> list[str]:
    blocks = [b for b in body.decode().split("\n\n") if b]
    assert all(b.startswith("data: ") and "\n" not in b for b in blocks), "data lines only (no named events)"
    return [b[len("data: ") :] for b in blocks]


def test_the_streaming_entry_sends_chunks_after_the_prelude_and_ends_with_done(
    harness: Harness, streaming: StreamingBackend
) -> None:
    streaming.plan[PT] = text_stream("fine ", "answer", usage=(9, 3))
    prelude, chunks = _streamed(harness, stream=True, stream_options={"include_usage": True})
    assert prelude["statusCode"] == 200
    headers = prelude["headers"]
    assert headers["Content-Type"] == "text/event-stream"
    assert headers["x-spillway-target"] == PT
    assert headers["x-spillway-request-id"] == "rid-9"
    assert len(chunks) > 2, "the chunks leave as the events come, not in one piece"
    lines = _data_lines(b"".join(chunks))
    assert lines[-1] == "[DONE]"
    parsed = [json.loads(x) for x in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in parsed if c["choices"])
    assert text == "fine answer"
    assert parsed[-1]["usage"] == {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
    assert parsed[-2]["choices"][0]["finish_reason"] == "stop"
    assert {c["id"] for c in parsed} == {"chatcmpl-rid-9"}


def test_a_target_that_fails_before_its_first_token_is_passed_over_unseen(
    harness: Harness, streaming: StreamingBackend
) -> None:
    streaming.plan[PT] = (
        [("messageStart", {"role": "assistant"})],
        BackendError(ErrorClass.UNAVAILABLE, "ModelStreamErrorException"),
    )
    streaming.plan[OD] = text_stream("from ", "on-demand")
    prelude, chunks = _streamed(harness, stream=True)
    assert streaming.opened[:2] == [PT, OD]
    assert prelude["headers"]["x-spillway-target"] == OD
    assert prelude["headers"]["x-spillway-route"].endswith(f"{OD}=first_token")
    lines = _data_lines(b"".join(chunks))
    roles = [json.loads(x)["choices"][0]["delta"].get("role") for x in lines[:-1]]
    assert roles.count("assistant") == 1, "one role chunk: the abandoned attempt's messageStart is never seen"
    assert lines[-1] == "[DONE]"


def test_a_stream_that_fails_after_its_first_token_ends_with_an_error_and_no_done(
    harness: Harness, streaming: StreamingBackend
) -> None:
    started = text_stream("partial ")[:2]
    streaming.plan[PT] = (started, BackendError(ErrorClass.UNAVAILABLE, "ModelStreamErrorException"))
    prelude, chunks = _streamed(harness, stream=True)
    assert prelude["statusCode"] == 200
    lines = _data_lines(b"".join(chunks))
    assert "[DONE]" not in lines
    last = json.loads(lines[-1])
    assert last == {
        "error": {
            "message": sse.INCOMPLETE_MESSAGE,
            "type": "server_error",
            "param": None,
            "code": "ModelStreamErrorException",
        }
    }
    finishes = [json.loads(x)["choices"][0]["finish_reason"] for x in lines[:-1]]
    assert finishes == [None, None], "no finish_reason: the answer did not finish"
    assert streaming.opened == [PT], "after the first token there is no failover"


def test_when_no_target_sends_a_first_token_the_answer_is_openais_503(
    harness: Harness, streaming: StreamingBackend
) -> None:
    for target in harness.router.current()[0].table.targets:  # type: ignore[union-attr]
        streaming.plan[target] = BackendError(ErrorClass.CAPACITY, "ThrottlingException", 429, 3.0)
    prelude, chunks = _streamed(harness, stream=True)
    assert prelude["statusCode"] == 503
    assert prelude["headers"]["Retry-After"]
    assert prelude["headers"]["Content-Type"] == "application/json"
    error = json.loads(b"".join(chunks))["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "NoCapacity"


def test_a_refusal_before_routing_is_openais_400_through_the_streaming_entry(
    harness: Harness, streaming: StreamingBackend
) -> None:
    prelude, chunks = _streamed(harness, stream=True, logit_bias={"1": 1})
    assert prelude["statusCode"] == 400
    assert json.loads(b"".join(chunks))["error"]["param"] == "logit_bias"
    assert streaming.opened == []


def test_without_stream_the_streaming_entry_answers_a_whole_completion(
    harness: Harness, streaming: StreamingBackend
) -> None:
    prelude, chunks = _streamed(harness)
    assert prelude["statusCode"] == 200
    assert prelude["headers"]["Content-Type"] == "application/json"
    completion = json.loads(b"".join(chunks))
    assert completion["object"] == "chat.completion"
    # The engine serves a whole answer from the backend's stream when it streams, else from invoke: either way, whole.
    assert completion["choices"][0]["message"]["content"] in ("fine answer", "a whole answer")
    assert "chunk" not in json.dumps(completion)


def test_the_buffered_entry_delivers_the_same_chunks_at_the_end(harness: Harness, streaming: StreamingBackend) -> None:
    streaming.plan[PT] = text_stream("one ", "two")
    response = harness.call(_chat_event(stream=True))
    assert response["statusCode"] == 200
    assert response["multiValueHeaders"]["Content-Type"] == ["text/event-stream"]
    lines = _data_lines(response["body"].encode())
    assert lines[-1] == "[DONE]"
    text = "".join(json.loads(x)["choices"][0]["delta"].get("content") or "" for x in lines[:-1])
    assert text == "one two"
    assert streaming.invoked == []


def test_a_router_failure_mid_stream_is_an_error_line_not_a_clean_end(
    harness: Harness, streaming: StreamingBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer_event = openai_stream.ChunkWriter.event

    def broken(self: openai_stream.ChunkWriter, name: str, members: Mapping[str, Any]) -> list[dict[str, Any]]:
        if name == "contentBlockDelta":
            raise RuntimeError("a bug")
        return writer_event(self, name, members)

    monkeypatch.setattr(openai_stream.ChunkWriter, "event", broken)
    prelude, chunks = _streamed(harness, stream=True)
    assert prelude["statusCode"] == 200
    lines = _data_lines(b"".join(chunks))
    assert json.loads(lines[-1])["error"]["code"] == "RouterError"
    assert "[DONE]" not in lines


def test_an_openai_targets_chunks_come_out_of_the_door_as_they_went_in() -> None:
    """An OpenAI-compatible target's stream (text, two tool calls in fragments, usage) translated to ConverseStream
    events by the backend and rendered again by the door: the caller reads the deltas the target sent."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    call = {"index": 0, "id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": ""}}
    sent = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Let me "}),
        chunk({"content": "check."}),
        chunk({"tool_calls": [call]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"q":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"x"}'}}]}),
        chunk({"tool_calls": [{**call, "index": 1, "id": "call_b", "function": {"name": "fetch", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
        chunk({}, "tool_calls"),
        {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}},
    ]
    wire = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in sent) + b"data: [DONE]\n\n"
    events = list(translate(iter([wire[:50], wire[50:]]), source="OpenAI"))
    metadata = dict(events)["metadata"]
    usage = Usage(metadata["usage"]["inputTokens"], metadata["usage"]["outputTokens"])
    out = _write(events, include_usage=True, usage=usage)
    assert [c["choices"][0]["delta"] for c in out if c["choices"]] == [c["choices"][0]["delta"] for c in sent[:-1]]
    assert [c["choices"][0]["finish_reason"] for c in out if c["choices"]][-1] == "tool_calls"
    assert out[-1]["usage"] == sent[-1]["usage"]


# -- keep-alives (spillway/stream_route.py: a comment after KEEP_ALIVE_S of silence) ------------------------------


def _chat_wire(items: list[Any]) -> tuple[dict[str, Any], list[str]]:
    chat = openai_api.ChatRequest("summarize-thread", {"messages": []}, stream=True)
    data = b"".join(handler.stream_answer(iter(items), "req-1", lambda _tail: None, handler._ChatChunks(chat, "req-1")))
    split = sse.split_prelude(data)
    assert split is not None
    prelude, body = split
    return prelude, [block for block in body.decode().split("\n\n") if block]


def test_a_keep_alive_opens_the_door_and_is_a_comment_the_chunks_follow() -> None:
    served = RouteResult(Status.SERVED, 200, (), 5.0, target=PT, usage=Usage(3, 2))
    items: list[Any] = [KEEP_ALIVE, KEEP_ALIVE, StreamHead(PT, (), 61_000.0), *text_stream("late"), StreamTail(served)]
    prelude, blocks = _chat_wire(items)
    assert (prelude["statusCode"], prelude["headers"]["Content-Type"]) == (200, "text/event-stream")
    assert blocks[:2] == [": keep-alive"] * 2  # SSE comments: the openai package's decoder passes over them
    assert blocks[-1] == "data: [DONE]"
    assert json.loads(blocks[3].removeprefix("data: "))["choices"][0]["delta"] == {"content": "late"}


def test_after_a_keep_alive_a_request_no_target_serves_ends_with_openais_error_line() -> None:
    unserved = RouteResult(Status.EXHAUSTED, 503, (), 300_000.0, code="NoFirstToken", retry_after_s=3)
    prelude, blocks = _chat_wire([KEEP_ALIVE, StreamTail(unserved)])
    assert prelude["statusCode"] == 200  # the keep-alive had opened the answer
    assert blocks[0] == ": keep-alive"
    error = json.loads(blocks[-1].removeprefix("data: "))["error"]
    assert (error["code"], error["type"]) == ("NoCapacity", "service_unavailable")
    assert "data: [DONE]" not in blocks

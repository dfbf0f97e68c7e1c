"""What a streamed answer says: ConverseStream events, and a serving container's chat-completions chunks.

Bedrock's ConverseStream for a text answer: ``messageStart``, one ``contentBlockDelta`` per token,
``contentBlockStop``, ``messageStop``, ``metadata`` (text blocks have no ``contentBlockStart``; tool use does).
SageMaker's InvokeEndpointWithResponseStream carries the container's own stream in ``PayloadPart`` bytes:
for the messages API (vLLM, LMI, TGI's Messages API) OpenAI-style server-sent events, ``data: {chunk}``
lines and a last ``data: [DONE]``; for TGI ``inputs``, ``data: {"token": {...}}`` lines. An OpenAI-compatible
endpoint (the openai kind) sends those same chat completions events as plain chunked HTTP, unframed.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from local.emulator import eventstream, openai_compat, wire

__all__ = [
    "Framed",
    "StreamPlan",
    "bedrock_framed",
    "chat_framed",
    "chat_stream_error",
    "sagemaker_framed",
    "stream_exception",
    "stream_plan",
    "tokens_of",
]


def tokens_of(text: str, count: int) -> list[str]:
    """The answer cut into ``count`` pieces (words, spaces kept), so that the deltas join to the text."""
    words = text.split(" ")
    if count <= 1 or len(words) <= 1:
        return [text]
    pieces = [word + " " for word in words[:-1]] + [words[-1]]
    if len(pieces) <= count:
        return pieces
    head, tail = pieces[: count - 1], "".join(pieces[count - 1 :])
    return [*head, tail]


@dataclass(frozen=True)
class StreamPlan:
    """One streamed answer: its pieces and the figures of its last events."""

    pieces: list[str]
    input_tokens: int
    output_tokens: int
    capped: bool
    service_tier: str = "default"  # the tier that served, as Converse's answer says it (metadata.serviceTier)


def _sse(chunk: Any) -> bytes:
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class Framed:
    """A streamed answer on the wire: what goes out at once, one event per token, and the closing events."""

    opening: list[bytes]
    tokens: list[bytes]
    closing: Callable[[int], list[bytes]]


def bedrock_framed(plan: StreamPlan) -> Framed:
    def closing(latency_ms: int) -> list[bytes]:
        usage = {
            "inputTokens": plan.input_tokens,
            "outputTokens": plan.output_tokens,
            "totalTokens": plan.input_tokens + plan.output_tokens,
        }
        return [
            eventstream.event("contentBlockStop", {"contentBlockIndex": 0}),
            eventstream.event("messageStop", {"stopReason": "max_tokens" if plan.capped else "end_turn"}),
            eventstream.event(
                "metadata",
                {"usage": usage, "metrics": {"latencyMs": latency_ms}, "serviceTier": {"type": plan.service_tier}},
            ),
        ]

    deltas = [
        eventstream.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}})
        for piece in plan.pieces
    ]
    return Framed([eventstream.event("messageStart", {"role": "assistant"})], deltas, closing)


def _part(data: bytes) -> bytes:
    return eventstream.event("PayloadPart", data, content_type="application/octet-stream")


def chat_framed(plan: StreamPlan, model: str, include_usage: bool) -> Framed:
    """A chat completions stream as its server-sent events, unframed (the openai kind's wire): the server says
    nothing before its first token; the first chunk carries the role, the last a finish_reason, then the usage
    chunk when asked for (``stream_options.include_usage``) and ``data: [DONE]``."""
    base: dict[str, Any] = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion.chunk"}
    base.update(created=int(time.time()), model=model)
    tokens = []
    for index, piece in enumerate(plan.pieces):
        delta: dict[str, Any] = {"content": piece}
        if index == 0:
            delta["role"] = "assistant"
        tokens.append(_sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}))

    def closing(_latency_ms: int) -> list[bytes]:
        finish = "length" if plan.capped else "stop"
        events = [_sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})]
        if include_usage:
            usage = {
                "prompt_tokens": plan.input_tokens,
                "completion_tokens": plan.output_tokens,
                "total_tokens": plan.input_tokens + plan.output_tokens,
            }
            events.append(_sse({**base, "choices": [], "usage": usage}))
        events.append(DONE)
        return events

    return Framed([], tokens, closing)


def sagemaker_framed(plan: StreamPlan, style: str, endpoint: str, include_usage: bool) -> Framed:
    """PayloadPart events: the container says nothing before its first token. For the messages API, the chat
    completions stream of :func:`chat_framed`, each event in its own part."""
    if style == "inputs":
        tokens = [
            _part(_sse({"token": {"id": i, "text": piece, "special": False}, "generated_text": None}))
            for i, piece in enumerate(plan.pieces)
        ]
        return Framed([], tokens, lambda _latency: [])
    chat = chat_framed(plan, endpoint, include_usage)
    return Framed([], [_part(t) for t in chat.tokens], lambda latency: [_part(e) for e in chat.closing(latency)])


def chat_stream_error(error: str | None, message: str | None) -> bytes:
    """What an OpenAI-compatible server (vLLM's serving_chat) sends when generation fails mid-stream: an error
    object as a data line (then ``[DONE]``); the fault's ``error`` names it as on a Bedrock stream."""
    name = eventstream.stream_exception_for(error, bedrock=True)
    code = name[0].upper() + name[1:]
    return _sse(openai_compat.error_body(code, message or "The model stream was interrupted."))


def stream_exception(kind_is_bedrock: bool, error: str | None, message: str | None) -> bytes:
    """The modeled exception event a STREAM_ERROR fault sends."""
    name = eventstream.stream_exception_for(error, kind_is_bedrock)
    text = message or "The model stream was interrupted."
    if name == "modelStreamErrorException":
        return eventstream.exception(name, {"message": text, "originalStatusCode": 500, "originalMessage": text})
    if kind_is_bedrock:
        return eventstream.exception(name, {"message": text})
    if name == "ModelStreamError":
        return eventstream.exception(name, {"Message": text, "ErrorCode": "ModelStreamError"})
    return eventstream.exception(name, {"Message": text})


def stream_plan(prompt: wire.Prompt, output_tokens: int, capped: bool, echo: bool, judge: bool = False) -> StreamPlan:
    text = wire.reply_text(prompt, output_tokens, echo, judge)
    pieces = tokens_of(text, max(1, output_tokens))
    return StreamPlan(pieces, wire.estimate_tokens(prompt.input_text), output_tokens, capped, prompt.service_tier)

"""The OpenAI-compatible door's streamed answer: the engine's ConverseStream events as ``chat.completion.chunk``s.

What the caller reads (server-sent events, ``data:`` lines only, as OpenAI sends them)::

    data: {"id": "chatcmpl-<request id>", "object": "chat.completion.chunk", "created": ..., "model": "<feature>",
           "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null,
                        "finish_reason": null}]}
    data: {... "choices": [{"index": 0, "delta": {"content": "Hel"}, ...}]}
    data: {... "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "...", "type": "function",
                                                                   "function": {"name": "...", "arguments": ""}}]}}]}
    data: {... "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\\"q"}}]}}]}
    data: {... "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    data: {... "choices": [], "usage": {"prompt_tokens": ..., "completion_tokens": ..., "total_tokens": ...}}
    data: [DONE]

- ``messageStart`` -> the role chunk (always the first); a text ``contentBlockDelta`` -> ``content``; a
  ``reasoningContent`` text delta -> ``reasoning_content`` (as the buffered answer names it); a ``toolUse``
  ``contentBlockStart`` -> the call's opening (id, name), its input fragments -> ``arguments`` fragments, calls
  numbered in the order they open; ``messageStop`` -> ``finish_reason`` (the buffered answer's mapping);
  ``metadata`` -> the usage chunk, sent only when the request asked ``stream_options.include_usage`` (then every
  other chunk carries ``"usage": null``, as OpenAI's do).
- A stream that fails after its first token sends no ``finish_reason`` and no ``[DONE]``: its last line is an error
  object, ``data: {"error": {"message", "type": "server_error", "param": null, "code": "<why>"}}``, on which the
  ``openai`` package raises ``openai.APIError`` while the caller iterates.

Zero knowledge: deltas are copied, never read but for their shape; the error names a code, never content.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from .backends.contract import Usage
from .openai_api import finish_reason
from .sse import INCOMPLETE_MESSAGE

DONE = b"data: [DONE]\n\n"
CHUNK = "chat.completion.chunk"


class MalformedStream(ValueError):
    """An event the chunks cannot express (a tool input fragment for a block that never opened)."""


def line(data: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


class ChunkWriter:
    """One streamed answer's chunks: the state between events is which blocks are tool calls, and whether the role
    chunk and the finish reason went out."""

    def __init__(self, *, request_id: str, feature: str, include_usage: bool, now: float | None = None) -> None:
        self._base = {
            "id": f"chatcmpl-{request_id}",
            "object": CHUNK,
            "created": int(time.time() if now is None else now),
            "model": feature,
        }
        self._include_usage = include_usage
        self._started = False
        self._finished = False
        self._calls: dict[int, int] = {}  # Converse content block index -> OpenAI tool call index

    def _chunk(self, delta: Mapping[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": dict(delta), "logprobs": None, "finish_reason": finish}
        chunk: dict[str, Any] = {**self._base, "choices": [choice]}
        if self._include_usage:
            chunk["usage"] = None
        return chunk

    def _opening(self) -> list[dict[str, Any]]:
        if self._started:
            return []
        self._started = True
        return [self._chunk({"role": "assistant", "content": ""})]

    def event(self, name: str, members: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The chunks of one ConverseStream event (often none)."""
        chunks = self._opening()
        if name == "contentBlockStart":
            chunks += self._block_start(members)
        elif name == "contentBlockDelta":
            chunks += self._delta(members)
        elif name == "messageStop" and not self._finished:
            self._finished = True
            chunks.append(self._chunk({}, finish_reason(members.get("stopReason"))))
        return chunks  # messageStart (the opening), contentBlockStop and metadata carry nothing else

    def _block_start(self, members: Mapping[str, Any]) -> list[dict[str, Any]]:
        start = members.get("start")
        use = start.get("toolUse") if isinstance(start, Mapping) else None
        if not isinstance(use, Mapping):
            return []  # a text or reasoning block opens with its first delta
        index = len(self._calls)
        self._calls[_block_index(members)] = index
        function = {"name": str(use.get("name", "")), "arguments": ""}
        call = {"index": index, "id": str(use.get("toolUseId", "")), "type": "function", "function": function}
        return [self._chunk({"tool_calls": [call]})]

    def _delta(self, members: Mapping[str, Any]) -> list[dict[str, Any]]:
        delta = members.get("delta")
        if not isinstance(delta, Mapping):
            raise MalformedStream("contentBlockDelta without a delta")
        if isinstance(delta.get("text"), str):
            return [self._chunk({"content": delta["text"]})]
        use = delta.get("toolUse")
        if isinstance(use, Mapping):
            index = self._calls.get(_block_index(members))
            if index is None:
                raise MalformedStream("tool input for a block that never opened")
            fragment = use.get("input")
            arguments = fragment if isinstance(fragment, str) else ""
            return [self._chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]})]
        reasoning = delta.get("reasoningContent")
        if isinstance(reasoning, Mapping) and isinstance(reasoning.get("text"), str):
            return [self._chunk({"reasoning_content": reasoning["text"]})]
        return []  # a reasoning signature or a citation: the buffered answer has no field for them either

    def end(self, usage: Usage | None) -> list[dict[str, Any]]:
        """The chunks after the last event of a complete stream ([DONE] follows them)."""
        chunks = self._opening()
        if not self._finished:  # a stream that ended without messageStop still says how it finished
            self._finished = True
            chunks.append(self._chunk({}, "stop"))
        if self._include_usage:
            prompt, completion = (usage.input_tokens, usage.output_tokens) if usage is not None else (0, 0)
            counts = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
            chunks.append({**self._base, "choices": [], "usage": counts})
        return chunks


def error(code: str) -> dict[str, Any]:
    """The last line of a stream that failed after its first token (OpenAI's error object; no [DONE] follows)."""
    return {"error": {"message": INCOMPLETE_MESSAGE, "type": "server_error", "param": None, "code": code}}


def _block_index(members: Mapping[str, Any]) -> int:
    index = members.get("contentBlockIndex", 0)
    if not isinstance(index, int) or isinstance(index, bool):
        raise MalformedStream("contentBlockIndex is not an integer")
    return index

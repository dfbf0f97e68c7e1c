"""Streamed chat completions (OpenAI-style server-sent events) as ConverseStream events: a SageMaker serving
container's, or an OpenAI-compatible endpoint's (the openai kind).

SageMaker's InvokeEndpointWithResponseStream hands over the container's bytes in PayloadPart events, cut wherever
the container flushed: a ``data:`` line may span parts, and one part may hold several lines. :class:`SseLines`
joins them; :class:`ChatChunkTranslator` turns each chunk into the events Bedrock's ConverseStream would send:

- the first chunk -> ``messageStart`` (role assistant);
- ``delta.content`` -> ``contentBlockDelta`` ``{"text"}`` on a text block; ``delta.reasoning_content`` (vLLM's
  reasoning parsers) -> ``{"reasoningContent": {"text"}}`` on its own block;
- ``delta.tool_calls[i]`` -> ``contentBlockStart`` ``{"toolUse": {"toolUseId", "name"}}`` when call ``i`` opens, then
  ``contentBlockDelta`` ``{"toolUse": {"input": fragment}}`` for its argument fragments;
- ``finish_reason`` -> ``contentBlockStop`` for each open block and ``messageStop`` (the stop reason mapped as in
  the buffered translation);
- a ``usage`` chunk (``stream_options.include_usage``) and the end (``data: [DONE]``) -> ``metadata``.

Nothing is dropped silently: a line that is not ``data:`` JSON, a chunk of the wrong shape, or an ``error`` object
from the server ends the stream with a BackendError, as a malformed buffered answer does. The codes name the source
(``MalformedSageMakerStream``, ``IncompleteOpenAIStream``...).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ..errors import BackendError, ErrorClass
from ..streaming import StreamEvent
from . import usage_int
from .chat import _FINISH as FINISH  # one mapping of finish reasons, buffered or streamed

SAGEMAKER = "SageMaker"
MALFORMED = f"Malformed{SAGEMAKER}Stream"


def _malformed(source: str = SAGEMAKER) -> BackendError:
    return BackendError(ErrorClass.UNAVAILABLE, f"Malformed{source}Stream", 200)


class SseLines:
    """Bytes in, complete server-sent-event ``data`` values out (comments and other fields are passed over)."""

    def __init__(self, source: str = SAGEMAKER) -> None:
        self._pending = b""
        self._source = source

    def feed(self, data: bytes) -> list[str]:
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        out: list[str] = []
        for raw in lines:
            line = raw.rstrip(b"\r")
            if line.startswith(b"data:"):
                try:
                    out.append(line[5:].strip().decode())
                except UnicodeDecodeError:
                    raise _malformed(self._source) from None
        return out

    def leftover(self) -> bool:
        """True when bytes of an unfinished line are left (a cut stream)."""
        return bool(self._pending.strip())


class ChatChunkTranslator:
    """One stream's state: which blocks are open, whether the message started and stopped, the usage seen."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter, source: str = SAGEMAKER) -> None:
        self._clock = clock
        self._source = source
        self._started_at = clock()
        self._started = False
        self._stopped = False
        self._next_index = 0
        self._text_block: int | None = None
        self._reasoning_block: int | None = None
        self._tool_blocks: dict[int, int] = {}  # tool call index -> content block index
        self._usage: tuple[int, int] | None = None
        self.done = False

    def data(self, value: str) -> list[StreamEvent]:
        """The events of one ``data:`` value."""
        if self.done:
            raise self._bad()  # nothing may follow [DONE]
        if value == "[DONE]":
            self.done = True
            return self.finish()
        try:
            chunk = json.loads(value)
        except ValueError:
            raise self._bad() from None
        if not isinstance(chunk, Mapping) or "error" in chunk:
            raise (
                BackendError(ErrorClass.UNAVAILABLE, "ModelStreamError") if isinstance(chunk, Mapping) else self._bad()
            )
        events: list[StreamEvent] = []
        if not self._started:
            self._started = True
            events.append(("messageStart", {"role": "assistant"}))
        usage = chunk.get("usage")
        if isinstance(usage, Mapping):
            self._usage = (usage_int(usage.get("prompt_tokens")), usage_int(usage.get("completion_tokens")))
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise self._bad()
        for choice in choices:
            if not isinstance(choice, Mapping) or choice.get("index", 0) != 0:
                raise self._bad()  # one answer only: the router never asks for n > 1
            events.extend(self._choice(choice))
        return events

    def _bad(self) -> BackendError:
        return _malformed(self._source)

    def _choice(self, choice: Mapping[str, Any]) -> list[StreamEvent]:
        delta = choice.get("delta") or {}
        if not isinstance(delta, Mapping):
            raise self._bad()
        events: list[StreamEvent] = []
        reasoning = delta.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            if self._reasoning_block is None:
                self._reasoning_block = self._open()
            block = self._reasoning_block
            events.append(
                ("contentBlockDelta", {"contentBlockIndex": block, "delta": {"reasoningContent": {"text": reasoning}}})
            )
        text = delta.get("content")
        if text is not None and not isinstance(text, str):
            raise self._bad()
        if text:
            if self._text_block is None:
                self._text_block = self._open()
            events.append(("contentBlockDelta", {"contentBlockIndex": self._text_block, "delta": {"text": text}}))
        for call in delta.get("tool_calls") or []:
            events.extend(self._tool_call(call))
        finish = choice.get("finish_reason")
        if isinstance(finish, str):
            events.extend(self._stop(FINISH.get(finish, "end_turn")))
        return events

    def _open(self) -> int:
        index = self._next_index
        self._next_index += 1
        return index

    def _tool_call(self, call: Any) -> list[StreamEvent]:
        if not isinstance(call, Mapping):
            raise self._bad()
        position = call.get("index", 0)
        function = call.get("function") or {}
        if not isinstance(position, int) or not isinstance(function, Mapping):
            raise self._bad()
        events: list[StreamEvent] = []
        block = self._tool_blocks.get(position)
        if block is None:
            block = self._tool_blocks[position] = self._open()
            start = {"toolUse": {"toolUseId": str(call.get("id", "")), "name": str(function.get("name", ""))}}
            events.append(("contentBlockStart", {"contentBlockIndex": block, "start": start}))
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            events.append(
                ("contentBlockDelta", {"contentBlockIndex": block, "delta": {"toolUse": {"input": arguments}}})
            )
        return events

    def _stop(self, reason: str) -> list[StreamEvent]:
        if self._stopped:
            return []
        self._stopped = True
        if self._next_index == 0:  # an empty answer still has its one (empty) text block
            self._text_block = self._open()
            events: list[StreamEvent] = [("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": ""}})]
        else:
            events = []
        events += [("contentBlockStop", {"contentBlockIndex": i}) for i in range(self._next_index)]
        events.append(("messageStop", {"stopReason": reason}))
        return events

    def finish(self) -> list[StreamEvent]:
        """The closing events at ``[DONE]``: a stop if the container sent none, then the metadata."""
        if not self._started:
            raise self._bad()  # [DONE] with no chunk at all: no answer
        events = self._stop("end_turn")
        in_tokens, out_tokens = self._usage or (0, 0)
        usage = {"inputTokens": in_tokens, "outputTokens": out_tokens, "totalTokens": in_tokens + out_tokens}
        latency_ms = round((self._clock() - self._started_at) * 1000.0)
        events.append(("metadata", {"usage": usage, "metrics": {"latencyMs": latency_ms}}))
        return events


def translate(
    parts: Iterator[bytes], clock: Callable[[], float] = time.perf_counter, source: str = SAGEMAKER
) -> Iterator[StreamEvent]:
    """ConverseStream events from the server's raw bytes, part by part. A stream cut before ``[DONE]`` fails."""
    lines = SseLines(source)
    translator = ChatChunkTranslator(clock, source)
    for part in parts:
        for value in lines.feed(part):
            yield from translator.data(value)
    if not translator.done or lines.leftover():
        raise BackendError(ErrorClass.UNAVAILABLE, f"Incomplete{source}Stream")

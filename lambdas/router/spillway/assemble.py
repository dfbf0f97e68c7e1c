"""Buffered Converse through the streaming APIs: read a backend's ConverseStream events under the attempt's
deadlines and assemble them into Converse's answer, so that every request, streamed or not, measures its time to
first token (issue 12, item 4).

:func:`collect` opens the stream, reads it through a :class:`~spillway.streaming.Pump` (a blocking read gets no
deadline from outside) and holds the attempt to the same limits as a streamed one before anything reaches the caller:
no first token within the feature's ``first_token_ms`` (within the attempt's timeout) is ``NoFirstToken``, a gap over
``inter_token_ms`` is ``StreamStalled``, the attempt's timeout is ``AttemptTimeout``; all three are ``unavailable``, and
since the caller has seen nothing the engine moves on as for any failed buffered attempt. A stream exception is the
attempt's error as the backend classified it.

:func:`assemble` folds the events into ConverseResponse's members (botocore's output shape): ``output.message`` with
the content blocks in their index order (text; tool use with its input parsed from the JSON text of its deltas;
reasoning text with its signature, or redacted reasoning; text with citations as ``citationsContent``; tool results;
images), ``stopReason`` and ``additionalModelResponseFields`` from ``messageStop``, and ``usage``, ``metrics``,
``trace``, ``performanceConfig`` and ``serviceTier`` from ``metadata``. Usage and metrics are normalised as the
Bedrock backend normalises Converse's own answer, so a caller cannot tell which API served. Zero knowledge: the
events' content is joined, never logged; errors carry codes only.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .backends.contract import BackendReply, Usage
from .config import SERVICE_TIERS, Target
from .errors import BackendError, ErrorClass
from .streaming import (
    NO_FIRST_TOKEN,
    STREAM_STALLED,
    TOKEN_EVENTS,
    BackendStream,
    StreamEvent,
    StreamingBackend,
    StreamReader,
)

ATTEMPT_TIMEOUT = "AttemptTimeout"
MALFORMED = "MalformedConverseStream"


def collect(
    backend: StreamingBackend,
    target: Target,
    request: Mapping[str, Any],
    timeout_s: float,
    *,
    first_token_s: float | None,
    inter_token_s: float,
    clock: Callable[[], float],
) -> BackendReply:
    """One buffered attempt over the backend's stream: the assembled answer with its time to first token and
    inter-token gaps, or BackendError. The stream is closed (its read ended) before this returns."""
    sent_at = clock()
    reader = _Reader(backend.open_stream(target, request, timeout_s), clock)
    try:
        end = sent_at + timeout_s
        first_by = end if first_token_s is None else min(end, sent_at + first_token_s)
        if not reader.first.wait(max(0.0, first_by - clock())):
            raise BackendError(ErrorClass.UNAVAILABLE, NO_FIRST_TOKEN if first_by < end else ATTEMPT_TIMEOUT)
        while not reader.done.is_set():  # woken at the end, or once a gap's worth of time has passed
            last = reader.last_at
            wait = min(end, last + inter_token_s) - clock()
            if not reader.done.wait(max(0.0, wait)) and reader.last_at == last:
                stalled = last + inter_token_s <= end
                raise BackendError(ErrorClass.UNAVAILABLE, STREAM_STALLED if stalled else ATTEMPT_TIMEOUT)
        if reader.error is not None:
            raise reader.error
        timed = reader.events
    finally:
        reader.close()
    elapsed_ms = (clock() - sent_at) * 1000.0
    answer = assemble([event for _, event in timed], elapsed_ms=elapsed_ms)
    first = next((i for i, (_, event) in enumerate(timed) if event[0] in TOKEN_EVENTS), None)
    gaps: list[float] = []
    if first is not None:  # gaps count from the first token, between the deltas after it
        marks = [timed[first][0]] + [at for at, event in timed[first + 1 :] if event[0] == "contentBlockDelta"]
        gaps = [(at - before) * 1000.0 for before, at in itertools.pairwise(marks)]
    return BackendReply(
        response=answer.response,
        latency_ms=answer.latency_ms,
        # an empty answer's first token is its end
        ttft_ms=elapsed_ms if first is None else (timed[first][0] - sent_at) * 1000.0,
        usage=answer.usage,
        service_tier=answer.service_tier,
        gaps_ms=tuple(gaps),
    )


class _Reader(StreamReader):
    """Keeps each event with its arrival time on `clock` and wakes the caller twice: at the first token (``first``)
    and at the end (``done``, also on a failure). Unlike the streaming route's Pump, which hands every event over as
    it comes (the caller relays it), nothing is handed over per event: each handoff between two busy threads can cost
    the interpreter's switch interval (5 ms), once per event. The caller watches for stalls through ``last_at``."""

    def __init__(self, stream: BackendStream, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.events: list[tuple[float, StreamEvent]] = []
        self.error: BackendError | None = None
        self.last_at = clock()
        self.first = threading.Event()
        super().__init__(stream)

    def _event(self, item: StreamEvent) -> None:
        at = self._clock()
        self.events.append((at, item))
        self.last_at = at
        if item[0] in TOKEN_EVENTS:
            self.first.set()

    def _failed(self, error: BackendError) -> None:
        self.error = error

    def _over(self) -> None:
        self.first.set()  # a caller waiting for the first token wakes at the end too


@dataclass(frozen=True, slots=True)
class Assembled:
    response: dict[str, Any] = field(repr=False)
    latency_ms: float
    usage: Usage
    service_tier: str | None


@dataclass(slots=True)
class _Block:
    start: dict[str, Any] = field(default_factory=dict)
    text: list[str] = field(default_factory=list)
    tool_input: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    signature: str | None = None
    redacted: list[bytes] = field(default_factory=list)
    citations: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)  # tool result content, in order
    image: dict[str, Any] = field(default_factory=dict)
    other: dict[str, Any] = field(default_factory=dict)  # a delta member this code does not know: its last value


def assemble(events: Iterable[StreamEvent], *, elapsed_ms: float) -> Assembled:
    """ConverseStream events -> Converse's answer. A stream without messageStop is cut short (MalformedConverseStream:
    unavailable, the answer is not whole)."""
    role = "assistant"
    blocks: dict[int, _Block] = {}
    stop: Mapping[str, Any] | None = None
    metadata: Mapping[str, Any] = {}
    for name, members in events:
        if name == "messageStart":
            role = str(members.get("role", role))
        elif name == "contentBlockStart":
            start = members.get("start")
            blocks.setdefault(_index(members), _Block()).start.update(start if isinstance(start, Mapping) else {})
        elif name == "contentBlockDelta":
            delta = members.get("delta")
            if not isinstance(delta, Mapping):
                raise BackendError(ErrorClass.UNAVAILABLE, MALFORMED, 200)
            _add(blocks.setdefault(_index(members), _Block()), delta)
        elif name == "messageStop":
            stop = members
        elif name == "metadata":
            metadata = members
    if stop is None or not isinstance(stop.get("stopReason"), str):
        raise BackendError(ErrorClass.UNAVAILABLE, MALFORMED, 200)
    content = [_content(blocks[i]) for i in sorted(blocks)]
    response: dict[str, Any] = {
        "output": {"message": {"role": role, "content": content}},
        "stopReason": stop["stopReason"],
    }
    if "additionalModelResponseFields" in stop:
        response["additionalModelResponseFields"] = stop["additionalModelResponseFields"]
    usage_raw = metadata.get("usage")
    usage_map: Mapping[str, Any] = usage_raw if isinstance(usage_raw, Mapping) else {}
    usage = Usage(_count(usage_map.get("inputTokens")), _count(usage_map.get("outputTokens")))
    response["usage"] = {
        "inputTokens": usage.input_tokens,
        "outputTokens": usage.output_tokens,
        "totalTokens": usage.input_tokens + usage.output_tokens,
        **{k: v for k, v in usage_map.items() if k not in ("inputTokens", "outputTokens", "totalTokens")},
    }
    metrics = metadata.get("metrics")
    latency = metrics.get("latencyMs") if isinstance(metrics, Mapping) else None
    latency_ms = float(latency) if isinstance(latency, int | float) and not isinstance(latency, bool) else elapsed_ms
    response["metrics"] = {"latencyMs": round(latency_ms)}
    for member in ("trace", "performanceConfig", "serviceTier"):
        if member in metadata:
            response[member] = metadata[member]
    tier_raw = metadata.get("serviceTier")
    tier = tier_raw.get("type") if isinstance(tier_raw, Mapping) else None
    return Assembled(response, latency_ms, usage, tier if tier in SERVICE_TIERS else None)


def _index(members: Mapping[str, Any]) -> int:
    index = members.get("contentBlockIndex", 0)
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise BackendError(ErrorClass.UNAVAILABLE, MALFORMED, 200)
    return index


def _count(raw: object) -> int:
    return raw if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0 else 0


def _add(block: _Block, delta: Mapping[str, Any]) -> None:
    for member, value in delta.items():
        if member == "text" and isinstance(value, str):
            block.text.append(value)
        elif member == "toolUse" and isinstance(value, Mapping):
            block.tool_input.append(str(value.get("input", "")))
        elif member == "reasoningContent" and isinstance(value, Mapping):
            if isinstance(value.get("text"), str):
                block.reasoning.append(value["text"])
            if isinstance(value.get("signature"), str):
                block.signature = value["signature"]
            if isinstance(value.get("redactedContent"), bytes | bytearray):
                block.redacted.append(bytes(value["redactedContent"]))
        elif member == "citation" and isinstance(value, Mapping):
            citation = dict(value)
            if isinstance(citation.get("sourceContent"), list):  # CitationSourceContentDelta and its whole are alike
                citation["sourceContent"] = [dict(part) for part in citation["sourceContent"]]
            block.citations.append(citation)
        elif member == "toolResult" and isinstance(value, list):
            block.results.extend(dict(part) for part in value if isinstance(part, Mapping))
        elif member == "image" and isinstance(value, Mapping):
            block.image.update(value)
        else:
            block.other[member] = value


def _content(block: _Block) -> dict[str, Any]:  # noqa: PLR0911 (one return per kind of block)
    """One ContentBlock of Converse's answer from what its start and deltas carried."""
    start = block.start
    if "toolUse" in start:
        raw = "".join(block.tool_input)
        try:
            tool_input = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise BackendError(ErrorClass.UNAVAILABLE, MALFORMED, 200) from None
        return {"toolUse": {**dict(start["toolUse"]), "input": tool_input}}
    if "toolResult" in start:
        result = dict(start["toolResult"])
        result["content"] = block.results
        return {"toolResult": result}
    if "image" in start or block.image:
        return {"image": {**dict(start.get("image", {})), **block.image}}
    if block.redacted:
        return {"reasoningContent": {"redactedContent": b"".join(block.redacted)}}
    if block.reasoning or block.signature is not None:
        text: dict[str, Any] = {"text": "".join(block.reasoning)}
        if block.signature is not None:
            text["signature"] = block.signature
        return {"reasoningContent": {"reasoningText": text}}
    if block.citations:
        return {"citationsContent": {"content": [{"text": "".join(block.text)}], "citations": block.citations}}
    if block.other and not block.text:
        return dict(block.other)
    return {"text": "".join(block.text)}

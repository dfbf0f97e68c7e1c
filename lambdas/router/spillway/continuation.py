"""Continuing a stream cut after its first token on another target, with the partial answer as the assistant's prefix.

A feature opts in (``continue_with_prefix``). What the caller has been sent is the prefix: a trailing assistant
message (or the caller's own trailing assistant message, extended), which Bedrock Converse accepts for the models that
support prefill (spillway/backends/kinds.py, ``takes_prefix``). The continuing target's events are spliced in so that
nothing reaches the caller twice: its ``messageStart`` is dropped, its content blocks are renumbered to go on where
the caller's stopped, and its ``metadata`` usage adds up the segments'.

Only a text answer is continued. A partial holding anything but text deltas (a tool use, reasoning, a citation) ends
incomplete as before: a half-sent tool input or a reasoning block has no form as a prefix. So does one whose
``messageStop`` was already sent (the answer is whole; only its usage is missing) and one with no text yet.

Prefill is refused when it ends in whitespace (Anthropic: "final assistant content cannot end with trailing
whitespace"), so the prefix is the partial text with its trailing whitespace removed; the caller already has that
whitespace, so the continuation's leading whitespace is dropped. Zero knowledge: the partial text is held in memory
for the next request only; nothing here logs, counts or traces it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .backends.contract import Usage
from .backends.kinds import BedrockRef, takes_prefix
from .config import Target
from .streaming import StreamEvent

# Trace code of a target passed over for a continuation: it cannot take the partial answer as a prefix.
NO_PREFIX = "NoAssistantPrefix"
# The router's own event in the stream, where a continuation begins: {"from", "code", "to", "contentBlockIndex"}.
SEAM_EVENT = "spillwayContinuation"


@dataclass(frozen=True, slots=True)
class StreamSeam:
    """Where a cut stream goes on at another target. The engine's stream carries it as an event of its own
    (:meth:`event`, named SEAM_EVENT), so whatever relays events by name relays it, and whatever renders only
    ConverseStream's names passes over it; the tail lists every seam again."""

    cut: str  # the target whose stream was cut
    code: str  # why it was cut (the error code, or StreamStalled)
    target: str  # the target that continues it
    content_block_index: int  # the caller's content block the continuation's first text goes on in

    def data(self) -> dict[str, Any]:
        return {"from": self.cut, "code": self.code, "to": self.target, "contentBlockIndex": self.content_block_index}

    def event(self) -> StreamEvent:
        return SEAM_EVENT, self.data()


def prefix_targets(targets: Mapping[str, Target]) -> frozenset[str]:
    """The targets that can continue a partial answer: those whose own id names a family able to (the registry's
    ``takes_prefix``), and a Bedrock target named by an ARN (Provisioned Throughput, an application profile), which
    names no family, when an able target serves the same model (the platform renders every target of a model from
    its one ``model_id``)."""
    able = {t.id for t in targets.values() if takes_prefix(t.backend)}
    models = {targets[tid].model for tid in able if isinstance(targets[tid].backend, BedrockRef)}
    able |= {t.id for t in targets.values() if _named_by_arn(t) and t.model in models}
    return frozenset(able)


def _named_by_arn(target: Target) -> bool:
    return isinstance(target.backend, BedrockRef) and target.backend.model_id.startswith("arn:")


class Partial:
    """What the caller has been sent of the answer, event by event (after any splice): enough to continue it."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self.text_only = True
        self.stopped = False  # messageStop was sent: the answer is whole
        self._open: int | None = None  # the content block started and not yet stopped
        self._next = 0  # the first content block index not yet used

    def observe(self, event: StreamEvent) -> None:
        name, members = event
        index = members.get("contentBlockIndex")
        if isinstance(index, int) and not isinstance(index, bool):
            self._next = max(self._next, index + 1)
            if name == "contentBlockStop":
                self._open = None
            elif name in ("contentBlockStart", "contentBlockDelta"):
                self._open = index
        if name == "contentBlockStart" and members.get("start"):
            self.text_only = False  # a tool use (or another non-text block) has begun
        elif name == "contentBlockDelta":
            delta = members.get("delta")
            text = delta.get("text") if isinstance(delta, Mapping) and set(delta) == {"text"} else None
            if isinstance(text, str):
                self._text.append(text)
            else:
                self.text_only = False
        elif name == "messageStop":
            self.stopped = True

    @property
    def text(self) -> str:
        return "".join(self._text)

    def continuable(self) -> bool:
        """A text answer, not yet whole, with some text to continue from."""
        return self.text_only and not self.stopped and bool(self.text.strip())

    def resume_index(self) -> int:
        """The caller's content block a continuation's first block goes on in: the open one, else a new one."""
        return self._open if self._open is not None else self._next


def with_prefix(request: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The request again, its answer begun with ``prefix``: appended to the caller's own trailing assistant message
    (its last text block extended), or as a new trailing assistant message."""
    messages = list(request.get("messages") or ())
    last = messages[-1] if messages else None
    if isinstance(last, Mapping) and last.get("role") == "assistant":
        content = list(last.get("content") or ())
        tail = content[-1] if content else None
        if isinstance(tail, Mapping) and set(tail) == {"text"} and isinstance(tail["text"], str):
            content[-1] = {"text": tail["text"] + prefix}
        else:
            content.append({"text": prefix})
        messages[-1] = {**last, "content": content}
    else:
        messages.append({"role": "assistant", "content": [{"text": prefix}]})
    return {**request, "messages": messages}


class Splice:
    """Turns a continuing target's events into the caller's stream: no second ``messageStart``, content blocks
    renumbered from ``offset``, leading whitespace dropped once when the prefix lost its trailing whitespace, and
    the ``metadata`` usage summed with the earlier segments' (``earlier``)."""

    def __init__(self, offset: int, *, trim: bool, earlier: Usage | None) -> None:
        self.offset = offset
        self._trim = trim
        self._earlier = earlier

    def __call__(self, event: StreamEvent) -> StreamEvent | None:
        name, members = event
        if name == "messageStart":
            return None
        out = dict(members)
        index = out.get("contentBlockIndex")
        if isinstance(index, int) and not isinstance(index, bool):
            out["contentBlockIndex"] = index + self.offset
        if self._trim and name == "contentBlockDelta":
            delta = out.get("delta")
            text = delta.get("text") if isinstance(delta, Mapping) else None
            if isinstance(text, str) and isinstance(delta, Mapping):
                kept = text.lstrip()
                if not kept:
                    return None  # whitespace the caller already has
                self._trim = False
                out["delta"] = {**delta, "text": kept}
            else:
                self._trim = False
        elif name == "contentBlockStart":
            self._trim = False
        if name == "metadata" and self._earlier is not None:
            out["usage"] = add_usage(out.get("usage"), self._earlier)
        return name, out


def add_usage(raw: object, earlier: Usage) -> dict[str, Any]:
    """A metadata event's usage with the earlier segments' tokens added (other members kept as sent)."""
    usage = dict(raw) if isinstance(raw, Mapping) else {}
    counts = {"inputTokens": earlier.input_tokens, "outputTokens": earlier.output_tokens}
    for key, extra in counts.items():
        value = usage.get(key)
        usage[key] = (value if isinstance(value, int) and not isinstance(value, bool) else 0) + extra
    usage["totalTokens"] = usage["inputTokens"] + usage["outputTokens"]
    return usage


def total_usage(usages: list[Usage | None]) -> Usage | None:
    """The segments' usage added up (those that reported it); None when none did."""
    known = [u for u in usages if u is not None]
    if not known:
        return None
    return Usage(sum(u.input_tokens for u in known), sum(u.output_tokens for u in known))

"""Buffered Converse through the streaming APIs (spillway/assemble.py): ConverseStream events assembled into an answer
that botocore's own ConverseResponse shape accepts, and the attempt's limits (first token, gaps, timeout) on a
stream read through the pump. Time is a fake clock; the backends are in-memory streams."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import botocore.session  # type: ignore[import-untyped]
import pytest
from botocore.validate import ParamValidator  # type: ignore[import-untyped]

from spillway.assemble import ATTEMPT_TIMEOUT, MALFORMED, assemble, collect
from spillway.config import Target
from spillway.errors import BackendError, ErrorClass
from spillway.streaming import NO_FIRST_TOKEN, STREAM_STALLED, StreamEvent
from tests.fakes import FakeClock

from .helpers import make_table

MODEL = botocore.session.get_session().get_service_model("bedrock-runtime")
CONVERSE_OUTPUT = MODEL.operation_model("Converse").output_shape
TARGET_ID = "claude-sonnet/on_demand/us-east-1"


def target() -> Target:
    return make_table().targets[TARGET_ID]


def shape_errors(response: Mapping[str, Any]) -> str:
    """botocore's validator on Converse's output shape (types, required members, unknown members)."""
    report = ParamValidator().validate(response, CONVERSE_OUTPUT)
    return str(report.generate_report()) if report.has_errors() else ""


RICH: list[StreamEvent] = [
    ("messageStart", {"role": "assistant"}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "think "}}}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "hard"}}}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "sig-1"}}}),
    ("contentBlockStop", {"contentBlockIndex": 0}),
    ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"reasoningContent": {"redactedContent": b"\x00\x01"}}}),
    ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"reasoningContent": {"redactedContent": b"\x02"}}}),
    ("contentBlockStop", {"contentBlockIndex": 1}),
    ("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"text": "Hello, "}}),
    ("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"text": "world"}}),
    ("contentBlockStop", {"contentBlockIndex": 2}),
    ("contentBlockStart", {"contentBlockIndex": 3, "start": {"toolUse": {"toolUseId": "tu-1", "name": "lookup"}}}),
    ("contentBlockDelta", {"contentBlockIndex": 3, "delta": {"toolUse": {"input": '{"city": "Par'}}}),
    ("contentBlockDelta", {"contentBlockIndex": 3, "delta": {"toolUse": {"input": 'is", "days": 3}'}}}),
    ("contentBlockStop", {"contentBlockIndex": 3}),
    ("contentBlockDelta", {"contentBlockIndex": 4, "delta": {"text": "cited"}}),
    (
        "contentBlockDelta",
        {
            "contentBlockIndex": 4,
            "delta": {
                "citation": {
                    "title": "doc",
                    "sourceContent": [{"text": "source"}],
                    "location": {"documentChar": {"documentIndex": 0, "start": 0, "end": 5}},
                }
            },
        },
    ),
    ("contentBlockStop", {"contentBlockIndex": 4}),
    ("messageStop", {"stopReason": "tool_use", "additionalModelResponseFields": {"x": 1}}),
    (
        "metadata",
        {
            "usage": {"inputTokens": 12, "outputTokens": 30, "totalTokens": 42, "cacheReadInputTokens": 4},
            "metrics": {"latencyMs": 321},
            "serviceTier": {"type": "priority"},
            "performanceConfig": {"latency": "standard"},
        },
    ),
]


def test_every_kind_of_block_assembles_into_converses_output_shape() -> None:
    answer = assemble(RICH, elapsed_ms=400.0)
    assert shape_errors(answer.response) == ""
    content = answer.response["output"]["message"]["content"]
    assert content == [
        {"reasoningContent": {"reasoningText": {"text": "think hard", "signature": "sig-1"}}},
        {"reasoningContent": {"redactedContent": b"\x00\x01\x02"}},
        {"text": "Hello, world"},
        {"toolUse": {"toolUseId": "tu-1", "name": "lookup", "input": {"city": "Paris", "days": 3}}},
        {
            "citationsContent": {
                "content": [{"text": "cited"}],
                "citations": [
                    {
                        "title": "doc",
                        "sourceContent": [{"text": "source"}],
                        "location": {"documentChar": {"documentIndex": 0, "start": 0, "end": 5}},
                    }
                ],
            }
        },
    ]
    assert answer.response["stopReason"] == "tool_use"
    assert answer.response["additionalModelResponseFields"] == {"x": 1}
    assert answer.response["usage"] == {
        "inputTokens": 12,
        "outputTokens": 30,
        "totalTokens": 42,
        "cacheReadInputTokens": 4,
    }
    assert answer.response["metrics"] == {"latencyMs": 321}
    assert (answer.service_tier, answer.latency_ms) == ("priority", 321.0)
    assert answer.response["performanceConfig"] == {"latency": "standard"}


def test_the_shape_check_catches_an_answer_that_is_not_converses() -> None:
    """The planted weakness: a stream's events passed on as they came are not Converse's answer."""
    assert shape_errors({"stream": [dict([event]) for event in RICH[:3]]}) != ""
    broken = assemble(RICH, elapsed_ms=1.0).response
    broken["output"]["message"]["content"][2] = {"text": ["Hello, ", "world"]}  # deltas not joined
    assert shape_errors(broken) != ""


def test_tool_results_and_images_assemble_too() -> None:
    events: list[StreamEvent] = [
        ("messageStart", {"role": "assistant"}),
        (
            "contentBlockStart",
            {"contentBlockIndex": 0, "start": {"toolResult": {"toolUseId": "tu-1", "status": "success"}}},
        ),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolResult": [{"text": "42"}]}}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolResult": [{"json": {"a": 1}}]}}),
        ("contentBlockStart", {"contentBlockIndex": 1, "start": {"image": {"format": "png"}}}),
        ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"image": {"source": {"bytes": b"\x89PNG"}}}}),
        ("messageStop", {"stopReason": "end_turn"}),
        ("metadata", {"usage": {"inputTokens": 1, "outputTokens": 2, "totalTokens": 3}, "metrics": {"latencyMs": 5}}),
    ]
    answer = assemble(events, elapsed_ms=9.0)
    assert shape_errors(answer.response) == ""
    assert answer.response["output"]["message"]["content"] == [
        {"toolResult": {"toolUseId": "tu-1", "status": "success", "content": [{"text": "42"}, {"json": {"a": 1}}]}},
        {"image": {"format": "png", "source": {"bytes": b"\x89PNG"}}},
    ]


def test_a_stream_cut_before_message_stop_or_with_bad_tool_json_is_not_an_answer() -> None:
    for events in (
        RICH[:10],
        [*RICH[:12], ("contentBlockDelta", {"contentBlockIndex": 3, "delta": {"toolUse": {"input": "{"}}}), *RICH[-2:]],
    ):
        with pytest.raises(BackendError) as caught:
            assemble(events, elapsed_ms=1.0)
        assert (caught.value.error_class, caught.value.code) == (ErrorClass.UNAVAILABLE, MALFORMED)


def test_without_metadata_the_latency_is_the_attempts_own_and_usage_is_zero() -> None:
    answer = assemble([*RICH[8:11], ("messageStop", {"stopReason": "end_turn"})], elapsed_ms=77.4)
    assert shape_errors(answer.response) == ""
    assert answer.response["metrics"] == {"latencyMs": 77}
    assert answer.response["usage"] == {"inputTokens": 0, "outputTokens": 0, "totalTokens": 0}


# -- collect: the attempt's limits on a stream ------------------------------------------------------------------


class TimedStream:
    """Yields (seconds to spend before it, event) pairs on a fake clock; "block" waits until closed."""

    def __init__(self, clock: FakeClock, plan: Sequence[tuple[float, StreamEvent | str | BackendError]]) -> None:
        self.clock, self.plan = clock, plan
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[StreamEvent]:
        for spend, item in self.plan:
            self.clock.advance(spend)
            if item == "block":
                self.closed.wait(5.0)
                return
            if isinstance(item, BackendError):
                raise item
            assert not isinstance(item, str)
            yield item

    def close(self) -> None:
        self.closed.set()


class StreamingBackendDouble:
    def __init__(self, stream: TimedStream) -> None:
        self.stream = stream
        self.opened: list[float] = []

    def open_stream(self, target: Target, request: Mapping[str, Any], timeout_s: float) -> TimedStream:
        self.opened.append(timeout_s)
        return self.stream


TEXT_ANSWER: list[StreamEvent] = [RICH[0], *RICH[8:11], ("messageStop", {"stopReason": "end_turn"}), RICH[-1]]


def test_collect_measures_time_to_first_token_on_the_clock_and_closes_the_stream() -> None:
    clock = FakeClock()
    # messageStart comes at once (Bedrock sends it before the model has produced anything): not the first token.
    plan: list[tuple[float, StreamEvent | str]] = [(0.0, TEXT_ANSWER[0]), (0.35, TEXT_ANSWER[1])]
    plan += [(0.0, e) for e in TEXT_ANSWER[2:]]
    stream = TimedStream(clock, plan)
    reply = collect(
        StreamingBackendDouble(stream), target(), {}, 5.0, first_token_s=None, inter_token_s=10.0, clock=clock
    )
    assert reply.ttft_ms == pytest.approx(350.0)
    assert reply.response["output"]["message"]["content"] == [{"text": "Hello, world"}]
    assert reply.usage is not None
    assert reply.usage.output_tokens == 30
    assert len(reply.gaps_ms) == 1  # one delta after the first token
    assert stream.closed.is_set()


@pytest.mark.parametrize(
    ("plan", "first_token_s", "code"),
    [
        ([(0.0, TEXT_ANSWER[0]), (0.0, "block")], 0.02, NO_FIRST_TOKEN),
        ([(0.0, TEXT_ANSWER[0]), (0.0, "block")], None, ATTEMPT_TIMEOUT),
        ([(0.0, TEXT_ANSWER[0]), (0.0, TEXT_ANSWER[1]), (0.0, "block")], None, STREAM_STALLED),
    ],
    ids=["no-first-token", "attempt-timeout", "stalled-after-first-token"],
)
def test_an_attempt_without_tokens_in_time_is_unavailable_and_closed(
    plan: list[tuple[float, StreamEvent | str]], first_token_s: float | None, code: str
) -> None:
    clock = FakeClock()
    stream = TimedStream(clock, plan)
    with pytest.raises(BackendError) as caught:
        collect(
            StreamingBackendDouble(stream),
            target(),
            {},
            0.05,  # the attempt's timeout (seconds of waiting on the queue; the fake clock does not move)
            first_token_s=first_token_s,
            inter_token_s=0.02,
            clock=clock,
        )
    assert (caught.value.error_class, caught.value.code) == (ErrorClass.UNAVAILABLE, code)
    assert stream.closed.is_set()


def test_a_stream_exception_is_the_attempts_error_as_the_backend_classed_it() -> None:
    clock = FakeClock()
    throttled = BackendError.of("ThrottlingException", 429)
    stream = TimedStream(clock, [(0.0, TEXT_ANSWER[0]), (0.0, throttled)])
    with pytest.raises(BackendError) as caught:
        collect(StreamingBackendDouble(stream), target(), {}, 5.0, first_token_s=None, inter_token_s=1.0, clock=clock)
    assert (caught.value.error_class, caught.value.code) == (ErrorClass.CAPACITY, "ThrottlingException")

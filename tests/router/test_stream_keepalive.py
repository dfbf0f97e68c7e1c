"""Keep-alive on the streaming route, on a fake clock: API Gateway closes a response stream idle for 5 minutes, so
the router never stays silent longer than ``KEEP_ALIVE_S``: before the first token (across the plan's attempts) and
between tokens, it sends an SSE comment; the first one opens the answer (status 200), after which a request no
target serves ends with the ``spillway`` event carrying the error it would have been."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import handler
from spillway import sse, stream_route
from spillway.config import parse_routing_table
from spillway.engine import Engine
from spillway.stream_route import API_GATEWAY_IDLE_S, KEEP_ALIVE, KEEP_ALIVE_S, StreamHead, StreamTail
from spillway.streaming import StreamTimeout
from tests.fakes import FakeClock

EAST = "us-east-1"
FIRST, SECOND = "sonnet/provisioned/us-east-1", "sonnet/on_demand/us-east-1"
REQUEST = {"messages": [{"role": "user", "content": [{"text": "take your time"}]}]}
NEVER = float("inf")


def _table(**feature: Any) -> dict[str, Any]:
    def target(capacity: str, model_id: str) -> dict[str, Any]:
        return {
            "model": "sonnet",
            "capacity": capacity,
            "region": EAST,
            "backend": {"kind": "bedrock", "model_id": model_id},
        }

    return {
        "version": 1,
        "targets": {FIRST: target("provisioned", "pt-model"), SECOND: target("on_demand", "od-model")},
        "features": {
            "long": {
                "first_capacity": "provisioned", "models": ["sonnet"], "home_region": EAST, "deadline_ms": 900_000,
                "attempt_timeout_ms": {"min": 300, "max": 600_000}, "max_attempts": 2, "first_token_ms": 150_000,
                "inter_token_ms": 200_000, **feature,
            }
        },
    }  # fmt: skip


@dataclass
class Script:
    """One attempt's backend stream on the fake clock: (seconds after it opened, event) pairs, then its end."""

    clock: FakeClock
    events: list[tuple[float, tuple[str, dict[str, Any]]]]
    end_at: float = 0.0
    opened: float = field(init=False)

    def __post_init__(self) -> None:
        self.opened = self.clock()


class VirtualPump:
    """stream_route's Pump on the fake clock: a wait moves the clock to the next event, or by the whole timeout."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.events = list(script.events)

    def next(self, timeout_s: float) -> tuple[str, dict[str, Any]] | None:
        clock = self.script.clock
        due = self.script.opened + (self.events[0][0] if self.events else self.script.end_at)
        if due > clock() + max(0.0, timeout_s):
            clock.advance(max(0.0, timeout_s))
            raise StreamTimeout
        clock.advance(max(0.0, due - clock()))
        return self.events.pop(0)[1] if self.events else None

    def close(self) -> None:
        return


class ScriptedBackend:
    """The bedrock kind, streaming each target's script in turn."""

    def __init__(self, clock: FakeClock, scripts: dict[str, list[tuple[float, tuple[str, dict[str, Any]]]]]) -> None:
        self.clock, self.scripts, self.opened = clock, scripts, []

    def open_stream(self, target: Any, request: Any, timeout_s: float) -> Script:
        self.opened.append(target.id)
        events = self.scripts[target.id]
        return Script(self.clock, events, end_at=max((at for at, _ in events), default=NEVER) + 1.0)


def _delta(text: str) -> tuple[str, dict[str, Any]]:
    return ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": text}})


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    monkeypatch.setattr(stream_route, "Pump", VirtualPump)
    return FakeClock()


def _run(clock: FakeClock, scripts: dict[str, Any], **feature: Any) -> list[tuple[float, Any]]:
    """Each item the engine's stream yields, with the fake clock's reading (seconds since the start) at the time."""
    engine = Engine(parse_routing_table(_table(**feature)), {"bedrock": ScriptedBackend(clock, scripts)}, clock=clock)
    start = clock()
    return [(round(clock() - start, 3), item) for item in engine.stream("long", REQUEST)]


def test_the_interval_is_well_within_api_gateways_idle_limit() -> None:
    assert KEEP_ALIVE_S * 4 <= API_GATEWAY_IDLE_S


def test_before_the_first_token_the_silence_is_broken_at_a_fixed_interval_across_attempts(clock: FakeClock) -> None:
    # The first target never sends a token (abandoned at first_token_ms, 150 s); the second sends one 50 s later.
    scripts = {FIRST: [], SECOND: [(50.0, ("messageStart", {"role": "assistant"})), (50.0, _delta("hi"))]}
    items = _run(clock, scripts)
    keep_alives = [at for at, item in items if item is KEEP_ALIVE]
    assert keep_alives == [60.0, 120.0, 180.0]  # the silence runs on across the abandoned attempt
    head = next(item for _, item in items if isinstance(item, StreamHead))
    assert head.target == SECOND
    assert [a.code for a in head.attempts] == [stream_route.NO_FIRST_TOKEN]
    assert max(b - a for a, b in zip([0.0, *keep_alives], [*keep_alives, 200.0], strict=True)) <= KEEP_ALIVE_S


def test_a_long_gap_between_tokens_is_kept_alive_but_still_bounded_by_inter_token_ms(clock: FakeClock) -> None:
    scripts = {FIRST: [(1.0, _delta("a")), (131.0, _delta("b")), (400.0, _delta("never reached"))]}
    items = _run(clock, scripts)
    keep_alives = [at for at, item in items if item is KEEP_ALIVE]
    assert keep_alives == [61.0, 121.0, 191.0, 251.0, 311.0]  # 60 s after the last thing sent, whatever it was
    tail = items[-1][1]
    assert isinstance(tail, StreamTail)
    assert tail.incomplete
    assert tail.result.code == stream_route.STREAM_STALLED  # 200 s after "b": keep-alives do not stretch the gap
    assert items[-1][0] == 331.0


def test_a_stream_that_never_falls_silent_has_no_keep_alive(clock: FakeClock) -> None:
    scripts = {FIRST: [(float(10 * i + 1), _delta(str(i))) for i in range(30)]}
    items = _run(clock, scripts)
    assert not [item for _, item in items if item is KEEP_ALIVE]
    tail = items[-1][1]
    assert isinstance(tail, StreamTail)
    assert not tail.incomplete


def _wire(items: Iterator[Any]) -> tuple[dict[str, Any], bytes]:
    tails: list[StreamTail] = []
    data = b"".join(handler.stream_answer(items, "req-1", tails.append))
    split = sse.split_prelude(data)
    assert split is not None
    assert data.count(sse.DELIMITER) == 1  # one prelude, whatever opened the answer
    assert len(tails) == 1
    return split


def test_on_the_wire_a_keep_alive_opens_the_answer_and_is_an_sse_comment(clock: FakeClock) -> None:
    scripts = {FIRST: [], SECOND: [(50.0, _delta("hi"))]}
    prelude, body = _wire(item for _, item in _run(clock, scripts))
    assert prelude["statusCode"] == 200
    assert prelude["headers"]["Content-Type"] == "text/event-stream"
    assert prelude["headers"]["x-spillway-request-id"] == "req-1"
    assert body.startswith(b": keep-alive\n\n: keep-alive\n\n: keep-alive\n\nevent: contentBlockDelta\n")
    last = json.loads(body.rstrip(b"\n").rsplit(b"\n", 1)[1].removeprefix(b"data: "))
    assert last["complete"] is True
    assert last["target"] == SECOND  # the route, which the headers could no longer carry


def test_after_a_keep_alive_a_request_no_target_serves_ends_with_its_error_in_band(clock: FakeClock) -> None:
    prelude, body = _wire(item for _, item in _run(clock, {FIRST: [], SECOND: []}))
    assert prelude["statusCode"] == 200
    events = [block for block in body.split(b"\n\n") if block]
    assert events[:-1] == [b": keep-alive"] * 4  # 60, 120, 180, 240 s; the plan ends at 300 s
    last = json.loads(events[-1].split(b"\ndata: ", 1)[1])
    assert last["complete"] is False
    assert last["status"] == 503
    assert last["error"]["code"] == "NoCapacity"
    assert [step["code"] for step in last["route"]] == [stream_route.NO_FIRST_TOKEN] * 2


def test_without_a_keep_alive_a_request_no_target_serves_is_an_ordinary_error_answer(clock: FakeClock) -> None:
    prelude, body = _wire(item for _, item in _run(clock, {FIRST: [], SECOND: []}, first_token_ms=20_000))
    assert prelude["statusCode"] == 503
    assert json.loads(body)["error"]["code"] == "NoCapacity"

"""The engine's streaming walk with the real backends (boto3) on the emulator: failover before the first token,
an explicit incomplete end after it, time to first token into the breaker, nothing of an abandoned attempt seen."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from local.emulator import Emulator, Fault, TargetSpec
from spillway.backends import ClientPool
from spillway.backends.bedrock import BedrockBackend
from spillway.backends.sagemaker import SageMakerBackend
from spillway.config import RoutingConfigError, parse_routing_table
from spillway.engine import Engine, Outcome, Status
from spillway.health import Verdict
from spillway.stream_route import StreamHead, StreamTail
from stacks.platform import load_platform
from stacks.routing import render_routing_table
from tests.router.conftest import PLATFORM

EAST = "us-east-1"
PT = "arn:aws:bedrock:us-east-1:111122223333:provisioned-model/sonnetpt01"
OD = "us.anthropic.claude-sonnet-4-v1:0"
PT_ID, OD_ID = "sonnet/provisioned/us-east-1", "sonnet/on_demand/us-east-1"
REQUEST = {"messages": [{"role": "user", "content": [{"text": "tell me a story"}]}]}


def table(**feature: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "targets": {
            PT_ID: {
                "model": "sonnet",
                "capacity": "provisioned",
                "region": EAST,
                "backend": {"kind": "bedrock", "model_id": PT},
            },
            OD_ID: {
                "model": "sonnet",
                "capacity": "on_demand",
                "region": EAST,
                "backend": {"kind": "bedrock", "model_id": OD},
            },
        },
        "features": {
            "chat": {
                "first_capacity": "provisioned",
                "models": ["sonnet"],
                "home_region": EAST,
                "deadline_ms": 8000,
                "attempt_timeout_ms": {"min": 300, "max": 5000},
                "max_attempts": 3,
                "first_token_ms": 1500,
                "inter_token_ms": 1000,
                **feature,
            }
        },
    }


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    targets = [
        TargetSpec(EAST, "bedrock", PT, ttft_ms=5, ms_per_token=1, output_tokens=8),
        TargetSpec(EAST, "bedrock", OD, ttft_ms=5, ms_per_token=1, output_tokens=8),
    ]
    with Emulator(targets, appconfig=False) as emulator:
        yield emulator


@pytest.fixture
def make_engine(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> Any:
    emu.clear_faults()
    monkeypatch.setenv("SPILLWAY_ENDPOINT_URL", emu.endpoint_url(EAST))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    pool = ClientPool()

    def make(**feature: Any) -> tuple[Engine, list[tuple[str, Verdict]]]:
        bedrock = BedrockBackend(pool)
        engine = Engine(
            parse_routing_table(table(**feature)), {"bedrock": bedrock, "sagemaker": SageMakerBackend(pool)}
        )
        for target in engine.table.targets.values():
            bedrock.warm(target, 5.0)  # as the handler does at init: no attempt pays for building its client
        verdicts: list[tuple[str, Verdict]] = []
        finish = engine.health.finish

        def spy(target_id: str, policy: Any, verdict: Verdict, *args: Any, **kwargs: Any) -> None:
            verdicts.append((target_id, verdict))
            finish(target_id, policy, verdict, *args, **kwargs)

        engine.health.finish = spy  # type: ignore[method-assign]
        return engine, verdicts

    return make


def _split(items: list[Any]) -> tuple[StreamHead | None, list[tuple[str, Any]], StreamTail]:
    heads = [i for i in items if isinstance(i, StreamHead)]
    tails = [i for i in items if isinstance(i, StreamTail)]
    events = [i for i in items if isinstance(i, tuple)]
    assert len(tails) == 1
    assert items[-1] is tails[0]
    assert len(heads) <= 1
    if heads:
        assert items[0] is heads[0]
    return (heads[0] if heads else None), events, tails[0]


def test_a_healthy_stream_is_relayed_whole(make_engine: Any) -> None:
    engine, verdicts = make_engine()
    head, events, tail = _split(list(engine.stream("chat", REQUEST)))
    assert head is not None
    assert head.target == PT_ID
    assert head.attempts == ()
    names = [n for n, _ in events]
    assert names[0] == "messageStart"
    assert names[-3:] == ["contentBlockStop", "messageStop", "metadata"]
    assert names.count("contentBlockDelta") == 8
    assert not tail.incomplete
    assert tail.result.status is Status.SERVED
    assert tail.result.usage is not None
    assert tail.result.usage.output_tokens == 8
    assert tail.ttft_ms is not None
    assert len(tail.gaps_ms) == 7  # between 8 tokens
    assert verdicts == [(PT_ID, Verdict.OK)]


def test_throttle_before_the_first_token_spills_unseen(make_engine: Any, emu: Emulator) -> None:
    emu.set_fault((EAST, "bedrock", PT), Fault.throttle(count=1))
    engine, verdicts = make_engine()
    head, events, tail = _split(list(engine.stream("chat", REQUEST)))
    assert head is not None
    assert head.target == OD_ID
    assert [(a.target, a.outcome) for a in head.attempts] == [(PT_ID, Outcome.CAPACITY)]
    assert [n for n, _ in events].count("messageStart") == 1
    assert tail.result.status is Status.SERVED
    assert tail.result.spilled
    assert verdicts == [(PT_ID, Verdict.CAPACITY), (OD_ID, Verdict.OK)]


def test_no_first_token_in_time_is_abandoned_and_unavailable(make_engine: Any, emu: Emulator) -> None:
    """messageStart arrived, the first token did not: the attempt is closed and the caller sees one clean stream."""
    emu.set_fault((EAST, "bedrock", PT), Fault.slow_first_token(5.0, count=1))
    engine, verdicts = make_engine()
    head, events, tail = _split(list(engine.stream("chat", REQUEST)))
    assert head is not None
    assert head.target == OD_ID
    assert [(a.target, a.outcome, a.code) for a in head.attempts] == [(PT_ID, Outcome.UNAVAILABLE, "NoFirstToken")]
    assert [n for n, _ in events].count("messageStart") == 1
    assert not tail.incomplete
    assert verdicts[0] == (PT_ID, Verdict.FAILURE)
    assert emu.target_stats((EAST, "bedrock", PT))["in_flight"] == 0  # its connection was closed


@pytest.mark.parametrize(("fault", "code"), [
    (Fault.stream_error("model_stream_error", after_tokens=3, count=1), "ModelStreamErrorException"),
    (Fault.stream_error("throttling", after_tokens=3, count=1), "ThrottlingException"),
    (Fault.drop(after_tokens=3, count=1), None),
    (Fault.stall(seconds=5, after_tokens=3, count=1), "StreamStalled"),
])  # fmt: skip
def test_a_failure_after_the_first_token_ends_incomplete(
    make_engine: Any, emu: Emulator, fault: Fault, code: str | None
) -> None:
    emu.set_fault((EAST, "bedrock", PT), fault)
    engine, verdicts = make_engine()
    head, events, tail = _split(list(engine.stream("chat", REQUEST)))
    assert head is not None
    assert head.target == PT_ID
    names = [n for n, _ in events]
    assert names.count("contentBlockDelta") == 3
    assert "messageStop" not in names
    assert tail.incomplete
    assert tail.result.status is Status.INCOMPLETE
    assert tail.result.target == PT_ID
    if code is not None:
        assert tail.result.code == code
    assert tail.result.attempts[-1].target == PT_ID
    assert verdicts[-1][0] == PT_ID
    assert verdicts[-1][1] in (Verdict.FAILURE, Verdict.CAPACITY)


def test_a_slow_first_token_over_the_breakers_ttft_is_slow(make_engine: Any, emu: Emulator) -> None:
    emu.set_fault((EAST, "bedrock", PT), Fault.slow_first_token(0.15, count=1))
    engine, verdicts = make_engine(breaker={"ttft_ms": 100})
    _head, _events, tail = _split(list(engine.stream("chat", REQUEST)))
    assert tail.result.attempts[-1].outcome is Outcome.SLOW
    assert tail.ttft_ms is not None
    assert tail.ttft_ms >= 150
    assert verdicts == [(PT_ID, Verdict.SLOW)]


def _hear_first_tokens(engine: Engine) -> list[tuple[str, Verdict, bool | None]]:
    """What the breaker is told of each attempt's first token (the ttft_over of its finish)."""
    heard: list[tuple[str, Verdict, bool | None]] = []
    inner = engine.health.finish

    def spy(target_id: str, policy: Any, verdict: Verdict, *args: Any, **kwargs: Any) -> None:
        heard.append((target_id, verdict, kwargs.get("ttft_over")))
        inner(target_id, policy, verdict, *args, **kwargs)

    engine.health.finish = spy  # type: ignore[method-assign]
    return heard


def test_the_breaker_hears_the_first_token_of_a_stream_that_fails_after_it(make_engine: Any, emu: Emulator) -> None:
    emu.set_fault((EAST, "bedrock", PT), Fault.stream_error("model_stream_error", after_tokens=3, count=1))
    engine, _ = make_engine(breaker={"ttft_ms": 1})
    heard = _hear_first_tokens(engine)
    *_, tail = _split(list(engine.stream("chat", REQUEST)))
    assert tail.incomplete
    assert heard == [(PT_ID, Verdict.FAILURE, True)]  # failed, and its first token was late: both count
    assert tail.result.attempts[-1].ttft_ms is not None  # the metrics see it too


def test_a_stream_with_no_first_token_tells_the_breaker_none(make_engine: Any, emu: Emulator) -> None:
    emu.set_fault((EAST, "bedrock", PT), Fault.slow_first_token(30.0, count=1))
    engine, _ = make_engine(first_token_ms=300, breaker={"ttft_ms": 100})
    heard = _hear_first_tokens(engine)
    head, *_ = _split(list(engine.stream("chat", REQUEST)))
    assert head is not None
    assert head.target == OD_ID
    assert heard == [(PT_ID, Verdict.FAILURE, None), (OD_ID, Verdict.OK, False)]


def test_a_buffered_request_measures_its_first_token_through_the_stream(make_engine: Any, emu: Emulator) -> None:
    emu.set_fault((EAST, "bedrock", PT), Fault.slow_first_token(0.15, count=1))
    engine, _ = make_engine(breaker={"ttft_ms": 100})
    heard = _hear_first_tokens(engine)
    result = engine.handle("chat", REQUEST)
    assert result.status is Status.SERVED
    (attempt,) = result.attempts
    assert attempt.outcome is Outcome.SLOW
    assert attempt.ttft_ms is not None
    assert attempt.ttft_ms >= 150
    assert heard == [(PT_ID, Verdict.SLOW, True)]
    assert result.response is not None
    assert result.response["output"]["message"]["content"][0]["text"]


def test_no_target_starts_only_a_tail(make_engine: Any, emu: Emulator) -> None:
    emu.set_fault((EAST, "bedrock", PT), Fault.error_response("internal"))
    emu.set_fault((EAST, "bedrock", OD), Fault.error_response("unavailable"))
    engine, _ = make_engine()
    head, events, tail = _split(list(engine.stream("chat", REQUEST)))
    assert head is None
    assert events == []
    assert tail.result.status is Status.EXHAUSTED
    assert tail.result.http_status == 503


def test_a_client_error_answers_at_once(make_engine: Any, emu: Emulator) -> None:
    emu.set_fault((EAST, "bedrock", PT), Fault.error_response("validation"))
    engine, _ = make_engine()
    head, _events, tail = _split(list(engine.stream("chat", REQUEST)))
    assert head is None
    assert tail.result.status is Status.CLIENT_ERROR
    assert [a.target for a in tail.result.attempts] == [PT_ID]


def test_a_caller_that_leaves_closes_the_attempt(make_engine: Any, emu: Emulator) -> None:
    emu.update_target((EAST, "bedrock", PT), ms_per_token=50, output_tokens=40)
    try:
        engine, verdicts = make_engine()
        stream = engine.stream("chat", REQUEST)
        assert isinstance(next(stream), StreamHead)
        next(stream)
        stream.close()
        assert verdicts == [(PT_ID, Verdict.NEUTRAL)]
    finally:
        emu.update_target((EAST, "bedrock", PT), ms_per_token=1, output_tokens=8)


def test_unknown_feature(make_engine: Any) -> None:
    engine, _ = make_engine()
    (tail,) = list(engine.stream("nope", REQUEST))
    assert isinstance(tail, StreamTail)
    assert tail.result.http_status == 404


def test_first_token_ms_must_fit_the_attempt() -> None:
    with pytest.raises(RoutingConfigError, match="first_token_ms"):
        parse_routing_table(table(first_token_ms=9000))


def test_the_platform_file_sets_the_stream_knobs(tmp_path: Any) -> None:
    """A feature's `routing.first_token_ms` / `inter_token_ms` in config/platform.yaml reach the rendered table."""
    doc = yaml.safe_load(PLATFORM.read_text())
    doc["features"]["summarize-thread"].setdefault("routing", {}).update(first_token_ms=1500, inter_token_ms=5000)
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(doc))
    feature = parse_routing_table(render_routing_table(load_platform(path), EAST)).features["summarize-thread"]
    assert (feature.first_token_ms, feature.inter_token_ms) == (1500, 5000)


def test_a_refused_connect_passes_over_the_other_target_behind_that_endpoint(make_engine: Any, emu: Emulator) -> None:
    engine, verdicts = make_engine()
    emu.close_region(EAST)  # connects to the region's port are refused
    try:
        head, _, tail = _split(list(engine.stream("chat", REQUEST)))
    finally:
        emu.open_region(EAST)
    assert head is None
    attempts = [(a.target, a.outcome, a.code) for a in tail.result.attempts]
    # PT and on-demand share bedrock-runtime.us-east-1: the second is not sent after the first could not connect.
    assert attempts == [(PT_ID, Outcome.UNAVAILABLE, "EndpointConnectionError"), (OD_ID, Outcome.UNREACHABLE, None)]
    assert verdicts == [(PT_ID, Verdict.FAILURE)]

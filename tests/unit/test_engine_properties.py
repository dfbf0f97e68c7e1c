"""Properties of the engine over random outcome sequences, latencies, clocks and policies (hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from spillway.capacity import InflightTracker
from spillway.config import MIN_ATTEMPT_MS
from spillway.engine import Engine, Outcome, Status
from spillway.health import BUSY, BreakerState, HealthBoard, Transition

from .helpers import FEATURE, FakeClock, ScriptedBackend, make_table

ALL = sorted(make_table().targets)
KINDS = ["ok", "ok", "slow", "capacity", "unavailable", "ours", "hang", "bug", "client", "overflow"]
SAFE_KINDS = ["ok", "capacity", "unavailable", "ours", "bug"]  # no client verdicts, no hangs

step = st.tuples(st.sampled_from(KINDS), st.floats(0, 3), st.none() | st.floats(0, 5000))
scripts = st.dictionaries(st.sampled_from(ALL), st.lists(step, min_size=1, max_size=6))
policies = st.fixed_dictionaries(
    {
        "deadline_ms": st.integers(500, 30000),
        "max_attempts": st.integers(1, 8),
        "attempt_timeout_ms": st.tuples(st.integers(int(MIN_ATTEMPT_MS), 500), st.integers(500, 10000)).map(
            lambda t: {"min": t[0], "max": t[1]}
        ),
        "order": st.permutations(["spill", "failover", "fallback"]),
    }
)
breakers = st.fixed_dictionaries(
    {
        "consecutive_failures": st.integers(1, 4),
        "min_requests": st.integers(1, 6),
        "error_rate": st.floats(0.1, 1.0),
        "cooldown_s": st.floats(0.5, 10),
        "max_cooldown_s": st.floats(10, 60),
        "latency_ms": st.none() | st.integers(100, 3000),
        "ttft_ms": st.none() | st.integers(100, 3000),
    }
)


def _script(raw: dict[str, list[tuple[str, float, float | None]]]) -> dict[str, list[tuple[str, float, float | None]]]:
    # "slow" is an answer that takes long; the engine decides whether it is over the limit.
    return {
        t: [("ok" if k == "slow" else k, s * (3 if k == "slow" else 1), ttft) for k, s, ttft in v]
        for t, v in raw.items()
    }


@settings(max_examples=120, deadline=None)
@given(
    policy=policies,
    breaker=breakers,
    raw=scripts,
    gaps=st.lists(st.floats(0, 20), min_size=1, max_size=8),
    max_in_flight=st.none() | st.integers(1, 3),
)
def test_property_engine_invariants(
    *,
    policy: dict[str, Any],
    breaker: dict[str, Any],
    raw: dict[str, list[tuple[str, float, float | None]]],
    gaps: list[float],
    max_in_flight: int | None,
) -> None:
    policy["attempt_timeout_ms"]["min"] = min(policy["attempt_timeout_ms"]["min"], policy["deadline_ms"])
    table = make_table(feature=policy, breaker=breaker, max_in_flight=max_in_flight)
    feature = table.features[FEATURE]
    clock = FakeClock()
    board = HealthBoard(clock)
    opened: list[Transition] = []
    board.add_listener(lambda t: opened.append(t) if t.record.state is BreakerState.OPEN else None)
    backend = ScriptedBackend(clock, _script(raw))
    engine = Engine(table, {"bedrock": backend}, health=board, clock=clock, tracker=InflightTracker(clock))
    allowed = {s.target.id for s in engine._planner.candidates(FEATURE)}
    throttle_only = {t for t, v in raw.items() if all(k == "capacity" for k, _, _ in v)}
    for gap in gaps:
        clock.advance(gap)
        start = clock.now
        calls_before = len(backend.calls)
        result = engine.handle(FEATURE, {"messages": []})
        # Attempts never exceed the maximum, and the trace matches what the backends saw.
        assert result.attempts_sent <= feature.max_attempts
        assert result.attempts_sent == len(backend.calls) - calls_before
        # Elapsed time never exceeds the deadline (backends honour the timeout they are given).
        assert clock.now - start <= feature.deadline_ms / 1000 + 1e-6
        assert result.elapsed_ms <= feature.deadline_ms + 1e-3
        for _, timeout_s in backend.calls[calls_before:]:
            assert timeout_s <= feature.attempt_max_ms / 1000 + 1e-9
            assert timeout_s >= feature.attempt_min_ms / 1000 - 1e-9
        # Only allowed targets are touched; the answer's status agrees with its trace.
        assert {a.target for a in result.attempts} <= allowed
        sent = [a for a in result.attempts if a.sent]
        if result.status is Status.SERVED:
            assert result.http_status == 200
            assert sent[-1].outcome in (Outcome.OK, Outcome.SLOW)
            assert result.target == sent[-1].target
        elif result.status is Status.CLIENT_ERROR:
            assert 400 <= result.http_status < 500
            assert sent[-1].outcome is Outcome.CLIENT
        elif result.status is Status.EXHAUSTED:
            assert result.http_status == 503
            assert result.retry_after_s is not None
            assert 1 <= result.retry_after_s <= 60
        else:
            assert result.http_status == 504
        assert len(sent) >= 1 or result.status is Status.DEADLINE
        # A throttle never reaches the caller as something it cannot back off from.
        if sent and all(a.outcome is Outcome.CAPACITY for a in sent):
            assert (result.status, result.http_status) == (Status.EXHAUSTED, 503)
        # Every admitted attempt gave back its in-flight count and its probe slot.
        assert all(engine.tracker.in_flight(t) == 0 for t in table.targets)
        assert all(board.standing(t)[0] != BUSY for t in table.targets)
    # A throttle never opens a breaker.
    assert not {t.record.target for t in opened} & throttle_only
    # A breaker never stays open forever.
    clock.advance(60)
    assert all(board.state(t) is not BreakerState.OPEN for t in table.targets)


@settings(max_examples=120, deadline=None)
@given(
    healthy=st.sampled_from(ALL),
    raw=st.dictionaries(
        st.sampled_from(ALL), st.lists(st.tuples(st.sampled_from(SAFE_KINDS), st.floats(0, 1), st.none()), min_size=1)
    ),
    order=st.permutations(["spill", "failover", "fallback"]),
    first=st.sampled_from(["provisioned", "on_demand"]),
    gaps=st.lists(st.floats(0, 10), min_size=1, max_size=6),
    max_in_flight=st.none() | st.integers(1, 2),
)
def test_property_no_failure_while_a_healthy_target_remained_in_the_plan(
    *,
    healthy: str,
    raw: dict[str, list[tuple[str, float, float | None]]],
    order: list[str],
    first: str,
    gaps: list[float],
    max_in_flight: int | None,
) -> None:
    table = make_table(
        feature={"order": order, "first_capacity": first, "max_attempts": 8, "deadline_ms": 30000},
        breaker={"consecutive_failures": 1},
        max_in_flight=max_in_flight,
    )
    raw = dict(raw)
    raw[healthy] = [("ok", 0.0, None)]
    clock = FakeClock()
    engine = Engine(
        table,
        {"bedrock": ScriptedBackend(clock, raw)},
        health=HealthBoard(clock),
        clock=clock,
        tracker=InflightTracker(clock),
    )
    for gap in gaps:
        clock.advance(gap)
        plan = engine.plan(FEATURE)
        result = engine.handle(FEATURE, {"messages": []})
        if healthy in plan.target_ids:
            assert result.status is Status.SERVED, [(a.target, a.outcome) for a in result.attempts]
        if result.status is not Status.SERVED:
            assert healthy not in plan.target_ids

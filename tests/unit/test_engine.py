"""Execution: each rule of the engine on a fake clock with scripted backends, then properties."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest

from spillway.backends.contract import BackendReply
from spillway.capacity import InflightTracker
from spillway.config import RoutingTable, Target
from spillway.engine import Engine, Outcome, RouteResult, Status
from spillway.errors import BackendError, ErrorClass
from spillway.health import BUSY, BreakerState, HealthBoard, Transition, Verdict
from spillway.policy import StepKind

from .helpers import FEATURE, FakeClock, ScriptedBackend, make_table

PT_E, OD_E = "claude-sonnet/provisioned/us-east-1", "claude-sonnet/on_demand/us-east-1"
PT_W, OD_W = "claude-sonnet/provisioned/us-west-2", "claude-sonnet/on_demand/us-west-2"
NPT_E, NOD_E = "nova-lite/provisioned/us-east-1", "nova-lite/on_demand/us-east-1"
REQUEST = {"messages": [{"role": "user", "content": [{"text": "hello"}]}]}


def rig(
    script: dict[str, list[tuple[str, float, float | None]]] | None = None, table: RoutingTable | None = None
) -> tuple[Engine, ScriptedBackend, FakeClock]:
    clock = FakeClock()
    backend = ScriptedBackend(clock, script or {})
    engine = Engine(
        table or make_table(),
        {"bedrock": backend},
        health=HealthBoard(clock),
        clock=clock,
        tracker=InflightTracker(clock),
    )
    return engine, backend, clock


def trace(result: RouteResult) -> list[tuple[str, str]]:
    return [(a.target, a.outcome.value) for a in result.attempts]


def test_served_at_once() -> None:
    engine, backend, _ = rig({PT_E: [("ok", 0.2, 50.0)]})
    result = engine.handle(FEATURE, REQUEST)
    assert (result.status, result.http_status, result.target) == (Status.SERVED, 200, PT_E)
    assert trace(result) == [(PT_E, "ok")]
    assert result.attempts[0].latency_ms == pytest.approx(200)
    assert result.elapsed_ms == pytest.approx(200)
    assert result.response is not None
    assert "output" in result.response
    assert not (result.spilled)
    assert not (result.fell_back)
    assert not (result.failed_over)
    assert not (result.predicted_spill)
    assert backend.calls == [(PT_E, 8.0)]  # the attempt maximum, well inside the 20 s deadline
    assert backend.requests == [REQUEST]


def test_a_throttle_spills_to_on_demand_now_and_the_cooldown_skips_pt_next_time() -> None:
    engine, backend, clock = rig({PT_E: [("capacity", 0.01, None), ("ok", 0, None)]})
    result = engine.handle(FEATURE, REQUEST)
    assert trace(result) == [(PT_E, "capacity"), (OD_E, "ok")]
    assert result.attempts[0].code == "ThrottlingException"
    assert result.attempts[1].kind is StepKind.SPILL
    assert result.spilled
    assert not result.failed_over
    assert engine.health.state(PT_E) is BreakerState.CLOSED  # a throttle is not a failure
    second = engine.handle(FEATURE, REQUEST)
    assert trace(second) == [(OD_E, "ok")]  # PT is on its short capacity cooldown: no throttled round trip
    clock.advance(1.0)
    assert trace(engine.handle(FEATURE, REQUEST)) == [(PT_E, "ok")]
    assert len(backend.calls) == 4


def test_spill_then_failover_then_fallback() -> None:
    engine, _, _ = rig(
        {
            PT_E: [("capacity", 0, None)],
            OD_E: [("unavailable", 0.1, None)],
            PT_W: [("ours", 0, None)],
            OD_W: [("hang", 0, None)],
        },
        make_table(feature={"max_attempts": 5}),
    )
    result = engine.handle(FEATURE, REQUEST)
    assert trace(result) == [
        (PT_E, "capacity"),
        (OD_E, "unavailable"),
        (PT_W, "ours"),
        (OD_W, "unavailable"),
        (NPT_E, "ok"),
    ]
    assert [a.code for a in result.attempts[:4]] == [
        "ThrottlingException",
        "InternalServerException",
        "AccessDeniedException",
        "ReadTimeoutError",
    ]
    assert result.fell_back
    assert not result.failed_over
    assert not result.spilled
    assert result.target == NPT_E


def test_each_attempt_gets_the_time_left_capped_by_the_attempt_maximum() -> None:
    engine, backend, _ = rig(
        {t: [("hang", 0, None)] for t in (PT_E, OD_E, PT_W, OD_W)},
        make_table(feature={"deadline_ms": 20000, "attempt_timeout_ms": {"min": 300, "max": 8000}}),
    )
    result = engine.handle(FEATURE, REQUEST)
    assert [round(t, 3) for _, t in backend.calls] == [8.0, 8.0, 4.0]
    assert result.status is Status.DEADLINE
    assert result.http_status == 504
    assert result.elapsed_ms == pytest.approx(20000)


def test_no_attempt_starts_with_less_than_the_minimum_left() -> None:
    engine, backend, _ = rig(
        {PT_E: [("unavailable", 9.8, None)]},
        make_table(feature={"deadline_ms": 10000, "attempt_timeout_ms": {"min": 300, "max": 10000}}),
    )
    result = engine.handle(FEATURE, REQUEST)
    assert len(backend.calls) == 1
    assert (result.status, result.http_status, result.code) == (Status.DEADLINE, 504, "InternalServerException")


def test_a_caller_deadline_can_only_shorten_the_feature_deadline() -> None:
    engine, backend, _ = rig({PT_E: [("hang", 0, None)], OD_E: [("hang", 0, None)]})
    result = engine.handle(FEATURE, REQUEST, deadline_ms=1000)
    assert backend.calls == [(PT_E, 1.0)]
    assert result.status is Status.DEADLINE
    assert result.elapsed_ms == pytest.approx(1000)
    engine2, backend2, _ = rig()
    engine2.handle(FEATURE, REQUEST, deadline_ms=10**9)
    assert backend2.calls == [(PT_E, 8.0)]


def test_client_errors_return_at_once_with_their_status() -> None:
    engine, backend, _ = rig({PT_E: [("client", 0, None)]})
    result = engine.handle(FEATURE, REQUEST)
    assert (result.status, result.http_status, result.code) == (Status.CLIENT_ERROR, 400, "ValidationException")
    assert len(backend.calls) == 1
    assert engine.health.record_of(PT_E).state is BreakerState.CLOSED


def test_a_context_overflow_falls_back_to_the_next_model_only() -> None:
    engine, _, _ = rig({PT_E: [("overflow", 0, None)]})
    result = engine.handle(FEATURE, REQUEST)
    assert trace(result) == [(PT_E, "client"), (NPT_E, "ok")]
    # Every model too small: the caller gets the 400, not a 503 inviting a retry.
    engine, backend, _ = rig({PT_E: [("overflow", 0, None)], NPT_E: [("overflow", 0, None)]})
    result = engine.handle(FEATURE, REQUEST)
    assert (result.status, result.http_status, result.code) == (Status.CLIENT_ERROR, 400, "ValidationException")
    assert len(backend.calls) == 2
    engine, _, _ = rig({PT_E: [("overflow", 0, None)]}, make_table(feature={"fallback_on_context_overflow": False}))
    assert engine.handle(FEATURE, REQUEST).status is Status.CLIENT_ERROR


def test_max_attempts_then_503_with_retry_after() -> None:
    engine, backend, _ = rig({t: [("unavailable", 0, None)] for t in make_table().targets})
    result = engine.handle(FEATURE, REQUEST)
    assert len(backend.calls) == 4 == result.attempts_sent
    assert (result.status, result.http_status) == (Status.EXHAUSTED, 503)
    assert result.retry_after_s is not None
    assert 1 <= result.retry_after_s <= 60


def test_when_everything_is_open_one_probe_is_sent_and_retry_after_is_the_soonest_recovery() -> None:
    table = make_table(breaker={"consecutive_failures": 1, "cooldown_s": 7})
    engine, backend, clock = rig({t: [("unavailable", 0, None)] for t in table.targets}, table)
    for _ in range(2):
        engine.handle(FEATURE, REQUEST)
    assert all(engine.health.state(t) is BreakerState.OPEN for t in table.targets)
    backend.calls.clear()
    clock.advance(2)
    result = engine.handle(FEATURE, REQUEST)
    assert len(backend.calls) == 1  # the least bad one, probed, rather than failing unseen
    assert result.status is Status.EXHAUSTED
    assert result.retry_after_s == 5


def test_throttles_that_run_out_the_clock_answer_503_with_retry_after() -> None:
    # Every sent attempt was throttled and too little time is left for another: the caller must be able to back off.
    table = make_table(feature={"deadline_ms": 1000, "attempt_timeout_ms": {"min": 300, "max": 8000}})
    engine, backend, _ = rig({PT_E: [("capacity", 0.5, None)], OD_E: [("capacity", 0.3, None)]}, table)
    result = engine.handle(FEATURE, REQUEST)
    assert trace(result) == [(PT_E, "capacity"), (OD_E, "capacity")]
    assert len(backend.calls) == 2
    assert (result.status, result.http_status, result.code) == (Status.EXHAUSTED, 503, "ThrottlingException")
    assert result.retry_after_s is not None
    assert 1 <= result.retry_after_s <= 60
    # One attempt that was not a throttle makes it a plain deadline again.
    engine, _, _ = rig({PT_E: [("capacity", 0.5, None)], OD_E: [("unavailable", 0.3, None)]}, table)
    result = engine.handle(FEATURE, REQUEST)
    assert (result.status, result.http_status, result.retry_after_s) == (Status.DEADLINE, 504, None)


class _MalformedBackend:
    """Answers with something that is not a BackendReply: judging it raises inside the engine."""

    def invoke(self, target: Target, request: Any, timeout_s: float) -> Any:
        return {"output": {}}


def test_an_exception_between_admission_and_verdict_leaks_no_probe_slot_or_in_flight_count() -> None:
    table = make_table(breaker={"latency_ms": 5000}, max_in_flight=2)
    clock = FakeClock()
    health, tracker = HealthBoard(clock), InflightTracker(clock)
    engine = Engine(table, {"bedrock": _MalformedBackend()}, health=health, clock=clock, tracker=tracker)
    policy = table.features[FEATURE].breaker
    for _ in range(3):
        health.finish(PT_E, policy, Verdict.FAILURE)
    clock.advance(5)
    assert health.state(PT_E) is BreakerState.HALF_OPEN
    with pytest.raises(AttributeError):
        engine.handle(FEATURE, REQUEST)  # the half-open probe goes to PT_E; judging its reply raises
    assert tracker.in_flight(PT_E) == 0
    assert health.state(PT_E) is BreakerState.HALF_OPEN
    assert health.standing(PT_E)[0] != BUSY  # the probe slot came back (NEUTRAL): the target can be probed again


def test_a_failing_in_flight_tracker_gives_the_probe_slot_back() -> None:
    table = make_table(max_in_flight=2)
    engine, _, clock = rig(table=table)
    policy = table.features[FEATURE].breaker
    for _ in range(3):
        engine.health.finish(PT_E, policy, Verdict.FAILURE)
    clock.advance(5)

    def broken(*_: Any, **__: Any) -> int:
        raise RuntimeError("tracker bug")

    engine.tracker.try_start = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        engine.handle(FEATURE, REQUEST)
    assert engine.health.standing(PT_E)[0] != BUSY


def test_backend_bugs_are_unavailable_attempts_not_exceptions() -> None:
    engine, _, _ = rig({PT_E: [("bug", 0, None)]})
    result = engine.handle(FEATURE, REQUEST)
    assert trace(result) == [(PT_E, "unavailable"), (OD_E, "ok")]
    assert result.attempts[0].code == "RuntimeError"


def test_a_missing_backend_kind_is_ours_and_moves_on() -> None:
    clock = FakeClock()
    engine = Engine(make_table(), {}, health=HealthBoard(clock), clock=clock, tracker=InflightTracker(clock))
    result = engine.handle(FEATURE, REQUEST)
    assert result.status is Status.EXHAUSTED
    assert {a.outcome for a in result.attempts} == {Outcome.OURS}
    assert {a.code for a in result.attempts} == {"NoBackendForKind"}


def test_unknown_feature_is_a_404_without_attempts() -> None:
    engine, backend, _ = rig()
    result = engine.handle("nope", REQUEST)
    assert (result.status, result.http_status, result.code, result.attempts) == (
        Status.CLIENT_ERROR,
        404,
        "UnknownFeature",
        (),
    )
    assert backend.calls == []


def test_slow_answers_are_kept_and_feed_the_breaker() -> None:
    table = make_table(breaker={"latency_ms": 1000, "ttft_ms": 300, "min_requests": 3, "consecutive_failures": 9})
    engine, _, _ = rig({PT_E: [("ok", 1.5, None), ("ok", 0.1, 900.0), ("ok", 1.2, None), ("ok", 0, None)]}, table)
    results = [engine.handle(FEATURE, REQUEST) for _ in range(3)]
    assert [trace(r) for r in results] == [[(PT_E, "slow")]] * 3
    assert all(r.status is Status.SERVED and r.response is not None for r in results)
    assert engine.health.state(PT_E) is BreakerState.OPEN
    assert trace(engine.handle(FEATURE, REQUEST))[0][0] == OD_E


def test_repeated_failures_open_the_breaker_and_traffic_moves() -> None:
    engine, backend, clock = rig({OD_E: [("unavailable", 0, None)], PT_E: [("capacity", 0, None)]})
    for _ in range(3):
        engine.handle(FEATURE, REQUEST)
        clock.advance(1.0)
    assert engine.health.state(OD_E) is BreakerState.OPEN
    backend.calls.clear()
    result = engine.handle(FEATURE, REQUEST)
    assert OD_E not in [t for t, _ in backend.calls]
    assert result.target == PT_W


def test_predictive_spill_when_pt_is_full() -> None:
    engine, backend, _ = rig(table=make_table(max_in_flight=2))
    for _ in range(2):
        assert engine.tracker.try_start(PT_E, 2) is not None  # two requests already in flight
    result = engine.handle(FEATURE, REQUEST)
    assert trace(result) == [(PT_E, "predicted_full"), (OD_E, "ok")]
    assert result.predicted_spill
    assert result.spilled
    assert result.attempts_sent == 1
    assert [t for t, _ in backend.calls] == [OD_E]
    assert engine.tracker.in_flight(PT_E) == 2
    engine.tracker.finish(PT_E, 2, throttled=False)
    assert trace(engine.handle(FEATURE, REQUEST)) == [(PT_E, "ok")]


def test_a_throttle_teaches_pt_its_size() -> None:
    clock = FakeClock()
    tracker = InflightTracker(clock, learn_ttl_s=30)
    levels = [tracker.try_start(PT_E, None) for _ in range(4)]
    assert levels == [1, 2, 3, 4]
    tracker.finish(PT_E, 4, throttled=True)  # the fourth was throttled: it holds three
    assert tracker.limit(PT_E, None) == 3
    assert tracker.try_start(PT_E, None) is None
    assert tracker.limit(PT_E, 2) == 2  # the configured size still caps it
    tracker.finish(PT_E, 3, throttled=False)  # a success at the limit probes one higher
    assert tracker.limit(PT_E, None) == 4
    clock.advance(30)
    assert tracker.limit(PT_E, None) is None  # learned sizes expire


def test_the_last_step_is_forced_rather_than_failing_unsent() -> None:
    table = make_table(feature={"order": []}, max_in_flight=1)
    engine, backend, _ = rig(table=table)
    engine.tracker.try_start(PT_E, 1)
    result = engine.handle(FEATURE, REQUEST)
    assert result.status is Status.SERVED
    assert backend.calls == [(PT_E, 8.0)]


def test_zero_knowledge_nothing_of_the_request_or_answer_reaches_results_or_transitions() -> None:
    canary = "CANARY-4b1d-secret-prompt"

    class Leaky:
        def __init__(self) -> None:
            self.n = 0

        def invoke(self, target: Target, request: Any, timeout_s: float) -> BackendReply:
            self.n += 1
            if target.capacity == "provisioned":
                raise ValueError(f"could not parse {request}")
            if self.n < 6:
                raise BackendError(ErrorClass.UNAVAILABLE, "InternalServerException", 500)
            return BackendReply({"output": canary}, 1.0)

    clock = FakeClock()
    board = HealthBoard(clock)
    seen: list[Transition] = []
    board.add_listener(seen.append)
    engine = Engine(make_table(breaker={"consecutive_failures": 1}), {"bedrock": Leaky()}, health=board, clock=clock)
    results = [engine.handle(FEATURE, {"messages": [{"content": [{"text": canary}]}]}) for _ in range(3)]
    assert results[-1].response == {"output": canary}
    text = repr(results) + str(results) + repr(seen) + repr(board.export()) + repr(engine.plan(FEATURE))
    assert canary not in text
    assert "ValueError" in text  # the class name is kept, the message is not


def test_concurrent_requests_share_in_flight_counts_and_spill_predictively() -> None:
    table = make_table(max_in_flight=2)
    entered = threading.Semaphore(0)
    release = threading.Event()

    class Gate:
        def invoke(self, target: Target, request: Any, timeout_s: float) -> BackendReply:
            if target.id == PT_E:
                entered.release()
                assert release.wait(10)
            return BackendReply({"output": target.id}, 0.0)

    engine = Engine(table, {"bedrock": Gate()})
    results: list[RouteResult] = []
    lock = threading.Lock()

    def call() -> None:
        result = engine.handle(FEATURE, REQUEST)
        with lock:
            results.append(result)

    holders = []
    for _ in range(2):
        holders.append(threading.Thread(target=call))
        holders[-1].start()
        assert entered.acquire(timeout=10)
    assert engine.tracker.in_flight(PT_E) == 2
    others = [threading.Thread(target=call) for _ in range(4)]
    for thread in others:
        thread.start()
    for thread in others:
        thread.join(10)
    assert len(results) == 4
    assert all(r.target == OD_E and r.predicted_spill for r in results)
    release.set()
    for thread in holders:
        thread.join(10)
    assert sorted(r.target or "" for r in results) == [OD_E] * 4 + [PT_E] * 2
    assert engine.tracker.in_flight(PT_E) == 0


def test_many_threads_random_outcomes_keep_the_books_straight() -> None:
    table = make_table(max_in_flight=3)
    outcomes = ["ok", "ok", "ok", "capacity", "unavailable", "bug"]

    class Chaos:
        def __init__(self, seed: int) -> None:
            self.rng = random.Random(seed)
            self.lock = threading.Lock()

        def invoke(self, target: Target, request: Any, timeout_s: float) -> BackendReply:
            with self.lock:
                kind = self.rng.choice(outcomes)
            if kind == "capacity":
                raise BackendError.of("ThrottlingException", 429)
            if kind == "unavailable":
                raise BackendError.of("ServiceUnavailableException", 503)
            if kind == "bug":
                raise ZeroDivisionError
            return BackendReply({"output": "x"}, 0.0)

    engine = Engine(table, {"bedrock": Chaos(7)})
    failures: list[BaseException] = []
    counts: list[int] = []

    def worker() -> None:
        try:
            for _ in range(150):
                result = engine.handle(FEATURE, REQUEST)
                assert result.attempts_sent <= 4
                assert result.status in (Status.SERVED, Status.EXHAUSTED)
                counts.append(result.attempts_sent)
        except BaseException as exc:  # surfaced below
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures
    assert len(counts) == 1200
    assert all(engine.tracker.in_flight(t) == 0 for t in table.targets)


class ConnectFailing(ScriptedBackend):
    """Bedrock in us-east-1 cannot be connected to: each attempt there waits out a 2 s connect timeout (or, with
    `read_timeout`, connects and then times out reading: the endpoint is up, the model is not)."""

    def __init__(self, clock: FakeClock, *, read_timeout: bool = False) -> None:
        super().__init__(clock, {})
        self.read_timeout = read_timeout

    def invoke(self, target: Target, request: Any, timeout_s: float) -> BackendReply:
        if target.region != "us-east-1":
            return super().invoke(target, request, timeout_s)
        self.calls.append((target.id, timeout_s))
        self.clock.advance(2.0)
        if self.read_timeout:
            raise BackendError(ErrorClass.UNAVAILABLE, "ReadTimeoutError")
        raise BackendError(ErrorClass.UNAVAILABLE, "ConnectTimeoutError")


def test_a_connect_that_failed_passes_over_the_other_targets_behind_that_endpoint_in_this_request() -> None:
    clock = FakeClock()
    backend = ConnectFailing(clock)
    engine = Engine(make_table(), {"bedrock": backend}, health=HealthBoard(clock), clock=clock)
    result = engine.handle(FEATURE, REQUEST)
    # PT and on-demand in us-east-1 share bedrock-runtime.us-east-1: one connect timeout, not two.
    assert trace(result) == [(PT_E, "unavailable"), (OD_E, "unreachable"), (PT_W, "ok")]
    assert [t for t, _ in backend.calls] == [PT_E, PT_W]
    assert result.elapsed_ms == pytest.approx(2000)
    assert not result.attempts[1].sent
    # Per request only: the next request's plan is the breakers' (one failure trips nothing yet).
    assert trace(engine.handle(FEATURE, REQUEST))[:2] == [(PT_E, "unavailable"), (OD_E, "unreachable")]


def test_a_read_timeout_is_not_an_unreachable_endpoint() -> None:
    clock = FakeClock()
    backend = ConnectFailing(clock, read_timeout=True)
    engine = Engine(make_table(), {"bedrock": backend}, health=HealthBoard(clock), clock=clock)
    result = engine.handle(FEATURE, REQUEST)
    assert trace(result) == [(PT_E, "unavailable"), (OD_E, "unavailable"), (PT_W, "ok")]

"""Circuit breakers: each rule on an injected clock, then properties over random outcome sequences."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spillway.config import BreakerPolicy
from spillway.health import (
    AVAILABLE,
    BUSY,
    COOLING,
    OPEN,
    Admission,
    BreakerRecord,
    BreakerState,
    HealthBoard,
    Transition,
    Verdict,
    ttft_percentile_over,
)

from .helpers import FakeClock

T = "claude-sonnet/provisioned/us-east-1"
P = BreakerPolicy(
    error_rate=0.5,
    window_s=30,
    min_requests=5,
    consecutive_failures=3,
    cooldown_s=5,
    max_cooldown_s=60,
    half_open_trickle=1,
    ramp_steps=(0.25, 0.5),
    ramp_successes=2,
    capacity_cooldown_s=1,
)


def board() -> tuple[HealthBoard, FakeClock, list[Transition]]:
    clock = FakeClock()
    b = HealthBoard(clock)
    events: list[Transition] = []
    b.add_listener(events.append)
    return b, clock, events


def feed(b: HealthBoard, verdict: Verdict, n: int = 1, policy: BreakerPolicy = P, *, force: bool = False) -> None:
    for _ in range(n):
        admission = b.begin(T, policy, force=force)
        assert admission.admitted
        b.finish(T, policy, verdict, admission)


def trip(b: HealthBoard) -> None:
    feed(b, Verdict.FAILURE, 3)
    assert b.state(T) is BreakerState.OPEN


def test_consecutive_failures_open_it() -> None:
    b, _, events = board()
    feed(b, Verdict.FAILURE, 2)
    assert b.state(T) is BreakerState.CLOSED
    feed(b, Verdict.FAILURE)
    assert b.state(T) is BreakerState.OPEN
    assert [e.cause for e in events] == ["trip"]
    assert b.begin(T, P).admission is Admission.REFUSED
    assert b.standing(T)[0] == OPEN


def test_a_success_resets_the_consecutive_count() -> None:
    b, _, _ = board()
    for _ in range(4):
        feed(b, Verdict.FAILURE, 2)
        feed(b, Verdict.OK, 5)  # keeps the window's error rate under 0.5
    assert b.state(T) is BreakerState.CLOSED


def test_error_rate_over_the_window_opens_it() -> None:
    b, _, _ = board()
    policy = replace(P, consecutive_failures=100)
    for _ in range(2):
        feed(b, Verdict.OK, 1, policy)
        feed(b, Verdict.FAILURE, 1, policy)
    assert b.state(T) is BreakerState.CLOSED  # 2/4: under min_requests
    feed(b, Verdict.FAILURE, 1, policy)  # 3/5 >= 0.5
    assert b.state(T) is BreakerState.OPEN


def test_the_window_slides() -> None:
    b, clock, _ = board()
    policy = replace(P, consecutive_failures=100)
    feed(b, Verdict.FAILURE, 2, policy)
    feed(b, Verdict.OK, 2, policy)
    clock.advance(31)  # those four fall out of the window
    feed(b, Verdict.OK, 3, policy)
    feed(b, Verdict.FAILURE, 2, policy)  # 2/5 in the window; 4/9 had they stayed... both under 0.5
    assert b.state(T) is BreakerState.CLOSED
    feed(b, Verdict.FAILURE, 1, policy)  # 3/6 in the window: opens
    assert b.state(T) is BreakerState.OPEN


def test_slow_answers_open_it_by_rate() -> None:
    b, _, _ = board()
    feed(b, Verdict.SLOW, 4)
    assert b.state(T) is BreakerState.CLOSED
    feed(b, Verdict.SLOW)
    assert b.state(T) is BreakerState.OPEN


def test_a_throttle_is_a_short_capacity_cooldown_not_a_failure() -> None:
    b, clock, events = board()
    feed(b, Verdict.CAPACITY, 50, force=True)
    assert b.state(T) is BreakerState.CLOSED
    assert events == []
    assert b.standing(T) == (COOLING, clock.now + 1)
    assert b.begin(T, P).admission is Admission.REFUSED
    assert b.begin(T, P, force=True).admission is Admission.ADMITTED
    clock.advance(1)
    assert b.standing(T) == (AVAILABLE, 0.0)


def test_retry_after_lengthens_the_capacity_cooldown_up_to_the_cap() -> None:
    b, clock, _ = board()
    b.finish(T, P, Verdict.CAPACITY, retry_after_s=7)
    assert b.standing(T) == (COOLING, clock.now + 7)
    b.finish(T, P, Verdict.CAPACITY, retry_after_s=1)  # a shorter hint never cuts it
    assert b.standing(T) == (COOLING, clock.now + 7)
    b.finish(T, P, Verdict.CAPACITY, retry_after_s=10_000)
    assert b.standing(T) == (COOLING, clock.now + P.max_cooldown_s)


def test_half_open_admits_a_trickle_then_ramps_in_steps_then_closes() -> None:
    b, clock, events = board()
    trip(b)
    clock.advance(4.9)
    assert b.state(T) is BreakerState.OPEN
    clock.advance(0.1)
    assert b.state(T) is BreakerState.HALF_OPEN
    probe = b.begin(T, P)
    assert probe.admission is Admission.PROBE
    assert b.begin(T, P).admission is Admission.REFUSED  # one probe in flight at a time
    assert b.standing(T)[0] == BUSY
    b.finish(T, P, Verdict.OK, probe)
    assert b.state(T) is BreakerState.RAMPING
    # Step 1: a quarter of requests; step 2: half; then closed.
    admitted = [b.begin(T, P).admission for _ in range(8)]
    assert admitted.count(Admission.ADMITTED) == 2
    for _ in range(2):
        b.finish(T, P, Verdict.OK)
    admitted = [b.begin(T, P).admission for _ in range(8)]
    assert admitted.count(Admission.ADMITTED) == 4
    for _ in range(2):
        b.finish(T, P, Verdict.OK)
    assert b.state(T) is BreakerState.CLOSED
    assert [e.cause for e in events] == ["trip", "half_open", "probe_ok", "ramp_up", "closed"]
    assert all(b.begin(T, P).admission is Admission.ADMITTED for _ in range(10))


def test_a_failed_probe_reopens_with_a_longer_cooldown_capped() -> None:
    b, clock, _ = board()
    trip(b)
    cooldowns = []
    for _ in range(6):
        until = b.record_of(T).cooldown_until
        cooldowns.append(round(until - clock.now))
        clock.now = until
        probe = b.begin(T, P)
        assert probe.admission is Admission.PROBE
        b.finish(T, P, Verdict.FAILURE, probe)
        assert b.state(T) is BreakerState.OPEN
    assert cooldowns == [5, 10, 20, 40, 60, 60]


def test_a_failure_while_ramping_reopens_with_a_longer_cooldown() -> None:
    b, clock, _ = board()
    trip(b)
    clock.advance(5)
    b.finish(T, P, Verdict.OK, b.begin(T, P))
    assert b.state(T) is BreakerState.RAMPING
    b.finish(T, P, Verdict.SLOW)
    assert b.state(T) is BreakerState.OPEN
    assert b.record_of(T).cooldown_until == clock.now + 10


def test_full_recovery_resets_the_escalation() -> None:
    b, clock, _ = board()
    trip(b)
    clock.advance(5)
    b.finish(T, P, Verdict.FAILURE, b.begin(T, P))  # cooldown 10
    clock.advance(10)
    b.finish(T, P, Verdict.OK, b.begin(T, P))
    for _ in range(4):
        b.finish(T, P, Verdict.OK)
    assert b.state(T) is BreakerState.CLOSED
    trip(b)
    assert b.record_of(T).cooldown_until == clock.now + 5


def test_late_answers_from_before_the_trip_do_not_move_half_open() -> None:
    b, clock, _ = board()
    trip(b)
    clock.advance(5)
    assert b.state(T) is BreakerState.HALF_OPEN
    b.finish(T, P, Verdict.FAILURE)  # not a probe
    b.finish(T, P, Verdict.OK)
    assert b.state(T) is BreakerState.HALF_OPEN


def test_a_retrip_never_shortens_a_cooldown() -> None:
    b, clock, _ = board()
    long = replace(P, cooldown_s=60)
    feed(b, Verdict.FAILURE, 3, long)
    until = b.record_of(T).cooldown_until
    # A forced probe judged by a lenient feature (cooldown 1 s) fails: the 60 s cooldown stands.
    clock.advance(1)
    lenient = replace(P, cooldown_s=1, max_cooldown_s=1)
    b.finish(T, lenient, Verdict.FAILURE, b.begin(T, lenient, force=True))
    assert b.record_of(T).cooldown_until == until
    clock.advance(58)
    assert b.state(T) is BreakerState.OPEN


def test_forced_probe_on_an_open_target_can_start_its_recovery() -> None:
    b, _, _ = board()
    trip(b)
    probe = b.begin(T, P, force=True)
    assert probe.admission is Admission.PROBE
    b.finish(T, P, Verdict.OK, probe)
    assert b.state(T) is BreakerState.RAMPING


def test_capacity_and_client_outcomes_release_the_probe_slot() -> None:
    b, clock, _ = board()
    trip(b)
    clock.advance(5)
    b.finish(T, P, Verdict.CAPACITY, b.begin(T, P))
    clock.advance(1)
    probe = b.begin(T, P)
    assert probe.admission is Admission.PROBE
    b.finish(T, P, Verdict.NEUTRAL, probe)
    assert b.begin(T, P).admission is Admission.PROBE
    assert b.state(T) is BreakerState.HALF_OPEN


def test_a_stale_probe_success_cannot_cancel_a_retrip() -> None:
    # The reviewer's reproduction: two probes in flight (trickle 2); A fails and re-opens with a doubled cooldown;
    # B, admitted before that re-trip, then succeeds. B speaks for a half-open state that is gone.
    b, clock, events = board()
    policy = replace(P, half_open_trickle=2)
    feed(b, Verdict.FAILURE, 3, policy)
    clock.advance(5)
    probe_a, probe_b = b.begin(T, policy), b.begin(T, policy)
    b.finish(T, policy, Verdict.FAILURE, probe_a)
    assert b.record_of(T).cooldown_until == clock.now + 10
    b.finish(T, policy, Verdict.OK, probe_b)
    assert b.state(T) is BreakerState.OPEN
    assert b.record_of(T).cooldown_until == clock.now + 10
    assert [e.cause for e in events] == ["trip", "half_open", "reopen"]
    clock.advance(9.9)
    assert b.state(T) is BreakerState.OPEN  # the whole doubled cooldown runs


def test_a_forced_probe_on_top_of_the_trickle_cannot_cancel_a_retrip() -> None:
    # Reachable with the defaults (trickle 1): the planner's forced probe adds a second probe to a half-open target.
    b, clock, _ = board()
    trip(b)
    clock.advance(5)
    trickle = b.begin(T, P)
    forced = b.begin(T, P, force=True)
    b.finish(T, P, Verdict.FAILURE, trickle)
    b.finish(T, P, Verdict.OK, forced)
    assert b.state(T) is BreakerState.OPEN
    assert b.record_of(T).cooldown_until == clock.now + 10


def test_a_stale_probe_never_releases_a_newer_probes_slot() -> None:
    b, clock, _ = board()
    trip(b)
    clock.advance(5)
    old_trickle = b.begin(T, P)
    old_forced = b.begin(T, P, force=True)
    b.finish(T, P, Verdict.FAILURE, old_trickle)  # re-open, cooldown 10
    clock.advance(10)
    new_probe = b.begin(T, P)  # the new half-open's only slot
    assert b.standing(T)[0] == BUSY
    b.finish(T, P, Verdict.NEUTRAL, old_forced)  # the old forced probe ends late
    assert b.standing(T)[0] == BUSY  # the new probe still holds its slot
    assert b.begin(T, P).admission is Admission.REFUSED
    b.finish(T, P, Verdict.OK, new_probe)
    assert b.state(T) is BreakerState.RAMPING


def test_a_ticket_is_spent_by_its_first_finish() -> None:
    b, clock, _ = board()
    policy = replace(P, half_open_trickle=2)
    feed(b, Verdict.FAILURE, 3, policy)
    clock.advance(5)
    first, second = b.begin(T, policy), b.begin(T, policy)
    b.finish(T, policy, Verdict.NEUTRAL, first)
    b.finish(T, policy, Verdict.NEUTRAL, first)  # twice: must not release the second probe's slot
    assert b.standing(T)[0] == BUSY
    b.finish(T, policy, Verdict.NEUTRAL, second)
    assert b.standing(T)[0] == AVAILABLE


def test_a_remote_open_makes_earlier_probes_stale() -> None:
    b, clock, _ = board()
    trip(b)
    forced = b.begin(T, P, force=True)  # probing an open target
    remote = replace(b.record_of(T), cooldown_until=clock.now + 50, updated_at=clock.now)
    assert b.merge(remote)
    b.finish(T, P, Verdict.OK, forced)  # sent before the longer remote cooldown was known
    assert b.state(T) is BreakerState.OPEN
    assert b.record_of(T).cooldown_until == clock.now + 50


def test_export_and_merge_share_an_open_breaker() -> None:
    a, clock, _ = board()
    trip(a)
    record = a.record_of(T)
    assert record.state is BreakerState.OPEN
    assert BreakerRecord.from_dict(record.to_dict()) == record
    other = HealthBoard(clock)
    seen: list[Transition] = []
    other.add_listener(seen.append)
    assert other.merge(record)
    assert other.state(T) is BreakerState.OPEN
    assert other.record_of(T).cooldown_until == record.cooldown_until
    assert seen[0].remote
    assert seen[0].cause == "remote"
    assert not other.merge(record)  # idempotent


def test_merge_never_shortens_a_local_cooldown() -> None:
    b, clock, _ = board()
    long = replace(P, cooldown_s=60)
    feed(b, Verdict.FAILURE, 3, long)
    local = b.record_of(T)
    shorter = replace(local, cooldown_until=clock.now + 2, cooldown_s=2)
    closed = replace(local, state=BreakerState.CLOSED, cooldown_until=0.0)
    assert not b.merge(shorter)
    assert not b.merge(closed)
    assert b.record_of(T).cooldown_until == local.cooldown_until
    longer = replace(local, cooldown_until=clock.now + 90)
    assert b.merge(longer)
    assert b.record_of(T).cooldown_until == clock.now + 90


def test_merge_caps_a_remote_cooldown_and_adopts_capacity() -> None:
    clock = FakeClock()
    b = HealthBoard(clock, max_remote_cooldown_s=100)
    forever = BreakerRecord(T, BreakerState.OPEN, clock.now, clock.now + 1e9, 1e9, clock.now + 3, 1, clock.now)
    assert b.merge(forever)
    assert b.record_of(T).cooldown_until == clock.now + 100
    clock.advance(100)
    assert b.state(T) is BreakerState.HALF_OPEN


def test_a_broken_listener_never_breaks_routing() -> None:
    b, _, _ = board()

    def boom(_: Transition) -> None:
        raise RuntimeError("store down")

    b.add_listener(boom)
    trip(b)
    assert b.state(T) is BreakerState.OPEN


def test_successes_before_the_first_failure_count_in_the_rate() -> None:
    b, _, _ = board()
    policy = replace(P, consecutive_failures=100)
    feed(b, Verdict.OK, 10, policy)
    feed(b, Verdict.FAILURE, 9, policy)  # 9/19 < 0.5
    assert b.state(T) is BreakerState.CLOSED
    feed(b, Verdict.FAILURE, 1, policy)  # 10/20
    assert b.state(T) is BreakerState.OPEN


# -- properties ---------------------------------------------------------------------------------------------------

verdicts = st.sampled_from(list(Verdict))
events_st = st.lists(
    st.tuples(verdicts, st.floats(min_value=0, max_value=30), st.booleans(), st.none() | st.floats(0, 500)),
    max_size=60,
)
policies = st.builds(
    BreakerPolicy,
    error_rate=st.floats(0.05, 1.0),
    window_s=st.floats(1, 60),
    min_requests=st.integers(1, 10),
    consecutive_failures=st.integers(1, 6),
    cooldown_s=st.floats(0.5, 10),
    max_cooldown_s=st.floats(10, 120),
    half_open_trickle=st.integers(1, 3),
    ramp_successes=st.integers(1, 3),
)


@settings(max_examples=150, deadline=None)
@given(policy=policies, events=events_st)
def test_property_breaker_never_stays_open_forever(
    policy: BreakerPolicy, events: list[tuple[Verdict, float, bool, float | None]]
) -> None:
    b, clock, _ = board()
    for verdict, gap, force, retry_after in events:
        clock.advance(gap)
        admission = b.begin(T, policy, force=force)
        if admission.admitted:
            b.finish(T, policy, verdict, admission, retry_after_s=retry_after)
        record = b.record_of(T)
        if record.state is BreakerState.OPEN:
            # Every cooldown is bounded by the cap from the moment of the last transition.
            assert record.cooldown_until <= clock.now + policy.max_cooldown_s + 1e-9
    # With no further failures, the cap later the breaker is no longer open, and the target can be tried.
    clock.advance(policy.max_cooldown_s)
    assert b.state(T) is not BreakerState.OPEN
    # Half-open admits a probe; ramping admits at least one request in four.
    assert any(b.begin(T, policy).admitted for _ in range(4))


@settings(max_examples=150, deadline=None)
@given(policy=policies, events=st.lists(st.tuples(st.floats(0, 5), st.none() | st.floats(0, 500)), max_size=80))
def test_property_throttles_never_open_a_breaker(
    policy: BreakerPolicy, events: list[tuple[float, float | None]]
) -> None:
    b, clock, seen = board()
    for gap, retry_after in events:
        clock.advance(gap)
        admission = b.begin(T, policy, force=True)
        b.finish(T, policy, Verdict.CAPACITY, admission, retry_after_s=retry_after)
    assert b.state(T) is BreakerState.CLOSED
    assert seen == []


@settings(max_examples=150, deadline=None)
@given(policy=policies, events=events_st)
def test_property_cooldown_until_never_decreases_while_open(
    policy: BreakerPolicy, events: list[tuple[Verdict, float, bool, float | None]]
) -> None:
    b, clock, _ = board()
    previous: BreakerRecord | None = None
    for verdict, gap, force, retry_after in events:
        clock.advance(gap)
        admission = b.begin(T, policy, force=force)
        if admission.admitted:
            b.finish(T, policy, verdict, admission, retry_after_s=retry_after)
        record = b.record_of(T)
        if previous is not None and previous.state is BreakerState.OPEN and record.state is BreakerState.OPEN:
            assert record.cooldown_until >= previous.cooldown_until
        if previous is not None and record.state is BreakerState.OPEN and previous.state is not BreakerState.OPEN:
            assert verdict in (Verdict.FAILURE, Verdict.SLOW)  # only failures and slowness open it
        previous = record


@pytest.mark.parametrize("state", list(BreakerState))
def test_record_round_trip_for_every_state(state: BreakerState) -> None:
    record = BreakerRecord(T, state, 1.0, 2.0, 3.0, 4.0, 5, 6.0)
    assert BreakerRecord.from_dict(record.to_dict()) == record


# -- the time-to-first-token percentile ---------------------------------------------------------------------------


def nearest_rank(values: list[float], percentile: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(round(percentile * len(ordered) / 100.0, 9)) - 1)]


@settings(max_examples=300, deadline=None)
@given(
    samples=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=200),
    limit=st.integers(min_value=1, max_value=3000),
    percentile=st.sampled_from([50.0, 75.0, 90.0, 95.0, 99.0, 99.9]),
    min_requests=st.integers(min_value=1, max_value=50),
)
def test_two_counts_decide_what_the_samples_percentile_would(
    samples: list[int], limit: int, percentile: float, min_requests: int
) -> None:
    """The store keeps counts, not samples: over-the-limit count against the window's size gives the same verdict as
    the nearest-rank percentile of the samples themselves."""
    policy = BreakerPolicy(ttft_ms=limit, ttft_percentile=percentile, min_requests=min_requests)
    over = sum(1 for s in samples if s > limit)
    expected = len(samples) >= min_requests and nearest_rank([float(s) for s in samples], percentile) > limit
    assert ttft_percentile_over(len(samples), over, policy) is expected


def test_no_limit_no_verdict() -> None:
    assert not ttft_percentile_over(100, 100, BreakerPolicy(ttft_ms=None, min_requests=1))


def test_the_local_board_trips_on_its_windows_p90_time_to_first_token() -> None:
    clock = FakeClock()
    board = HealthBoard(clock)
    policy = BreakerPolicy(ttft_ms=1000, ttft_percentile=90, min_requests=20, slow_rate=1.0)
    for i in range(20):
        late = i in (4, 9)
        board.finish("t", policy, Verdict.SLOW if late else Verdict.OK, ttft_over=late)
        clock.advance(0.1)
    assert board.state("t") is BreakerState.CLOSED  # 2 of 20: p90 within the limit
    board.finish("t", policy, Verdict.OK)  # no first token measured (a buffered API): not counted among them
    assert board.state("t") is BreakerState.CLOSED
    board.finish("t", policy, Verdict.SLOW, ttft_over=True)  # 3 of 21
    assert board.state("t") is BreakerState.OPEN


def test_first_tokens_leave_the_window_with_their_second() -> None:
    clock = FakeClock()
    board = HealthBoard(clock)
    policy = BreakerPolicy(ttft_ms=1000, ttft_percentile=90, min_requests=10, slow_rate=1.0, window_s=10)
    for _ in range(2):
        board.finish("t", policy, Verdict.SLOW, ttft_over=True)
    clock.advance(11.0)  # the two late ones have left the window
    for _ in range(9):
        board.finish("t", policy, Verdict.OK, ttft_over=False)
    board.finish("t", policy, Verdict.SLOW, ttft_over=True)  # 1 of 10: nearest-rank p90 is the 9th, within
    assert board.state("t") is BreakerState.CLOSED

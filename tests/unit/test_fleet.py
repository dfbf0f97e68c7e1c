"""Fleet-wide breakers and PT occupancy (spillway/fleet.py) on a fake store and a fake clock: several "environments"
(each its own HealthBoard, InflightTracker, Fleet and Engine, as Lambda gives each concurrent request its own
process) share one FakeFleetStore. The same store operations run on redis-server in tests/router/test_fleet_store.py.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from spillway.capacity import InflightTracker
from spillway.config import BreakerPolicy, RoutingTable
from spillway.engine import Engine, Outcome, Status
from spillway.fleet import (
    Change,
    Fleet,
    FleetState,
    TargetState,
    after_outcome,
    cooldown_for,
    should_trip,
    standing,
)
from spillway.health import AVAILABLE, BUSY, COOLING, OPEN, Admission, BreakerState, HealthBoard, Verdict

from .fleet_fake import FakeFleetStore
from .helpers import FEATURE, FakeClock, ScriptedBackend, make_table

PT_E, OD_E = "claude-sonnet/provisioned/us-east-1", "claude-sonnet/on_demand/us-east-1"
PT_W, OD_W = "claude-sonnet/provisioned/us-west-2", "claude-sonnet/on_demand/us-west-2"
REQUEST = {"messages": [{"role": "user", "content": [{"text": "hello"}]}]}


class World:
    """n environments sharing one store, one clock and one scripted backend (its script is the fleet's sequence)."""

    def __init__(
        self,
        n: int,
        table: RoutingTable,
        script: dict[str, list[tuple[str, float, float | None]]] | None = None,
        *,
        rng: Callable[[], float] = lambda: 0.0,
        skew: Callable[[int], float] = lambda i: 0.0,
    ) -> None:
        self.clock = FakeClock()
        self.store = FakeFleetStore(self.clock)
        self.backend = ScriptedBackend(self.clock, script or {})
        tokens = itertools.count()
        self.boards: list[HealthBoard] = []
        self.fleets: list[Fleet] = []
        self.engines: list[Engine] = []
        for i in range(n):
            offset = skew(i)
            board = HealthBoard(lambda offset=offset: self.clock() + offset)  # type: ignore[misc]
            tracker = InflightTracker(self.clock)
            fleet = Fleet(self.store, board, tracker, perf_clock=self.clock, rng=rng, token=lambda: f"t{next(tokens)}")
            self.boards.append(board)
            self.fleets.append(fleet)
            self.engines.append(
                Engine(table, {"bedrock": self.backend}, health=board, clock=self.clock, tracker=tracker, fleet=fleet)
            )

    def sent_to(self, target: str) -> int:
        return sum(1 for tid, _ in self.backend.calls if tid == target)


def fails(n: int = 1) -> list[tuple[str, float, float | None]]:
    return [("unavailable", 0.01, None)] * n


# -- the rules ----------------------------------------------------------------------------------------------------


def test_a_30_percent_error_rate_trips_a_threshold_under_it_once_the_window_holds_min_requests() -> None:
    policy = BreakerPolicy(error_rate=0.25, min_requests=10, consecutive_failures=3)
    brownout = TargetState(total=10, failures=3, run=1)
    assert should_trip(brownout, policy)
    assert not should_trip(brownout, BreakerPolicy(error_rate=0.5, min_requests=10))
    assert not should_trip(TargetState(total=9, failures=3, run=1), policy)  # too few outcomes for a rate
    assert should_trip(TargetState(total=3, failures=3, run=3), policy)  # a run needs no minimum
    assert should_trip(TargetState(total=10, slow=5), BreakerPolicy(slow_rate=0.5, min_requests=10))
    assert not should_trip(TargetState(state=FleetState.OPEN, total=10, failures=10, run=10), policy)


def test_cooldowns_start_from_the_base_double_on_failed_recoveries_and_stay_capped() -> None:
    policy = BreakerPolicy(cooldown_s=5, max_cooldown_s=30)
    assert cooldown_for(TargetState(), policy, escalate=False) == 5
    assert cooldown_for(TargetState(cooldown_s=5), policy, escalate=True) == 10
    assert cooldown_for(TargetState(cooldown_s=20), policy, escalate=True) == 30
    assert cooldown_for(TargetState(cooldown_s=20), policy, escalate=False) == 20


def test_standing_open_then_half_open_busy_while_probed_then_cooling() -> None:
    open_state = TargetState(state=FleetState.OPEN, until=100.0)
    assert standing(open_state, 99.0) == (OPEN, 100.0)
    assert standing(open_state, 100.0) == (AVAILABLE, 0.0)  # half-open, no probe out: available for one
    assert standing(TargetState(state=FleetState.OPEN, until=100.0, probe_held=True), 101.0) == (BUSY, 101.0)
    assert standing(TargetState(capacity_until=105.0), 101.0) == (COOLING, 105.0)


def test_outcomes_decide_probe_ramp_and_close() -> None:
    policy = BreakerPolicy(ramp_steps=(0.5,), ramp_successes=2, cooldown_s=5)
    half_open = TargetState(state=FleetState.OPEN, until=10.0, cooldown_s=5.0)
    assert after_outcome(half_open, 11.0, policy, Verdict.OK, probe=True) == Change("ramp")
    assert after_outcome(half_open, 11.0, policy, Verdict.FAILURE, probe=True) == Change("open", 10.0)
    assert after_outcome(half_open, 11.0, policy, Verdict.OK, probe=False) is None  # not the probe: no verdict
    assert after_outcome(half_open, 9.0, policy, Verdict.OK, probe=True) is None  # still open: a stale probe
    ramping = TargetState(state=FleetState.RAMPING, ramp_ok=2, cooldown_s=5.0)
    assert after_outcome(ramping, 0.0, policy, Verdict.OK, probe=False) == Change("close")
    assert after_outcome(ramping, 0.0, policy, Verdict.SLOW, probe=False) == Change("open", 10.0)
    assert after_outcome(ramping, 0.0, policy, Verdict.CAPACITY, probe=False) is None


# -- the fleet ----------------------------------------------------------------------------------------------------


def test_a_dead_region_costs_the_fleet_one_run_of_failures_per_target_whatever_the_environment_count() -> None:
    for n in (4, 16, 48):
        world = World(n, make_table(), {PT_E: fails(), OD_E: fails()})
        for i in range(3 * n):
            result = world.engines[i % n].handle(FEATURE, REQUEST)
            assert result.status is Status.SERVED
            assert result.target == PT_W
        assert (world.sent_to(PT_E), world.sent_to(OD_E)) == (3, 3), n  # consecutive_failures, fleet-wide
        assert world.store.targets[PT_E].state.state is FleetState.OPEN


def test_without_the_fleet_every_environment_pays_its_own_run() -> None:
    """The planted weakness the test above must catch: with local state only, 16 environments pay 16 runs."""
    world = World(16, make_table(), {PT_E: fails(), OD_E: fails()})
    for engine in world.engines:
        engine.fleet = None
    for i in range(48):
        world.engines[i % 16].handle(FEATURE, REQUEST)
    assert world.sent_to(PT_E) == 48  # each environment saw at most 3 of its own, none tripped before


BROWNOUT = [("unavailable", 0.01, None), ("ok", 0.01, None), ("ok", 0.01, None)] * 3 + [("ok", 0.01, None)]  # 30%


@pytest.mark.parametrize(("error_rate", "trips"), [(0.25, True), (0.4, False)])
def test_a_30_percent_brownout_trips_a_lower_threshold_on_the_fleets_window(error_rate: float, trips: bool) -> None:
    """Each of 16 environments sees one outcome, far under min_requests: only the fleet's window can trip."""
    table = make_table(breaker={"error_rate": error_rate, "min_requests": 10, "consecutive_failures": 5})
    world = World(16, table, {PT_E: BROWNOUT * 10})
    for i in range(16):
        world.engines[i].handle(FEATURE, REQUEST)
        world.clock.advance(0.05)
    assert (world.store.targets[PT_E].state.state is FleetState.OPEN) is trips


def test_once_the_brownout_trips_no_environment_sends_there() -> None:
    table = make_table(breaker={"error_rate": 0.25, "min_requests": 10, "consecutive_failures": 5})
    world = World(16, table, {PT_E: BROWNOUT * 10})
    for i in range(16):
        world.engines[i].handle(FEATURE, REQUEST)
        world.clock.advance(0.05)
    assert world.store.targets[PT_E].state.trips == 1
    sent_after_trip = world.sent_to(PT_E)
    for i in range(16):
        assert world.engines[i].handle(FEATURE, REQUEST).target == OD_E  # every environment keeps off it
    assert world.sent_to(PT_E) == sent_after_trip


def test_one_probe_per_cooldown_across_the_fleet_then_a_shared_ramp_then_closed() -> None:
    table = make_table(breaker={"cooldown_s": 5, "ramp_steps": [0.5], "ramp_successes": 2})
    draws = itertools.cycle([0.1, 0.9])  # the ramp admits a draw under its share: every other request at 0.5
    world = World(8, table, {PT_E: [*fails(3), ("ok", 0.01, None)]}, rng=lambda: next(draws))
    for i in range(3):
        world.engines[i].handle(FEATURE, REQUEST)
    assert world.store.targets[PT_E].state.state is FleetState.OPEN
    world.clock.advance(5.0)
    # Half-open: the first environment to ask takes the probe; while it is out the others keep away.
    first = world.fleets[0].request(table.features[FEATURE], [PT_E])
    ticket = first.begin(PT_E, table.features[FEATURE].breaker, force=False, timeout_s=2.0)
    assert ticket.admission is Admission.PROBE
    for fleet in world.fleets[1:]:
        other = fleet.request(table.features[FEATURE], [PT_E])
        assert other.standing(PT_E)[0] == BUSY
        assert not other.begin(PT_E, table.features[FEATURE].breaker, force=False, timeout_s=2.0).admitted
        other.close()
    first.finish(PT_E, table.features[FEATURE].breaker, Verdict.OK, ticket)
    first.close()
    assert world.store.calls.count("probe") == 1
    assert world.store.read([PT_E], 30.0).targets[PT_E].probes == 1  # what the fleet world counts per cooldown
    state = world.store.targets[PT_E].state
    assert state.state is FleetState.RAMPING
    assert state.ramp_step == 0
    served = [world.engines[i + 1].handle(FEATURE, REQUEST).target for i in range(3)]
    assert served == [PT_E, OD_E, PT_E]  # every other request at the 0.5 step, in whichever environment
    assert world.store.targets[PT_E].state.state is FleetState.CLOSED  # two ramp successes closed it


def test_a_failed_probe_doubles_the_cooldown_and_no_write_shortens_one() -> None:
    table = make_table(breaker={"cooldown_s": 5, "max_cooldown_s": 120})
    world = World(2, table, {PT_E: fails()})
    for i in range(3):
        world.engines[i % 2].handle(FEATURE, REQUEST)
    until = world.store.targets[PT_E].state.until
    world.clock.advance(5.0)
    world.engines[0].handle(FEATURE, REQUEST)  # takes the probe, fails
    state = world.store.targets[PT_E].state
    assert state.state is FleetState.OPEN
    assert state.cooldown_s == 10.0
    assert state.until == pytest.approx(world.clock() + 10)
    # A decision made on the old epoch loses; a shorter cooldown never moves the end earlier.
    assert not world.store.transition(PT_E, epoch=state.epoch - 1, change=Change("open", 1.0))
    assert world.store.transition(PT_E, epoch=state.epoch, change=Change("open", 1.0))
    assert world.store.targets[PT_E].state.until == state.until > until


def test_a_throttle_sets_a_capacity_cooldown_every_environment_honours() -> None:
    world = World(4, make_table(), {PT_E: [("capacity", 0.01, None), ("ok", 0.01, None)]})
    first = world.engines[0].handle(FEATURE, REQUEST)
    assert [a.outcome for a in first.attempts] == [Outcome.CAPACITY, Outcome.OK]
    for engine in world.engines[1:]:
        result = engine.handle(FEATURE, REQUEST)
        assert result.target == OD_E
        assert result.attempts[0].target == OD_E
    world.clock.advance(1.0)
    assert world.engines[1].handle(FEATURE, REQUEST).target == PT_E


def test_pt_leases_cap_the_fleets_requests_in_flight_and_expire_when_their_holder_is_frozen() -> None:
    table = make_table(max_in_flight=2)
    world = World(3, table, {})
    feature = table.features[FEATURE]
    target = table.targets[PT_E]
    requests = []
    levels = []
    for fleet in world.fleets:  # one environment every half second
        requests.append(fleet.request(feature, [PT_E, OD_E]))
        levels.append(requests[-1].try_start(target, force=False, timeout_s=2.0))
        world.clock.advance(0.5)
    assert levels == [1, 2, None]  # the third environment spills before sending
    calls = len(world.store.calls)
    late = world.fleets[2].request(feature, [PT_E])
    assert late.try_start(target, force=False, timeout_s=2.0) is None
    assert world.store.calls[calls:] == ["read"]  # full as read: no lease round trip
    # The first environment is frozen with its lease: it expires after the attempt's timeout and its margin.
    world.clock.advance(1.51)  # the first lease (2 s + 1 s margin) is gone; the second has 0.49 s left
    again = world.fleets[2].request(feature, [PT_E])
    assert again.try_start(target, force=False, timeout_s=2.0) == 2
    # The second releases its lease with its outcome report: one round trip for both.
    ticket = requests[1].begin(PT_E, feature.breaker, force=False, timeout_s=2.0)
    requests[1].end(PT_E, 2, throttled=False)
    requests[1].finish(PT_E, feature.breaker, Verdict.OK, ticket)
    assert world.store.calls[-1] == "report"
    assert len(world.store.targets[PT_E].leases) == 1


def test_a_full_provisioned_target_is_skipped_before_sending_whatever_the_number_of_environments() -> None:
    table = make_table(max_in_flight=1)
    world = World(2, table, {})
    holder = world.fleets[0].request(table.features[FEATURE], [PT_E])
    assert holder.try_start(table.targets[PT_E], force=False, timeout_s=5.0) == 1
    result = world.engines[1].handle(FEATURE, REQUEST)
    assert result.predicted_spill
    assert result.target == OD_E
    assert [a.outcome for a in result.attempts] == [Outcome.PREDICTED_FULL, Outcome.OK]


def test_round_trips_per_request_on_demand_two_provisioned_three() -> None:
    on_demand = make_table(feature={"first_capacity": "on_demand"})
    world = World(1, on_demand, {})
    result = world.engines[0].handle(FEATURE, REQUEST)
    assert result.target == OD_E
    assert result.store_round_trips == 2
    provisioned = make_table(max_in_flight=4)
    world = World(1, provisioned, {})
    result = world.engines[0].handle(FEATURE, REQUEST)
    assert result.target == PT_E
    assert result.store_round_trips == 3
    usage = world.fleets[0].usage()
    assert usage["provisioned"]["requests"] == 1
    assert usage["provisioned"]["round_trips_per_request"] == 3
    assert usage["on_demand"]["requests"] == 0


def test_a_stale_report_from_before_a_trip_does_not_count_in_the_new_epoch() -> None:
    world = World(2, make_table(), {})
    feature = make_table().features[FEATURE]
    early = world.fleets[0].request(feature, [PT_E])
    ticket = early.begin(PT_E, feature.breaker, force=False, timeout_s=2.0)
    assert world.store.transition(PT_E, epoch=0, change=Change("open", 5.0))
    early.finish(PT_E, feature.breaker, Verdict.FAILURE, ticket)
    state = world.store.targets[PT_E].state
    assert state.epoch == 1
    assert state.run == 0
    assert state.cooldown_s == 5.0


def test_the_store_down_routes_on_local_state_and_never_raises() -> None:
    world = World(1, make_table(), {PT_E: fails(), OD_E: fails()})
    world.store.down = True
    for _ in range(4):
        result = world.engines[0].handle(FEATURE, REQUEST)
        assert result.status is Status.SERVED
        assert result.store_round_trips == 1
    assert world.boards[0].state(PT_E) is BreakerState.OPEN  # the local board tripped as it does without a store
    assert world.fleets[0].usage()["provisioned"]["degraded"] == 4


def test_the_store_failing_mid_request_hands_the_rest_to_local_state() -> None:
    world = World(1, make_table(), {PT_E: fails()})
    feature = make_table().features[FEATURE]
    request = world.fleets[0].request(feature, [PT_E, OD_E])
    ticket = request.begin(PT_E, feature.breaker, force=False, timeout_s=2.0)
    world.store.down = True
    request.finish(PT_E, feature.breaker, Verdict.FAILURE, ticket)  # the report fails: counted locally instead
    assert request.standing(OD_E) == world.boards[0].standing(OD_E)
    local = request.begin(OD_E, feature.breaker, force=False, timeout_s=2.0)
    assert local.admitted
    assert not hasattr(local, "probe_token")
    assert request.close() == (2, 0.0)


def test_the_fleets_open_breakers_stay_in_the_local_board_for_a_store_outage() -> None:
    world = World(2, make_table(), {PT_E: fails()})
    for _i in range(3):
        world.engines[0].handle(FEATURE, REQUEST)
    world.engines[1].handle(FEATURE, REQUEST)  # reads the open breaker
    world.store.down = True
    assert world.boards[1].state(PT_E) is BreakerState.OPEN
    assert world.engines[1].handle(FEATURE, REQUEST).attempts[0].target == OD_E


@pytest.mark.parametrize("skew", [1.0, -1.0])
def test_environments_whose_clocks_disagree_by_a_second_agree_on_when_a_breaker_reopens(skew: float) -> None:
    world = World(2, make_table(), {PT_E: fails()}, skew=lambda i: skew * i)
    for _ in range(3):
        world.engines[0].handle(FEATURE, REQUEST)
    feature = make_table().features[FEATURE]
    left = [world.fleets[i].request(feature, [PT_E]) for i in range(2)]
    waits = [r.standing(PT_E)[1] - world.boards[i].clock() for i, r in enumerate(left)]
    assert waits[0] == pytest.approx(waits[1])
    assert waits[0] > 4.9


def test_a_throttle_teaches_the_fleet_a_lower_pt_limit_that_a_success_raises_and_time_forgets() -> None:
    table = make_table(max_in_flight=4)
    world = World(3, table, {})
    feature, target = table.features[FEATURE], table.targets[PT_E]
    first, second = (fleet.request(feature, [PT_E]) for fleet in world.fleets[:2])
    assert first.try_start(target, force=False, timeout_s=2.0) == 1
    assert second.try_start(target, force=False, timeout_s=2.0) == 2
    ticket = second.begin(PT_E, feature.breaker, force=False, timeout_s=2.0)
    second.finish(PT_E, feature.breaker, Verdict.CAPACITY, ticket)  # throttled with 2 in flight: PT holds 1
    assert world.store.targets[PT_E].learned == (1, world.clock())
    third = world.fleets[2].request(feature, [PT_E])
    assert third.try_start(target, force=False, timeout_s=2.0) is None  # 1 in flight: full at the learned limit
    ticket = first.begin(PT_E, feature.breaker, force=False, timeout_s=2.0)
    first.finish(PT_E, feature.breaker, Verdict.OK, ticket)  # a success at the limit: one more
    assert world.store.targets[PT_E].learned[0] == 2
    world.clock.advance(30.0)
    later = world.fleets[2].request(feature, [PT_E])
    assert later.try_start(target, force=False, timeout_s=2.0) == 1
    assert world.store.read([PT_E], 30.0).targets[PT_E].learned_limit == 0  # forgotten: max_in_flight again


def test_the_status_shows_the_fleets_view_of_each_target() -> None:
    world = World(2, make_table(), {PT_E: fails()})
    for _ in range(3):
        world.engines[0].handle(FEATURE, REQUEST)
    view = world.fleets[1].status([PT_E, OD_E])["targets"]
    assert view[PT_E]["state"] == "open"
    assert view[PT_E]["cooldown_remaining_s"] == pytest.approx(5.0)
    assert view[PT_E]["trips"] == 1
    assert view[OD_E]["window"] == {
        "total": 3,
        "failures": 0,
        "slow": 0,
        "first_tokens": 0,
        "first_tokens_over_limit": 0,
    }
    world.clock.advance(5.0)
    assert world.fleets[1].status([PT_E])["targets"][PT_E]["state"] == "half_open"
    world.store.down = True
    assert "targets" not in world.fleets[1].status([PT_E])


# -- time to first token: the window's percentile, fleet-wide -------------------------------------------------------

TTFT_BREAKER = {"ttft_ms": 1000, "min_requests": 20, "ttft_percentile": 90}


def first_tokens(over: set[int], n: int) -> list[tuple[str, float, float | None]]:
    """n served answers, those numbered in `over` with a first token after 1000 ms (the rest at 200 ms)."""
    return [("ok", 0.01, 1500.0 if i in over else 200.0) for i in range(n)] + [("ok", 0.01, 1500.0)]


def test_the_fleets_p90_time_to_first_token_trips_a_target_no_environment_could_judge_alone() -> None:
    world = World(4, make_table(breaker=TTFT_BREAKER), {PT_E: first_tokens({3, 11}, 20)})
    for i in range(20):  # 2 of 20 late: the fleet's p90 is within the limit
        assert world.engines[i % 4].handle(FEATURE, REQUEST).target == PT_E
    stored = world.store.targets[PT_E]
    assert stored.state.state is FleetState.CLOSED
    assert world.store.read([PT_E], 30.0).targets[PT_E].ttft == 20
    world.engines[0].handle(FEATURE, REQUEST)  # a third late first token of 21: the p90 is over 1000 ms
    assert world.store.targets[PT_E].state.state is FleetState.OPEN
    for engine in world.engines:  # every environment moves on at its next read: on-demand serves
        assert engine.handle(FEATURE, REQUEST).target == OD_E


def test_without_the_fleet_no_environment_holds_enough_first_tokens_to_judge() -> None:
    """The planted weakness the test above must catch: each environment's own window never reaches min_requests."""
    world = World(4, make_table(breaker=TTFT_BREAKER), {PT_E: first_tokens({3, 11, 20}, 20)})
    for engine in world.engines:
        engine.fleet = None
    for i in range(21):
        world.engines[i % 4].handle(FEATURE, REQUEST)
    assert all(board.state(PT_E) is BreakerState.CLOSED for board in world.boards)


def test_first_tokens_after_a_lenient_features_limit_do_not_count_against_a_strict_one_s_window() -> None:
    """Each report says over or not by its own feature's ttft_ms: the same 1500 ms is within a 2000 ms limit."""
    world = World(2, make_table(breaker={**TTFT_BREAKER, "ttft_ms": 2000}), {PT_E: first_tokens(set(range(21)), 21)})
    for i in range(30):
        world.engines[i % 2].handle(FEATURE, REQUEST)
    state = world.store.read([PT_E], 30.0).targets[PT_E]
    assert (state.state, state.ttft, state.ttft_over) == (FleetState.CLOSED, 30, 0)

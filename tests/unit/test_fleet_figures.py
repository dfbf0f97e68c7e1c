"""The fleet figures are computed from the records, and a planted weakness moves each one: an environment that keeps
sending to a dead target, a probe counted as ordinary traffic, a spilled request that paid a throttle, a home target
still tried at the end of a brownout."""

from __future__ import annotations

from dataclasses import replace

from local.localrun import figures as ff
from local.localrun.traffic import Record

PT, OD, WEST = "m/provisioned/home", "m/on_demand/home", "m/provisioned/away"
DEAD = {PT, OD}


def rec(sent_s: float, route: tuple[tuple[str, str], ...], *, env: int = 0, status: int = 200) -> Record:
    served = next((t for t, o in route if o == "ok"), None)
    return Record("run", "f", sent_s, sent_s + 0.5, status, served, route, environment=env)


def failing_fleet(envs: int, late_env_at: float | None = None) -> list[Record]:
    """Each environment pays one failure on each dead target, then goes away; optionally one more failure late."""
    out = [rec(0.1 * i, ((PT, "unavailable"), (OD, "unavailable"), (WEST, "ok")), env=i) for i in range(envs)]
    out += [rec(2.0 + 0.1 * i, ((WEST, "ok"),), env=i) for i in range(envs)]
    if late_env_at is not None:
        out.append(rec(late_env_at, ((PT, "unavailable"), (WEST, "ok")), env=99))
    return out


def test_failed_attempts_are_counted_per_dead_target_and_per_environment() -> None:
    attempts = ff.dead_attempts(failing_fleet(4), DEAD)
    assert ff.failed_attempts_per_target(attempts) == {OD: 4, PT: 4}
    assert ff.environments_that_failed(attempts) == 4
    assert ff.ordinary_traffic_stop_s(attempts, cooldown_s=5.0) == 0.3


def test_an_environment_still_sending_late_moves_the_stop_time() -> None:
    healthy = ff.ordinary_traffic_stop_s(ff.dead_attempts(failing_fleet(4), DEAD), 5.0)
    planted = ff.ordinary_traffic_stop_s(ff.dead_attempts(failing_fleet(4, late_env_at=3.0), DEAD), 5.0)
    assert healthy is not None
    assert planted == 3.0
    assert planted > healthy


def test_attempts_after_the_first_cooldown_are_probes_not_ordinary_traffic() -> None:
    attempts = ff.dead_attempts(failing_fleet(2, late_env_at=6.0), DEAD)
    assert ff.ordinary_traffic_stop_s(attempts, cooldown_s=5.0) == 0.1
    assert ff.probe_attempts(attempts, cooldown_s=5.0) == 1


def test_attempts_before_the_outage_are_not_counted() -> None:
    records = failing_fleet(3)
    assert ff.dead_attempts(records, DEAD, since_s=1.0) == []
    assert ff.ordinary_traffic_stop_s([], 5.0) is None


def test_spill_share_counts_only_spills_that_paid_a_throttle() -> None:
    clean = [rec(0.0, ((PT, "predicted_full"), (OD, "ok"))) for _ in range(19)]
    paid = [rec(0.0, ((PT, "capacity"), (OD, "ok")))]
    figures = ff.spill_figures(clean + paid, clean + paid)
    assert figures["spilled_throttled_first"] == 1
    assert figures["spilled_throttled_first_share"] == 0.05
    assert figures["dropped"] == 0
    dropped = rec(0.0, (), status=500)
    assert ff.spill_figures([*clean, dropped], clean)["dropped"] == 1


def test_trip_time_is_when_home_stops_being_tried_first_and_none_while_it_goes_on() -> None:
    home = [rec(t / 10, ((PT, "ok"),)) for t in range(10, 25)]
    tripped = home + [rec(t / 10, ((WEST, "ok"),)) for t in range(25, 60)]
    assert ff.trip_time_s(tripped, DEAD, start_s=1.0) == 1.4
    probe_later = [*tripped, rec(5.95, ((OD, "ok"),))]  # a half-open probe after the cooldown
    assert ff.trip_time_s(probe_later, DEAD, start_s=1.0) == 1.4
    never = [rec(t / 10, ((PT if t % 3 else WEST, "ok"),)) for t in range(10, 60)]  # home tried first all along
    assert ff.trip_time_s(never, DEAD, start_s=1.0) is None


def test_lost_counts_every_answer_but_200_by_status() -> None:
    records = [rec(0.0, ((WEST, "ok"),)), rec(0.1, (), status=500), rec(0.2, (), status=500), rec(0.3, (), status=0)]
    assert ff.lost(records) == {0: 1, 500: 2}


def test_peak_in_flight_counts_overlapping_requests_and_not_back_to_back_ones() -> None:
    back_to_back = [rec(0.5 * i, ((WEST, "ok"),)) for i in range(4)]  # each ends as the next starts
    assert ff.peak_in_flight(back_to_back) == 1
    overlapping = [*back_to_back, rec(0.25, ((WEST, "ok"),)), rec(0.3, ((WEST, "ok"),))]
    assert ff.peak_in_flight(overlapping) == 3
    assert ff.peak_in_flight([]) == 0


def test_an_attempt_is_timed_from_when_the_router_began_it_not_from_the_send() -> None:
    # The last request left 4.99 s after the first failure but reached the router after the 5 s cooldown: a probe.
    first = rec(0.0, ((PT, "unavailable"), (WEST, "ok")))
    late = rec(4.99, ((PT, "unavailable"), (WEST, "ok")))
    assert ff.ordinary_traffic_stop_s(ff.dead_attempts([first, late], DEAD), cooldown_s=5.0) == 4.99
    reached = replace(late, invoked_s=5.02)
    attempts = ff.dead_attempts([first, reached], DEAD)
    assert ff.ordinary_traffic_stop_s(attempts, cooldown_s=5.0) == 0.0
    assert ff.probe_attempts(attempts, cooldown_s=5.0) == 1

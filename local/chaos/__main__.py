"""`python -m local.chaos [--world fleet|process] [names...]`: every scenario against one world (reset between
scenarios).

The default world is the production shape: a fleet of execution environments (local/localrun/fleet_world.py), separate
processes that take one event each and are frozen between events. ``--world process`` runs the router in this
process instead (quick, not the production shape); the fleet-only scenarios are skipped there.

Each scenario drives traffic through the local API Gateway-shaped endpoint, injects its fault into the emulator,
redis-server, the AppConfig stand-in or the fleet itself, prints its figures and asserts on the outcome. The
suite ends with ``chaos: N passed, N failed`` and exits 1 if any failed. Rule everywhere a healthy target exists:
zero dropped.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from local.emulator import Fault
from local.localrun import FleetWorld, Latency, World, error_body_ok, iter_classify, make_world
from local.localrun import figures as ff
from local.localrun.emf import fleet_values
from local.localrun.fleet import is_throttle_answer
from local.localrun.traffic import Record, Traffic, percentile

FEATURE = "summarize-thread"
HOME, AWAY = "us-east-1", "us-west-2"
PT_EAST = "claude-sonnet/provisioned/us-east-1"
OD_EAST = "claude-sonnet/on_demand/us-east-1"
PT_WEST = "claude-sonnet/provisioned/us-west-2"
# 150 ms to the first token + 20 tokens x 5 ms: 0.25 s per answer; PT (8 in flight) serves about 32 requests/s.
LATENCY = Latency(ttft_ms=150.0, ms_per_token=5.0, output_tokens=20)
STEADY = 20.0
HOME_TARGETS = {PT_EAST, OD_EAST}
# The fleet: enough environments for the 3x PT surge (~96 requests/s at 0.25 s each), started before the first
# scenario and kept (each rebuilds its router between scenarios); the burst scenario goes past the reservation.
RESERVED_CONCURRENCY = 48
WARM = 48  # all of them: a cold start during a scenario takes the CPU the others need on a 2-core machine

Figures = dict[str, Any]


def states_of(world: World, target: str) -> list[str]:
    """The breaker state of `target` in every environment whose health could be read."""
    return [t["state"] for doc in world.environment_health() for t in doc["targets"] if t["id"] == target]


def fleet_only(world: World) -> FleetWorld:
    if not isinstance(world, FleetWorld):
        raise Skipped("a fleet-only scenario")
    return world


class Skipped(Exception):
    pass


def dropped(records: list[Record]) -> int:
    return sum(1 for r in records if not r.served)


def by_target(records: list[Record]) -> Counter[str]:
    return Counter(r.target for r in records if r.served and r.target)


def lat(records: list[Record], q: float) -> float:
    return round(percentile([r.latency_ms for r in records], q), 1)


def run(
    world: World,
    rate: float,
    seconds: float,
    hooks: list[tuple[float, Callable[[], None]]] | None = None,
    *,
    feature: str = FEATURE,
    remaining_ms: float | None = None,
) -> list[Record]:
    traffic = Traffic(world.http, max_in_flight=96, remaining_ms=remaining_ms)
    try:
        traffic.phase("run", {feature: rate}, seconds, at=hooks or [])
    finally:
        traffic.close()
    SCENARIO_RECORDS.extend(traffic.of())
    return traffic.of()


SCENARIO_RECORDS: list[Record] = []  # every record of the running scenario, to explain a failure


# -- scenarios -----------------------------------------------------------------------------------------------------


def fell_back(world: World) -> dict[int, int]:
    """Per environment: the requests its router routed on local state because the fleet store did not answer in
    time (fail-open by design: the store's timeout and backoff, spillway/fleet.py), as its /v1/health counts them."""
    world.wait_for(lambda: not isinstance(world, FleetWorld) or not world.functions.busy(), 30.0)
    out: dict[int, int] = {}
    for doc in world.environment_health():
        usage = (doc.get("store") or {}).get("usage") or {}
        out[int(doc["environment"])] = sum(int(kind.get("degraded", 0)) for kind in usage.values())
    return out


def pt_surge(world: World) -> Figures:
    """Three times summarize-thread's PT capacity: PT is filled and kept busy, the excess spills to on-demand, none
    dropped, and spills are predicted (sent to on-demand before PT throttles) for at least 95% of the requests that
    had the fleet's view of PT's leases.

    What is asserted is the router's behaviour, not the machine's speed: PT's occupancy is judged at the latency PT
    answered with (Little's law), not at the emulator's nominal 0.25 s; a request whose environment routed on local
    state (the fleet store did not answer within its timeout, which a loaded machine causes: fail-open by design) is
    counted apart, as it cannot see the fleet's leases; and a request Lambda throttled (a slow machine needs more
    environments than the 48 reserved) never reached the router: it is counted, recognised as the stacks' gateway
    answer, and left out of the router's figures (burst_beyond_reserved_concurrency asserts those answers)."""
    pt = world.target(PT_EAST)
    slots = pt.max_in_flight or 8
    per_request_s = (LATENCY.ttft_ms + LATENCY.ms_per_token * LATENCY.output_tokens) / 1000.0
    seconds = 6.0
    sent = run(world, 3 * slots / per_request_s, seconds)
    records = [r for r in sent if not r.lambda_throttle]  # what reached the router
    served = by_target(records)
    spilled = [r for r in records if r.served and "spilled" in set(iter_classify(world.table_doc, FEATURE, r.target))]
    local = fell_back(world)
    with_fleet_view = [r for r in spilled if not local.get(r.environment or 0)]
    throttled_first = sum(1 for r in with_fleet_view if r.throttled_first)
    pt_answer_s = percentile([r.latency_ms for r in records if r.target == PT_EAST], 50) / 1000.0
    pt_kept_busy = round(served[PT_EAST] * pt_answer_s / seconds, 2)  # slots in use on average, at PT's latency
    figures = {
        "offered_rps": round(3 * slots / per_request_s, 1),
        "requests": len(sent),
        "throttled_by_lambda": len(sent) - len(records),
        "dropped": dropped(records),
        "pt_served": served[PT_EAST],
        "pt_in_flight_peak": world.emu.target_stats(pt.key)["in_flight_peak"],
        "pt_p50_ms": round(pt_answer_s * 1000.0, 1),
        "pt_slots_busy_on_average": pt_kept_busy,
        "spilled": len(spilled),
        "spilled_with_fleet_view": len(with_fleet_view),
        "spilled_with_fleet_view_throttled_first": throttled_first,
        "spilled_on_local_state_throttled_first": sum(1 for r in spilled if r.throttled_first) - throttled_first,
        "environments_that_fell_back": sum(1 for n in local.values() if n),
        "requests_on_local_state": sum(local.values()),
        "p99_ms": lat(records, 99),
    }
    assert figures["dropped"] == 0, "the router dropped a request while on-demand had room"
    assert figures["pt_in_flight_peak"] == slots, "the router never filled PT"
    assert pt_kept_busy >= 0.7 * slots, f"PT was not kept busy: {pt_kept_busy} of {slots} slots on average"
    assert len(spilled) >= 0.4 * len(records), "the excess did not spill to on-demand"
    assert len(with_fleet_view) >= 0.25 * len(spilled), "too few spills had the fleet's view to judge prediction"
    assert throttled_first <= 0.05 * len(with_fleet_view), (
        f"{throttled_first} of {len(with_fleet_view)} spills with the fleet's view paid a throttle first"
    )
    return figures


def home_region_outage(world: World) -> Figures:
    """us-east-1 refuses connections for 6 s: failover to us-west-2 with nothing dropped, every environment stops
    sending to the home targets within a second, and traffic returns home after the region recovers."""
    records = run(world, STEADY, 22.0, [(2.0, lambda: world.region_down(HOME)), (8.0, lambda: world.region_up(HOME))])
    t0 = records[0].sent_s
    attempts = ff.dead_attempts([r for r in records if r.sent_s - t0 < 8.0], HOME_TARGETS, since_s=t0 + 2.0)
    stopped = ff.ordinary_traffic_stop_s(attempts, cooldown_s=5.0)
    during = [r for r in records if 3.0 <= r.sent_s - t0 < 8.0]
    tail = [r for r in records if r.sent_s - t0 >= 19.0]
    home_tail = sum(1 for r in tail if r.target and r.target.endswith(HOME))
    figures = {
        "requests": len(records),
        "dropped": dropped(records),
        "home_traffic_stopped_after_s": stopped,
        "failed_attempts_per_home_target": ff.failed_attempts_per_target(attempts),
        "served_away_during_outage": sum(1 for r in during if r.target and r.target.endswith(AWAY)),
        "requests_during_outage": len(during),
        "home_share_last_3s": round(home_tail / max(1, len(tail)), 2),
        "p99_ms": lat(records, 99),
    }
    assert figures["dropped"] == 0, f"{figures['dropped']} of {figures['requests']} dropped"
    assert stopped is not None, "no request ever met the outage"
    assert stopped < 1.0, f"the fleet went on sending to the dead region for {stopped} s"
    assert figures["served_away_during_outage"] == len(during), "a request was served at home during the outage"
    assert figures["home_share_last_3s"] >= 0.8, "traffic did not return home"
    return figures


def provider_outage(world: World) -> Figures:
    """Bedrock is out in every region for 8 s (every Bedrock target answers 503) while Gemini on Vertex AI, in
    another cloud, serves through its stand-ins (workload identity: the role's web identity token exchanged for an
    access token the emulated endpoint checks). Nothing dropped, the fleet stops sending to Bedrock within a second,
    and traffic returns to Bedrock once it recovers."""
    bedrock = {t.id for t in world.by_id.values() if t.kind == "bedrock"}
    other_cloud = {t.id for t in world.by_id.values() if t.kind == "openai" and t.model == "gemini-flash"}
    assert other_cloud, "the platform has no model of summarize-thread in another cloud"
    identity = world.providers.identity
    exchanges_before = identity.exchanges if identity is not None else 0
    faults: list[str] = []

    def down() -> None:
        faults.extend(world.set_fault(target, Fault.error_response("unavailable")) for target in sorted(bedrock))

    def up() -> None:
        for fault in faults:
            world.emu.remove_fault(fault)

    records = run(world, STEADY, 24.0, [(2.0, down), (10.0, up)])
    t0 = records[0].sent_s
    attempts = ff.dead_attempts([r for r in records if r.sent_s - t0 < 10.0], bedrock, since_s=t0 + 2.0)
    stopped = ff.ordinary_traffic_stop_s(attempts, cooldown_s=5.0)
    during = [r for r in records if 3.0 <= r.sent_s - t0 < 10.0]
    tail = [r for r in records if r.sent_s - t0 >= 21.0]
    figures = {
        "requests": len(records),
        "dropped": dropped(records),
        "bedrock_traffic_stopped_after_s": stopped,
        "failed_attempts_per_bedrock_target": ff.failed_attempts_per_target(attempts),
        "served_by_other_cloud_during_outage": sum(1 for r in during if r.target in other_cloud),
        "requests_during_outage": len(during),
        "token_exchanges": (identity.exchanges if identity is not None else 0) - exchanges_before,
        "bedrock_share_last_3s": round(sum(1 for r in tail if r.target in bedrock) / max(1, len(tail)), 2),
        "p99_ms": lat(records, 99),
    }
    assert figures["dropped"] == 0, f"{figures['dropped']} of {figures['requests']} dropped"
    assert stopped is not None, "no request ever met the outage"
    assert stopped < 1.0, f"the fleet went on sending to the dead Bedrock targets for {stopped} s"
    assert figures["served_by_other_cloud_during_outage"] == len(during), "a request was not served by the other cloud"
    assert figures["token_exchanges"] >= 1, "the other cloud served without a token from the exchange"
    assert figures["bedrock_share_last_3s"] >= 0.8, "traffic did not return to Bedrock"
    return figures


def flapping_region(world: World) -> Figures:
    """us-east-1 goes down and up every second for 8 s: nothing dropped, and the breaker's cooldown grows instead of
    letting the flapping region back in at full weight each time it answers."""
    hooks: list[tuple[float, Callable[[], None]]] = []
    for i in range(8):
        hooks.append((1.0 + i, world.region_down if i % 2 == 0 else world.region_up))
    hooks = [(t, (lambda f=f: f(HOME))) for t, f in hooks]  # type: ignore[misc]
    hooks.append((9.0, lambda: world.region_up(HOME)))
    records = run(world, STEADY, 11.0, hooks)
    trips = [t["trips"] for doc in world.environment_health() for t in doc["targets"] if t["id"] == PT_EAST]
    figures = {
        "requests": len(records),
        "dropped": dropped(records),
        "trips_per_environment_max": max(trips, default=0),
        "served_home": sum(n for t, n in by_target(records).items() if t.endswith(HOME)),
        "served_away": sum(n for t, n in by_target(records).items() if t.endswith(AWAY)),
        "p99_ms": lat(records, 99),
    }
    assert figures["dropped"] == 0, f"{figures['dropped']} of {figures['requests']} dropped"
    assert figures["trips_per_environment_max"] >= 1, "the flapping region never tripped a breaker"
    assert figures["served_away"] > 0
    return figures


def slow_first_token(world: World) -> Figures:
    """PT us-east-1 takes 1 s more to its first token; the feature's breaker calls answers over 600 ms slow. Slow
    answers are kept (none dropped), the breaker opens on the slow rate, and traffic moves to a fast target."""
    table = world.table_copy()
    table["features"][FEATURE]["breaker"] = {**table["features"][FEATURE].get("breaker", {}), "latency_ms": 600}
    world.deploy_table(table)
    world.await_config()
    world.set_fault(PT_EAST, Fault.slow_first_token(1.0))
    records = run(world, 10.0, 8.0)
    t0 = records[0].sent_s
    moved = ff.trip_time_s(records, {PT_EAST}, t0)
    late = [r for r in records if r.sent_s - t0 >= 4.0]
    figures = {
        "requests": len(records),
        "dropped": dropped(records),
        "slow_target_left_after_s": moved,
        "served_by_slow_target": by_target(records)[PT_EAST],
        "p50_ms_first_2s": lat([r for r in records if r.sent_s - records[0].sent_s < 2.0], 50),
        "p50_ms_after_4s": lat(late, 50),
    }
    assert figures["dropped"] == 0, f"{figures['dropped']} of {figures['requests']} dropped"
    assert moved is not None, "slow answers never moved the fleet off the slow target"
    assert figures["p50_ms_after_4s"] < 600, "traffic stayed on the slow target"
    return figures


def slow_pt(world: World) -> Figures:
    """PT us-east-1's time to first token rises: one answer in five starts 1 s late. The feature holds its p90
    time to first token to 600 ms; Converse callers (buffered) are served through the streaming APIs, so each of their
    attempts measures it. The fleet's p90 trips PT's breaker (its slow rate stays under the slow_rate rule, so only
    the percentile can), traffic spills to on-demand in the same region, and nothing is dropped."""
    fleet = fleet_only(world)
    table = fleet.table_copy()
    breaker = {**table["features"][FEATURE].get("breaker", {}), "ttft_ms": 600, "ttft_percentile": 90}
    breaker.update(slow_rate=0.5, min_requests=20, cooldown_s=30)  # the cooldown outlasts the run: one trip to see
    table["features"][FEATURE]["breaker"] = breaker
    fleet.deploy_table(table)
    fleet.await_config()
    fleet.set_fault(PT_EAST, Fault.slow_first_token(1.0, probability=0.2, seed=7))
    since_ms = time.time() * 1000.0
    records = run(fleet, 10.0, 10.0)
    first_tokens = fleet_values(fleet.workdir, "TimeToFirstToken", since_ms=since_ms)  # the router's own metrics
    t0 = records[0].sent_s
    moved = ff.trip_time_s(records, {PT_EAST}, t0)
    pt_outcomes = [outcome for r in records for target, outcome in r.route if target == PT_EAST]
    late = [r for r in records if r.sent_s - t0 >= 6.0]
    trips = [
        t.get("trips", 0)
        for doc in fleet.environment_health()[:1]
        for tid, t in doc.get("store", {}).get("targets", {}).items()
        if tid == PT_EAST
    ]
    figures = {
        "requests": len(records),
        "dropped": dropped(records),
        "pt_attempts": len(pt_outcomes),
        "pt_slow_share": round(pt_outcomes.count("slow") / max(1, len(pt_outcomes)), 3),
        "pt_left_after_s": moved,
        "ttft_p90_ms": {t: round(percentile(v, 90), 1) for t, v in sorted(first_tokens.items()) if v},
        "fleet_trips_of_pt": trips[0] if trips else None,
        "served_after_6s": dict(by_target(late)),
        "p50_ms_after_6s": lat(late, 50),
    }
    assert figures["dropped"] == 0, f"{figures['dropped']} of {figures['requests']} dropped"
    assert moved is not None, "PT's slow first tokens never moved the fleet off it"
    assert figures["fleet_trips_of_pt"] == 1, "the fleet store did not record one trip of PT"
    # Slow answers were under the slow_rate rule's 50%: the trip was the p90 rule's (20 outcomes with 3 late suffice).
    assert 0 < figures["pt_slow_share"] < 0.5, figures["pt_slow_share"]
    assert figures["ttft_p90_ms"].get(PT_EAST, 0.0) > 600, "PT's late first tokens are missing from its metrics"
    assert late, "no traffic after the trip"
    assert by_target(late)[OD_EAST] == len(late), "traffic after the trip did not move on-demand in the home region"
    return figures


def throttle_storm(world: World) -> Figures:
    """Every Bedrock PT target answers ThrottlingException: everything is served on-demand, nothing dropped, and
    throttles do not open breakers (capacity is not a health failure)."""
    for t in world.targets_where(capacity="provisioned", kind="bedrock"):
        world.set_fault(t.id, Fault.throttle())
    records = run(world, STEADY, 5.0)
    served = by_target(records)
    pt_states = {t: Counter(states_of(world, t)) for t in (PT_EAST, PT_WEST)}
    figures = {
        "requests": len(records),
        "dropped": dropped(records),
        "served_on_demand": sum(n for t, n in served.items() if "/on_demand/" in t),
        "served_by_pt": sum(n for t, n in served.items() if "/provisioned/" in t),
        "throttled_attempts": sum(1 for r in records for _, o in r.route if o == "capacity"),
        "pt_breakers": {t: dict(c) for t, c in pt_states.items()},
        "p99_ms": lat(records, 99),
    }
    assert figures["dropped"] == 0, f"{figures['dropped']} of {figures['requests']} dropped"
    assert figures["served_by_pt"] == 0
    assert set(pt_states[PT_EAST]) == {"closed"}, "throttling opened a breaker"
    return figures


def malformed_bodies(world: World) -> Figures:
    """PT us-east-1 answers 200 with a broken body (each variant in turn): the router moves on, serves from the next
    target, never answers 5xx."""
    figures: Figures = {}
    for variant in ("truncated", "not_json", "empty", "wrong_shape", "bad_types"):
        world.reset()
        world.set_fault(PT_EAST, Fault.malformed_body(variant))
        records = run(world, 10.0, 1.5)
        figures[variant] = {
            "requests": len(records),
            "dropped": dropped(records),
            "served_by_broken": by_target(records)[PT_EAST],
        }
        assert figures[variant]["dropped"] == 0, variant
        assert figures[variant]["served_by_broken"] == 0, variant
    return figures


def appconfig_unreachable(world: World) -> Figures:
    """The AppConfig extension refuses connections, then hangs: the router keeps its last known good table (a
    rollout made meanwhile stays unseen), nothing dropped, a hang costs at most the fetch timeout."""
    assert world.emu.appconfig is not None
    warm = run(world, STEADY, 1.5)
    world.emu.appconfig.set_fault(Fault.refuse())
    rollout = world.table_copy()
    rollout["features"][FEATURE]["first_capacity"] = "on_demand"
    world.deploy_table(rollout)  # AppConfig has it; the router cannot fetch it
    refused = run(world, STEADY, 3.0)
    source_refused = world.http.get_json("/v1/health")["config"]["source"]
    world.emu.appconfig.clear_faults()
    world.deploy_table(world.table_doc)
    world.emu.appconfig.set_fault(Fault.hang(5.0))
    hung = run(world, STEADY, 3.0)
    source_hung = world.http.get_json("/v1/health")["config"]["source"]
    world.emu.appconfig.clear_faults()
    figures = {
        "requests": len(warm) + len(refused) + len(hung),
        "dropped": dropped(warm) + dropped(refused) + dropped(hung),
        "source_while_refused": source_refused,
        "source_while_hung": source_hung,
        "served_by_pt_while_refused": by_target(refused)[PT_EAST],
        "p99_ms_refused": lat(refused, 99),
        "p99_ms_hung": lat(hung, 99),
    }
    assert figures["dropped"] == 0, f"{figures['dropped']} of {figures['requests']} dropped"
    assert source_refused == "last_known_good"
    assert source_hung == "last_known_good"
    assert by_target(refused)[OD_EAST] <= 0.1 * len(refused), "an unfetchable rollout was applied"
    assert figures["p99_ms_hung"] < 1500, "a hanging extension cost more than its fetch timeout"
    return figures


def every_target_down(world: World) -> Figures:
    """Both regions refuse connections: a clean 503 NoCapacity with Retry-After (1-60 s), fast, in the documented
    error shape. Never a hang, never a 500."""
    for region in world.emu.regions:
        world.emu.close_region(region)
    replies = [world.http.converse(FEATURE) for _ in range(20)]
    statuses = Counter(r.status for r in replies)
    retry_after = sorted({r.header("retry-after") or "" for r in replies})
    figures = {
        "requests": len(replies),
        "statuses": dict(statuses),
        "retry_after": retry_after,
        "max_ms": round(max(r.elapsed_ms for r in replies), 1),
    }
    assert statuses == {503: 20}
    assert all(error_body_ok(r.body) and r.json()["error"]["code"] == "NoCapacity" for r in replies)
    assert all(v.isdigit() and 1 <= int(v) <= 60 for v in retry_after)
    assert figures["max_ms"] < 2000
    return figures


def deadline_pressure(world: World) -> Figures:
    """Every target takes 1.5 s; the Lambda has 1.2 s, 3 s or 8 s left. No answer outlives its budget (+0.3 s):
    a 504 DeadlineExceeded in the documented shape when nothing fits, served when one attempt fits.

    Each budget is judged after two warm-up requests: the first request to use a timeout tier builds its boto3
    client (100-800 ms here, before the attempt's read timeout starts), which a warm Lambda has already paid.
    The cold overrun is printed as a figure, not judged."""
    for spec in world.emulator_specs():
        world.emu.update_target(spec.key, ttft_ms=1500.0)
    figures: Figures = {}
    for remaining in (1200.0, 3000.0, 8000.0):
        cold = [world.http.converse(FEATURE, remaining_ms=remaining) for _ in range(2)]
        figures[f"{remaining:.0f}ms_left_cold_max_ms"] = round(max(r.elapsed_ms for r in cold), 1)
        records = run(world, 4.0, 2.0, remaining_ms=remaining)
        worst = max(r.latency_ms for r in records)
        statuses = Counter(r.status for r in records)
        figures[f"{remaining:.0f}ms_left"] = {"statuses": dict(statuses), "max_ms": round(worst, 1)}
        assert worst <= remaining + 300, f"an answer outlived a {remaining:.0f} ms budget"
        assert set(statuses) <= {200, 504}
        if remaining < 1500 + 500:
            assert statuses == {504: len(records)}
        else:
            assert statuses == {200: len(records)}, "an attempt that fits the budget was not served"
    reply = world.http.converse(FEATURE, remaining_ms=1000)
    assert reply.status == 504
    assert error_body_ok(reply.body)
    return figures


def config_rollout_and_rollback(world: World) -> Figures:
    """A rollout moves summarize-thread to on-demand first, a rollback moves it back; traffic follows each within
    the config cache TTL, and no request is dropped across either switch."""
    rollout = world.table_copy()
    rollout["features"][FEATURE]["first_capacity"] = "on_demand"
    records = run(
        world,
        15.0,
        9.0,
        [(2.0, lambda: world.deploy_table(rollout)), (5.5, lambda: world.deploy_table(world.table_doc))],
    )
    t0 = records[0].sent_s

    def window(a: float, b: float) -> list[Record]:
        return [r for r in records if a <= r.sent_s - t0 < b]

    after_rollout, after_rollback = window(3.5, 5.5), window(7.0, 9.0)
    figures = {
        "requests": len(records),
        "dropped": dropped(records),
        "on_demand_share_after_rollout": round(by_target(after_rollout)[OD_EAST] / max(1, len(after_rollout)), 2),
        "pt_share_after_rollback": round(by_target(after_rollback)[PT_EAST] / max(1, len(after_rollback)), 2),
    }
    assert figures["dropped"] == 0, f"{figures['dropped']} of {figures['requests']} dropped"
    assert figures["on_demand_share_after_rollout"] >= 0.9
    assert figures["pt_share_after_rollback"] >= 0.9
    return figures


# -- fleet scenarios -----------------------------------------------------------------------------------------------


def environment_killed_mid_request(world: World) -> Figures:
    """An environment is killed (SIGKILL) in the middle of a request: that request fails (API Gateway's 502),
    nothing else is lost, Lambda replaces the environment, and whatever it held in the fleet store (a PT lease)
    does not hold a slot for good: PT serves as before once the kill is some seconds old."""
    fleet = fleet_only(world).functions
    killed: list[int] = []

    def kill() -> None:
        victim = fleet.kill_busy()
        if victim is not None:
            killed.append(victim.index)

    records = run(world, STEADY, 12.0, [(2.0, kill)])
    t0 = records[0].sent_s
    lost = [r for r in records if not r.served]
    late = [r for r in records if r.sent_s - t0 >= 8.0]
    figures = {
        "requests": len(records),
        "killed_environment": killed,
        "lost": len(lost),
        "lost_statuses": dict(Counter(r.status for r in lost)),
        "environment_failures": fleet.failures,
        "pt_share_after_8s": round(by_target(late)[PT_EAST] / max(1, len(late)), 2),
    }
    assert len(killed) == 1, "no environment was busy to kill"
    assert [r.status for r in lost] == [502], "the kill cost other than its own request"
    assert fleet.failures == 1
    assert figures["pt_share_after_8s"] >= 0.9, "PT did not serve as before after the kill"
    return figures


def _store_fault_during_outage(world: World, fault: Callable[[], None]) -> Figures:
    before = run(world, STEADY, 2.0)
    records = run(world, STEADY, 7.0, [(0.5, fault), (1.5, lambda: world.region_down(HOME))])
    t0 = records[0].sent_s
    during = [r for r in records if r.sent_s - t0 >= 1.5]
    tail = [r for r in records if r.sent_s >= records[-1].sent_s - 2.0]
    figures = {
        "requests": len(before) + len(records),
        "dropped": dropped(before) + dropped(records),
        "p50_ms_before": lat(before, 50),
        "p99_ms_before": lat(before, 99),
        "p50_ms_outage": lat(during, 50),
        "p99_ms_outage": lat(during, 99),
        "home_first_share_last_2s": round(sum(ff.first_attempt_share(tail, t) for t in HOME_TARGETS), 2),
    }
    assert figures["dropped"] == 0, "a request was lost while the store was unwell"
    # Fail-open at a bounded cost: a failed attempt on the dead region plus the store's bounded wait, no more.
    assert figures["p99_ms_outage"] <= figures["p99_ms_before"] + 1000, "the store's trouble cost a request > 1 s"
    return figures


def store_down_during_outage(world: World) -> Figures:
    """The fleet store (redis-server) goes down, then us-east-1: routing goes on with local state (fail-open),
    nothing dropped, each request's extra cost bounded. Each environment then learns of the outage on its own, as
    before fleet-wide state: the share of requests still tried at home first is a figure, not a goal."""
    redis = world.redis
    assert redis is not None
    return _store_fault_during_outage(world, redis.down)


def store_slow_during_outage(world: World) -> Figures:
    """The fleet store answers every command 80 ms late, then us-east-1 goes down: nothing dropped, each request's
    extra cost bounded (the store's own timeout), the home region left as far as the slow store still tells."""
    redis = world.redis
    assert redis is not None
    return _store_fault_during_outage(world, lambda: redis.slow(block_ms=80.0, every_ms=100.0))


def _wall_clock_offset_s(log: Path) -> float | None:
    """How far an environment's wall clock is from the host's: the Timestamp of its last EMF line (its time.time(),
    in ms) against the log file's modification time (the kernel's clock, which libfaketime does not touch)."""
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.startswith('{"_aws"')]
    if not lines:
        return None
    stamp = json.loads(lines[-1])["_aws"]["Timestamp"] / 1000.0
    return stamp - log.stat().st_mtime


def clocks_disagree(world: World) -> Figures:
    """Half the environments run a wall clock one second ahead (Debian's libfaketime): a home-region outage and its
    recovery still go as with one clock: nothing dropped, home left at once, traffic back home after recovery."""
    fleet_world = fleet_only(world)
    fleet = fleet_world.functions
    replaced = fleet.retire(fleet.environments()[::2])  # half the fleet is replaced by skewed environments
    first_new = fleet.next_index
    skew = dict.fromkeys(range(first_new, first_new + replaced + RESERVED_CONCURRENCY), 1.0)
    fleet_world.skewed_clock = skew
    try:
        fleet_world.reset()
        fleet.prewarm(replaced)  # the new environments run the skewed clock
        run(world, STEADY, 2.0)  # every warm environment serves and writes EMF lines stamped with its own clock
        offsets = []
        for environment in fleet.environments():
            offset = _wall_clock_offset_s(Path(environment.log.name))
            if offset is not None:
                offsets.append((environment.index, round(offset, 2)))
        skewed = [o for i, o in offsets if i in skew]
        unskewed = [o for i, o in offsets if i not in skew]
        assert skewed, "no skewed environment to check"
        assert all(0.7 <= o <= 1.3 for o in skewed), f"libfaketime did not move the skewed clocks: {skewed}"
        assert all(-0.3 <= o <= 0.3 for o in unskewed), f"an unskewed environment's clock moved: {unskewed}"
        world.reset()
        return {"clock_offsets_s": offsets[:6], **home_region_outage(world)}
    finally:
        fleet_world.skewed_clock = {}
        fleet.retire([e for e in fleet.environments() if e.index in skew])  # the next reset starts unskewed ones


def burst_beyond_reserved_concurrency(world: World) -> Figures:
    """More requests at once than the function's reserved concurrency, each answer taking 1.5 s: Lambda runs as many
    as it may (no environment beyond the reservation), API Gateway answers the rest at once for the throttled
    invocations, and the router itself never answers a 5xx."""
    fleet = fleet_only(world).functions
    burst = RESERVED_CONCURRENCY + 16
    for spec in world.emulator_specs():
        world.emu.update_target(spec.key, ttft_ms=1500.0)
    world.wait_for(lambda: not fleet.busy(), 10.0)
    replies: list[Any] = []
    lock = threading.Lock()
    gate = threading.Barrier(burst)

    def one() -> None:
        gate.wait()
        reply = world.http.converse(FEATURE)
        with lock:
            replies.append(reply)

    threads = [threading.Thread(target=one) for _ in range(burst)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = Counter(r.status for r in replies)
    throttled = [r for r in replies if is_throttle_answer(r.status, r.headers, r.body)]
    figures = {
        "burst": burst,
        "reserved_concurrency": RESERVED_CONCURRENCY,
        "statuses": dict(statuses),
        "throttled_by_lambda": fleet.throttles,
        "environments": len(fleet.environments()),
        "max_concurrency": fleet.max_concurrency,
        "throttled_answer_max_ms": round(max((r.elapsed_ms for r in throttled), default=0.0), 1),
    }
    assert len(fleet.environments()) <= RESERVED_CONCURRENCY, "an environment beyond the reservation"
    assert fleet.max_concurrency <= RESERVED_CONCURRENCY
    assert statuses[200] >= RESERVED_CONCURRENCY - 2, "the reserved environments did not all serve"
    assert len(throttled) == fleet.throttles == burst - statuses[200], "a throttled invocation was not answered"
    assert figures["throttled_answer_max_ms"] < 1000, "a throttled invocation waited instead of failing fast"
    return figures


def _streams(world: World, count: int, parallel: int = 4) -> list[tuple[int, dict[str, str], list[tuple[str, Any]]]]:
    """`count` converse-stream calls through the documented client, `parallel` at a time: (status, headers, events)."""
    from botocore.credentials import Credentials  # noqa: PLC0415

    from tools.stream_router import converse_stream  # noqa: PLC0415

    request = {"messages": [{"role": "user", "content": [{"text": "Summarize the thread, please."}]}]}
    out: list[tuple[int, dict[str, str], list[tuple[str, Any]]]] = []
    lock = threading.Lock()
    left = list(range(count))

    def worker() -> None:
        while True:
            with lock:
                if not left:
                    return
                left.pop()
            status, headers, events = converse_stream(
                world.url, FEATURE, request, HOME, credentials=Credentials("local", "local")
            )
            answer = (status, {k.lower(): v for k, v in headers.items()}, list(events))
            with lock:
                out.append(answer)

    threads = [threading.Thread(target=worker) for _ in range(parallel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out


def _clean_but_partial(events: list[tuple[str, Any]]) -> bool:
    """A stream that says complete without Bedrock's own end (messageStop, metadata): half an answer, passed as
    whole. The figure that must stay 0."""
    names = [name for name, _ in events]
    complete = bool(events) and names[-1] == "spillway" and events[-1][1].get("complete") is True
    return complete and not {"messageStop", "metadata"} <= set(names)


def stream_stall_before_first_token(world: World) -> Figures:
    """PT us-east-1 sends its headers and messageStart, then nothing for 30 s; the feature allows 400 ms to the
    first token. Every stream is served whole by another target, and no caller sees a word of the stalled one."""
    table = world.table_copy()
    table["features"][FEATURE].update(first_token_ms=400)
    world.deploy_table(table)
    world.await_config()
    world.set_fault(PT_EAST, Fault.slow_first_token(30.0))
    answers = _streams(world, 24)
    served = Counter(headers.get("x-spillway-target") for _, headers, _ in answers)
    figures = {
        "streams": len(answers),
        "not_200": sum(1 for status, _, _ in answers if status != 200),
        "served_by": dict(served),
        "saw_two_message_starts": sum(1 for *_, ev in answers if [n for n, _ in ev].count("messageStart") != 1),
        "incomplete": sum(1 for *_, ev in answers if not ev or ev[-1][0] != "spillway" or not ev[-1][1]["complete"]),
        "abandoned_for_no_first_token": sum(
            1 for *_, ev in answers if ev and any(r.get("code") == "NoFirstToken" for r in ev[-1][1].get("route", []))
        ),
    }
    assert figures["not_200"] == 0
    assert PT_EAST not in served, "a caller was served by the stalled target"
    assert figures["saw_two_message_starts"] == 0, "an abandoned attempt's events reached a caller"
    assert figures["incomplete"] == 0
    return figures


def stream_error_mid_stream(world: World) -> Figures:
    """PT us-east-1 fails half of its streams after 3 tokens (modelStreamErrorException): each of those ends with an
    explicit incomplete event naming the code; 0 streams end cleanly with a partial answer."""
    world.set_fault(PT_EAST, Fault.stream_error("model_stream_error", after_tokens=3, probability=0.5, seed=12))
    answers = _streams(world, 24)
    trailers = [ev[-1][1] if ev and ev[-1][0] == "spillway" else None for *_, ev in answers]
    figures = {
        "streams": len(answers),
        "not_200": sum(1 for status, _, _ in answers if status != 200),
        "ended_incomplete": sum(1 for t in trailers if t is not None and not t["complete"]),
        "incomplete_codes": dict(Counter(t["error"]["code"] for t in trailers if t is not None and not t["complete"])),
        "without_last_event": sum(1 for t in trailers if t is None),
        "clean_but_partial": sum(1 for *_, ev in answers if _clean_but_partial(ev)),
    }
    assert figures["not_200"] == 0
    assert figures["without_last_event"] == 0
    assert figures["ended_incomplete"] > 0, "the fault never struck"
    assert set(figures["incomplete_codes"]) == {"ModelStreamErrorException"}
    assert figures["clean_but_partial"] == 0
    return figures


SCENARIOS: list[Callable[[World], Figures]] = [
    pt_surge,
    home_region_outage,
    provider_outage,
    flapping_region,
    slow_first_token,
    slow_pt,
    throttle_storm,
    malformed_bodies,
    appconfig_unreachable,
    every_target_down,
    deadline_pressure,
    config_rollout_and_rollback,
    environment_killed_mid_request,
    store_down_during_outage,
    store_slow_during_outage,
    burst_beyond_reserved_concurrency,
    clocks_disagree,
    stream_stall_before_first_token,
    stream_error_mid_stream,
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.chaos", description=__doc__)
    parser.add_argument("names", nargs="*", help="scenarios to run (default: all)")
    parser.add_argument("--world", choices=("fleet", "process"), default="fleet", help="the router's shape")
    args = parser.parse_args(argv)
    chosen = [s for s in SCENARIOS if not args.names or s.__name__ in args.names]
    unknown = set(args.names) - {s.__name__ for s in SCENARIOS}
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    passed = failed = skipped = 0
    started = time.monotonic()
    settings: dict[str, Any] = {"latency": LATENCY, "config_ttl_s": 1.0}
    settings.update(reserved_concurrency=RESERVED_CONCURRENCY, warm=WARM)
    with make_world(args.world, **settings) as world:
        print(f"world: {args.world}" + (f", {WARM} environments warm" if args.world == "fleet" else ""), flush=True)
        for scenario in chosen:
            world.reset()
            doc = " ".join((scenario.__doc__ or "").split("\n\n")[0].split())
            print(f"== {scenario.__name__}: {doc}", flush=True)
            t0 = time.monotonic()
            SCENARIO_RECORDS.clear()
            try:
                figures = scenario(world)
            except Skipped as why:
                skipped += 1
                print(f"   skipped: {why}")
                continue
            except AssertionError as exc:
                failed += 1
                print(f"   FAIL ({time.monotonic() - t0:.1f} s): {exc or 'assertion failed'}")
                print("   " + traceback.format_exc().strip().splitlines()[-2].strip())
                lost = Counter(r.throttle_label for r in SCENARIO_RECORDS if not r.served)
                routes = Counter(",".join(o for _, o in r.route) for r in SCENARIO_RECORDS if not r.served)
                print(f"   requests {len(SCENARIO_RECORDS)}, not served by status: {dict(lost)}")
                print(f"   their routes' outcomes: {dict(routes.most_common(4))}")
                continue
            except Exception:
                failed += 1
                print(f"   ERROR ({time.monotonic() - t0:.1f} s)")
                traceback.print_exc()
                continue
            passed += 1
            for key, value in figures.items():
                print(f"   {key}: {value}")
            print(f"   ok ({time.monotonic() - t0:.1f} s)", flush=True)
    print(f"\n({time.monotonic() - started:.0f} s)")
    print(f"chaos: {passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

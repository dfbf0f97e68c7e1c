"""The fleet figures of issue 10, from the production shape: the router as a fleet of execution environments
(separate processes, one event each, frozen between events; local/localrun/fleet_world.py), beside the same failover in
the one-process world, in one run.

Setup phases (measured apart, reported as the cold-start figure): each fleet starts its environments before any
request, two at a time. Then, per fleet size:

- failover: summarize-thread at N requests/s (N environments, a 500 ms model: about half the fleet busy), the home
  region (us-east-1) goes down after a few seconds, refused, then (fleet rebuilt) blackholed so that connects time
  out. Requests lost; seconds until every environment stops sending ordinary traffic to the dead targets; failed
  attempts per dead target in total (and how many environments paid at least one);
- brownout (16 environments): 30% of the home region's answers are 503; seconds until no request tries a home
  target first, and lost;
- spillover (48 environments): three times summarize-thread's PT capacity; dropped, and the share of spilled
  requests that paid a PT throttle first;
- recovery (48 environments): the home targets fail for good, with a fixed 2 s cooldown; requests that reached each
  home target (counted at the emulator) per cooldown, once every environment has tripped: probes;
- the price of sharing (8 environments, with and without SPILLWAY_FLEET_STORE_URL): store commands per request
  (counted at redis-server) and round trips (as the router's store counts them, where it does), PT and on-demand
  requests apart, and the p50/p99 latency the store adds.

Sizing, as the stacks size the router (stacks/platform.py ``executions_needed``, Little's law): a fleet's reserved
concurrency is each driven feature's rate times its deadline, since a request may hold an environment that long; the
N environments of a figure are the warm ones, started before any request, and Lambda starts more on demand (each a
cold start paid by a request, counted) up to the reservation.

The caller retries as an AWS SDK client in standard retry mode does (local/localrun/retry.py: 3 attempts, 429 and 5xx,
Retry-After honoured). "lost" counts the requests that finally failed; a request served after its first answer was
a Lambda throttle is counted apart (``retried_after_lambda_throttle``), and the throttles themselves are counted
where they happen (``lambda_throttles``, the fleet's own count).

Merges the key "fleet" into local/benchmarks/results.json; ``--scenario`` runs only the named parts and merges them
into the key's last full run (each rerun part says when and on what router it ran, under ``reruns``).
Usage: python local/benchmarks/bench_fleet.py [--quick] [--no-write] [--scenario failover ...] [--size N ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "lambdas" / "router"), str(ROOT)]

from local.benchmarks.results import RESULTS, merge_result  # noqa: E402
from local.emulator import Fault  # noqa: E402
from local.localrun import FleetWorld, Latency, LocalWorld, World, iter_classify  # noqa: E402
from local.localrun import figures as ff  # noqa: E402
from local.localrun.retry import StandardRetry  # noqa: E402
from local.localrun.traffic import Record, Traffic, percentile  # noqa: E402
from stacks.platform import executions_needed  # noqa: E402

FEATURE = "summarize-thread"
OD_FEATURE = "nightly-recap"  # starts on on-demand (nova-lite, us-west-2)
HOME = "us-east-1"
PT_EAST = "claude-sonnet/provisioned/us-east-1"
OD_EAST = "claude-sonnet/on_demand/us-east-1"
HOME_TARGETS = {PT_EAST, OD_EAST}
SCENARIOS = ("one_process", "failover", "brownout", "spillover", "recovery", "price")
GOALS = {
    "failover": "0 lost; every environment stops sending ordinary traffic to the dead targets within 1.5 s of the "
    "first failure; at most 10 failed attempts per dead target in total, whatever the environment count",
    "brownout": "home targets trip within 5 s; 0 lost",
    "spillover": "0 dropped; at most 5% of spilled requests throttled first",
    "recovery": "one probe per target per cooldown across the whole fleet",
}


@dataclass(frozen=True)
class Spec:
    sizes: tuple[int, ...]
    latency: Latency
    rate_per_env: float  # requests/s per environment in failover and brownout
    before_s: float
    outage_s: float
    brownout_s: float
    spill_size: int
    spill_s: float
    recovery_cooldown_s: float
    recovery_trip_s: float
    recovery_window_s: float
    price_size: int
    price_rate: float
    price_s: float
    process_rate: float


FULL = Spec(
    sizes=(16, 48),
    latency=Latency(ttft_ms=500.0, ms_per_token=0.0),
    rate_per_env=1.0,
    before_s=3.0,
    outage_s=7.0,
    brownout_s=10.0,
    spill_size=48,
    spill_s=8.0,
    recovery_cooldown_s=2.0,
    recovery_trip_s=4.0,
    recovery_window_s=8.0,
    price_size=8,
    price_rate=16.0,
    price_s=8.0,
    process_rate=1.5,
)
QUICK = Spec(
    sizes=(3,),
    latency=Latency(ttft_ms=200.0, ms_per_token=0.0),
    rate_per_env=2.0,
    before_s=1.0,
    outage_s=1.5,
    brownout_s=1.5,
    spill_size=3,
    spill_s=2.0,
    recovery_cooldown_s=1.0,
    recovery_trip_s=1.5,
    recovery_window_s=2.0,
    price_size=2,
    price_rate=6.0,
    price_s=1.0,
    process_rate=3.0,
)


def world_settings(latency: Latency, *, quick: bool = False) -> dict[str, Any]:
    """The router's production cache settings (config 5 s), as the stacks set them; the quick (smoke) run reads a
    new table after 1 s, so its two table changes do not wait 5 s each."""
    return {"latency": latency, "config_ttl_s": 1.0 if quick else 5.0}


def reserved_for(world_table: dict[str, Any], rates: dict[str, float]) -> int:
    """The reserved concurrency the stacks would give this traffic: Little's law on each feature's deadline."""
    return sum(
        executions_needed(rate, world_table["features"][feature]["deadline_ms"] / 1000.0)
        for feature, rate in rates.items()
    )


def drive(
    world: World,
    rates: dict[str, float],
    seconds: float,
    hooks: Sequence[tuple[float, Callable[[], None]]] = (),
) -> tuple[list[Record], dict[str, float]]:
    """Open-loop traffic; returns the records and the traffic-clock time of each named hook."""
    traffic = Traffic(world.http, max_in_flight=256, retry=StandardRetry())
    marks: dict[str, float] = {}
    started: list[threading.Thread] = []

    def marked(name: str, action: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            # On a thread of its own: a fault that takes a while to install (closing a region joins its handler
            # threads) must not stall the open-loop sender, which would then send the overdue requests at once.
            marks[name] = traffic.now()
            thread = threading.Thread(target=action, name=f"hook-{name}", daemon=True)
            thread.start()
            started.append(thread)

        return run

    named = [(offset, marked(getattr(action, "__name__", str(i)), action)) for i, (offset, action) in enumerate(hooks)]
    try:
        traffic.phase("run", rates, seconds, at=named)
    finally:
        traffic.close()
        for thread in started:
            thread.join()
    return traffic.of(), marks


def cooldown_of(world: World, feature: str = FEATURE) -> float:
    return float((world.feature(feature).get("breaker") or {}).get("cooldown_s", 5.0))


def failover(world: World, rate: float, spec: Spec, *, blackhole: bool) -> dict[str, Any]:
    def region_down() -> None:
        world.region_down(HOME, blackhole=blackhole)

    records, marks = drive(world, {FEATURE: rate}, spec.before_s + spec.outage_s, [(spec.before_s, region_down)])
    world.region_up(HOME)
    down_s = marks["region_down"]
    dead = {t for t, target in world.by_id.items() if target.region == HOME}
    cooldown = cooldown_of(world)
    attempts = ff.dead_attempts(records, dead, since_s=down_s)
    per_target = ff.failed_attempts_per_target(attempts)
    stop_s = ff.ordinary_traffic_stop_s(attempts, cooldown)
    result = {
        "mode": "blackholed" if blackhole else "refused",
        "rate_rps": rate,
        "requests": len(records),
        "lost": sum(1 for r in records if not r.served),
        "lost_by_status": ff.lost(records),
        "lost_before_outage": sum(1 for r in records if not r.served and r.sent_s < down_s),
        **caller_retries(world, records),
        "concurrency_peak_before": ff.peak_in_flight([r for r in records if r.sent_s < down_s]),
        "concurrency_peak_during": ff.peak_in_flight([r for r in records if r.sent_s >= down_s]),
        "ordinary_traffic_to_dead_targets_stopped_after_s": stop_s,
        "failed_attempts_per_dead_target": per_target,
        "probe_attempts_after_first_cooldown": ff.probe_attempts(attempts, cooldown),
        "environments_that_paid_a_failure": ff.environments_that_failed(attempts),
        "environments_that_served": len({r.environment for r in records if r.environment is not None}),
        "latency_ms_during": ff.latency_ms([r for r in records if r.sent_s >= down_s]),
        "latency_ms_before": ff.latency_ms([r for r in records if r.sent_s < down_s]),
        "cooldown_s": cooldown,
    }
    result["meets_goal"] = bool(
        result["lost"] == 0 and stop_s is not None and stop_s <= 1.5 and all(n <= 10 for n in per_target.values())
    )
    return result


def caller_retries(world: World, records: list[Record]) -> dict[str, Any]:
    """What the caller's retries hid, said apart from "lost": the Lambda throttles (the fleet's count), the requests
    served after a throttled first answer, every request that needed a retry, and where the fleet grew."""
    out: dict[str, Any] = {
        "retried_after_lambda_throttle": sum(1 for r in records if r.served and r.retried_after_lambda_throttle),
        "retried_then_served": sum(1 for r in records if r.served and r.earlier),
        "caller_attempts": sum(1 + len(r.earlier) for r in records),
    }
    if isinstance(world, FleetWorld):
        fleet = world.functions
        out["lambda_throttles"] = fleet.throttles
        out["reserved_concurrency"] = fleet.reserved_concurrency
        out["environments_peak"] = fleet.max_concurrency
        out["environments_started_on_request"] = len([c for c in fleet.cold_starts if c.on_request])
    return out


BROWNOUT_ERROR_RATE = 0.2  # the feature's error-rate threshold in the brownout: under the 30% the issue trips on


def brownout(world: World, rate: float, spec: Spec) -> dict[str, Any]:
    """30% of the home region's answers fail; the feature's error-rate threshold is set under 30% (as the issue's
    figure assumes: above it, a 30% brownout is within tolerance by configuration)."""
    table = world.table_copy()
    breaker = table["features"][FEATURE].get("breaker") or {}
    table["features"][FEATURE]["breaker"] = {**breaker, "error_rate": BROWNOUT_ERROR_RATE}
    world.deploy_table(table)
    world.await_config()

    def brownout_starts() -> None:
        world.emu.set_fault(HOME, Fault.error_response("unavailable", probability=0.3, seed=11))

    lead = 1.0
    records, marks = drive(world, {FEATURE: rate}, lead + spec.brownout_s, [(lead, brownout_starts)])
    start = marks["brownout_starts"]
    trip = ff.trip_time_s(records, HOME_TARGETS, start)
    during = [r for r in records if r.sent_s >= start]
    tail = [r for r in during if r.sent_s >= records[-1].sent_s - 2.0] if records else []
    result = {
        "rate_rps": rate,
        "requests": len(records),
        "lost": sum(1 for r in records if not r.served),
        "home_targets_tripped_after_s": trip,
        "home_first_share_last_2s": round(sum(ff.first_attempt_share(tail, t) for t in HOME_TARGETS), 3),
        "failed_home_attempts": len(ff.dead_attempts(during, HOME_TARGETS)),
        "seconds_observed": spec.brownout_s,
        "error_rate_threshold": BROWNOUT_ERROR_RATE,
    }
    result["meets_goal"] = bool(result["lost"] == 0 and trip is not None and trip <= 5.0)
    return result


def spill_rate(world: World, spec: Spec, *, quick: bool) -> float:
    """Three times the PT capacity of summarize-thread in us-east-1 (requests/s)."""
    slots = 1 if quick else (world.target(PT_EAST).max_in_flight or 1)
    per_request_s = (spec.latency.ttft_ms + spec.latency.ms_per_token * spec.latency.output_tokens) / 1000.0
    return 3 * slots / per_request_s


def spillover(world: World, spec: Spec, *, quick: bool) -> dict[str, Any]:
    pt = world.target(PT_EAST)
    if quick:  # a few environments cannot fill 8 slots: a smaller PT in the emulator only (a smoke run)
        world.emu.update_target(pt.key, max_in_flight=1)
    pt_rps = spill_rate(world, spec, quick=quick) / 3
    records, _ = drive(world, {FEATURE: 3 * pt_rps}, spec.spill_s)
    spilled = [r for r in records if r.served and "spilled" in set(iter_classify(world.table_doc, FEATURE, r.target))]
    result = {
        "offered_rps": round(3 * pt_rps, 1),
        "pt_capacity_rps": round(pt_rps, 1),
        **ff.spill_figures(records, spilled),
        "served_by_pt": sum(1 for r in records if r.target == PT_EAST),
        "pt_throttles_seen_by_emulator": world.emu.target_stats(pt.key)["throttled"],
        "latency_ms": ff.latency_ms(records),
    }
    result["meets_goal"] = bool(result["dropped"] == 0 and result["spilled_throttled_first_share"] <= 0.05)
    return result


def recovery(world: World, rate: float, spec: Spec) -> dict[str, Any]:
    """Home targets fail for good; with a fixed cooldown, count at the emulator what reaches them once every
    environment has tripped: each is a half-open probe."""
    table = world.table_copy()
    cooldown = spec.recovery_cooldown_s
    breaker = table["features"][FEATURE].get("breaker") or {}
    table["features"][FEATURE]["breaker"] = {**breaker, "cooldown_s": cooldown, "max_cooldown_s": cooldown}
    world.deploy_table(table)
    world.await_config()
    for target_id in sorted(HOME_TARGETS):
        world.set_fault(target_id, Fault.error_response("unavailable"))
    counts: dict[str, int] = {}

    def window_opens() -> None:
        world.emu.reset_stats()

    def window_closes() -> None:
        stats = {s.get("name"): s for s in world.emu.stats()["targets"]}
        counts.update({t: int(stats[t]["requests"]) for t in sorted(HOME_TARGETS)})

    end = spec.recovery_trip_s + spec.recovery_window_s
    records, _ = drive(
        world,
        {FEATURE: rate},
        end + 0.2,
        [(spec.recovery_trip_s, window_opens), (end, window_closes)],
    )
    cooldowns = spec.recovery_window_s / cooldown
    per_cooldown = {t: round(n / cooldowns, 2) for t, n in counts.items()}
    result = {
        "rate_rps": rate,
        "cooldown_s": cooldown,
        "window_s": spec.recovery_window_s,
        "requests_reaching_each_home_target": counts,
        "probes_per_target_per_cooldown": per_cooldown,
        "lost": sum(1 for r in records if not r.served),
    }
    result["meets_goal"] = bool(counts and all(v <= 1.0 for v in per_cooldown.values()))
    return result


def cold_starts(world: FleetWorld) -> dict[str, Any]:
    cold = [c.cold_start_ms for c in world.setup_cold_starts]
    init = [c.init_ms for c in world.setup_cold_starts]
    return {
        "environments": len(cold),
        "started_at_once": world.prewarm_parallel,
        "setup_s": round(world.setup_s, 1),
        "cold_start_ms": {"p50": round(percentile(cold, 50), 1), "max": round(max(cold, default=0.0), 1)},
        "init_ms": {"p50": round(percentile(init, 50), 1), "max": round(max(init, default=0.0), 1)},
    }


def store_price(spec: Spec) -> dict[str, Any]:
    """The same traffic through two fleets, with the fleet store and without it."""
    out: dict[str, Any] = {}
    rates = {FEATURE: spec.price_rate / 2, OD_FEATURE: spec.price_rate / 2}
    latency = Latency(ttft_ms=50.0, ms_per_token=0.0)
    for label, redis in (("with_store", True), ("without_store", False)):
        settings = world_settings(latency)
        with FleetWorld(reserved_concurrency=spec.price_size, warm=spec.price_size, redis=redis, **settings) as world:
            before = world.redis.commands_processed() if world.redis is not None else 0
            records, _ = drive(world, rates, spec.price_s)
            after = world.redis.commands_processed() if world.redis is not None else 0
            own_reads = 1 if world.redis is not None else 0  # the INFO that read `before`
            stats = world.store_stats()
        pt = [r for r in records if r.served and r.target and "/provisioned/" in r.target]
        od = [r for r in records if r.served and r.target and "/on_demand/" in r.target]
        out[label] = {
            "requests": len(records),
            "lost": sum(1 for r in records if not r.served),
            "pt_latency_ms": ff.latency_ms(pt),
            "on_demand_latency_ms": ff.latency_ms(od),
            # redis-server's count includes the commands its scripts run: not round trips (router_store_stats).
            "store_commands_per_request": round((after - before - own_reads) / max(1, len(records)), 2),
            "router_store_stats": round_trip_counts(stats),
        }
    with_store, without = out["with_store"], out["without_store"]
    out["added_latency_ms"] = {
        kind: {q: round(with_store[kind][q] - without[kind][q], 1) for q in ("p50", "p99")}
        for kind in ("pt_latency_ms", "on_demand_latency_ms")
    }
    return out


def round_trip_counts(stats: list[tuple[int, Any]]) -> dict[str, Any]:
    """Round trips to the fleet store as the environments' routers count them (``Fleet.status()["usage"]``), summed
    over the fleet, per kind of request (PT-first and on-demand-first features)."""
    totals: dict[str, dict[str, float]] = {}
    for _, doc in stats:
        usage = ((doc or {}).get("fleet.status") or {}).get("usage") or {}
        for kind, counts in usage.items():
            into = totals.setdefault(kind, {"requests": 0, "round_trips": 0, "store_ms": 0.0})
            into["requests"] += counts.get("requests", 0)
            into["round_trips"] += counts.get("round_trips", 0)
            into["store_ms"] += counts.get("store_ms_per_request", 0.0) * counts.get("requests", 0)
    if not totals:
        return {"reported": "the router's store reports no round-trip count"}
    return {
        kind: {
            "requests": int(t["requests"]),
            "round_trips_per_request": round(t["round_trips"] / t["requests"], 3) if t["requests"] else 0.0,
            "store_ms_per_request": round(t["store_ms"] / t["requests"], 3) if t["requests"] else 0.0,
        }
        for kind, t in sorted(totals.items())
    }


def git_head() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], check=False, cwd=ROOT, capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def machine() -> dict[str, Any]:
    load1, load5, _ = os.getloadavg()
    return {"cores": os.cpu_count(), "load_average_1m": round(load1, 2), "load_average_5m": round(load5, 2)}


def fleet_world(size: int, spec: Spec, settings: dict[str, Any], *, quick: bool) -> FleetWorld:
    """`size` warm environments; the reserved concurrency as the stacks would size it (Little's law) for the
    heaviest traffic this fleet is given: `size` x rate_per_env requests/s, or the spillover's 3x PT."""
    world = FleetWorld(reserved_concurrency=size, warm=size, **settings)
    rate = size * spec.rate_per_env
    if size == spec.spill_size:
        rate = max(rate, spill_rate(world, spec, quick=quick))
    world.reserved_concurrency = max(size, reserved_for(world.table_doc, {FEATURE: rate}))
    return world


def fleet_parts(size: int, spec: Spec, settings: dict[str, Any], chosen: set[str], *, quick: bool) -> dict[str, Any]:
    """The chosen scenarios on one fleet of `size` warm environments."""
    rate = size * spec.rate_per_env
    with fleet_world(size, spec, settings, quick=quick) as world:
        part: dict[str, Any] = {"cold_start": cold_starts(world), "reserved_concurrency": world.reserved_concurrency}
        print(f"fleet: {size} environments, setup: {json.dumps(part['cold_start'])}", flush=True)
        runs: list[tuple[str, Callable[[], dict[str, Any]]]] = []
        if "failover" in chosen:
            runs.append(("failover_refused", lambda: failover(world, rate, spec, blackhole=False)))
            runs.append(("failover_blackholed", lambda: failover(world, rate, spec, blackhole=True)))
        if "brownout" in chosen and size == min(spec.sizes):
            runs.append(("brownout", lambda: brownout(world, rate, spec)))
        if "spillover" in chosen and size == spec.spill_size:
            runs.append(("spillover", lambda: spillover(world, spec, quick=quick)))
        if "recovery" in chosen and size == max(spec.sizes):
            runs.append(("recovery", lambda: recovery(world, rate, spec)))
        for key, scenario in runs:
            world.reset()
            part[key] = scenario()
            print(f"fleet: {size} environments, {key}: {json.dumps(part[key])}", flush=True)
        part["on_request_cold_starts"] = len([c for c in world.functions.cold_starts if c.on_request])
        part["throttled_invocations_last_scenario"] = world.functions.throttles
    return part


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--key", default="fleet", help="the key of results.json to write (default fleet)")
    parser.add_argument("--label", default="", help="what router was measured (for example a commit)")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=SCENARIOS,
        help="run only these parts (repeatable), merged into the key's last full run; default: all",
    )
    parser.add_argument("--size", type=int, action="append", help="only these fleet sizes (repeatable)")
    args = parser.parse_args()
    spec = QUICK if args.quick else FULL
    if args.size:
        unknown = set(args.size) - set(spec.sizes)
        if unknown:
            parser.error(f"--size: the sizes are {', '.join(map(str, spec.sizes))}")
    sizes = [size for size in spec.sizes if not args.size or size in args.size]
    chosen = set(args.scenario or SCENARIOS)
    started = time.monotonic()
    result: dict[str, Any] = {
        "shape": "fleet of execution environments (local/localrun/fleet_world.py)",
        "goals": GOALS,
    }
    result["router"] = args.label or git_head()
    result["machine_before"] = machine()
    result["model_latency_ms"] = spec.latency.ttft_ms
    settings = world_settings(spec.latency, quick=args.quick)

    if "one_process" in chosen:
        with LocalWorld(**settings) as one:
            for _ in range(3):
                one.http.converse(FEATURE)
            result["one_process"] = {
                "shape": "one process, one event at a time (not the production shape)",
                "failover_refused": failover(one, spec.process_rate, spec, blackhole=False),
            }
        print(f"fleet: one process, failover: {json.dumps(result['one_process']['failover_refused'])}", flush=True)

    if chosen & {"failover", "brownout", "spillover", "recovery"}:
        for size in sizes:
            result[f"environments_{size}"] = fleet_parts(size, spec, settings, chosen, quick=args.quick)

    if "price" in chosen:
        result["price_of_sharing"] = store_price(spec)
        print(f"fleet: price of sharing: {json.dumps(result['price_of_sharing'])}", flush=True)
    result["machine_after"] = machine()
    result["seconds"] = round(time.monotonic() - started, 1)
    print(f"fleet: done in {result['seconds']} s", flush=True)
    if not args.no_write:
        merge_result(args.key, result if args.scenario is None else merged(args.key, result, chosen))
    return 0


SCENARIO_KEYS = ("failover_refused", "failover_blackholed", "brownout", "spillover", "recovery")


def merged(key: str, part: dict[str, Any], chosen: set[str]) -> dict[str, Any]:
    """The key's last full run with the scenario results of this partial run put in (the full run's setup figures
    stay), and a note of the rerun per scenario and fleet size."""
    doc: dict[str, Any] = json.loads(RESULTS.read_text(encoding="utf-8")).get(key) or {}
    for name, value in part.items():
        if name.startswith("environments_"):
            doc.setdefault(name, {}).update({k: v for k, v in value.items() if k in SCENARIO_KEYS})
        elif name in ("one_process", "price_of_sharing"):
            doc[name] = value
    note = {n: part[n] for n in ("router", "machine_before", "machine_after", "seconds", "model_latency_ms")}
    sizes = [name.rsplit("_", 1)[1] for name in part if name.startswith("environments_")]
    for scenario in sorted(chosen):
        label = f"{scenario}, {' and '.join(sizes)} environments" if sizes else scenario
        doc.setdefault("reruns", {})[label] = note
    return doc


if __name__ == "__main__":
    raise SystemExit(main())

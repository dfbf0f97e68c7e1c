"""`python -m chaos [names...]`: every scenario against one LocalWorld (reset between scenarios).

Each scenario drives traffic through the local API Gateway-shaped endpoint, injects its fault into the emulator,
moto or the AppConfig stand-in, prints its figures and asserts on the outcome. The suite ends with
``chaos: N passed, N failed`` and exits 1 if any failed. Rule everywhere a healthy target exists: zero dropped.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

from emulator import Fault
from localrun import Latency, LocalWorld, error_body_ok, iter_classify
from localrun.traffic import Record, Traffic, first, percentile, watch_breakers

FEATURE = "summarize-thread"
HOME, AWAY = "us-east-1", "us-west-2"
PT_EAST = "claude-sonnet/provisioned/us-east-1"
OD_EAST = "claude-sonnet/on_demand/us-east-1"
PT_WEST = "claude-sonnet/provisioned/us-west-2"
# 150 ms to the first token + 20 tokens x 5 ms: 0.25 s per answer; PT (8 in flight) serves about 32 requests/s.
LATENCY = Latency(ttft_ms=150.0, ms_per_token=5.0, output_tokens=20)
STEADY = 20.0

Figures = dict[str, Any]


def dropped(records: list[Record]) -> int:
    return sum(1 for r in records if not r.served)


def by_target(records: list[Record]) -> Counter[str]:
    return Counter(r.target for r in records if r.served and r.target)


def lat(records: list[Record], q: float) -> float:
    return round(percentile([r.latency_ms for r in records], q), 1)


def run(
    world: LocalWorld,
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
    return traffic.of()


# -- scenarios -----------------------------------------------------------------------------------------------------


def pt_surge(world: LocalWorld) -> Figures:
    """Three times summarize-thread's PT capacity: PT stays full, the excess spills to on-demand, none dropped,
    and spills are predicted (sent to on-demand before PT throttles) for at least 95% of them."""
    per_request_s = (LATENCY.ttft_ms + LATENCY.ms_per_token * LATENCY.output_tokens) / 1000.0
    pt_rps = 8 / per_request_s
    seconds = 6.0
    records = run(world, 3 * pt_rps, seconds)
    served = by_target(records)
    spilled = [r for r in records if r.served and "spilled" in set(iter_classify(world.table_doc, FEATURE, r.target))]
    throttled_first = sum(1 for r in spilled if r.throttled_first)
    figures = {
        "offered_rps": round(3 * pt_rps, 1),
        "requests": len(records),
        "dropped": dropped(records),
        "pt_served": served[PT_EAST],
        "pt_capacity_requests": round(pt_rps * seconds),
        "spilled": len(spilled),
        "spilled_throttled_first": throttled_first,
        "p99_ms": lat(records, 99),
    }
    assert figures["dropped"] == 0, "a request was dropped while on-demand had room"
    assert served[PT_EAST] >= 0.7 * pt_rps * seconds, "PT was not kept full during the surge"
    assert len(spilled) >= 0.4 * len(records), "the excess did not spill to on-demand"
    assert throttled_first <= 0.05 * len(spilled), "more than 5% of spills paid a throttled attempt first"
    return figures


def home_region_outage(world: LocalWorld) -> Figures:
    """us-east-1 refuses connections for 6 s: failover to us-west-2 with nothing dropped, the home breakers open
    within a second, and traffic returns home after the region recovers."""
    marks: dict[str, float] = {}

    def down() -> None:
        marks["down"] = time.monotonic()
        world.emu.close_region(HOME)

    def up() -> None:
        marks["up"] = time.monotonic()
        world.emu.open_region(HOME)

    with watch_breakers(world, [PT_EAST, OD_EAST]) as changes:
        records = run(world, STEADY, 22.0, [(2.0, down), (8.0, up)])
    opened = first(changes[PT_EAST], "open", marks["down"])
    closed = first(changes[PT_EAST], "closed", marks["up"])
    during = [r for r in records if 3.0 <= r.sent_s - records[0].sent_s < 8.0]
    tail = [r for r in records if r.sent_s - records[0].sent_s >= 19.0]
    home_tail = sum(1 for r in tail if r.target and r.target.endswith(HOME))
    figures = {
        "requests": len(records),
        "dropped": dropped(records),
        "breaker_open_after_s": None if opened is None else round(opened - marks["down"], 3),
        "breaker_closed_after_recovery_s": None if closed is None else round(closed - marks["up"], 3),
        "served_away_during_outage": sum(1 for r in during if r.target and r.target.endswith(AWAY)),
        "requests_during_outage": len(during),
        "home_share_last_3s": round(home_tail / max(1, len(tail)), 2),
        "p99_ms": lat(records, 99),
    }
    assert figures["dropped"] == 0
    assert opened is not None, "the home PT breaker never opened"
    assert opened - marks["down"] < 1.0, "the home PT breaker did not open within 1 s"
    assert figures["served_away_during_outage"] == len(during), "a request was served at home during the outage"
    assert closed is not None, "the home PT breaker never closed after recovery"
    assert figures["home_share_last_3s"] >= 0.8, "traffic did not return home"
    return figures


def flapping_region(world: LocalWorld) -> Figures:
    """us-east-1 goes down and up every second for 8 s: nothing dropped, and the breaker's cooldown grows instead of
    letting the flapping region back in at full weight each time it answers."""
    hooks: list[tuple[float, Callable[[], None]]] = []
    for i in range(8):
        hooks.append((1.0 + i, world.emu.close_region if i % 2 == 0 else world.emu.open_region))
    hooks = [(t, (lambda f=f: f(HOME))) for t, f in hooks]  # type: ignore[misc]
    hooks.append((9.0, lambda: world.emu.open_region(HOME)))
    records = run(world, STEADY, 11.0, hooks)
    record = world.router.health.record_of(PT_EAST)
    figures = {
        "requests": len(records),
        "dropped": dropped(records),
        "trips": record.trips,
        "cooldown_s": record.cooldown_s,
        "served_home": sum(n for t, n in by_target(records).items() if t.endswith(HOME)),
        "served_away": sum(n for t, n in by_target(records).items() if t.endswith(AWAY)),
        "p99_ms": lat(records, 99),
    }
    assert figures["dropped"] == 0
    assert record.trips >= 1, "the flapping region never tripped its breaker"
    assert figures["served_away"] > 0
    return figures


def slow_first_token(world: LocalWorld) -> Figures:
    """PT us-east-1 takes 1 s more to its first token; the feature's breaker calls answers over 600 ms slow. Slow
    answers are kept (none dropped), the breaker opens on the slow rate, and traffic moves to a fast target."""
    table = world.table_copy()
    table["features"][FEATURE]["breaker"] = {**table["features"][FEATURE].get("breaker", {}), "latency_ms": 600}
    world.deploy_table(table)
    world.router.source.invalidate()
    world.set_fault(PT_EAST, Fault.slow_first_token(1.0))
    with watch_breakers(world, [PT_EAST]) as changes:
        t0 = time.monotonic()
        records = run(world, 10.0, 8.0)
    opened = first(changes[PT_EAST], "open", t0)
    late = [r for r in records if r.sent_s - records[0].sent_s >= 4.0]
    figures = {
        "requests": len(records),
        "dropped": dropped(records),
        "breaker_open_after_s": None if opened is None else round(opened - t0, 2),
        "served_by_slow_target": by_target(records)[PT_EAST],
        "p50_ms_first_2s": lat([r for r in records if r.sent_s - records[0].sent_s < 2.0], 50),
        "p50_ms_after_4s": lat(late, 50),
    }
    assert figures["dropped"] == 0
    assert opened is not None, "slow answers never opened the breaker"
    assert figures["p50_ms_after_4s"] < 600, "traffic stayed on the slow target"
    return figures


def throttle_storm(world: LocalWorld) -> Figures:
    """Every Bedrock PT target answers ThrottlingException: everything is served on-demand, nothing dropped, and
    throttles do not open breakers (capacity is not a health failure)."""
    for t in world.targets_where(capacity="provisioned", kind="bedrock"):
        world.set_fault(t.id, Fault.throttle())
    records = run(world, STEADY, 5.0)
    served = by_target(records)
    states = world.breaker_states()
    figures = {
        "requests": len(records),
        "dropped": dropped(records),
        "served_on_demand": sum(n for t, n in served.items() if "/on_demand/" in t),
        "served_by_pt": sum(n for t, n in served.items() if "/provisioned/" in t),
        "throttled_attempts": sum(1 for r in records for _, o in r.route if o == "capacity"),
        "pt_breakers": {t: states[t] for t in (PT_EAST, PT_WEST)},
        "p99_ms": lat(records, 99),
    }
    assert figures["dropped"] == 0
    assert figures["served_by_pt"] == 0
    assert states[PT_EAST] == "closed", "throttling opened a breaker"
    return figures


def malformed_bodies(world: LocalWorld) -> Figures:
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


def dynamodb_unreachable(world: LocalWorld) -> Figures:
    """DynamoDB (moto) goes away, then us-east-1 fails: breakers still open locally (the store fails open and backs
    off), nothing dropped, latency barely moves."""
    before = run(world, STEADY, 2.0)
    world.dynamodb_down()
    records = run(world, STEADY, 6.0, [(2.0, lambda: world.emu.close_region(HOME))])
    store = world.router.store.status()
    figures = {
        "requests": len(before) + len(records),
        "dropped": dropped(before) + dropped(records),
        "p99_ms_before": lat(before, 99),
        "p99_ms_dynamodb_down": lat(records, 99),
        "store_last_error": store["last_error"],
        "pt_east_breaker": world.breaker_states()[PT_EAST],
    }
    assert figures["dropped"] == 0
    assert store["last_error"] is not None, "the store never noticed DynamoDB was gone"
    assert figures["pt_east_breaker"] == "open", "the local breaker did not open without DynamoDB"
    assert figures["p99_ms_dynamodb_down"] < figures["p99_ms_before"] + 150
    return figures


def appconfig_unreachable(world: LocalWorld) -> Figures:
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
    assert figures["dropped"] == 0
    assert source_refused == "last_known_good"
    assert source_hung == "last_known_good"
    assert by_target(refused)[OD_EAST] <= 0.1 * len(refused), "an unfetchable rollout was applied"
    assert figures["p99_ms_hung"] < 1500, "a hanging extension cost more than its fetch timeout"
    return figures


def every_target_down(world: LocalWorld) -> Figures:
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


def deadline_pressure(world: LocalWorld) -> Figures:
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


def config_rollout_and_rollback(world: LocalWorld) -> Figures:
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
    assert figures["dropped"] == 0
    assert figures["on_demand_share_after_rollout"] >= 0.9
    assert figures["pt_share_after_rollback"] >= 0.9
    return figures


SCENARIOS: list[Callable[[LocalWorld], Figures]] = [
    pt_surge,
    home_region_outage,
    flapping_region,
    slow_first_token,
    throttle_storm,
    malformed_bodies,
    dynamodb_unreachable,
    appconfig_unreachable,
    every_target_down,
    deadline_pressure,
    config_rollout_and_rollback,
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("names", nargs="*", help="scenarios to run (default: all)")
    args = parser.parse_args(argv)
    chosen = [s for s in SCENARIOS if not args.names or s.__name__ in args.names]
    unknown = set(args.names) - {s.__name__ for s in SCENARIOS}
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    passed = failed = 0
    started = time.monotonic()
    with LocalWorld(latency=LATENCY, config_ttl_s=1.0, health_cache_ttl_s=0.5, store_backoff_s=2.0) as world:
        for scenario in chosen:
            world.reset()
            doc = " ".join((scenario.__doc__ or "").split("\n\n")[0].split())
            print(f"== {scenario.__name__}: {doc}", flush=True)
            t0 = time.monotonic()
            try:
                figures = scenario(world)
            except AssertionError as exc:
                failed += 1
                print(f"   FAIL ({time.monotonic() - t0:.1f} s): {exc or 'assertion failed'}")
                print("   " + traceback.format_exc().strip().splitlines()[-2].strip())
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
    print(f"chaos: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Spillover: summarize-thread at three times its PT capacity through the local endpoint.

The emulator's PT target in us-east-1 takes at most 8 requests at once (the platform's max_in_flight), each
answer takes 250 ms: PT serves about 32 requests/s. 96 requests/s are offered (open loop) for 10 s. Figures:
requests dropped (any answer but 200), requests spilled (served on-demand although the feature starts on
provisioned), and the share of spilled requests that paid a throttled attempt first (a PT ThrottlingException
before the spill) against those the router spilled before sending (predictive spillover).
Merges the key "spillover" into benchmarks/results.json. Usage: python benchmarks/bench_spillover.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "lambdas" / "router"), str(ROOT)]

from benchmarks.results import merge_result  # noqa: E402
from localrun import Latency, LocalWorld, iter_classify  # noqa: E402
from localrun.traffic import Traffic, percentile  # noqa: E402

FEATURE = "summarize-thread"
PT = "claude-sonnet/provisioned/us-east-1"
GOAL_SHARE = 0.05


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    seconds = 4.0 if args.quick else 10.0
    latency = Latency(ttft_ms=150.0, ms_per_token=5.0, output_tokens=20)
    per_request_s = (latency.ttft_ms + latency.ms_per_token * latency.output_tokens) / 1000.0
    with LocalWorld(latency=latency, config_ttl_s=5.0, health_cache_ttl_s=2.0) as world:
        pt_rps = (world.target(PT).max_in_flight or 1) / per_request_s
        for _ in range(5):
            world.http.converse(FEATURE)
        traffic = Traffic(world.http, max_in_flight=128)
        traffic.phase("surge", {FEATURE: 3 * pt_rps}, seconds)
        traffic.close()
        records = traffic.of()
        table = world.table_doc
        emulator_pt_throttles = next(s["throttled"] for s in world.emu.stats()["targets"] if s.get("name") == PT)
    spilled = [r for r in records if r.served and "spilled" in set(iter_classify(table, FEATURE, r.target))]
    throttled_first = sum(1 for r in spilled if r.throttled_first)
    share = throttled_first / len(spilled) if spilled else 0.0
    result = {
        "offered_rps": round(3 * pt_rps, 1),
        "pt_capacity_rps": round(pt_rps, 1),
        "requests": len(records),
        "requests_dropped": sum(1 for r in records if not r.served),
        "served_by_pt": sum(1 for r in records if r.target == PT),
        "spilled": len(spilled),
        "spilled_throttled_first": throttled_first,
        "spilled_throttled_first_share": round(share, 4),
        "pt_throttles_seen_by_emulator": emulator_pt_throttles,
        "p50_ms": round(percentile([r.latency_ms for r in records], 50), 1),
        "p99_ms": round(percentile([r.latency_ms for r in records], 99), 1),
        "goal": f"nothing dropped; at most {GOAL_SHARE:.0%} of spilled requests throttled first",
        "meets_goal": share <= GOAL_SHARE and all(r.served for r in records),
    }
    print(
        f"spillover: {result['requests']} requests at {result['offered_rps']} req/s (PT ~{result['pt_capacity_rps']}"
        f" req/s), dropped {result['requests_dropped']}, spilled {result['spilled']}, throttled first "
        f"{throttled_first} ({share:.1%}); goal {'met' if result['meets_goal'] else 'MISSED'}"
    )
    if not args.no_write:
        merge_result("spillover", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Failover: steady traffic through the local endpoint while the home region (us-east-1) goes down.

40 requests/s of summarize-thread (open loop) for 12 s; at 4 s the emulator's us-east-1 listener starts refusing
connections. Figures: requests lost (any answer but 200), p99 latency before and during the outage and the
difference, and seconds from the outage until the home breakers (PT and on-demand) open, polled every 20 ms.
Merges the key "failover" into benchmarks/results.json. Usage: python benchmarks/bench_failover.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "lambdas" / "router"), str(ROOT)]

from benchmarks.results import merge_result  # noqa: E402
from localrun import Latency, LocalWorld  # noqa: E402
from localrun.traffic import Traffic, first, percentile, watch_breakers  # noqa: E402

FEATURE = "summarize-thread"
HOME = "us-east-1"
PT, OD = f"claude-sonnet/provisioned/{HOME}", f"claude-sonnet/on_demand/{HOME}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rate, before_s, total_s = (20.0, 2.0, 5.0) if args.quick else (40.0, 4.0, 12.0)
    marks: dict[str, float] = {}
    with LocalWorld(latency=Latency(ttft_ms=50.0, ms_per_token=0.0), config_ttl_s=5.0, health_cache_ttl_s=2.0) as w:
        for _ in range(10):
            w.http.converse(FEATURE)

        def down() -> None:
            marks["down"] = time.monotonic()
            w.emu.close_region(HOME)

        traffic = Traffic(w.http, max_in_flight=96)
        with watch_breakers(w, [PT, OD]) as changes:
            traffic.phase("run", {FEATURE: rate}, total_s, at=[(before_s, down)])
            traffic.close()
        records = traffic.of()
    t_down = marks["down"] - traffic._t0  # the outage on the traffic's clock
    before = [r.latency_ms for r in records if r.sent_s < t_down]
    during = [r.latency_ms for r in records if r.sent_s >= t_down]
    opened = {t: first(changes[t], "open", marks["down"]) for t in (PT, OD)}
    result = {
        "requests": len(records),
        "requests_lost": sum(1 for r in records if not r.served),
        "p99_before_ms": round(percentile(before, 99), 1),
        "p99_during_ms": round(percentile(during, 99), 1),
        "added_p99_ms": round(percentile(during, 99) - percentile(before, 99), 1),
        "breaker_open_s": {t: None if v is None else round(v - marks["down"], 3) for t, v in opened.items()},
        "served_away_during": sum(1 for r in records if r.sent_s >= t_down and r.target and HOME not in r.target),
        "rate_rps": rate,
        "emulator_ttft_ms": 50.0,
        "goal": "nothing lost",
        "meets_goal": all(r.served for r in records),
    }
    print(
        f"failover: {result['requests']} requests, lost {result['requests_lost']}, p99 before "
        f"{result['p99_before_ms']} ms, during {result['p99_during_ms']} ms (+{result['added_p99_ms']} ms), "
        f"breakers open after {result['breaker_open_s']}"
    )
    if not args.no_write:
        merge_result("failover", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

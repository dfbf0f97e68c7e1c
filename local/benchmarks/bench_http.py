"""HTTP overhead: a request through the router (local API Gateway-shaped endpoint -> the fleet's execution
environment -> handler -> engine -> boto3) against the same Converse call made directly with boto3, both to the
emulator's PT target, in the same run. The router runs in the production shape: a fleet (of one environment, as
the requests are sequential) whose environment is frozen between events and thawed for the next.

Interleaved rounds (the order alternates each round), sequential requests, medians of all rounds. Measured at two
emulator latencies: 0 ms (pure overhead, the strictest ratio) and 200 ms to the first token (a fast real model).
Merges the key "http_overhead_ratio" into local/benchmarks/results.json.
Usage: python local/benchmarks/bench_http.py [--quick]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "lambdas" / "router"), str(ROOT)]

from local.benchmarks.results import merge_result  # noqa: E402
from local.localrun import FleetWorld, Latency, converse_body  # noqa: E402

PT = "claude-sonnet/provisioned/us-east-1"
FEATURE = "summarize-thread"
GOAL = 1.3


def measure(model_ms: float, rounds: int, per_round: int, warmup: int) -> dict[str, Any]:
    body = converse_body()
    # The router's production config cache (5 s), as in Lambda.
    with FleetWorld(
        reserved_concurrency=1,
        warm=1,
        latency=Latency(ttft_ms=model_ms, ms_per_token=0.0),
        config_ttl_s=5.0,
    ) as world:
        target = world.target(PT)
        direct = world.bedrock_runtime(target.region)

        def via_router() -> float:
            t0 = time.perf_counter()
            reply = world.http.converse(FEATURE, body)
            elapsed = time.perf_counter() - t0
            assert reply.status == 200, reply.status
            assert reply.target == PT, reply.target
            return elapsed * 1000.0

        def via_boto3() -> float:
            t0 = time.perf_counter()
            direct.converse(modelId=target.invoke_id, **body)
            return (time.perf_counter() - t0) * 1000.0

        for _ in range(warmup):  # warm-up: clients, connections, config and health caches
            via_router()
            via_boto3()
        routed: list[float] = []
        plain: list[float] = []
        for r in range(rounds):
            order = (via_router, via_boto3) if r % 2 == 0 else (via_boto3, via_router)
            for fn in order:
                sink = routed if fn is via_router else plain
                sink.extend(fn() for _ in range(per_round))
    router_ms, direct_ms = statistics.median(routed), statistics.median(plain)
    return {
        "emulator_ttft_ms": model_ms,
        "router_median_ms": round(router_ms, 3),
        "direct_median_ms": round(direct_ms, 3),
        "added_median_ms": round(router_ms - direct_ms, 3),
        "ratio": round(router_ms / direct_ms, 3),
        "requests_each": len(routed),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rounds, per_round, warmup = (4, 25, 3) if args.quick else (10, 100, 20)
    zero = measure(0.0, rounds, per_round, warmup)
    fast = measure(200.0, rounds // 2 or 1, max(10, per_round // 5), warmup)
    result = {
        "ratio": zero["ratio"],
        "goal": GOAL,
        "meets_goal": zero["ratio"] <= GOAL,
        "zero_latency": zero,
        "model_200ms": fast,
        "python": platform.python_version(),
        "method": "interleaved rounds of sequential requests, medians; ratio = router path / direct boto3, at 0 ms",
        "shape": "fleet of one execution environment (frozen between events)",
    }
    for name, m in (("0 ms", zero), ("200 ms", fast)):
        print(
            f"emulator {name}: router {m['router_median_ms']} ms, direct {m['direct_median_ms']} ms, "
            f"+{m['added_median_ms']} ms, ratio {m['ratio']}"
        )
    print(f"http_overhead_ratio {result['ratio']} (goal <= {GOAL}: {'met' if result['meets_goal'] else 'MISSED'})")
    if not args.no_write:
        merge_result("http_overhead_ratio", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

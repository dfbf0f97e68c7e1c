"""Time to first token through the router's converse-stream route against a direct boto3 converse_stream to the same
emulated target, in the same run; then a first target that stalls before its first token.

Shape: the fleet world (the production shape: execution environments that take one event each, frozen between
events), one environment as the requests are sequential; its chunks pass through as the function yields them. The
router path is the documented client (SigV4-signed, server-sent events read as they arrive): time to the first
`contentBlockDelta`. The direct path: boto3's `converse_stream`, time to its first `contentBlockDelta`. Interleaved
rounds (the order alternates), percentiles by nearest rank over all requests.

Stall: the feature's `first_token_ms` is set to 300 ms and the PT target gets a 30 s slow first token; the caller's
first token must come within first_token_ms + 50 ms of the on-demand target's own time to first token (measured
directly in the same run). The breaker thresholds are put out of reach for this scenario only, so every request
meets the stall (with real settings the breaker opens after a few and the stall stops costing anything).

Merges the key "stream_ttft" into local/benchmarks/results.json.
Usage: python local/benchmarks/bench_stream.py [--quick]
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "lambdas" / "router"), str(ROOT)]

from local.benchmarks.results import figures_ms, merge_result  # noqa: E402
from local.benchmarks.results import nearest_rank as percentile  # noqa: E402
from local.localrun import FleetWorld, Latency  # noqa: E402

FEATURE = "summarize-thread"
PT, OD = "claude-sonnet/provisioned/us-east-1", "claude-sonnet/on_demand/us-east-1"
REQUEST = {"messages": [{"role": "user", "content": [{"text": "Summarize the thread, please."}]}]}
GOAL_ADDED_P50_MS, GOAL_ADDED_P99_MS, STALL_MARGIN_MS = 5.0, 20.0, 50.0
FIRST_TOKEN_MS = 300.0


def _router_ttft(world: FleetWorld, credentials: Any, expected: str) -> float:
    from tools.stream_router import converse_stream  # noqa: PLC0415

    t0 = time.perf_counter()
    status, headers, events = converse_stream(world.url, FEATURE, REQUEST, "us-east-1", credentials=credentials)
    assert status == 200, status
    ttft: float | None = None
    last: dict[str, Any] = {}
    for name, data in events:
        if ttft is None and name == "contentBlockDelta":
            ttft = (time.perf_counter() - t0) * 1000.0
        last = data
    assert {k.lower(): v for k, v in headers.items()}["x-spillway-target"] == expected
    assert last.get("complete") is True, last
    assert ttft is not None
    return ttft


def _direct_ttft(client: Any, model_id: str) -> float:
    t0 = time.perf_counter()
    ttft: float | None = None
    for item in client.converse_stream(modelId=model_id, **REQUEST)["stream"]:
        if ttft is None and "contentBlockDelta" in item:
            ttft = (time.perf_counter() - t0) * 1000.0
    assert ttft is not None
    return ttft


def _interleaved(
    a: Callable[[], float], b: Callable[[], float], rounds: int, per_round: int
) -> tuple[list[float], list[float]]:
    first: list[float] = []
    second: list[float] = []
    for r in range(rounds):
        order = ((a, first), (b, second)) if r % 2 == 0 else ((b, second), (a, first))
        for fn, sink in order:
            sink.extend(fn() for _ in range(per_round))
    return first, second


def measure(rounds: int, per_round: int) -> dict[str, Any]:
    from botocore.credentials import Credentials  # noqa: PLC0415

    from local.emulator import Fault  # noqa: PLC0415

    credentials = Credentials("local", "local")
    with FleetWorld(
        reserved_concurrency=1, warm=1, latency=Latency(ttft_ms=20.0, ms_per_token=1.0), config_ttl_s=0.5
    ) as world:
        pt, od = world.target(PT), world.target(OD)
        direct = world.bedrock_runtime(pt.region)
        for _ in range(10):  # warm-up: clients, connections, config and health caches
            _router_ttft(world, credentials, PT)
            _direct_ttft(direct, pt.invoke_id)
        routed, plain = _interleaved(
            lambda: _router_ttft(world, credentials, PT), lambda: _direct_ttft(direct, pt.invoke_id), rounds, per_round
        )
        doc = copy.deepcopy(world.table_doc)
        doc["features"][FEATURE].update(first_token_ms=FIRST_TOKEN_MS)
        doc["features"][FEATURE]["breaker"] = {"consecutive_failures": 1_000_000, "min_requests": 1_000_000}
        world.deploy_table(doc)
        world.await_config()
        world.emu.set_fault(("us-east-1", "bedrock", pt.invoke_id), Fault.slow_first_token(30.0))
        stall_n = max(5, per_round // 2)
        stalled, od_direct = _interleaved(
            lambda: _router_ttft(world, credentials, OD), lambda: _direct_ttft(direct, od.invoke_id), 2, stall_n
        )
        world.emu.clear_faults()
    added = {
        "p50": percentile(routed, 0.5) - percentile(plain, 0.5),
        "p99": percentile(routed, 0.99) - percentile(plain, 0.99),
    }
    stall_bound = FIRST_TOKEN_MS + percentile(od_direct, 0.5) + STALL_MARGIN_MS
    return {
        "router_ttft_ms": figures_ms(routed),
        "direct_ttft_ms": figures_ms(plain),
        "added_ms": {k: round(v, 3) for k, v in added.items()},
        "meets_goal": added["p50"] <= GOAL_ADDED_P50_MS and added["p99"] <= GOAL_ADDED_P99_MS,
        "goal": {"added_p50_ms": GOAL_ADDED_P50_MS, "added_p99_ms": GOAL_ADDED_P99_MS},
        "requests_each": len(routed),
        "stall": {
            "first_token_ms": FIRST_TOKEN_MS,
            "caller_ttft_ms": figures_ms(stalled),
            "second_target_direct_ttft_ms": figures_ms(od_direct),
            "bound_p50_ms": round(stall_bound, 3),
            "meets_goal": percentile(stalled, 0.5) <= stall_bound,
            "requests": len(stalled),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rounds, per_round = (2, 10) if args.quick else (10, 50)
    result = measure(rounds, per_round)
    result.update(
        python=platform.python_version(),
        method="interleaved rounds of sequential streams; time to the first contentBlockDelta; nearest-rank "
        "percentiles",
        shape="fleet of one execution environment (frozen between events), chunks passed through as yielded",
    )
    added, stall = result["added_ms"], result["stall"]
    print(
        f"stream_ttft: router p50 {result['router_ttft_ms']['p50']} ms, "
        f"direct p50 {result['direct_ttft_ms']['p50']} ms, "
        f"added p50 {added['p50']} ms p99 {added['p99']} ms "
        f"(goal <= {GOAL_ADDED_P50_MS}/{GOAL_ADDED_P99_MS}: {'met' if result['meets_goal'] else 'MISSED'})"
    )
    print(
        f"stream_stall: caller p50 {stall['caller_ttft_ms']['p50']} ms <= {stall['bound_p50_ms']} ms "
        f"(first_token_ms + second target's own p50 + {STALL_MARGIN_MS:g}): "
        f"{'met' if stall['meets_goal'] else 'MISSED'}"
    )
    if not args.no_write:
        merge_result("stream_ttft", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

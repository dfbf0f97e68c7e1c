"""What time to first token on buffered requests costs: a buffered Converse request served through ConverseStream and
assembled (the default: every attempt measures its first token) against the same request through Converse, in the
same run, through the router; beside them the same two APIs called directly with boto3, to tell the wire's share
from the router's.

Shape: the fleet world (the production shape: execution environments that take one event each, frozen between
events), one environment as the requests are sequential. Two features with the same targets and policy,
summarize-thread (``buffered_via_stream`` true, the default) and its twin with it false; the emulated PT answers 20
output tokens after a 20 ms first token at 1 ms per token, the same model time on both APIs. Interleaved rounds (the
order rotates), caller latency to the whole answer, nearest-rank percentiles over all requests.

Merges the key "buffered_ttft" into local/benchmarks/results.json. Usage: python local/benchmarks/bench_buffered_ttft.py
[--quick]
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

FEATURE, TWIN = "summarize-thread", "summarize-thread-converse"
PT = "claude-sonnet/provisioned/us-east-1"
REQUEST = {"messages": [{"role": "user", "content": [{"text": "Summarize the thread, please."}]}]}
LATENCY = Latency(ttft_ms=20.0, ms_per_token=1.0, output_tokens=20)


def _timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0


def measure(rounds: int, per_round: int) -> dict[str, Any]:

    with FleetWorld(reserved_concurrency=1, warm=1, latency=LATENCY, config_ttl_s=0.5) as world:
        doc = copy.deepcopy(world.table_doc)
        doc["features"][TWIN] = {**copy.deepcopy(doc["features"][FEATURE]), "buffered_via_stream": False}
        world.deploy_table(doc)
        world.await_config()
        pt = world.target(PT)
        direct = world.bedrock_runtime(pt.region)

        def routed(feature: str) -> Callable[[], None]:
            def call() -> None:
                reply = world.http.converse(feature, REQUEST)
                assert reply.status == 200, reply.status
                assert reply.target == PT, reply.target

            return call

        def direct_converse() -> None:
            direct.converse(modelId=pt.invoke_id, **REQUEST)

        def direct_stream() -> None:
            for _ in direct.converse_stream(modelId=pt.invoke_id, **REQUEST)["stream"]:
                pass

        paths: dict[str, Callable[[], None]] = {
            "router_via_stream": routed(FEATURE),
            "router_via_converse": routed(TWIN),
            "direct_converse_stream": direct_stream,
            "direct_converse": direct_converse,
        }
        for fn in paths.values():  # warm-up: clients, connections, config and health caches
            for _ in range(10):
                fn()
        samples: dict[str, list[float]] = {name: [] for name in paths}
        names = list(paths)
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                samples[name].extend(_timed(paths[name]) for _ in range(per_round))
    added = {
        q: round(percentile(samples["router_via_stream"], p) - percentile(samples["router_via_converse"], p), 3)
        for q, p in (("p50", 0.5), ("p99", 0.99))
    }
    wire = {
        q: round(percentile(samples["direct_converse_stream"], p) - percentile(samples["direct_converse"], p), 3)
        for q, p in (("p50", 0.5), ("p99", 0.99))
    }
    return {
        "latency_ms": {name: figures_ms(values) for name, values in samples.items()},
        "added_by_stream_ms": added,
        "of_which_the_wire_ms": wire,
        "ratio_p50": round(
            percentile(samples["router_via_stream"], 0.5) / percentile(samples["router_via_converse"], 0.5), 3
        ),
        "requests_each": len(samples["router_via_stream"]),
        "model": {
            "ttft_ms": LATENCY.ttft_ms,
            "ms_per_token": LATENCY.ms_per_token,
            "output_tokens": LATENCY.output_tokens,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rounds, per_round = (4, 5) if args.quick else (8, 12)
    result = measure(rounds, per_round)
    result.update(
        python=platform.python_version(),
        method="interleaved rounds of sequential buffered Converse requests (order rotating); caller latency to the "
        "whole answer; nearest-rank percentiles",
        shape="fleet of one execution environment (frozen between events)",
    )
    lat, added, wire = result["latency_ms"], result["added_by_stream_ms"], result["of_which_the_wire_ms"]
    print(
        f"buffered_ttft: router via ConverseStream p50 {lat['router_via_stream']['p50']} ms, via Converse p50 "
        f"{lat['router_via_converse']['p50']} ms: added p50 {added['p50']} ms, p99 {added['p99']} ms "
        f"(ratio {result['ratio_p50']}); direct boto3 stream - converse p50 {wire['p50']} ms"
    )
    if not args.no_write:
        merge_result("buffered_ttft", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The OpenAI-compatible door's added latency: the `openai` package calling the router's POST /v1/chat/completions
(local API Gateway-shaped endpoint -> the fleet's execution environment -> handler -> translation -> engine -> the
openai backend kind) against the same call made directly with the `openai` package to the emulator's
OpenAI-compatible endpoint the router's target names, in the same run. Production shape: a fleet (of one
environment, as the requests are sequential) frozen between events.

Interleaved rounds (the order alternates each round), sequential requests, medians of all rounds; the emulator
answers at once (0 ms model time), so the difference is the router's own cost. Prints JSON and writes it to
local/benchmarks/results.json under `openai_door` (not with --no-write). Part of `make bench`; --quick is a smoke run.
Usage: python local/benchmarks/bench_openai_door.py [--quick] [--no-write] [--rounds N] [--per-round N] (any
credentials: the client signs, the local endpoint does not check; local ones are set when none are).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "lambdas" / "router"), str(ROOT)]

from local.benchmarks.results import merge_result  # noqa: E402
from local.emulator import TargetSpec  # noqa: E402
from local.emulator.openai_compat import base_path  # noqa: E402
from local.emulator.targets import Kind  # noqa: E402
from local.localrun import FleetWorld, Latency  # noqa: E402
from tools.openai_client import client  # noqa: E402

FEATURE = "summarize-thread"
TARGET = "gpt-oss/on_demand/us-east-1"
WIRE_MODEL = "gpt-oss-120b"
GOAL_MS = 5.0


def measure(rounds: int, per_round: int) -> dict[str, Any]:
    import openai  # noqa: PLC0415

    messages = [{"role": "user", "content": "Summarize the thread, please."}]
    with FleetWorld(reserved_concurrency=1, warm=1, latency=Latency(ttft_ms=0.0, ms_per_token=0.0)) as world:
        world.emu.add_target(TargetSpec("us-east-1", Kind.OPENAI, WIRE_MODEL, name=TARGET))
        base_url = world.emu.endpoint_url("us-east-1").rstrip("/") + base_path(WIRE_MODEL)
        table = world.table_copy()
        backend = {"kind": "openai", "base_url": base_url, "model": WIRE_MODEL, "auth": "sigv4"}
        target = {"model": "gpt-oss", "capacity": "on_demand", "region": "us-east-1", "backend": backend}
        table["targets"] = {TARGET: target}  # the feature's only target: both paths reach the same endpoint
        feature = table["features"][FEATURE]
        table["features"] = {
            FEATURE: {**feature, "models": ["gpt-oss"], "first_capacity": "on_demand", "failover_regions": []}
        }
        for key in ("invoke_ids", "converse"):
            table["features"][FEATURE].pop(key, None)
        world.deploy_table(table)
        world.await_config()
        routed = client(world.url, "us-east-1")
        direct = openai.OpenAI(base_url=base_url, api_key="local", max_retries=0)

        def timed(oa: openai.OpenAI, model: str) -> float:
            t0 = time.perf_counter()
            completion = oa.chat.completions.create(model=model, messages=messages, max_completion_tokens=16)
            elapsed = time.perf_counter() - t0
            assert completion.choices[0].message.content
            return elapsed * 1000.0

        first = routed.chat.completions.with_raw_response.create(model=FEATURE, messages=messages)
        assert first.headers["x-spillway-target"] == TARGET, first.headers.get("x-spillway-target")
        for _ in range(5):  # warm both paths (connections, the environment's clients)
            timed(routed, FEATURE)
            timed(direct, WIRE_MODEL)
        via_router: list[float] = []
        straight: list[float] = []
        for r in range(rounds):
            order = ((routed, FEATURE, via_router), (direct, WIRE_MODEL, straight))
            for oa, model, sink in order if r % 2 == 0 else reversed(order):
                sink.extend(timed(oa, model) for _ in range(per_round))
    router_p50, direct_p50 = statistics.median(via_router), statistics.median(straight)
    return {
        "shape": "fleet of one frozen-between-events environment (localrun.FleetWorld), sequential requests",
        "requests_each": len(via_router),
        "router_p50_ms": round(router_p50, 2),
        "direct_p50_ms": round(direct_p50, 2),
        "added_p50_ms": round(router_p50 - direct_p50, 2),
        "goal_ms": GOAL_MS,
        "meets_goal": router_p50 - direct_p50 <= GOAL_MS,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 5: a smoke run")
    parser.add_argument("--no-write", action="store_true", help="print only; leave results.json alone")
    args = parser.parse_args()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "local")  # the client signs; nothing leaves loopback
    result = measure(2, 5) if args.quick else measure(args.rounds, args.per_round)
    print(json.dumps(result, indent=2))
    if not args.no_write:
        merge_result("openai_door", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

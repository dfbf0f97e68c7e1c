"""The OpenAI-compatible door's added latency: the `openai` package calling the router's POST /v1/chat/completions
(local API Gateway-shaped endpoint -> the fleet's execution environment -> handler -> translation -> engine -> the
openai backend kind) against the same call made directly with the `openai` package to the emulator's
OpenAI-compatible endpoint the router's target names, in the same run. Production shape: a fleet (of two
environments; the requests are sequential) frozen between events.

Interleaved rounds (the order alternates each round), sequential requests, medians of all rounds; the emulator
answers at once (0 ms model time), so the difference is the router's own cost. Prints JSON and writes it to
local/benchmarks/results.json under `openai_door` (not with --no-write). Part of `make bench`; --quick is a smoke run.

Then the same two paths with ``stream=True``: time to the first chunk with content (the router's path is
Engine.stream over the openai kind's own stream, rendered as chat.completion.chunk lines), written under
`openai_door_stream`. --only buffered|stream takes one of the two figures.
Usage: python local/benchmarks/bench_openai_door.py [--quick] [--no-write] [--only W] [--rounds N] [--per-round N]
(any credentials: the client signs, the local endpoint does not check; local ones are set when none are).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
# Two environments: the package stops reading a stream at [DONE], so its next request can arrive while the last
# stream's environment is still ending its invocation (busy, as in Lambda); with one, that request is throttled.
ENVIRONMENTS = 2
SHAPE = f"fleet of {ENVIRONMENTS} frozen-between-events environments (localrun.FleetWorld)"


MESSAGES = [{"role": "user", "content": "Summarize the thread, please."}]


@contextmanager
def door_world(environments: int = ENVIRONMENTS) -> Iterator[tuple[Any, Any, str]]:
    """The fleet world with the feature's only target on the emulator's OpenAI-compatible endpoint: (the routed
    client, the direct client, the target's base URL). Both paths reach the same endpoint."""
    import openai  # noqa: PLC0415

    latency = Latency(ttft_ms=0.0, ms_per_token=0.0)
    with FleetWorld(reserved_concurrency=environments, warm=environments, latency=latency) as world:
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
        first = routed.chat.completions.with_raw_response.create(model=FEATURE, messages=MESSAGES)
        assert first.headers["x-spillway-target"] == TARGET, first.headers.get("x-spillway-target")
        yield routed, openai.OpenAI(base_url=base_url, api_key="local", max_retries=0), base_url


def _interleaved(
    timed: Callable[[Any, str], float], routed: Any, direct: Any, rounds: int, per_round: int
) -> tuple[list[float], list[float]]:
    for _ in range(5):  # warm both paths (connections, the environment's clients)
        timed(routed, FEATURE)
        timed(direct, WIRE_MODEL)
    via_router: list[float] = []
    straight: list[float] = []
    for r in range(rounds):
        order = ((routed, FEATURE, via_router), (direct, WIRE_MODEL, straight))
        for oa, model, sink in order if r % 2 == 0 else reversed(order):
            sink.extend(timed(oa, model) for _ in range(per_round))
    return via_router, straight


def measure(routed: Any, direct: Any, rounds: int, per_round: int) -> dict[str, Any]:
    def timed(oa: Any, model: str) -> float:
        t0 = time.perf_counter()
        completion = oa.chat.completions.create(model=model, messages=MESSAGES, max_completion_tokens=16)
        elapsed = time.perf_counter() - t0
        assert completion.choices[0].message.content
        return elapsed * 1000.0

    via_router, straight = _interleaved(timed, routed, direct, rounds, per_round)
    router_p50, direct_p50 = statistics.median(via_router), statistics.median(straight)
    return {
        "shape": SHAPE + ", sequential requests",
        "requests_each": len(via_router),
        "router_p50_ms": round(router_p50, 2),
        "direct_p50_ms": round(direct_p50, 2),
        "added_p50_ms": round(router_p50 - direct_p50, 2),
        "goal_ms": GOAL_MS,
        "meets_goal": router_p50 - direct_p50 <= GOAL_MS,
        "load_average_1m": round(os.getloadavg()[0], 1),  # the machine is shared: read the ms with it
    }


def measure_stream(routed: Any, direct: Any, rounds: int, per_round: int) -> dict[str, Any]:
    """Time to the first content chunk with ``stream=True``: through the router's door (Engine.stream, the openai
    kind's own stream) against the `openai` package straight to the endpoint; each stream read to its end."""

    def timed(oa: Any, model: str) -> float:
        t0 = time.perf_counter()
        ttft: float | None = None
        finish = None
        with oa.chat.completions.create(
            model=model, messages=MESSAGES, max_completion_tokens=16, stream=True
        ) as stream:
            for chunk in stream:
                for choice in chunk.choices:
                    if ttft is None and choice.delta.content:
                        ttft = (time.perf_counter() - t0) * 1000.0
                    finish = choice.finish_reason or finish
        assert ttft is not None
        assert finish is not None  # read whole: a cut stream would not count
        return ttft

    via_router, straight = _interleaved(timed, routed, direct, rounds, per_round)
    router_p50, direct_p50 = percentile(via_router, 0.5), percentile(straight, 0.5)
    router_p99, direct_p99 = percentile(via_router, 0.99), percentile(straight, 0.99)
    return {
        "shape": SHAPE + ", sequential streams",
        "method": "interleaved rounds; time to the first chunk with content; nearest-rank percentiles",
        "streams_each": len(via_router),
        "router_ttft_p50_ms": round(router_p50, 2),
        "direct_ttft_p50_ms": round(direct_p50, 2),
        "added_ttft_p50_ms": round(router_p50 - direct_p50, 2),
        "router_ttft_p99_ms": round(router_p99, 2),
        "direct_ttft_p99_ms": round(direct_p99, 2),
        "added_ttft_p99_ms": round(router_p99 - direct_p99, 2),
        "goal_ms": GOAL_MS,
        "meets_goal": router_p50 - direct_p50 <= GOAL_MS,
        "load_average_1m": round(os.getloadavg()[0], 1),  # the machine is shared: read the ms with it
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


MEASURES: dict[str, tuple[str, Callable[..., dict[str, Any]]]] = {
    "buffered": ("openai_door", measure),
    "stream": ("openai_door_stream", measure_stream),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 5: a smoke run")
    parser.add_argument("--no-write", action="store_true", help="print only; leave results.json alone")
    parser.add_argument("--only", choices=sorted(MEASURES), help="one figure: whole completions or stream=True")
    args = parser.parse_args()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "local")  # the client signs; nothing leaves loopback
    rounds, per_round = (2, 5) if args.quick else (args.rounds, args.per_round)
    with door_world() as (routed, direct, _):
        for which in [args.only] if args.only else sorted(MEASURES):
            key, run = MEASURES[which]
            result = run(routed, direct, rounds, per_round)
            print(f"{key}: {json.dumps(result, indent=2)}")
            if not args.no_write:
                merge_result(key, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

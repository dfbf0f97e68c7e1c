"""Router overhead: planning + engine + breakers per request, against a zero-latency backend.

Two scenarios, each measured per request with time.perf_counter_ns after a warm-up:
- one_attempt: served at once by the feature's provisioned target in its home region;
- three_attempts: the provisioned target throttles (spill), on-demand in the home region is unavailable (fail
  over), the provisioned target in the failover region serves. Breaker thresholds are set out of reach and the
  capacity cooldown to 0 so every request takes the same three attempts (otherwise the breakers would, correctly,
  route around the failures after a few requests).
Merges the key "engine" into local/benchmarks/results.json.
Usage: python local/benchmarks/bench_engine.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "lambdas" / "router"), str(ROOT)]

from local.benchmarks.results import merge_result, percentiles  # noqa: E402
from spillway.backends.contract import BackendReply  # noqa: E402
from spillway.config import Target, parse_routing_table  # noqa: E402
from spillway.engine import Engine, Status  # noqa: E402
from spillway.errors import BackendError, ErrorClass  # noqa: E402

FEATURE = "summarize-thread"
HOME, AWAY = "us-east-1", "us-west-2"


def routing_table(breaker: Mapping[str, Any]) -> dict[str, Any]:
    targets = {}
    for model in ("claude-sonnet", "nova-lite"):
        for capacity in ("provisioned", "on_demand"):
            for region in (HOME, AWAY):
                entry: dict[str, Any] = {
                    "model": model,
                    "capacity": capacity,
                    "region": region,
                    "backend": {"kind": "bedrock", "model_id": f"{model}.{capacity}.{region}"},
                }
                if capacity == "provisioned":
                    entry["max_in_flight"] = 8
                targets[f"{model}/{capacity}/{region}"] = entry
    return {
        "version": 1,
        "targets": targets,
        "features": {
            FEATURE: {
                "first_capacity": "provisioned",
                "models": ["claude-sonnet", "nova-lite"],
                "home_region": HOME,
                "failover_regions": [AWAY],
                "deadline_ms": 20000,
                "attempt_timeout_ms": {"min": 300, "max": 8000},
                "max_attempts": 4,
                "breaker": {"latency_ms": 10000, "ttft_ms": 3000, **breaker},
            }
        },
    }


class ZeroLatency:
    """Answers at once; fails the targets it is told to, with pre-built errors (no allocation in the loop)."""

    def __init__(self, failures: Mapping[str, BackendError]) -> None:
        self.failures = dict(failures)
        self.reply = BackendReply({"output": {"message": {"role": "assistant", "content": []}}}, 0.0)

    def invoke(self, target: Target, request: Mapping[str, Any], timeout_s: float) -> BackendReply:  # noqa: ARG002
        error = self.failures.get(target.id)
        if error is not None:
            raise error
        return self.reply


def measure(engine: Engine, expect_sent: int, warmup: int, iterations: int) -> dict[str, float]:
    request = {"messages": [{"role": "user", "content": [{"text": "benchmark"}]}]}
    handle = engine.handle
    for _ in range(warmup):
        result = handle(FEATURE, request)
        assert result.status is Status.SERVED, result
        assert result.attempts_sent == expect_sent, result
    gc.collect()
    samples = [0] * iterations
    clock = time.perf_counter_ns
    for i in range(iterations):
        t0 = clock()
        handle(FEATURE, request)
        samples[i] = clock() - t0
    return percentiles(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke test)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave results.json alone")
    args = parser.parse_args()
    warmup, iterations = (500, 5000) if args.quick else (5000, 50000)

    one = Engine(parse_routing_table(routing_table({})), {"bedrock": ZeroLatency({})})
    unreachable = {"consecutive_failures": 10**9, "min_requests": 10**9, "error_rate": 1.0, "capacity_cooldown_s": 0}
    three = Engine(
        parse_routing_table(routing_table(unreachable)),
        {
            "bedrock": ZeroLatency(
                {
                    f"claude-sonnet/provisioned/{HOME}": BackendError(ErrorClass.CAPACITY, "ThrottlingException", 429),
                    f"claude-sonnet/on_demand/{HOME}": BackendError(
                        ErrorClass.UNAVAILABLE, "ServiceUnavailableException", 503
                    ),
                }
            )
        },
    )
    figures = {
        "one_attempt_us": measure(one, 1, warmup, iterations),
        "three_attempts_us": measure(three, 3, warmup, iterations),
        "iterations": iterations,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {platform.system()}",
        "goal": {"one_attempt_us_p50_max": 50},
    }
    print(f"engine: {figures}")
    if not args.no_write:
        merge_result("engine", figures)


if __name__ == "__main__":
    main()

"""What shadowing costs the caller: p50 and p99 of the caller's latency with shadowing on and off, same run.

Shape: one process serving one request at a time, as a Lambda instance does; the router's own engine and shadower
(spillway/shadow.py) over backends that sleep for a seeded log-normal latency (incumbent median 20 ms, candidate
median 30 ms: a slower candidate is the case the grace exists for; 1 in 200 candidate calls throttles). Requests
alternate on/off so load drift on a shared machine falls on both sides alike. The handler's own work is the same
with and without a shadow and is left out. Also writes the run's shadow records (the log line's fields) to
reports/shadow/records.jsonl, the input `make shadow-report` reads by default.

    python -m tools.shadow_overhead [--requests 400] [--grace-ms 50] [--out reports/shadow]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lambdas" / "router"))

from spillway.backends.contract import BackendReply, Usage
from spillway.config import RoutingTable, Target, parse_routing_table
from spillway.engine import Engine
from spillway.errors import BackendError
from spillway.shadow import Shadower, ShadowRecord

FEATURE = "summarize-thread"
INCUMBENT = "claude-sonnet/provisioned/us-east-1"
CANDIDATE = "nova-lite/on_demand/us-east-1"
MEDIAN_MS = {INCUMBENT: 20.0, CANDIDATE: 30.0}
THROTTLE_SHARE = 0.005


def table(share: float, grace_ms: float) -> RoutingTable:
    def target(tid: str) -> dict[str, Any]:
        model, capacity, region = tid.split("/")
        return {
            "model": model,
            "capacity": capacity,
            "region": region,
            "backend": {"kind": "bedrock", "model_id": model},
        }

    feature: dict[str, Any] = {
        "first_capacity": "provisioned",
        "models": ["claude-sonnet"],
        "home_region": "us-east-1",
        "deadline_ms": 20000,
        "attempt_timeout_ms": {"min": 300, "max": 8000},
        "max_attempts": 2,
        "order": [],
    }
    if share:
        feature["shadow"] = {"target": CANDIDATE, "share": share, "grace_ms": grace_ms}
    return parse_routing_table(
        {"version": 1, "targets": {t: target(t) for t in MEDIAN_MS}, "features": {FEATURE: feature}}
    )


class SleepingModel:
    """A model that takes a log-normal time (sigma 0.5) and answers a fixed shape; thread-safe draws."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)  # noqa: S311 (a benchmark's latencies, not a secret)
        self._lock = threading.Lock()

    def invoke(self, target: Target, request: Mapping[str, Any], timeout_s: float) -> BackendReply:  # noqa: ARG002
        with self._lock:
            delay_s = MEDIAN_MS[target.id] / 1000.0 * self._random.lognormvariate(0.0, 0.5)
            throttled = target.id == CANDIDATE and self._random.random() < THROTTLE_SHARE
            tokens = self._random.randint(80, 400)
        time.sleep(min(delay_s, timeout_s))
        if throttled:
            raise BackendError.of("ThrottlingException", 429)
        words = tokens if target.id == INCUMBENT else int(tokens * 1.3)
        stop = "end_turn" if words < 380 else "max_tokens"
        response = {"output": {"message": {"content": [{"text": "x"}]}}, "stopReason": stop}
        return BackendReply(response, delay_s * 1000.0, usage=Usage(120, words))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(requests: int, grace_ms: float, out: Path) -> dict[str, Any]:
    backends = {"bedrock": SleepingModel(seed=7)}
    records: list[ShadowRecord] = []
    shadower = Shadower(backends, emit=records.append)
    sides = {"off": table(0.0, grace_ms), "on": table(1.0, grace_ms)}
    engines = {name: Engine(t, backends) for name, t in sides.items()}
    latencies: dict[str, list[float]] = {"off": [], "on": []}
    for i in range(requests * 2):
        side = "on" if i % 2 else "off"
        request = {"messages": [{"role": "user", "content": [{"text": "hello"}]}]}
        t0 = time.perf_counter()
        shadower.mirror(
            sides[side], FEATURE, request, f"bench-{i}", lambda s=side, r=request: engines[s].handle(FEATURE, r)
        )
        latencies[side].append((time.perf_counter() - t0) * 1000.0)
    shadower.wait_idle(10)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "records.jsonl").open("w", encoding="utf-8") as sink:
        for record in records:
            sink.write(json.dumps({"message": "shadow", **asdict(record)}) + "\n")
    outcomes = {name: sum(1 for r in records if r.outcome == name) for name in ("ok", "error", "abandoned")}
    figures = {
        "shape": "one process, one request at a time (a Lambda instance), engine + shadower, sleeping backends",
        "requests_per_side": requests,
        "grace_ms": grace_ms,
        "p50_ms": {side: round(percentile(v, 0.50), 2) for side, v in latencies.items()},
        "p99_ms": {side: round(percentile(v, 0.99), 2) for side, v in latencies.items()},
        "max_ms": {side: round(max(v), 2) for side, v in latencies.items()},
        "shadows": outcomes,
        "sent_shadows": len(records),
    }
    (out / f"overhead-grace{grace_ms:g}ms.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=400, help="requests per side (default 400)")
    parser.add_argument("--grace-ms", type=float, default=50.0)
    parser.add_argument("--out", type=Path, default=Path("reports/shadow"))
    args = parser.parse_args(argv)
    figures = run(args.requests, args.grace_ms, args.out)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

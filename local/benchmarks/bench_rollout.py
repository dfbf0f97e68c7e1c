"""Issue 16, item 4: rollouts that can be yanked. In the production shape (a fleet of execution environments, one
event each, frozen between events; local/localrun/fleet_world.py), the time from a flag change to traffic moving across
every environment.

- **rollout and yank**: summarize-thread at a steady rate; after a lead, its canary share is raised from 0 (the flags
  profile, through the world's AppConfig extension stand-in: ``set_flags``), then set back to 0. Per request, the
  router's bucket of its request id says which side of each share it falls on, and its first attempt (the route
  header) whether the answering environment routed it with the canary model first (local/benchmarks/rollout_figures.py).
- **after a thaw**: the fleet idle (every environment frozen) across the change, then one request per environment
  after a gap: whether that first request after the thaw still routed with the old table, and how long after the
  change, with each environment's config last refreshed just before the freeze.

Goal: within the config refresh interval (``SPILLWAY_CONFIG_TTL_S``, the router's 5 s default) plus one second.
Merges the key "rollout" into local/benchmarks/results.json.
Usage: python local/benchmarks/bench_rollout.py [--quick] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "lambdas" / "router"), str(ROOT)]

from local.benchmarks import rollout_figures as rf  # noqa: E402
from local.benchmarks.bench_fleet import git_head, machine  # noqa: E402
from local.benchmarks.results import merge_result  # noqa: E402
from local.localrun import FleetWorld, Latency, Reply  # noqa: E402
from local.localrun.fleet import ENVIRONMENT_HEADER  # noqa: E402
from spillway.routing_source import bucket  # noqa: E402

FEATURE = "summarize-thread"
CANARY_MODEL = "nova-lite"  # the feature's fallback model: on-demand in us-east-1, so a canary variant exists


@dataclass(frozen=True)
class Spec:
    environments: int
    rate_rps: float
    share: float
    config_ttl_s: float
    lead_s: float
    observe_s: float  # after each change
    thaw_gaps: tuple[float, ...]  # fractions of the TTL


FULL = Spec(8, 24.0, 0.5, 5.0, 2.0, 8.0, (0.0, 0.25, 0.5, 0.75, 1.0, 1.25))
QUICK = Spec(2, 8.0, 0.5, 1.0, 0.5, 2.0, (0.5, 1.5))


def canary(share: float) -> dict[str, Any]:
    return {"canary": {FEATURE: {"model": CANARY_MODEL, "share": share}}}


def sample_of(world: FleetWorld, reply: Reply, sent_s: float) -> rf.Sample:
    request_id = reply.header("x-spillway-request-id") or ""
    env = reply.header(ENVIRONMENT_HEADER)
    first = reply.route[0][0] if reply.route else None
    model = world.target(first).model if first in world.by_id else None
    return rf.Sample(
        sent_s, int(env) if env and env.isdigit() else None, bucket(request_id), model == CANARY_MODEL, reply.status
    )


def drive(
    world: FleetWorld, rate: float, seconds: float, hooks: Sequence[tuple[float, Callable[[], None]]]
) -> tuple[list[rf.Sample], dict[str, float]]:
    """Open loop at `rate` for `seconds`; each hook runs at its offset, its time (just before it runs) recorded."""
    samples: list[rf.Sample] = []
    lock = threading.Lock()
    marks: dict[str, float] = {}
    t0 = time.monotonic()

    def one(sent: float) -> None:
        try:
            reply = world.http.converse(FEATURE)
        except Exception:  # no answer: not a sample of either table
            return
        sample = sample_of(world, reply, sent)
        with lock:
            samples.append(sample)

    pending: list[Future[None]] = []
    todo = sorted(hooks, key=lambda h: h[0])
    with ThreadPoolExecutor(max_workers=64, thread_name_prefix="rollout") as pool:
        i = 0
        while (elapsed := time.monotonic() - t0) < seconds:
            while todo and todo[0][0] <= elapsed:
                _, action = todo.pop(0)
                marks[action.__name__] = time.monotonic() - t0
                action()
            due = i / rate
            if due > elapsed:
                time.sleep(min(due - elapsed, 0.02))
                continue
            pending.append(pool.submit(one, time.monotonic() - t0))
            i += 1
        for future in pending:
            future.result(timeout=60)
    return samples, marks


def rollout_and_yank(world: FleetWorld, spec: Spec, goal_s: float) -> dict[str, Any]:
    world.set_flags(canary(0.0))

    def raise_share() -> None:
        world.set_flags(canary(spec.share))

    def yank() -> None:
        world.set_flags(canary(0.0))

    end = spec.lead_s + 2 * spec.observe_s
    samples, marks = drive(
        world, spec.rate_rps, end, [(spec.lead_s, raise_share), (spec.lead_s + spec.observe_s, yank)]
    )
    up, down = marks["raise_share"], marks["yank"]
    rollout = [s for s in samples if s.sent_s < down]
    served_envs = len({s.environment for s in samples if s.environment is not None})
    return {
        "requests": len(samples),
        "served": sum(1 for s in samples if s.status == 200),
        "rate_rps": spec.rate_rps,
        "share": spec.share,
        "rollout": rf.direction_figures(rf.moves(rollout, up, 0.0, spec.share), served_envs, goal_s),
        "yank": rf.direction_figures(rf.moves(samples, down, spec.share, 0.0), served_envs, goal_s),
    }


def sweep(world: FleetWorld, count: int) -> list[tuple[rf.Sample, float]]:
    """`count` requests one after another: with the fleet's reuse (the environment idle longest first) each goes to
    a different environment. Returns each sample with its monotonic send time."""
    out = []
    for _ in range(count):
        sent = time.monotonic()
        out.append((sample_of(world, world.http.converse(FEATURE), sent), sent))
    return out


def after_thaw(world: FleetWorld, spec: Spec, goal_s: float) -> dict[str, Any]:
    """Per gap: every environment's cache expired, one request each (it refreshes, then freezes), the flag raised to
    1 (every request telling), the gap, one request each again: the first after the thaw."""
    thawed: list[rf.Thawed] = []
    per_gap: dict[str, Any] = {}
    ttl = spec.config_ttl_s
    for fraction in spec.thaw_gaps:
        world.set_flags(canary(0.0))
        time.sleep(ttl + 0.3)
        refreshed = {s.environment: sent for s, sent in sweep(world, spec.environments) if s.environment is not None}
        change = time.monotonic()
        world.set_flags(canary(1.0))
        time.sleep(fraction * ttl)
        these = [
            rf.Thawed(s.environment, round(sent - change, 3), round(sent - refreshed[s.environment], 3), s.canary_first)
            for s, sent in sweep(world, spec.environments)
            if s.environment in refreshed and s.status == 200
        ]
        thawed.extend(these)
        per_gap[f"{fraction:g}_ttl"] = {
            "stale": sum(1 for t in these if not t.followed_new),
            "of": len(these),
            "since_change_s": [t.since_change_s for t in these],
        }
    return {"per_gap": per_gap, **rf.thaw_figures(thawed, ttl, goal_s)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    spec = QUICK if args.quick else FULL
    goal_s = spec.config_ttl_s + 1.0
    started = time.monotonic()
    result: dict[str, Any] = {
        "shape": "fleet of execution environments (local/localrun/fleet_world.py)",
        "router": git_head(),
        "environments": spec.environments,
        "config_ttl_s": spec.config_ttl_s,
        "goal": f"every environment on the new share within the config TTL + 1 s ({goal_s:g} s)",
        "machine_before": machine(),
    }
    settings = {"latency": Latency(ttft_ms=50.0, ms_per_token=0.0), "config_ttl_s": spec.config_ttl_s}
    with FleetWorld(reserved_concurrency=spec.environments, warm=spec.environments, **settings) as world:
        result["rollout_and_yank"] = rollout_and_yank(world, spec, goal_s)
        print(f"rollout: rollout and yank: {json.dumps(result['rollout_and_yank'])}", flush=True)
        world.wait_idle()
        result["after_thaw"] = after_thaw(world, spec, goal_s)
        print(f"rollout: after a thaw: {json.dumps(result['after_thaw'])}", flush=True)
    result["machine_after"] = machine()
    result["seconds"] = round(time.monotonic() - started, 1)
    print(f"rollout: done in {result['seconds']} s", flush=True)
    if not args.no_write:
        merge_result("rollout", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

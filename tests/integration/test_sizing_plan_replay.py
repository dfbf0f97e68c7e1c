"""The planner's replay against the router itself: a slice of the traffic profile, scaled down, sent in real time
through the one-process local world (the router's handler, real boto3 clients, the emulator), and the same slice
replayed in simulated time on the same routing table and the same emulated capacity. Their spill and drop shares
must agree within a few percent: the plan's figures are the router's.

What the machine's load changes is given to the replay as measured, not assumed: each request's arrival is the
instant it actually left (a busy sender leaves late and in bunches, and the router sees those bunches), and each PT
attempt holds its slot for the mean time the router's attempts actually held theirs (send to release)."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

import local.localrun.world
from local.localrun import Latency, LocalWorld
from spillway.engine import Engine
from tools.planner.inputs import load_traffic
from tools.planner.replay import Arrival, poisson_arrivals, replay

ROOT = Path(__file__).resolve().parents[2]
FEATURE = "summarize-thread"
PT_EAST = "claude-sonnet/provisioned/us-east-1"
LATENCY = Latency(ttft_ms=800.0, ms_per_token=10.0, output_tokens=16)  # 960 ms: the router's own ms are noise
SECONDS = 6.0
MODEL_MS = LATENCY.ttft_ms + LATENCY.ms_per_token * LATENCY.output_tokens


@pytest.fixture(scope="module", params=["local state", "fleet store"])
def world(request: pytest.FixtureRequest) -> Iterator[LocalWorld]:
    """The one-process world, its router called from many threads at once instead of one event at a time: one view
    of every request in flight, the replay's default shape. With the fleet store (redis-server), PT occupancy and
    breakers are decided on the store, as a Lambda fleet decides them. LocalWorld itself queues callers, as one
    Lambda environment would, so as it stands it cannot show a spill."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(local.localrun.world, "serialized", lambda handler: handler)
        with LocalWorld(latency=LATENCY, redis=request.param == "fleet store") as w:
            yield w


def _slice_rate() -> float:
    """The profile's peak hour for summaries, scaled down to what the local world's PT (8 in flight) can show in
    seconds: the same ratio of load to PT capacity as the peak against one model unit in config/traffic.yaml."""
    traffic = load_traffic(ROOT / "config" / "traffic.yaml", {FEATURE: None, "nightly-recap": None})
    f = traffic.features[FEATURE]
    cap = traffic.capacity["claude-sonnet"]
    peak_in_flight = f.peak_requests_per_hour / 3600.0 * cap.latency_s(f.output_tokens)
    load_per_slot = peak_in_flight / cap.max_in_flight_per_unit  # ~2 in flight per PT slot at the peak
    in_flight = min(load_per_slot, 1.5) * 8  # capped: the real-time run must stay light on a shared machine
    return in_flight / MODEL_MS * 1000.0


@dataclass(frozen=True)
class Answer:
    status: int
    target: str | None
    sent_s: float  # when the request actually left, seconds from the start of the schedule


def send_schedule(world: LocalWorld, times: list[float]) -> list[Answer]:
    """Send one request at each instant of `times` (seconds from now), whatever the answers do, as callers do."""

    def one(start: float) -> Answer:
        sent = time.monotonic() - start
        reply = world.http.converse(FEATURE)
        return Answer(reply.status, reply.target, sent)

    with ThreadPoolExecutor(max_workers=64, thread_name_prefix="slice") as pool:
        start = time.monotonic()
        futures = []
        for t in times:
            time.sleep(max(0.0, start + t - time.monotonic()))
            futures.append(pool.submit(one, start))
        return [f.result(timeout=60) for f in futures]


def timed_pt_calls(world: LocalWorld, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """How long each attempt on the PT holds its slot in the router's count, as they happen: from the send to the
    release (the in-flight count's end and, with the fleet store, the lease given back with the attempt's report).
    On a loaded machine that is longer than the backend call alone, and it is what the router decides on."""
    attempt = Engine._attempt
    holds: list[float] = []

    def timed(engine: Engine, health: Any, f: Any, step: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.monotonic()
        try:
            return attempt(engine, health, f, step, *args, **kwargs)
        finally:
            if step.target.id == PT_EAST:
                holds.append((time.monotonic() - t0) * 1000.0)

    monkeypatch.setattr(Engine, "_attempt", timed)
    return holds


def test_replay_matches_the_router_in_real_time(world: LocalWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    # One Poisson schedule for both: the slice as callers would send it. (Evenly spaced arrivals would make every
    # outcome hinge on a millisecond of the machine's jitter; Poisson arrivals do not.)
    times = poisson_arrivals(_slice_rate(), 0.0, SECONDS, random.Random(16))
    holds_ms = timed_pt_calls(world, monkeypatch)
    answers = send_schedule(world, times)
    served = [a for a in answers if a.status == 200]
    real_spill = sum(1 for a in served if a.target != PT_EAST) / len(answers)
    real_drop = 1 - len(served) / len(answers)

    # The replay holds each PT answer for as long as the router held its slot on average: the emulator's latency
    # plus the router's own call and release (boto3, the HTTP hop, the report: tens to hundreds of ms on a loaded
    # machine). The mean is what
    # matters: how many requests a full target turns away depends on the mean hold time, not its spread (Erlang's
    # loss formula).
    overhead_ms = max(0.0, statistics.fmean(holds_ms) - MODEL_MS)
    specs = {
        spec.name: replace(spec, ttft_ms=spec.ttft_ms + overhead_ms)
        for spec in world.emulator_specs()
        if spec.name is not None
    }
    arrivals = [Arrival(t, FEATURE, 8, LATENCY.output_tokens) for t in sorted(a.sent_s for a in answers)]
    tally = replay(world.table_doc, specs, arrivals)[0]
    replay_spill = tally.spilled / tally.requests
    replay_drop = tally.dropped / tally.requests

    assert (world.router.fleet is not None) == world.use_redis  # which router decided: the store's or its own
    assert tally.requests == len(answers) > 50
    assert 0.15 < replay_spill < 0.6  # the slice does load PT past its capacity, or the comparison is moot
    assert abs(real_spill - replay_spill) <= 0.05, (real_spill, replay_spill)
    assert abs(real_drop - replay_drop) <= 0.02, (real_drop, replay_drop)

"""The planner's replay against the router itself: a slice of the traffic profile, scaled down, sent in real time
through the one-process local world (the router's handler, real boto3 clients, the emulator), and the same slice
replayed in simulated time on the same routing table and the same emulated capacity. Their spill and drop shares
must agree within a few percent: the plan's figures are the router's."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from localrun import Latency, LocalWorld
from localrun.traffic import Traffic
from tools.planner.inputs import load_traffic
from tools.planner.replay import Arrival, even_arrivals
from tools.planner.replay import replay as replay_slice

ROOT = Path(__file__).resolve().parents[2]
FEATURE = "summarize-thread"
PT_EAST = "claude-sonnet/provisioned/us-east-1"
LATENCY = Latency(ttft_ms=800.0, ms_per_token=10.0, output_tokens=16)  # 960 ms: the router's own ms are noise
SECONDS = 5.0


@pytest.fixture(scope="module")
def world() -> Iterator[LocalWorld]:
    with LocalWorld(latency=LATENCY, moto=False) as w:
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
    # Evenly spaced arrivals with a whole number of them per latency put every arrival on the instant an earlier
    # request ends, where a millisecond decides PT or spill: keep the load half a request off that edge.
    in_flight = math.floor(in_flight) + 0.5
    return in_flight / (LATENCY.ttft_ms + LATENCY.ms_per_token * LATENCY.output_tokens) * 1000.0


def test_replay_matches_the_router_in_real_time(world: LocalWorld) -> None:
    rate = _slice_rate()
    traffic = Traffic(world.http, seed=16)
    try:
        traffic.phase("slice", {FEATURE: rate}, SECONDS)
        traffic.drain()
    finally:
        traffic.close()
    records = traffic.of("slice")
    served = [r for r in records if r.served]
    real_spill = sum(1 for r in served if r.target != PT_EAST) / len(records)
    real_drop = sum(1 for r in records if not r.served) / len(records)

    # The replay takes the slice as it left (the generator's send instants, which bunch when a busy machine makes it
    # late) and the emulator's latency plus the router's own median overhead per request (the HTTP hop, the
    # handler), so both hold a PT slot, in the router's count, for the same time.
    model_ms = LATENCY.ttft_ms + LATENCY.ms_per_token * LATENCY.output_tokens
    overhead_ms = max(0.0, statistics.median(r.latency_ms for r in served) - model_ms)
    specs = {
        spec.name: replace(spec, ttft_ms=spec.ttft_ms + overhead_ms)
        for spec in world.emulator_specs()
        if spec.name is not None
    }
    sent = sorted(r.sent_s for r in records)
    arrivals = [Arrival(t - sent[0], FEATURE, 8, LATENCY.output_tokens) for t in sent]
    tally = replay_slice(world.table_doc, specs, arrivals)[0]
    ideal = replay_slice(world.table_doc, specs, [Arrival(t, FEATURE, 8, 16) for t in even_arrivals(rate, 0, SECONDS)])[
        0
    ]
    replay_spill = tally.spilled / tally.requests
    replay_drop = tally.dropped / tally.requests

    assert tally.requests == ideal.requests == len(records)
    assert 0.15 < replay_spill < 0.5  # the slice does load PT past its capacity, or the comparison is moot
    assert abs(real_spill - replay_spill) <= 0.05, (real_spill, replay_spill)
    assert abs(real_drop - replay_drop) <= 0.02, (real_drop, replay_drop)

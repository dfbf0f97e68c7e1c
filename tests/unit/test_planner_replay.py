"""The planner's replay: the router's engine in simulated time against the emulator's capacity model.

Hand-checkable cases: fixed latency, evenly spaced arrivals, so what the router must do is known exactly."""

from __future__ import annotations

import pytest

# A tool of the dev environment (greenlet, matplotlib, the CDK app's platform schema): not in the router's own
# test environment, where `make test-lambda-runtime` runs tests/unit again on the Lambda's Python.
pytest.importorskip("greenlet", reason="the planner's dependencies are in requirements-dev.txt only")

from local.emulator.targets import TargetSpec
from tools.planner.replay import Arrival, even_arrivals, replay

PT = "claude-sonnet/provisioned/us-east-1"
OD = "claude-sonnet/on_demand/us-east-1"


def _table(max_in_flight: int) -> dict:
    return {
        "version": 1,
        "targets": {
            PT: {
                "model": "claude-sonnet",
                "capacity": "provisioned",
                "region": "us-east-1",
                "backend": {
                    "kind": "bedrock",
                    "model_id": "arn:aws:bedrock:us-east-1:111122223333:provisioned-model/x",
                },
                "max_in_flight": max_in_flight,
            },
            OD: {
                "model": "claude-sonnet",
                "capacity": "on_demand",
                "region": "us-east-1",
                "backend": {"kind": "bedrock", "model_id": "anthropic.claude"},
            },
        },
        "features": {
            "f": {
                "first_capacity": "provisioned",
                "models": ["claude-sonnet"],
                "home_region": "us-east-1",
                "deadline_ms": 20000,
                "max_attempts": 3,
                "attempt_timeout_ms": {"min": 300, "max": 8000},
            }
        },
    }


def _specs(pt_limit: int, *, latency_ms: float = 1000.0) -> dict[str, TargetSpec]:
    return {
        PT: TargetSpec("us-east-1", "bedrock", "pt", name=PT, max_in_flight=pt_limit, ttft_ms=latency_ms),
        OD: TargetSpec("us-east-1", "bedrock", "od", name=OD, ttft_ms=latency_ms),
    }


def _arrivals(rate: float, seconds: float) -> list[Arrival]:
    return [Arrival(t, "f", 100, 10) for t in even_arrivals(rate, 0.0, seconds)]


def test_overlapping_requests_fill_pt_and_spill_the_rest() -> None:
    # 4 requests a second, each held 1 s: 4 in flight against a PT of 2. The router keeps PT full and spills
    # exactly the other half, predicting it (no throttle paid), as the engine does on the wire.
    tally = replay(_table(2), _specs(2), _arrivals(4.0, 10.0))[0]
    assert tally.requests == 40
    assert tally.served == 40
    assert tally.on_provisioned == 20
    assert tally.spilled == 20
    assert tally.throttled == 0
    assert tally.input_tokens_by_target == {PT: 2000, OD: 2000}


def test_under_capacity_nothing_spills() -> None:
    tally = replay(_table(2), _specs(2), _arrivals(1.5, 10.0))[0]
    assert (tally.requests, tally.on_provisioned, tally.spilled) == (15, 15, 0)


def test_a_table_that_overestimates_pt_costs_throttles_and_pt_share() -> None:
    # The table says 6 fit, the PT holds 2: excess requests are throttled and spill on the throttle, the tracker
    # learns the limit, and each throttle's capacity cooldown keeps the PT out of plans for a while. Nothing is
    # lost, but PT carries less than when the table is right: the reason to size max_in_flight (make size).
    right = replay(_table(2), _specs(2), _arrivals(4.0, 20.0))[0]
    wrong = replay(_table(6), _specs(2), _arrivals(4.0, 20.0))[0]
    assert wrong.served == wrong.requests == 80
    assert right.throttled == 0
    assert 0 < wrong.throttled < 40  # learned: far fewer throttles than the 40 excess requests
    assert wrong.on_provisioned < right.on_provisioned == 40


def test_windows_stand_apart() -> None:
    # Two sampled stretches an hour apart: requests of the first finish before the clock jumps to the second.
    arrivals = [Arrival(t, "f", 100, 10, bucket=0) for t in even_arrivals(4.0, 0.0, 5.0)]
    arrivals += [Arrival(t, "f", 100, 10, bucket=1) for t in even_arrivals(1.0, 3600.0, 5.0)]
    tallies = replay(_table(2), _specs(2), arrivals, windows=[(0.0, 5.0), (3600.0, 3605.0)])
    assert tallies[0].spilled == 10
    assert (tallies[1].requests, tallies[1].spilled) == (5, 0)


def test_lambda_fleet_shape_learns_nothing_across_environments() -> None:
    # Without fleet-wide state each Lambda environment sees only its own request in flight: nobody predicts the
    # PT full, every excess request pays a throttle before it spills. The shared shape pays none.
    shared = replay(_table(2), _specs(2), _arrivals(4.0, 10.0))[0]
    fleet = replay(_table(2), _specs(2), _arrivals(4.0, 10.0), shape="lambda-fleet")[0]
    assert shared.throttled == 0
    assert fleet.served == fleet.requests == 40
    assert fleet.on_provisioned == 20
    assert fleet.throttled == fleet.spilled == 20


def test_touching_windows_run_on() -> None:
    # Every minute replayed: the windows touch, so requests in flight at a boundary overlap the next window's
    # arrivals as they would, instead of the clock stopping for them.
    arrivals = _arrivals(4.0, 10.0)
    split = replay(_table(2), _specs(2), arrivals, windows=[(0.0, 5.0), (5.0, 10.0)])[0]
    assert (split.requests, split.on_provisioned, split.spilled) == (40, 20, 20)

"""The chosen plans replayed together: features that share a PT meet in one replay."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

# A tool of the dev environment (greenlet, matplotlib, the CDK app's platform schema): not in the router's own
# test environment, where `make test-lambda-runtime` runs tests/unit again on the Lambda's Python.
pytest.importorskip("greenlet", reason="the planner's dependencies are in requirements-dev.txt only")

from stacks.platform import load_platform
from stacks.routing import render_routing_table
from tests.unit.test_planner_cost import PRICES
from tools.planner.inputs import FeatureTraffic, Goals, ModelCapacity, Traffic
from tools.planner.plan import check_together, plan_feature

ROOT = Path(__file__).resolve().parents[2]
A, B = "summarize-thread", "summarize-copy"
PT = "claude-sonnet/provisioned/us-east-1"


def test_two_features_on_one_pt_pool_its_units() -> None:
    # Two features on the same model and home region, one request a second each for an hour, held 1 s, on units of
    # 2 requests in flight. Each alone needs one unit and spills Erlang-B(1, 2) = 20%; together they buy one PT
    # of two units, whose 4 slots take 2 in flight and spill Erlang-B(2, 4) = 9.5%: pooling, not 1 unit shared
    # (that would spill Erlang-B(2, 2) = 40%).
    table = render_routing_table(load_platform(ROOT / "config" / "platform.yaml"), "us-east-1")
    table["features"][B] = copy.deepcopy(table["features"][A])
    hours = [0.0] * 168
    hours[10] = 3600.0
    goals = Goals(min_pt_share=0.5, max_spill_share=1.0)
    features = {name: FeatureTraffic(name, tuple(hours), 1000, 100, False, goals) for name in (A, B)}
    cap = ModelCapacity(1_000_000, 2, ttft_ms=1000.0, ms_per_output_token=0.0, on_demand_tokens_per_minute=None)
    traffic = Traffic(
        "traffic.yaml",
        features,
        {"claude-sonnet": cap, "nova-lite": cap, "gemini-flash": cap, "gpt-azure": cap},
        "one_month",
        5.0,
        7,
    )
    plans = [plan_feature(name, table, traffic, PRICES) for name in (A, B)]
    assert [p.cheapest.units if p.cheapest else None for p in plans] == [1, 1]
    together = check_together(plans, table, traffic, PRICES)
    assert together.units == {PT: 2}
    for p in plans:
        alone, joint = p.cheapest, together.scenarios[p.feature]
        assert alone is not None
        assert joint.requests == alone.requests == 3600
        assert 0.1 < alone.spill_share < 0.3
        assert joint.spill_share < 0.16
        assert joint.pt_cost_month == alone.pt_cost_month  # each pays for the unit it asked for

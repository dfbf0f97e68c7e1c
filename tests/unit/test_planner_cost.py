"""The planner's cost arithmetic on a tiny profile that can be checked by hand: one busy hour a week."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

# A tool of the dev environment (greenlet, matplotlib, the CDK app's platform schema): not in the router's own
# test environment, where `make test-lambda-runtime` runs tests/unit again on the Lambda's Python.
pytest.importorskip("greenlet", reason="the planner's dependencies are in requirements-dev.txt only")

from stacks.platform import load_platform
from stacks.routing import render_routing_table
from tools.planner.inputs import (
    FeatureTraffic,
    Goals,
    ModelCapacity,
    Prices,
    TokenPrice,
    Traffic,
    UnitPrice,
)
from tools.planner.plan import HOURS_PER_MONTH, plan_feature

ROOT = Path(__file__).resolve().parents[2]
FEATURE = "summarize-thread"


def _price(i: float, o: float) -> TokenPrice:
    return TokenPrice(i, o, "test", "2026-12-04", True)


PRICES = Prices(
    "prices.yaml",
    "USD",
    on_demand={
        "claude-sonnet": {"standard": _price(3.0, 15.0)},
        "nova-lite": {"standard": _price(0.06, 0.24)},
        "gemini-flash": {"standard": _price(0.3, 2.5)},
    },
    batch={"claude-sonnet": _price(1.5, 7.5)},
    provisioned={"claude-sonnet": {"one_month": UnitPrice(24.0, "test", "2026-12-04", True)}},
    reserved={},
)


PT_REQUIRED = Goals(min_pt_share=0.5, max_spill_share=1.0)


def _traffic(*, batch: bool = False, goals: Goals = PT_REQUIRED) -> Traffic:
    hours = [0.0] * 168
    hours[10] = 3600.0  # one request a second for one hour a week
    cap = ModelCapacity(1_000_000, 2, ttft_ms=1000.0, ms_per_output_token=0.0, on_demand_tokens_per_minute=None)
    feature = FeatureTraffic(FEATURE, tuple(hours), 1000, 100, batch, goals)
    return Traffic(
        "traffic.yaml",
        {FEATURE: feature},
        {"claude-sonnet": cap, "nova-lite": cap, "gemini-flash": cap, "gpt-azure": cap},
        "one_month",
        3.0,
        7,
    )


@pytest.fixture(scope="module")
def table() -> dict:
    return render_routing_table(load_platform(ROOT / "config" / "platform.yaml"), "us-east-1")


def test_costs_by_hand(table: dict) -> None:
    plan = plan_feature(FEATURE, table, _traffic(), PRICES)
    # Peak: 1 request/s x 1,100 tokens = 66,000 tokens/min (one unit holds 1M) and 1 request in flight (two fit).
    assert plan.peak_units == 1
    on_demand, pt = plan.all_on_demand, plan.peak
    # All on-demand: 3,600 requests x (1,000 in at $3/M + 100 out at $15/M) = $10.80 + $5.40 = $16.20 a week.
    assert on_demand.requests == 3600
    assert on_demand.spill_share == 0
    assert on_demand.drop_share == 0
    assert on_demand.pt_cost_month == 0
    assert on_demand.on_demand_cost_month == pytest.approx(16.20 * HOURS_PER_MONTH / 168)
    # One unit: $24 an hour for 730 hours, plus on-demand for exactly the share the replay spilled.
    assert pt.pt_cost_month == pytest.approx(24.0 * 730)
    assert pt.on_demand_cost_month == pytest.approx(pt.spill_share * on_demand.on_demand_cost_month)
    assert pt.total_month == pytest.approx(pt.pt_cost_month + pt.on_demand_cost_month)
    # Poisson arrivals at 1/s held 1 s on 2 slots lose Erlang-B's share, (1/2)/(1 + 1 + 1/2) = 20%, to spill;
    # the replay samples 3 minutes, so allow sampling noise.
    assert 0.08 < pt.spill_share < 0.32
    assert pt.pt_share == pytest.approx(1 - pt.spill_share)
    # Break-even: one unit holds 2 requests of 1 s, 7.92M tokens an hour of this mix, worth $32.40 on on-demand
    # ((1,000 x $3 + 100 x $15) / 1,100 per million). The plan's extra cost over on-demand is exactly the unit's
    # price less what its busy share would have cost on on-demand, for every hour of the month.
    assert plan.unit_tokens_per_hour == pytest.approx(7_920_000)
    assert plan.on_demand_value_of_unit_hour == pytest.approx(32.40)
    assert plan.break_even_utilisation == pytest.approx(24.0 / 32.40)
    utilisation = plan.utilisation(pt, 1100)
    assert pt.total_month - on_demand.total_month == pytest.approx(730 * (24.0 - utilisation * 32.40))


def test_cheapest_mix_meets_goals_first(table: dict) -> None:
    plan = plan_feature(FEATURE, table, _traffic(), PRICES)
    assert not plan.all_on_demand.meets_goals  # 0% on PT < 50%
    assert plan.all_on_demand.misses == ["PT share 0.0% < 50.0%"]
    assert plan.cheapest is plan.peak  # the dearer plan, because it is the only one meeting the goals
    relaxed = plan_feature(FEATURE, table, _traffic(goals=Goals(max_spill_share=1.0)), PRICES)
    assert relaxed.cheapest is relaxed.all_on_demand  # $70 a month beats $17,520 once PT is not required


def test_batch_alternatives(table: dict) -> None:
    plan = plan_feature(FEATURE, table, _traffic(batch=True), PRICES)
    assert plan.batch is not None
    assert plan.batch["standard"] == pytest.approx(16.20 * HOURS_PER_MONTH / 168)
    assert plan.batch["batch"] == pytest.approx(plan.batch["standard"] / 2)
    assert "flex" not in plan.batch  # no Flex price for the model: not guessed


def test_an_hour_too_quiet_to_sample_still_counts(table: dict) -> None:
    # Two requests in hour 11: a 3-minute sample almost never catches one, but they are costed at the week's mix.
    traffic = _traffic()
    hours = list(traffic.features[FEATURE].requests_per_hour)
    hours[11] = 2.0
    feature = replace(traffic.features[FEATURE], requests_per_hour=tuple(hours))
    plan = plan_feature(FEATURE, table, replace(traffic, features={FEATURE: feature}), PRICES)
    on_demand = plan.all_on_demand
    assert on_demand.requests == 3602
    assert on_demand.on_demand_cost_month == pytest.approx(16.20 * 3602 / 3600 * HOURS_PER_MONTH / 168)
    assert on_demand.hourly_other[11] == pytest.approx(2.0)

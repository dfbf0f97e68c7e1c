"""Plans per feature: every model-unit count from none to the peak's, each replayed through the router for the week,
priced, and checked against the feature's goals.

A scenario with `units` model units gives the feature a Provisioned Throughput of its first model in its home
region (the router's table gets `max_in_flight = units x max_in_flight_per_unit`; the emulated PT holds that many
requests and `units x tokens_per_minute_per_unit`), spilling to on-demand as its policy says; 0 units is the
feature on on-demand only. Other PTs of the table are left out: a plan buys PT in the home region, failover runs
on on-demand. On-demand targets hold the account's on-demand quota per model, if given.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from local.emulator.targets import Kind, TargetSpec
from tools.planner.inputs import FeatureTraffic, InputError, Prices, TokenPrice, Traffic
from tools.planner.replay import Arrival, Tally, poisson_arrivals, replay
from tools.planner.router_adapter import KINDS

HOURS_PER_MONTH = 730.0
WEEKS_PER_MONTH = HOURS_PER_MONTH / 168.0
PLANNER_ACCOUNT = "111122223333"


@dataclass
class Scenario:
    units: int
    requests: float = 0.0  # per week, scaled from the sampled minutes to whole hours
    on_provisioned: float = 0.0
    spilled: float = 0.0
    throttled: float = 0.0
    dropped: float = 0.0
    sampled_requests: int = 0
    tokens_by_model_od: dict[str, tuple[float, float]] = field(default_factory=dict)  # model -> (in, out) a week
    pt_cost_month: float = 0.0
    on_demand_cost_month: float = 0.0
    hourly_on_provisioned: list[float] = field(default_factory=list)  # requests an hour, scaled
    hourly_other: list[float] = field(default_factory=list)
    meets_goals: bool = False
    misses: list[str] = field(default_factory=list)

    @property
    def total_month(self) -> float:
        return self.pt_cost_month + self.on_demand_cost_month

    def share(self, count: float) -> float:
        return count / self.requests if self.requests else 0.0

    @property
    def pt_share(self) -> float:
        return self.share(self.on_provisioned)

    @property
    def spill_share(self) -> float:
        return self.share(self.spilled)

    @property
    def throttled_share(self) -> float:
        return self.share(self.throttled)

    @property
    def drop_share(self) -> float:
        return self.share(self.dropped)


@dataclass
class FeaturePlan:
    feature: str
    model: str
    region: str
    term: str
    peak_units: int
    peak_tokens_per_minute: float
    scenarios: list[Scenario]
    shape: str = "shared"
    batch: dict[str, float] | None = None  # standard / flex / batch monthly costs of the on-demand tokens
    reserved_for_peak_month: float | None = None
    unit_tokens_per_hour: float = 0.0  # what one unit serves in an hour at full use, of this feature's mix
    unit_hour_price: float = 0.0
    on_demand_value_of_unit_hour: float = 0.0  # those tokens' price on on-demand

    @property
    def break_even_utilisation(self) -> float:
        """The share of a unit's hours it must be busy to cost no more than on-demand for the same tokens."""
        return self.unit_hour_price / self.on_demand_value_of_unit_hour if self.on_demand_value_of_unit_hour else 0.0

    def utilisation(self, s: Scenario, tokens_per_request: int) -> float:
        """How busy the scenario's units were over the week, by the replay (tokens served on PT / what they hold)."""
        capacity = s.units * self.unit_tokens_per_hour * 168
        return s.on_provisioned * tokens_per_request / capacity if capacity else 0.0

    def by_units(self, units: int) -> Scenario:
        return next(s for s in self.scenarios if s.units == units)

    @property
    def all_on_demand(self) -> Scenario:
        return self.by_units(0)

    @property
    def peak(self) -> Scenario:
        return self.by_units(self.peak_units)

    @property
    def cheapest(self) -> Scenario | None:
        meeting = [s for s in self.scenarios if s.meets_goals]
        return min(meeting, key=lambda s: (s.total_month, s.units)) if meeting else None


def peak_units(traffic: FeatureTraffic, cap_tpm_per_unit: int, cap_mif_per_unit: int, latency_s: float) -> int:
    """Model units for the peak hour's mean load: its tokens per minute, and its requests in flight (Little's law)."""
    peak_rps = traffic.peak_requests_per_hour / 3600.0
    by_tokens = math.ceil(traffic.peak_tokens_per_minute / cap_tpm_per_unit)
    by_concurrency = math.ceil(peak_rps * latency_s / cap_mif_per_unit)
    return max(1, by_tokens, by_concurrency)


def scenario_table(base: Mapping[str, Any], feature: str, units: int, mif_per_unit: int) -> dict[str, Any]:
    """The router's table for one scenario: only `feature`, no PT but `units` of its first model at home."""
    doc = copy.deepcopy(dict(base))
    f = dict(doc["features"][feature])
    f.pop("invoke_ids", None)
    model, home = f["models"][0], f["home_region"]
    targets = {tid: t for tid, t in doc["targets"].items() if t["capacity"] != "provisioned"}
    if units > 0:
        targets[f"{model}/provisioned/{home}"] = {
            "model": model,
            "capacity": "provisioned",
            "region": home,
            "backend": {
                "kind": "bedrock",
                "model_id": f"arn:aws:bedrock:{home}:{PLANNER_ACCOUNT}:provisioned-model/planner-{model}",
            },
            "max_in_flight": units * mif_per_unit,
        }
        f["first_capacity"] = "provisioned"
        order = list(f.get("order", ["spill", "failover", "fallback"]))
        if "spill" not in order:
            f["order"] = ["spill", *order]
    else:
        f["first_capacity"] = "on_demand"
    doc["targets"] = targets
    doc["features"] = {feature: f}
    return doc


def scenario_specs(doc: Mapping[str, Any], traffic: Traffic, units: Mapping[str, int]) -> dict[str, TargetSpec]:
    """Emulated targets for a scenario's table: each PT holds its `units[target id]` model units."""
    specs: dict[str, TargetSpec] = {}
    for tid, t in doc["targets"].items():
        cap = traffic.capacity.get(t["model"])
        if cap is None:
            raise InputError(
                traffic.source, f"capacity.models.{t['model']}", "missing: a planned feature may use this model"
            )
        backend = t["backend"]
        provisioned = t["capacity"] == "provisioned"
        n = units.get(tid, 0)
        specs[tid] = TargetSpec(
            t["region"],
            Kind(backend["kind"]),
            backend[KINDS[backend["kind"]].ref_field],  # what the kind invokes (model id, endpoint, model name)
            name=tid,
            max_in_flight=n * cap.max_in_flight_per_unit if provisioned else None,
            tokens_per_minute=n * cap.tokens_per_minute_per_unit if provisioned else cap.on_demand_tokens_per_minute,
            ttft_ms=cap.ttft_ms,
            ms_per_token=cap.ms_per_output_token,
        )
    return specs


def week_arrivals(
    traffic: FeatureTraffic, sample_s: float, seed: int
) -> tuple[list[Arrival], list[tuple[float, float]]]:
    """Poisson arrivals for the first `sample_s` seconds of every hour of the week, at that hour's rate."""
    rng = random.Random(seed)  # noqa: S311 (a traffic sample, not a secret)
    arrivals: list[Arrival] = []
    windows: list[tuple[float, float]] = []
    for hour, per_hour in enumerate(traffic.requests_per_hour):
        start = hour * 3600.0
        windows.append((start, start + sample_s))
        for t in poisson_arrivals(per_hour / 3600.0, start, sample_s, rng):
            arrivals.append(Arrival(t, traffic.name, traffic.input_tokens, traffic.output_tokens, hour))
    return arrivals, windows


def scale_week(
    traffic: FeatureTraffic, tallies: Mapping[int, Tally], model_of: Mapping[str, str], units: int
) -> Scenario:
    """Hour by hour, scale the sampled requests' fates to the hour's request count. An hour with requests but no
    sampled arrival takes the sampled week's shares."""
    s = Scenario(units)
    week = _sum(tallies.values())
    s.sampled_requests = week.requests
    od_in: dict[str, float] = {}
    od_out: dict[str, float] = {}
    for hour, per_hour in enumerate(traffic.requests_per_hour):
        sampled = tallies.get(hour)
        t = sampled if sampled is not None and sampled.requests else week
        scale = per_hour / t.requests if t.requests else 0.0
        s.requests += per_hour
        s.on_provisioned += t.on_provisioned * scale
        s.spilled += t.spilled * scale
        s.throttled += t.throttled * scale
        s.dropped += t.dropped * scale
        s.hourly_on_provisioned.append(t.on_provisioned * scale)
        s.hourly_other.append((t.served - t.on_provisioned) * scale)
        for tokens, into in ((t.input_tokens_by_target, od_in), (t.output_tokens_by_target, od_out)):
            for tid, n in tokens.items():
                if tid.split("/")[1] != "provisioned":
                    into[model_of[tid]] = into.get(model_of[tid], 0.0) + n * scale
    s.tokens_by_model_od = {m: (od_in.get(m, 0.0), od_out.get(m, 0.0)) for m in sorted(set(od_in) | set(od_out))}
    return s


def _sum(tallies: Iterable[Tally]) -> Tally:
    out = Tally()
    for t in tallies:
        for name in (
            "requests",
            "served",
            "on_provisioned",
            "spilled",
            "fell_back",
            "failed_over",
            "throttled",
            "dropped",
        ):
            setattr(out, name, getattr(out, name) + getattr(t, name))
        for mine, theirs in (
            (out.input_tokens_by_target, t.input_tokens_by_target),
            (out.output_tokens_by_target, t.output_tokens_by_target),
        ):
            for tid, n in theirs.items():
                mine[tid] = mine.get(tid, 0) + n
    return out


def price_scenario(s: Scenario, model: str, traffic: Traffic, prices: Prices, tier: str = "standard") -> None:
    s.pt_cost_month = (
        s.units * prices.pt_price(model, traffic.pt_term).per_unit_hour * HOURS_PER_MONTH if s.units else 0.0
    )
    s.on_demand_cost_month = (
        sum(prices.on_demand_price(m, tier).cost(tin, tout) for m, (tin, tout) in s.tokens_by_model_od.items())
        * WEEKS_PER_MONTH
    )


def judge(s: Scenario, f: FeatureTraffic) -> None:
    g = f.goals
    checks = [
        (s.pt_share >= g.min_pt_share, f"PT share {s.pt_share:.1%} < {g.min_pt_share:.1%}"),
        (s.spill_share <= g.max_spill_share, f"spill {s.spill_share:.1%} > {g.max_spill_share:.1%}"),
        (
            s.throttled_share <= g.max_throttled_share,
            f"throttled {s.throttled_share:.2%} > {g.max_throttled_share:.2%}",
        ),
        (s.drop_share <= g.max_drop_share, f"dropped {s.drop_share:.2%} > {g.max_drop_share:.2%}"),
    ]
    s.misses = [why for ok, why in checks if not ok]
    s.meets_goals = not s.misses


def batch_alternatives(s: Scenario, prices: Prices) -> dict[str, float]:
    """Monthly cost of the all-on-demand scenario's tokens at standard, Flex and batch-inference prices (a tier
    with no price for a model served is left out)."""
    out: dict[str, float] = {}

    def total(price_of: Callable[[str], TokenPrice | None]) -> float | None:
        cost = 0.0
        for m, (tin, tout) in s.tokens_by_model_od.items():
            p = price_of(m)
            if p is None:
                return None
            cost += p.cost(tin, tout)
        return cost * WEEKS_PER_MONTH

    for name, price_of in (
        ("standard", lambda m: prices.on_demand.get(m, {}).get("standard")),
        ("flex", lambda m: prices.on_demand.get(m, {}).get("flex")),
        ("batch", prices.batch.get),
    ):
        value = total(price_of)
        if value is not None:
            out[name] = value
    return out


def plan_feature(
    name: str,
    base_table: Mapping[str, Any],
    traffic: Traffic,
    prices: Prices,
    *,
    progress: Callable[[str, float], None] | None = None,
    shape: str = "shared",
) -> FeaturePlan:
    f = traffic.features[name]
    feat = base_table["features"][name]
    model, region = feat["models"][0], feat["home_region"]
    cap = traffic.capacity.get(model)
    if cap is None:
        raise InputError(traffic.source, f"capacity.models.{model}", f"missing: {name} starts on this model")
    top = peak_units(f, cap.tokens_per_minute_per_unit, cap.max_in_flight_per_unit, cap.latency_s(f.output_tokens))
    arrivals, windows = week_arrivals(f, traffic.sample_minutes * 60.0, traffic.seed)
    scenarios: list[Scenario] = []
    for units in range(0, top + 1):
        doc = scenario_table(base_table, name, units, cap.max_in_flight_per_unit)
        specs = scenario_specs(doc, traffic, {f"{model}/provisioned/{region}": units})
        report = None if progress is None else partial(progress, f"{name}: {units} model unit(s)")
        tallies = replay(doc, specs, arrivals, windows=windows, progress=report, shape=shape)
        s = scale_week(f, tallies, {tid: t["model"] for tid, t in doc["targets"].items()}, units)
        price_scenario(s, model, traffic, prices)
        judge(s, f)
        scenarios.append(s)
    plan = FeaturePlan(name, model, region, traffic.pt_term, top, f.peak_tokens_per_minute, scenarios, shape)
    # One unit at full use: its tokens a minute, or the requests in flight it holds over the latency, if fewer.
    by_concurrency = cap.max_in_flight_per_unit / cap.latency_s(f.output_tokens) * 3600.0 * f.tokens_per_request
    plan.unit_tokens_per_hour = min(cap.tokens_per_minute_per_unit * 60.0, by_concurrency)
    plan.unit_hour_price = prices.pt_price(model, traffic.pt_term).per_unit_hour
    share_in = f.input_tokens / f.tokens_per_request
    plan.on_demand_value_of_unit_hour = prices.on_demand_price(model).cost(
        plan.unit_tokens_per_hour * share_in, plan.unit_tokens_per_hour * (1 - share_in)
    )
    if f.batch:
        plan.batch = batch_alternatives(plan.all_on_demand, prices)
    reserved = prices.reserved.get(model)
    if reserved is not None:
        plan.reserved_for_peak_month = (
            max(f.peak_tokens_per_minute, reserved.min_tpm) / 1000.0 * reserved.per_1k_tpm_month
        )
    return plan


@dataclass
class Together:
    """The chosen plans replayed at once, on one table: what each feature gets when they share capacity."""

    units: dict[str, int]  # PT target id -> model units (summed where features share one)
    scenarios: dict[str, Scenario]  # feature -> its figures in the joint replay


def check_together(
    plans: list[FeaturePlan],
    base_table: Mapping[str, Any],
    traffic: Traffic,
    prices: Prices,
    *,
    shape: str = "shared",
) -> Together:
    """Replay every feature's chosen plan (the cheapest meeting its goals, else the peak's) together, on one table
    (`base_table` must serve every planned feature), so features that share a PT or an on-demand quota meet."""
    chosen = {p.feature: (p.cheapest or p.peak) for p in plans}
    doc = copy.deepcopy(dict(base_table))
    doc["targets"] = {tid: t for tid, t in doc["targets"].items() if t["capacity"] != "provisioned"}
    units: dict[str, int] = {}
    features: dict[str, Any] = {}
    for p in plans:
        one = scenario_table(base_table, p.feature, chosen[p.feature].units, 1)
        features[p.feature] = one["features"][p.feature]
        for tid, t in one["targets"].items():
            if t["capacity"] == "provisioned":
                units[tid] = units.get(tid, 0) + chosen[p.feature].units
                doc["targets"][tid] = t
    for tid, n in units.items():
        doc["targets"][tid]["max_in_flight"] = n * traffic.capacity[doc["targets"][tid]["model"]].max_in_flight_per_unit
    doc["features"] = features
    specs = scenario_specs(doc, traffic, units)
    arrivals: list[Arrival] = []
    windows: list[tuple[float, float]] = []
    for i, p in enumerate(plans):
        mine, windows = week_arrivals(traffic.features[p.feature], traffic.sample_minutes * 60.0, traffic.seed + i)
        arrivals += [replace(a, bucket=i * _BUCKETS + a.bucket) for a in mine]
    arrivals.sort(key=lambda a: a.at_s)
    tallies = replay(doc, specs, arrivals, windows=windows, shape=shape)
    model_of = {tid: t["model"] for tid, t in doc["targets"].items()}
    out: dict[str, Scenario] = {}
    for i, p in enumerate(plans):
        mine_only = {b - i * _BUCKETS: t for b, t in tallies.items() if i * _BUCKETS <= b < (i + 1) * _BUCKETS}
        s = scale_week(traffic.features[p.feature], mine_only, model_of, chosen[p.feature].units)
        price_scenario(s, p.model, traffic, prices)
        judge(s, traffic.features[p.feature])
        out[p.feature] = s
    return Together(units, out)


_BUCKETS = 1000  # bucket = feature index x this + hour of the week

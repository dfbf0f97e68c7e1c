"""The planner's outputs: a markdown table, the same figures as JSON, and two plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from tools.planner.inputs import Prices, Traffic
from tools.planner.plan import FeaturePlan, Scenario, Together


def _money(value: float | None) -> str:
    return "n/a" if value is None else f"${value:,.0f}"


def scenario_json(s: Scenario, p: FeaturePlan, tokens_per_request: int) -> dict[str, Any]:
    return {
        "model_units": s.units,
        "pt_utilisation": round(p.utilisation(s, tokens_per_request), 4),
        "cost_per_month": round(s.total_month, 2),
        "pt_cost_per_month": round(s.pt_cost_month, 2),
        "on_demand_cost_per_month": round(s.on_demand_cost_month, 2),
        "requests_per_week": round(s.requests),
        "sampled_requests": s.sampled_requests,
        "pt_share": round(s.pt_share, 4),
        "spill_share": round(s.spill_share, 4),
        "spilled_requests_per_week": round(s.spilled),
        "throttled_share": round(s.throttled_share, 5),
        "drop_share": round(s.drop_share, 5),
        "meets_goals": s.meets_goals,
        "misses": s.misses,
    }


def plan_json(plans: list[FeaturePlan], traffic: Traffic, prices: Prices) -> dict[str, Any]:
    out: dict[str, Any] = {
        "traffic": traffic.source,
        "prices": prices.source,
        "currency": prices.currency,
        "pt_term": traffic.pt_term,
        "sample_minutes_per_hour": traffic.sample_minutes,
        "router_shape": plans[0].shape if plans else "shared",
        "unconfirmed_prices": unconfirmed(prices),
        "features": {},
    }
    for p in plans:
        cheapest = p.cheapest
        tpr = traffic.features[p.feature].tokens_per_request
        out["features"][p.feature] = {
            "model": p.model,
            "region": p.region,
            "peak_tokens_per_minute": round(p.peak_tokens_per_minute),
            "unit_tokens_per_hour_at_full_use": round(p.unit_tokens_per_hour),
            "unit_hour_price": p.unit_hour_price,
            "on_demand_value_of_unit_hour": round(p.on_demand_value_of_unit_hour, 2),
            "break_even_utilisation": round(p.break_even_utilisation, 4),
            "all_on_demand": scenario_json(p.all_on_demand, p, tpr),
            "pt_for_peak": scenario_json(p.peak, p, tpr),
            "cheapest_meeting_goals": None if cheapest is None else scenario_json(cheapest, p, tpr),
            "scenarios": [scenario_json(s, p, tpr) for s in p.scenarios],
            "batch_alternatives_per_month": p.batch,
            "reserved_tier_for_peak_per_month": p.reserved_for_peak_month,
        }
    return out


def unconfirmed(prices: Prices) -> list[str]:
    keys: list[str] = []
    for model, tiers in prices.on_demand.items():
        keys += [f"on_demand.{model}.{t}" for t, p in tiers.items() if not p.confirmed]
    keys += [f"batch.{m}" for m, p in prices.batch.items() if not p.confirmed]
    for model, terms in prices.provisioned.items():
        keys += [f"provisioned.{model}.{t}" for t, p in terms.items() if not p.confirmed]
    keys += [f"reserved.{m}" for m, p in prices.reserved.items() if not p.confirmed]
    return keys


def plan_markdown(plans: list[FeaturePlan], traffic: Traffic, prices: Prices) -> str:
    lines = [
        "# Capacity and cost plan",
        "",
        f"Traffic `{traffic.source}`, prices `{prices.source}` ({prices.currency}, PT term {traffic.pt_term}). "
        f"Each hour of the week replayed through the router's engine for its first {traffic.sample_minutes:g} "
        "minutes, against emulated capacity; shares are of the week's requests. Router shape: "
        + (
            "one view for the fleet (fleet-wide in-flight counts and breakers)."
            if not plans or plans[0].shape == "shared"
            else "a Lambda fleet without shared state (one engine per environment, one request each)."
        ),
        "",
        "| feature | plan | model units | cost / month | on PT | spilled (requests / week) | throttled | dropped "
        "| meets goals |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in plans:
        rows = [("all on-demand", p.all_on_demand), ("PT sized for the peak", p.peak)]
        cheapest = p.cheapest
        if cheapest is not None:
            rows.append(("cheapest meeting goals", cheapest))
        for label, s in rows:
            lines.append(
                f"| {p.feature} | {label} | {s.units} | {_money(s.total_month)} | {s.pt_share:.1%} | "
                f"{s.spill_share:.1%} ({s.spilled:,.0f}) | {s.throttled_share:.2%} | {s.drop_share:.2%} | "
                f"{'yes' if s.meets_goals else 'no: ' + '; '.join(s.misses)} |"
            )
        if cheapest is None:
            lines.append(
                f"| {p.feature} | cheapest meeting goals | none: no model-unit count meets the goals | | | | | | |"
            )
    lines += [
        "",
        "## Every model-unit count",
        "",
        "| feature | model units | PT / month | on-demand / month | total | on PT | spilled | throttled "
        "| PT utilisation |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in plans:
        tpr = traffic.features[p.feature].tokens_per_request
        for s in p.scenarios:
            lines.append(
                f"| {p.feature} | {s.units} | {_money(s.pt_cost_month)} | {_money(s.on_demand_cost_month)} | "
                f"{_money(s.total_month)} | {s.pt_share:.1%} | {s.spill_share:.1%} | {s.throttled_share:.2%} | "
                f"{p.utilisation(s, tpr):.1%} |"
            )
    lines += ["", "## Break-even", ""]
    for p in plans:
        lines.append(
            f"- {p.feature}: one unit of {p.model} serves up to {p.unit_tokens_per_hour:,.0f} tokens an hour of this "
            f"feature's mix, worth {_money(p.on_demand_value_of_unit_hour)} on on-demand, for "
            f"${p.unit_hour_price:,.2f} an hour (term {p.term}): "
            + (
                f"PT pays when a unit is busy more than {p.break_even_utilisation:.0%} of the time."
                if p.break_even_utilisation <= 1
                else f"PT never pays (it would need {p.break_even_utilisation:.0%} use)."
            )
        )
    batch = [p for p in plans if p.batch]
    if batch:
        lines += [
            "",
            "## Batch work off the standard tier",
            "",
            "| feature | standard | Flex | saves | batch inference | saves |",
            "|---|---|---|---|---|---|",
        ]
        for p in batch:
            b = p.batch or {}
            std = b.get("standard")
            flex, bat = b.get("flex"), b.get("batch")
            lines.append(
                f"| {p.feature} | {_money(std)} | {_money(flex)} | "
                f"{_money(None if std is None or flex is None else std - flex)} | {_money(bat)} | "
                f"{_money(None if std is None or bat is None else std - bat)} |"
            )
    reserved = [p for p in plans if p.reserved_for_peak_month is not None]
    if reserved:
        lines += ["", "Reserved tier sized for the peak (overflow goes to standard by itself): "]
        lines += [f"- {p.feature}: {_money(p.reserved_for_peak_month)} a month before overflow" for p in reserved]
    missing = unconfirmed(prices)
    if missing:
        lines += [
            "",
            "Prices not confirmed from AWS's own pages (see each entry's source): "
            + ", ".join(f"`{k}`" for k in missing)
            + ".",
        ]
    return "\n".join(lines) + "\n"


def together_markdown(plans: list[FeaturePlan], together: Together | None) -> str:
    if together is None:
        return "\nThe chosen plans were not replayed together: no one routing table serves every planned feature.\n"
    lines = [
        "",
        "## The chosen plans together",
        "",
        "Every feature's chosen plan (the cheapest meeting its goals) replayed at once, on one table: features that",
        "share a PT or an on-demand quota meet here. PT bought: "
        + (", ".join(f"`{tid}` {n} MU" for tid, n in sorted(together.units.items())) or "none")
        + ".",
        "",
        "| feature | model units | cost / month | on PT | spilled | throttled | dropped | meets goals |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in plans:
        s = together.scenarios[p.feature]
        lines.append(
            f"| {p.feature} | {s.units} | {_money(s.total_month)} | {s.pt_share:.1%} | {s.spill_share:.1%} | "
            f"{s.throttled_share:.2%} | {s.drop_share:.2%} | "
            f"{'yes' if s.meets_goals else 'no: ' + '; '.join(s.misses)} |"
        )
    return "\n".join(lines) + "\n"


def write_plots(plans: list[FeaturePlan], traffic: Traffic, out: Path) -> list[Path]:
    paths: list[Path] = []
    fig, axes = plt.subplots(len(plans), 1, figsize=(11, 3.2 * len(plans)), squeeze=False)
    for ax, p in zip(axes[:, 0], plans, strict=True):
        f = traffic.features[p.feature]
        cap = traffic.capacity[p.model]
        hours = range(len(f.requests_per_hour))
        ax.plot(
            hours,
            [r * f.tokens_per_request / 60.0 for r in f.requests_per_hour],
            label="traffic (tokens/min)",
            color="black",
        )
        chosen = p.cheapest or p.peak
        for s, style in ((chosen, "-"), (p.peak, "--")):
            if s.units:
                ax.axhline(s.units * cap.tokens_per_minute_per_unit, linestyle=style, label=f"PT {s.units} MU")
        served_pt = [h * f.tokens_per_request / 60.0 for h in chosen.hourly_on_provisioned]
        ax.fill_between(hours, 0, served_pt, alpha=0.3, label=f"served on PT ({chosen.units} MU, replay)")
        ax.set_title(f"{p.feature}: traffic against PT capacity over the week")
        ax.set_xlabel("hour of the week (0 = Monday 00:00 UTC)")
        ax.set_ylabel("tokens per minute")
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path = out / "traffic.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    paths.append(path)
    fig, axes = plt.subplots(1, len(plans), figsize=(5.5 * len(plans), 4), squeeze=False)
    for ax, p in zip(axes[0, :], plans, strict=True):
        units = [s.units for s in p.scenarios]
        ax.plot(units, [s.total_month for s in p.scenarios], marker="o", label="total")
        ax.plot(units, [s.pt_cost_month for s in p.scenarios], marker=".", linestyle="--", label="PT")
        ax.plot(units, [s.on_demand_cost_month for s in p.scenarios], marker=".", linestyle=":", label="on-demand")
        ok = [s for s in p.scenarios if s.meets_goals]
        ax.scatter(
            [s.units for s in ok],
            [s.total_month for s in ok],
            s=120,
            facecolors="none",
            edgecolors="green",
            label="meets goals",
        )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{p.feature}: cost against model units")
        ax.set_xlabel("model units")
        ax.set_ylabel("cost per month")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "cost.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    paths.append(path)
    return paths


def write_report(
    plans: list[FeaturePlan],
    traffic: Traffic,
    prices: Prices,
    out: Path,
    *,
    plots: bool = True,
    together: Together | None = None,
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    md = out / "plan.md"
    md.write_text(plan_markdown(plans, traffic, prices) + together_markdown(plans, together))
    js = out / "plan.json"
    doc = plan_json(plans, traffic, prices)
    if together is not None:
        doc["together"] = {
            "pt_units": together.units,
            "features": {
                p.feature: scenario_json(
                    together.scenarios[p.feature], p, traffic.features[p.feature].tokens_per_request
                )
                for p in plans
            },
        }
    js.write_text(json.dumps(doc, indent=2) + "\n")
    return [md, js, *(write_plots(plans, traffic, out) if plots else [])]

"""The fleet figures as a Markdown table, rendered from local/benchmarks/results.json into README.md and
local/benchmarks/README.md (between the ``fleet-figures`` markers), so the published figures are the measured ones and a
missed goal reads as missed. ``python -m local.benchmarks.report`` rewrites both; a test fails when either is stale.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "local" / "benchmarks" / "results.json"
DOCUMENTS = (ROOT / "README.md", ROOT / "local" / "benchmarks" / "README.md")
BEGIN, END = "<!-- fleet-figures:begin -->", "<!-- fleet-figures:end -->"
RUNS = (("fleet_before_shared_state", "before fleet-wide state"), ("fleet", "with fleet-wide state"))


def _failover(run: Mapping[str, Any]) -> str:
    per_target = run["failed_attempts_per_dead_target"]
    stop = run["ordinary_traffic_to_dead_targets_stopped_after_s"]
    lost = run["lost"]
    lost_text = f"{lost} of {run['requests']} lost"
    if "lambda_throttles" in run:  # the caller retried as an SDK does; the fleet counted its throttles
        lost_text += (
            f" ({_count(run['lambda_throttles'], 'Lambda throttle')}; "
            f"{run['retried_after_lambda_throttle']} served on a retry after one)"
        )
    else:
        throttled = run["lost_by_status"].get("500", 0)
        lost_text += f" ({throttled} throttled by Lambda)" if throttled else ""
    if lost and "lost_before_outage" in run:
        lost_text += f", {run['lost_before_outage']} of them before the outage"
    stop_text = "never" if stop is None else f"{stop} s"
    attempts = max(per_target.values(), default=0)
    paid = run["environments_that_paid_a_failure"]
    text = (
        f"{lost_text}; stopped after {stop_text}; {_count(attempts, 'failed attempt')} per dead target at most "
        f"({_count(paid, 'environment')} paid one)"
    )
    if "environments_peak" in run:
        text += (
            f"; {run['environments_peak']} environments at the peak of {run['reserved_concurrency']} reserved "
            f"({run['environments_started_on_request']} started on request)"
        )
    return text


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _rows(doc: Mapping[str, Any]) -> list[tuple[str, str, dict[str, tuple[str, bool]]]]:
    """(figure, goal, {run key: (measured text, goal met)})."""
    rows: list[tuple[str, str, dict[str, tuple[str, bool]]]] = []

    def add(figure: str, goal: str, pick: Any) -> None:
        cells: dict[str, tuple[str, bool]] = {}
        for key, _ in RUNS:
            run = doc.get(key)
            if run is None:
                continue
            try:
                cells[key] = pick(run)
            except KeyError:
                continue
        rows.append((figure, goal, cells))

    failover_goal = "0 lost; stopped within 1.5 s; at most 10 failed attempts per dead target"
    for size in (16, 48):
        for mode in ("refused", "blackholed"):
            add(
                f"failover, {size} environments, home region {mode}",
                failover_goal,
                lambda run, s=size, m=mode: (
                    _failover(run[f"environments_{s}"][f"failover_{m}"]),
                    bool(run[f"environments_{s}"][f"failover_{m}"]["meets_goal"]),
                ),
            )

    def brownout(run: Mapping[str, Any]) -> tuple[str, bool]:
        b = run["environments_16"]["brownout"]
        trip = b["home_targets_tripped_after_s"]
        trip_text = f"not within {b['seconds_observed']:g} s" if trip is None else f"{trip} s"
        share = b["home_first_share_last_2s"]
        threshold = b.get("error_rate_threshold", 0.5)  # the runs before it was set used the feature's default
        text = (
            f"tripped: {trip_text} (error-rate threshold {threshold:.0%}; home tried first in the last 2 s: "
            f"{share:.0%}); {b['lost']} lost"
        )
        return text, bool(b["meets_goal"])

    add("brownout, 30% 5xx, 16 environments", "home targets trip within 5 s; 0 lost", brownout)

    def spillover(run: Mapping[str, Any]) -> tuple[str, bool]:
        s = run["environments_48"]["spillover"]
        share = s["spilled_throttled_first_share"]
        text = f"{s['dropped']} of {s['requests']} dropped; {share:.1%} of {s['spilled']} spilled throttled first"
        return text, bool(s["meets_goal"])

    add("spillover, 3x PT, 48 environments", "0 dropped; at most 5% throttled first", spillover)

    def recovery(run: Mapping[str, Any]) -> tuple[str, bool]:
        r = run["environments_48"]["recovery"]
        worst = max(r["probes_per_target_per_cooldown"].values(), default=0.0)
        text = f"{worst:g} probe{'' if worst == 1 else 's'} per target per {r['cooldown_s']:g} s cooldown"
        return text, bool(r["meets_goal"])

    add("recovery, 48 environments", "1 probe per target per cooldown", recovery)

    def price(run: Mapping[str, Any]) -> tuple[str, bool]:
        p = run["price_of_sharing"]
        counted = p["with_store"]["router_store_stats"]
        added = p["added_latency_ms"]
        pt, od = added["pt_latency_ms"], added["on_demand_latency_ms"]
        if "provisioned" in counted or "on_demand" in counted:
            trips = ", ".join(
                f"{counted[k]['round_trips_per_request']:g} round trips per {name} request "
                f"({counted[k]['store_ms_per_request']:g} ms)"
                for k, name in (("provisioned", "PT"), ("on_demand", "on-demand"))
                if k in counted
            )
        else:
            trips = "no round trips (the router does not use the store)"
        text = f"{trips}; p50/p99 {pt['p50']:+g}/{pt['p99']:+g} ms (PT), {od['p50']:+g}/{od['p99']:+g} ms (on-demand)"
        return text, True

    add("price of sharing, 8 environments", "measured (no goal)", price)

    def cold(run: Mapping[str, Any]) -> tuple[str, bool]:
        c = run["environments_48"]["cold_start"]
        text = (
            f"p50 {c['cold_start_ms']['p50']:g} ms, max {c['cold_start_ms']['max']:g} ms "
            f"({c['environments']} started {c['started_at_once']} at a time, {c['setup_s']:g} s)"
        )
        return text, True

    add("cold start of an environment", "measured (no goal)", cold)
    return rows


def render(doc: Mapping[str, Any]) -> str:
    present = [(key, title) for key, title in RUNS if key in doc]
    header = "| figure | goal | " + " | ".join(f"{title} ({doc[key].get('router', '?')})" for key, title in present)
    lines = [header + " |", "|---|---|" + "---|" * len(present)]
    for figure, goal, cells in _rows(doc):
        measured = []
        for key, _ in present:
            text, met = cells.get(key, ("not measured", False))
            verdict = "" if goal.startswith("measured") else (" **met**" if met else " **missed**")
            measured.append(text + verdict)
        lines.append(f"| {figure} | {goal} | " + " | ".join(measured) + " |")
    loads = [
        f"{doc[key]['machine_before']['load_average_1m']:g}-{doc[key]['machine_after']['load_average_1m']:g}"
        for key, _ in present
    ]
    cores = {doc[key]["machine_before"]["cores"] for key, _ in present}
    lines.append("")
    lines.append(
        "Shape: a fleet of execution environments (`local/localrun/fleet_world.py`), 500 ms model. Machine: "
        f"{'/'.join(str(c) for c in sorted(cores))} cores, 1-minute load average {' and '.join(loads)} at the start "
        "and end of the runs (other engineers' jobs shared it)."
    )
    for key, title in present:
        for scenario, note in sorted((doc[key].get("reruns") or {}).items()):
            machine = f"{note['machine_before']['load_average_1m']:g}-{note['machine_after']['load_average_1m']:g}"
            lines.append(f"Rerun alone ({title}): {scenario}, on {note['router']}, load average {machine}.")
    return "\n".join(lines)


def splice(text: str, table: str) -> str:
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise ValueError("no fleet-figures markers")
    return pattern.sub(lambda _: f"{BEGIN}\n{table}\n{END}", text)


def main() -> int:
    table = render(json.loads(RESULTS.read_text()))
    for path in DOCUMENTS:
        path.write_text(splice(path.read_text(), table))
        print(f"wrote the fleet figures into {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

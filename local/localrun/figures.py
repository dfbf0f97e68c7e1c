"""Figures of a run (benchmarks, chaos), computed from its records: what each caller saw (status, route, environment).

Pure functions over :class:`localrun.traffic.Record`, so that each figure is checked against records with a planted
weakness (tests/unit/test_fleet_figures.py). Times are seconds on the traffic's clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from local.localrun.traffic import Record, percentile

FAILED = frozenset({"unavailable", "ours"})  # an attempt sent that failed (engine Outcome values)


@dataclass(frozen=True)
class DeadAttempt:
    sent_s: float  # when the router began the request's attempts (Record.attempts_from_s): it left then or later
    target: str
    environment: int | None


def dead_attempts(records: Iterable[Record], dead: set[str], since_s: float = 0.0) -> list[DeadAttempt]:
    """Every failed attempt on a dead target by a request sent at or after `since_s`, in time order."""
    out = [
        DeadAttempt(r.attempts_from_s, target, r.environment)
        for r in records
        if r.sent_s >= since_s
        for target, outcome in r.route
        if target in dead and outcome in FAILED
    ]
    return sorted(out, key=lambda a: a.sent_s)


def failed_attempts_per_target(attempts: Sequence[DeadAttempt]) -> dict[str, int]:
    return dict(sorted(Counter(a.target for a in attempts).items()))


def ordinary_traffic_stop_s(attempts: Sequence[DeadAttempt], cooldown_s: float) -> float | None:
    """Seconds from the first failed attempt on a dead target to the last one sent within the first cooldown after
    it: until then every environment was still sending ordinary traffic there. Attempts later than one cooldown
    after the first failure may be half-open probes, and are counted apart (``probe_attempts``). None: no failure.
    A figure equal to the cooldown means ordinary traffic may have gone on longer."""
    if not attempts:
        return None
    first = attempts[0].sent_s
    within = [a.sent_s for a in attempts if a.sent_s < first + cooldown_s]
    return round(max(within) - first, 3)


def probe_attempts(attempts: Sequence[DeadAttempt], cooldown_s: float) -> int:
    if not attempts:
        return 0
    first = attempts[0].sent_s
    return sum(1 for a in attempts if a.sent_s >= first + cooldown_s)


def environments_that_failed(attempts: Sequence[DeadAttempt]) -> int:
    """How many environments paid at least one failed attempt on a dead target (each learnt on its own)."""
    return len({a.environment for a in attempts if a.environment is not None})


def first_attempt_share(records: Sequence[Record], target: str) -> float:
    """Share of requests whose first attempt went to `target`."""
    if not records:
        return 0.0
    return sum(1 for r in records if r.route and r.route[0][0] == target) / len(records)


def trip_time_s(records: Sequence[Record], home: set[str], start_s: float, window_s: float = 1.0) -> float | None:
    """Seconds from `start_s` to the last request that tried a home target first before a gap of at least
    `window_s` with none (traffic still flowing): the fleet stopped sending ordinary traffic home then. A probe
    after the cooldown does not undo it. None: home was tried first all along."""
    later = sorted((r for r in records if r.sent_s >= start_s), key=lambda r: r.sent_s)
    if not later:
        return None
    home_first = [r.sent_s for r in later if r.route and r.route[0][0] in home]
    if not home_first:
        return 0.0
    end = later[-1].sent_s
    for here, after in zip(home_first, [*home_first[1:], None], strict=True):
        gap_end = end if after is None else after
        if gap_end - here >= window_s:
            return round(here - start_s, 3)
    return None


def spill_figures(records: Sequence[Record], spilled: Sequence[Record]) -> dict[str, float | int]:
    throttled_first = sum(1 for r in spilled if r.throttled_first)
    return {
        "requests": len(records),
        "dropped": sum(1 for r in records if not r.served),
        "spilled": len(spilled),
        "spilled_throttled_first": throttled_first,
        "spilled_throttled_first_share": round(throttled_first / len(spilled), 4) if spilled else 0.0,
    }


def latency_ms(records: Sequence[Record]) -> dict[str, float]:
    values = [r.latency_ms for r in records if r.served]
    return {"p50": round(percentile(values, 50), 1), "p99": round(percentile(values, 99), 1)}


def lost(records: Sequence[Record]) -> dict[str, int]:
    """Answers other than 200, by status (0: no HTTP answer at all)."""
    return dict(sorted(Counter(r.status for r in records if not r.served).items()))


def peak_in_flight(records: Sequence[Record]) -> int:
    """The most requests in flight at once, from each request's send to its final answer (its retries included):
    the concurrency the caller's traffic asked of the fleet."""
    edges = sorted([(r.sent_s, 1) for r in records] + [(r.done_s, -1) for r in records], key=lambda e: (e[0], e[1]))
    peak = level = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak

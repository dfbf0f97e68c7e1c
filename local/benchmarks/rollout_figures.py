"""Figures of a canary rollout and its yank, from what each caller saw (pure; tests/unit/test_rollout_figures.py).

A request's place in the canary is the router's own bucket of its request id (``spillway.routing_source.bucket``,
read back from ``x-spillway-request-id``): under a share ``s`` it goes to the canary model first iff its bucket is
under ``s``. A request whose side differs between the old and the new share is *telling*: whether its first attempt
went to the canary model says which of the two tables the answering environment routed with. Times are seconds on
the run's clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Sample:
    sent_s: float
    environment: int | None  # the fleet's environment that answered
    bucket: float  # the router's bucket of the request id, in [0, 1)
    canary_first: bool  # the first attempt went to the canary model
    status: int


def canary_side(bucket: float, share: float) -> bool:
    """Whether a request of this bucket goes to the canary first under `share` (routing_source.Snapshot)."""
    return share > 0 and bucket < share


def telling(sample: Sample, old: float, new: float) -> bool:
    return canary_side(sample.bucket, old) != canary_side(sample.bucket, new)


def follows_new(sample: Sample, new: float) -> bool:
    return sample.canary_first == canary_side(sample.bucket, new)


@dataclass(frozen=True)
class Move:
    """One environment across a flag change: its last request that still followed the old share, its first that
    followed the new one, and old-share requests after that first (an environment that went back: never expected)."""

    environment: int
    telling: int
    last_old_s: float | None  # after the change; None: none followed the old share
    first_new_s: float | None  # None: never moved in the window
    reverted: int


def moves(samples: Iterable[Sample], change_s: float, old: float, new: float) -> dict[int, Move]:
    """Per environment, the telling requests sent at or after `change_s` (served ones only), as a :class:`Move`."""
    by_env: dict[int, list[Sample]] = {}
    for s in samples:
        if s.environment is not None and s.status == 200 and s.sent_s >= change_s and telling(s, old, new):
            by_env.setdefault(s.environment, []).append(s)
    out: dict[int, Move] = {}
    for env, seen in sorted(by_env.items()):
        seen.sort(key=lambda s: s.sent_s)
        first_new = next((s.sent_s for s in seen if follows_new(s, new)), None)
        old_ones = [s.sent_s for s in seen if not follows_new(s, new)]
        reverted = 0 if first_new is None else sum(1 for t in old_ones if t > first_new)
        out[env] = Move(
            env,
            len(seen),
            round(max(old_ones) - change_s, 3) if old_ones else None,
            None if first_new is None else round(first_new - change_s, 3),
            reverted,
        )
    return out


def nearest_rank(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))
    return ordered[index]


def direction_figures(found: Mapping[int, Move], served_envs: int, goal_s: float) -> dict[str, Any]:
    """One direction (rollout or yank): **stale until** is the last request, over the whole fleet, that still
    followed the old share (traffic had moved everywhere by then); **moved by** per environment is its first request
    on the new share (an upper bound: it waits for that environment's next telling request). The goal is met when
    every environment seen moved, none went back, and stale-until is within `goal_s`."""
    stale = [m.last_old_s for m in found.values() if m.last_old_s is not None]
    moved = [m.first_new_s for m in found.values() if m.first_new_s is not None]
    never = sorted(m.environment for m in found.values() if m.first_new_s is None)
    reverted = sum(m.reverted for m in found.values())
    stale_until = max(stale, default=0.0)
    figures: dict[str, Any] = {
        "environments_that_served": served_envs,
        "environments_seen": len(found),
        "environments_never_moved": never,
        "stale_until_s": round(stale_until, 3),
        "moved_by_s": {
            "p50": round(nearest_rank(moved, 0.5), 3) if moved else None,
            "p90": round(nearest_rank(moved, 0.9), 3) if moved else None,
            "max": round(max(moved), 3) if moved else None,
        },
        "reverted_requests": reverted,
        "goal_s": goal_s,
    }
    figures["meets_goal"] = bool(found and not never and reverted == 0 and stale_until <= goal_s)
    return figures


@dataclass(frozen=True, slots=True)
class Thawed:
    """The first request an environment served after a freeze that spanned the flag change."""

    environment: int
    since_change_s: float
    since_refresh_s: float  # since the request before the freeze, which refreshed its config (the cache had expired)
    followed_new: bool


def thaw_figures(thawed: Sequence[Thawed], ttl_s: float, goal_s: float) -> dict[str, Any]:
    """Whether a thawed environment's first request can still route with the old table, and for how long after
    the change: stale only while its own cache, refreshed before the freeze, is younger than the TTL. A stale answer
    with an older cache would mean the thaw did not refresh (counted in ``stale_past_ttl``)."""
    stale = [t for t in thawed if not t.followed_new]
    longest = max((t.since_change_s for t in stale), default=0.0)
    past_ttl = sum(1 for t in stale if t.since_refresh_s >= ttl_s)
    return {
        "first_requests_after_thaw": len(thawed),
        "stale": len(stale),
        "longest_stale_after_change_s": round(longest, 3),
        "stale_past_ttl": past_ttl,
        "goal_s": goal_s,
        "meets_goal": bool(thawed and past_ttl == 0 and longest <= goal_s),
    }

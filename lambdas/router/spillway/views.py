"""The bodies of the informational routes (``GET /v1/features``, ``GET /v1/health``), rendered from the router's
state. Beside spillway/api.py, which holds the routes and the request contract; the handler only calls these.

Nothing here names an ARN, a secret or request content: target ids, breaker states, timings and counts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from . import api
from .health import BreakerState, HealthBoard
from .routing_source import CANARY_SUFFIX, Snapshot


def features_body(snapshot: Snapshot) -> dict[str, Any]:
    """The features this deployment serves (canary variants are internal), with each one's canary if any."""
    if snapshot.table is None:
        return {"features": []}
    features = [
        api.public_feature(feature, snapshot.canaries[name].to_dict() if name in snapshot.canaries else None)
        for name, feature in sorted(snapshot.table.features.items())
        if CANARY_SUFFIX not in name
    ]
    return {"features": features}


def health_body(
    *,
    region: str,
    snapshot: Snapshot,
    board: HealthBoard,
    in_flight: Callable[[str], int],
    store_status: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """This instance's view of its targets: breaker state, cooldowns, trips and requests in flight."""
    now = board.clock()
    targets = []
    if snapshot.table is not None:
        for tid in sorted(snapshot.table.targets):
            state = board.state(tid)
            record = board.record_of(tid)
            cooldown = round(max(0.0, record.cooldown_until - now), 3) if state is BreakerState.OPEN else 0.0
            targets.append(
                {
                    "id": tid,
                    "state": state.value,
                    "cooldown_remaining_s": cooldown,
                    "capacity_cooldown_remaining_s": round(max(0.0, record.capacity_until - now), 3),
                    "trips": record.trips,
                    "in_flight": in_flight(tid),
                }
            )
    return {
        "region": region,
        "config": {
            "source": snapshot.source,
            "version": snapshot.version,
            "flags_version": snapshot.flags_version,
            "canaries": {name: c.to_dict() for name, c in snapshot.canaries.items()},
        },
        "store": dict(store_status) if store_status is not None else {"enabled": False},
        "targets": targets,
    }

"""The one place the planner touches the router's library: its routing table, engine, breakers and in-flight
tracker, built with their public constructors and one injected clock. Everything else in tools/planner speaks
in the terms below, so a change to the router's constructors is mended here only."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

_ROUTER_ROOT = Path(__file__).resolve().parents[2] / "lambdas" / "router"
if str(_ROUTER_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROUTER_ROOT))

from spillway.backends.contract import Backend, BackendReply, Usage  # noqa: E402
from spillway.backends.kinds import KINDS  # noqa: E402
from spillway.capacity import InflightTracker  # noqa: E402
from spillway.config import RoutingTable, Target, parse_routing_table  # noqa: E402
from spillway.engine import Engine, Outcome, RouteResult, Status  # noqa: E402
from spillway.errors import BackendError  # noqa: E402
from spillway.health import HealthBoard  # noqa: E402

__all__ = [
    "KINDS",
    "Backend",
    "BackendError",
    "BackendReply",
    "RouteResult",
    "Target",
    "Usage",
    "build_engine",
    "parse_table",
    "throttled",
    "was_served",
]


def parse_table(doc: Mapping[str, Any]) -> RoutingTable:
    return parse_routing_table(doc)


def build_engine(table: RoutingTable, backend: Backend, clock: Callable[[], float]) -> Engine:
    """An engine whose deadlines, breakers and learned limits all run on `clock` (simulated seconds)."""
    return Engine(
        table,
        dict.fromkeys(KINDS, backend),  # every kind of the registry, on the emulated capacity model
        health=HealthBoard(clock),
        clock=clock,
        tracker=InflightTracker(clock),
    )


def was_served(result: RouteResult) -> bool:
    return result.status is Status.SERVED


def throttled(result: RouteResult) -> bool:
    """Some attempt of this request met a throttle (the caller paid for a 429 round trip)."""
    return any(a.outcome is Outcome.CAPACITY for a in result.attempts)


def throttle_error() -> BackendError:
    return BackendError.of("ThrottlingException", 429)


def timeout_error() -> BackendError:
    return BackendError.of("ModelTimeoutException", 408)

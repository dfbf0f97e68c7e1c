"""Spillway: the router library. Pure Python, no AWS import; backends are injected."""

from .backends.contract import Backend, BackendReply, Usage
from .config import RoutingConfigError, RoutingTable, Target, load_routing_table, parse_routing_table
from .engine import Attempt, Engine, Outcome, RouteResult, Status
from .errors import BackendError, ErrorClass, classify
from .health import BreakerRecord, BreakerState, HealthBoard

__all__ = [
    "Attempt",
    "Backend",
    "BackendError",
    "BackendReply",
    "BreakerRecord",
    "BreakerState",
    "Engine",
    "ErrorClass",
    "HealthBoard",
    "Outcome",
    "RouteResult",
    "RoutingConfigError",
    "RoutingTable",
    "Status",
    "Target",
    "Usage",
    "classify",
    "load_routing_table",
    "parse_routing_table",
]

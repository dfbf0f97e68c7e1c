"""Spillway: the router library. Pure Python, no AWS import; backends are injected."""

from .config import RoutingConfigError, RoutingTable, Target, load_routing_table, parse_routing_table
from .engine import Attempt, Backend, BackendReply, Engine, Outcome, RouteResult, Status, Usage
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

"""Shared test doubles: a fake clock, a routing table builder and scripted backends. No sleeps anywhere."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from spillway.backends.contract import BackendReply
from spillway.config import RoutingTable, Target, load_routing_table, parse_routing_table
from spillway.errors import BackendError, ErrorClass
from tests.fakes import FakeClock

MODELS = ("claude-sonnet", "nova-lite")
REGIONS = ("us-east-1", "us-west-2")
FEATURE = "summarize-thread"


def table_dict(
    *,
    models: tuple[str, ...] = MODELS,
    regions: tuple[str, ...] = REGIONS,
    max_in_flight: int | None = None,
    feature: Mapping[str, Any] | None = None,
    breaker: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    targets: dict[str, Any] = {}
    for model in models:
        for capacity in ("provisioned", "on_demand"):
            for region in regions:
                entry: dict[str, Any] = {
                    "model": model,
                    "capacity": capacity,
                    "region": region,
                    "backend": {"kind": "bedrock", "model_id": f"{model}-{capacity}-{region}"},
                }
                if capacity == "provisioned" and max_in_flight is not None:
                    entry["max_in_flight"] = max_in_flight
                targets[f"{model}/{capacity}/{region}"] = entry
    feat: dict[str, Any] = {
        "first_capacity": "provisioned",
        "models": list(models),
        "home_region": regions[0],
        "failover_regions": list(regions[1:]),
        "deadline_ms": 20000,
        "attempt_timeout_ms": {"min": 300, "max": 8000},
        "max_attempts": 4,
        "breaker": {"consecutive_failures": 3, "cooldown_s": 5, "max_cooldown_s": 120, **(breaker or {})},
    }
    feat.update(feature or {})
    return {"version": 1, "targets": targets, "features": {FEATURE: feat}, "limits": {"max_request_bytes": 262144}}


def make_table(**kwargs: Any) -> RoutingTable:
    # Round trip through JSON text, as the Lambda reads it.
    table = load_routing_table(json.dumps(table_dict(**kwargs)))
    assert table == parse_routing_table(table_dict(**kwargs))
    return table


Behaviour = Callable[[Target, float], BackendReply]


def ok(latency_s: float = 0.0, ttft_ms: float | None = None) -> tuple[str, float, float | None]:
    return ("ok", latency_s, ttft_ms)


class ScriptedBackend:
    """Answers per target id from a script of outcomes (cycled), spending fake time within the timeout."""

    def __init__(self, clock: FakeClock, script: Mapping[str, list[tuple[str, float, float | None]]]) -> None:
        self.clock = clock
        self.script = {k: list(v) for k, v in script.items()}
        self.calls: list[tuple[str, float]] = []
        self.requests: list[Mapping[str, Any]] = []

    def invoke(self, target: Target, request: Mapping[str, Any], timeout_s: float) -> BackendReply:
        self.calls.append((target.id, timeout_s))
        self.requests.append(request)
        steps = self.script.get(target.id) or [("ok", 0.0, None)]
        kind, spend, ttft = steps.pop(0) if len(steps) > 1 else steps[0]
        if kind == "hang":  # a backend honouring its timeout: spends all of it, then times out
            self.clock.advance(timeout_s)
            raise BackendError(ErrorClass.UNAVAILABLE, "ReadTimeoutError")
        self.clock.advance(min(spend, timeout_s))
        if kind == "ok":
            return BackendReply({"output": {"message": {"content": [{"text": "fine"}]}}}, spend * 1000, ttft)
        if kind == "bug":
            raise RuntimeError("backend bug")
        if kind == "overflow":
            raise BackendError(ErrorClass.CLIENT, "ValidationException", 400, context_overflow=True)
        codes = {
            "capacity": ("ThrottlingException", 429),
            "unavailable": ("InternalServerException", 500),
            "client": ("ValidationException", 400),
            "ours": ("AccessDeniedException", 403),
        }
        code, status = codes[kind]
        raise BackendError.of(code, status)

"""Routing table loading: defaults, and a clear error naming the JSON path of each kind of bad key."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from spillway.backends.kinds import BedrockRef, SageMakerRef
from spillway.config import (
    MIN_ATTEMPT_MS,
    BreakerPolicy,
    Feature,
    RoutingConfigError,
    load_routing_table,
    load_routing_table_file,
    parse_routing_table,
)

from .helpers import FEATURE, table_dict

F = f"features.{FEATURE}"
PT = "claude-sonnet/provisioned/us-east-1"


def test_loads_the_contract_example_with_defaults() -> None:
    raw = table_dict(max_in_flight=8)
    raw["targets"]["nova-lite/on_demand/us-west-2"]["backend"] = {"kind": "sagemaker", "endpoint_name": "ep-1"}
    raw["features"][FEATURE].pop("breaker")
    table = parse_routing_table(raw)
    target = table.targets[PT]
    assert (target.model, target.capacity, target.region, target.max_in_flight) == (
        "claude-sonnet",
        "provisioned",
        "us-east-1",
        8,
    )
    assert target.backend == BedrockRef("claude-sonnet-provisioned-us-east-1")
    assert table.targets["nova-lite/on_demand/us-west-2"].backend == SageMakerRef("ep-1")
    feature = table.features[FEATURE]
    assert feature.models == ("claude-sonnet", "nova-lite")
    assert feature.order == ("spill", "failover", "fallback")
    assert (feature.attempt_min_ms, feature.attempt_max_ms, feature.max_attempts) == (300, 8000, 4)
    assert feature.breaker == BreakerPolicy()
    assert table.limits.max_request_bytes == 262144  # as the document says (helpers.py)


def test_pt_arn_survives_untouched(tmp_path: Any) -> None:
    arn = "arn:aws:bedrock:us-east-1:111122223333:provisioned-model/abc123/def:1"
    raw = table_dict()
    raw["targets"][PT]["backend"]["model_id"] = arn
    path = tmp_path / "routing.json"
    path.write_text(json.dumps(raw))
    backend = load_routing_table_file(path).targets[PT].backend
    assert isinstance(backend, BedrockRef)
    assert backend.model_id == arn


def test_breaker_keys_are_read() -> None:
    table = parse_routing_table(
        table_dict(
            breaker={
                "error_rate": 0.3,
                "latency_ms": 9000,
                "ttft_ms": 2500,
                "ramp_steps": [0.1, 0.5, 1.0],
                "half_open_trickle": 2,
                "capacity_cooldown_s": 0,
            }
        )
    )
    policy = table.features[FEATURE].breaker
    assert (policy.error_rate, policy.slow_rate) == (0.3, 0.3)  # slow_rate defaults to error_rate
    assert (policy.latency_ms, policy.ttft_ms, policy.ramp_steps) == (9000, 2500, (0.1, 0.5, 1.0))
    assert (policy.half_open_trickle, policy.capacity_cooldown_s) == (2, 0)


Mutation = Callable[[dict[str, Any]], None]


def _set(path: list[Any], value: Any) -> Mutation:
    def mutate(raw: dict[str, Any]) -> None:
        node = raw
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def _drop(path: list[Any]) -> Mutation:
    def mutate(raw: dict[str, Any]) -> None:
        node = raw
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return mutate


def _rename_target(raw: dict[str, Any]) -> None:
    raw["targets"]["claude-sonnet/provisioned/us-east-9"] = raw["targets"].pop(PT)


BAD: list[tuple[Mutation, str, str]] = [
    (_set(["version"], 2), "version", "unsupported version 2"),
    (_drop(["targets"]), "targets", "is required"),
    (_set(["extra"], 1), "extra", "unknown key"),
    (_set(["targets"], {}), "targets", "at least one target"),
    (_set(["targets", PT, "capacity"], "reserved"), f"targets.{PT}.capacity", "must be 'provisioned' or 'on_demand'"),
    (_rename_target, "targets.claude-sonnet/provisioned/us-east-9", "target id must be"),
    (_set(["targets", PT, "backend"], {"kind": "lambda"}), f"targets.{PT}.backend.kind", "'sagemaker', not 'lambda'"),
    (_set(["targets", PT, "backend"], {"kind": "bedrock"}), f"targets.{PT}.backend.model_id", "is required"),
    (_set(["targets", PT, "backend", "model_id"], ""), f"targets.{PT}.backend.model_id", "non-empty string"),
    (_set(["targets", PT, "max_in_flight"], 0), f"targets.{PT}.max_in_flight", "below 1"),
    (_set(["targets", PT, "max_in_flight"], True), f"targets.{PT}.max_in_flight", "must be an integer"),
    (
        _set(["targets", "nova-lite/on_demand/us-east-1", "max_in_flight"], 4),
        "targets.nova-lite/on_demand/us-east-1.max_in_flight",
        "only a provisioned target",
    ),
    (_set(["targets", PT, "model"], "a/b"), f"targets.{PT}.model", "is not a name"),
    (_set(["features", FEATURE, "models"], ["claude-sonnet", "x"]), f"{F}.models[1]", "unknown model 'x'"),
    (_set(["features", FEATURE, "models"], []), f"{F}.models", "at least one model"),
    (_set(["features", FEATURE, "models"], ["nova-lite", "nova-lite"]), f"{F}.models[1]", "listed twice"),
    (_set(["features", FEATURE, "home_region"], "eu-west-1"), f"{F}.home_region", "unknown region 'eu-west-1'"),
    (_set(["features", FEATURE, "failover_regions"], ["us-east-1"]), f"{F}.failover_regions[0]", "home region"),
    (_set(["features", FEATURE, "failover_regions"], "us-west-2"), f"{F}.failover_regions", "must be a list"),
    (_set(["features", FEATURE, "order"], ["spill", "detour"]), f"{F}.order[1]", "unknown dimension 'detour'"),
    (_set(["features", FEATURE, "order"], ["spill", "spill"]), f"{F}.order[1]", "listed twice"),
    (_set(["features", FEATURE, "first_capacity"], "od"), f"{F}.first_capacity", "must be 'provisioned'"),
    (_set(["features", FEATURE, "deadline_ms"], 0), f"{F}.deadline_ms", "below 1"),
    (_set(["features", FEATURE, "deadline_ms"], "20s"), f"{F}.deadline_ms", "must be a number, not a string"),
    (
        _set(["features", FEATURE, "attempt_timeout_ms"], {"min": 9000, "max": 100}),
        f"{F}.attempt_timeout_ms",
        "min 9000 is above max 100",
    ),
    (_set(["features", FEATURE, "attempt_timeout_ms"], {"min": 300}), f"{F}.attempt_timeout_ms.max", "is required"),
    (
        _set(["features", FEATURE, "attempt_timeout_ms"], {"min": MIN_ATTEMPT_MS - 0.5, "max": 8000}),
        f"{F}.attempt_timeout_ms.min",
        f"{MIN_ATTEMPT_MS - 0.5:g} is below {MIN_ATTEMPT_MS:g}: no attempt can be answered",
    ),
    (
        _set(["features", FEATURE, "attempt_timeout_ms"], {"min": 0, "max": 8000}),
        f"{F}.attempt_timeout_ms.min",
        f"below {MIN_ATTEMPT_MS:g}",
    ),
    (_set(["features", FEATURE, "deadline_ms"], 200), f"{F}.attempt_timeout_ms.min", "no attempt in the deadline"),
    (_set(["features", FEATURE, "max_attempts"], 0), f"{F}.max_attempts", "below 1"),
    (
        _set(["features", FEATURE, "fallback_on_context_overflow"], "yes"),
        f"{F}.fallback_on_context_overflow",
        "true or false",
    ),
    (_set(["features", FEATURE, "breaker", "error_rate"], 1.5), f"{F}.breaker.error_rate", "above 1"),
    (_set(["features", FEATURE, "breaker", "error_rate"], 0), f"{F}.breaker.error_rate", "rate of 0"),
    (_set(["features", FEATURE, "breaker", "cooldown_s"], 500), f"{F}.breaker.cooldown_s", "above max_cooldown_s"),
    (_set(["features", FEATURE, "breaker", "ramp_steps"], [0.5, 0.25]), f"{F}.breaker.ramp_steps[1]", "rise"),
    (_set(["features", FEATURE, "breaker", "ramp_steps"], [0.0]), f"{F}.breaker.ramp_steps[0]", "rise"),
    (
        _set(["features", FEATURE, "breaker", "consecutive_failure"], 3),
        f"{F}.breaker.consecutive_failure",
        "unknown key",
    ),
    (_set(["features", "bad name!"], {}), "features.bad name!", "feature name"),
    (_set(["limits", "max_request_bytes"], -1), "limits.max_request_bytes", "below 1"),
    (_set(["limits", "max_request_kb"], 1), "limits.max_request_kb", "unknown key"),
]


@pytest.mark.parametrize(("mutate", "path", "problem"), BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_key_is_named_by_its_path(mutate: Mutation, path: str, problem: str) -> None:
    raw = copy.deepcopy(table_dict())
    mutate(raw)
    with pytest.raises(RoutingConfigError) as caught:
        parse_routing_table(raw)
    assert caught.value.path == path
    assert problem in caught.value.problem
    assert str(caught.value) == f"{path}: {caught.value.problem}"


def test_the_smallest_useful_attempt_timeout_is_accepted() -> None:
    raw = table_dict(feature={"attempt_timeout_ms": {"min": MIN_ATTEMPT_MS, "max": 8000}})
    assert parse_routing_table(raw).features[FEATURE].attempt_min_ms == MIN_ATTEMPT_MS


def test_the_floor_is_the_default_minimum() -> None:
    assert Feature("f", "on_demand", ("m",), "r").attempt_min_ms == MIN_ATTEMPT_MS
    with pytest.raises(RoutingConfigError, match="is below"):
        parse_routing_table(table_dict(feature={"attempt_timeout_ms": {"min": MIN_ATTEMPT_MS - 1, "max": 8000}}))


def test_missing_primary_target_is_reported() -> None:
    raw = table_dict()
    del raw["targets"][PT]
    with pytest.raises(RoutingConfigError, match=rf"^{F}.first_capacity: no target '{PT}'"):
        parse_routing_table(raw)


def test_model_without_a_usable_target_is_reported() -> None:
    raw = table_dict()
    # An on-demand-first feature never uses provisioned capacity: nova-lite with PT targets only is unusable.
    raw["features"][FEATURE]["first_capacity"] = "on_demand"
    for region in ("us-east-1", "us-west-2"):
        del raw["targets"][f"nova-lite/on_demand/{region}"]
    with pytest.raises(RoutingConfigError, match=rf"^{F}.models\[1\]: model 'nova-lite' has no target"):
        parse_routing_table(raw)


def test_bad_json_and_wrong_top_level() -> None:
    with pytest.raises(RoutingConfigError, match=r"^\$: not valid JSON"):
        load_routing_table("{nope")
    with pytest.raises(RoutingConfigError, match=r"^\$: must be an object, not a list"):
        load_routing_table("[]")

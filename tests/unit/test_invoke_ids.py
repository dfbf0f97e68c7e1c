"""Per-feature invoke ids: a feature invokes a bedrock target by another id (an application inference profile or a
purchased PT ARN); the target id, and so health, breakers and metrics, stays the same for every feature."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from spillway.backends.kinds import BedrockRef
from spillway.config import RoutingConfigError, parse_routing_table
from spillway.health import HealthBoard
from spillway.policy import Planner

from .helpers import FEATURE, FakeClock, table_dict

OTHER = "nightly-recap"
OD_E, PT_E = "claude-sonnet/on_demand/us-east-1", "claude-sonnet/provisioned/us-east-1"
PROFILE = "arn:aws:bedrock:us-east-1:111122223333:application-inference-profile/abc123"
EU, OD_W = "claude-sonnet/on_demand/eu-west-1", "claude-sonnet/on_demand/us-west-2"
PT_ARN = "arn:aws:bedrock:us-east-1:111122223333:provisioned-model/xyz789"


def two_features(invoke_ids: Any) -> dict[str, Any]:
    raw = table_dict()
    raw["features"][OTHER] = copy.deepcopy(raw["features"][FEATURE])
    raw["features"][FEATURE]["invoke_ids"] = invoke_ids
    return raw


def test_a_feature_with_an_override_invokes_the_override_id() -> None:
    table = parse_routing_table(two_features({OD_E: PROFILE, PT_E: PT_ARN}))
    assert table.features[FEATURE].invoke_ids == ((OD_E, PROFILE), (PT_E, PT_ARN))
    plan = Planner(table).plan(FEATURE, HealthBoard(FakeClock()))
    by_id = {step.target.id: step.target for step in plan.steps}
    assert by_id[OD_E].backend == BedrockRef(PROFILE)
    assert by_id[PT_E].backend == BedrockRef(PT_ARN)
    # Everything else about the target is the table's: id (health, breakers, metrics), capacity, region, size.
    assert by_id[PT_E].id == PT_E
    assert by_id[PT_E].max_in_flight == table.targets[PT_E].max_in_flight
    others = [t for tid, t in by_id.items() if tid not in (OD_E, PT_E)]
    assert others
    assert all(t is table.targets[t.id] for t in others)


def test_another_feature_sharing_the_target_does_not() -> None:
    table = parse_routing_table(two_features({OD_E: PROFILE}))
    plan = Planner(table).plan(OTHER, HealthBoard(FakeClock()))
    by_id = {step.target.id: step.target for step in plan.steps}
    assert by_id[OD_E] is table.targets[OD_E]
    assert by_id[OD_E].backend == BedrockRef("claude-sonnet-on_demand-us-east-1")
    assert table.features[OTHER].invoke_ids == ()


def test_the_override_is_computed_once_per_table() -> None:
    planner = Planner(parse_routing_table(two_features({OD_E: PROFILE})))
    board = HealthBoard(FakeClock())
    first = {s.target.id: s.target for s in planner.plan(FEATURE, board).steps}
    second = {s.target.id: s.target for s in planner.plan(FEATURE, board).steps}
    assert first[OD_E] is second[OD_E]


@pytest.mark.parametrize(
    ("invoke_ids", "path", "problem"),
    [
        ("x", f"features.{FEATURE}.invoke_ids", "must be an object"),
        ({EU: PROFILE}, f"features.{FEATURE}.invoke_ids.{EU}", "unknown target"),
        ({OD_E: ""}, f"features.{FEATURE}.invoke_ids.{OD_E}", "must be a non-empty string"),
        ({OD_E: 7}, f"features.{FEATURE}.invoke_ids.{OD_E}", "must be a non-empty string"),
    ],
)  # fmt: skip
def test_a_bad_key_is_refused_with_its_path(invoke_ids: Any, path: str, problem: str) -> None:
    with pytest.raises(RoutingConfigError) as caught:
        parse_routing_table(two_features(invoke_ids))
    assert caught.value.path == path
    assert problem in caught.value.problem


def test_a_target_the_feature_may_not_use_is_refused() -> None:
    # Outside its regions.
    raw = table_dict(regions=("us-east-1", "us-west-2"), feature={"failover_regions": []})
    raw["features"][FEATURE]["invoke_ids"] = {OD_W: PROFILE}
    with pytest.raises(RoutingConfigError, match=rf"^features.{FEATURE}.invoke_ids.{OD_W}: "):
        parse_routing_table(raw)
    # Provisioned capacity of an on-demand-first feature.
    raw = table_dict(feature={"first_capacity": "on_demand", "invoke_ids": {PT_E: PT_ARN}})
    with pytest.raises(RoutingConfigError, match="not one this feature may use"):
        parse_routing_table(raw)


def test_a_sagemaker_target_is_refused() -> None:
    raw = table_dict()
    raw["targets"][PT_E]["backend"] = {"kind": "sagemaker", "endpoint_name": "spillway-claude"}
    raw["features"][FEATURE]["invoke_ids"] = {PT_E: PT_ARN}
    with pytest.raises(RoutingConfigError) as caught:
        parse_routing_table(raw)
    assert caught.value.path == f"features.{FEATURE}.invoke_ids.{PT_E}"
    assert "sagemaker" in caught.value.problem

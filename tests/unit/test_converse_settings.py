"""A feature's platform-decided Converse members in the routing table: validated with the path of each bad key."""

from __future__ import annotations

from typing import Any

import pytest

from spillway.config import RoutingConfigError, parse_routing_table
from tests.unit.helpers import FEATURE, table_dict

F = f"features.{FEATURE}.converse"
D = f"{F}.defaults"
GUARDRAIL = {"guardrailIdentifier": "gr-1", "guardrailVersion": "1"}


def _with(converse: Any) -> dict[str, Any]:
    return table_dict(feature={"converse": converse})


def test_settings_load() -> None:
    table = parse_routing_table(
        _with(
            {
                "defaults": {"serviceTier": {"type": "flex"}, "performanceConfig": {"latency": "optimized"}},
                "caller_may_override": ["performanceConfig"],
            }
        )
    )
    feature = table.features[FEATURE]
    assert dict(feature.converse_defaults) == {
        "performanceConfig": {"latency": "optimized"},
        "serviceTier": {"type": "flex"},
    }
    assert feature.caller_may_override == {"performanceConfig"}


@pytest.mark.parametrize(
    ("converse", "path", "words"),
    [
        ({"defaults": {"serviceTier": {"type": "gold"}}}, f"{F}.defaults.serviceTier.type", "priority, default"),
        ({"defaults": {"performanceConfig": {"latency": "fast"}}}, f"{D}.performanceConfig.latency", "optimized"),
        ({"defaults": {"inferenceConfig": {}}}, f"{F}.defaults.inferenceConfig", "unknown key"),
        ({"defaults": {"guardrailConfig": {"guardrailIdentifier": "g"}}}, f"{D}.guardrailConfig.guardrailVersion", ""),
        ({"caller_may_override": ["messages"]}, f"{F}.caller_may_override[0]", "serviceTier"),
        ({"overrides": []}, f"{F}.overrides", "unknown key"),
    ],
)  # fmt: skip
def test_bad_settings_name_their_key(converse: Any, path: str, words: str) -> None:
    with pytest.raises(RoutingConfigError) as raised:
        parse_routing_table(_with(converse))
    assert raised.value.path == path
    assert words in raised.value.problem


def test_a_guardrail_needs_every_model_on_bedrock() -> None:
    doc = _with({"defaults": {"guardrailConfig": GUARDRAIL}})
    assert parse_routing_table(doc).features[FEATURE].converse_defaults == (("guardrailConfig", GUARDRAIL),)
    doc["targets"]["nova-lite/on_demand/us-west-2"]["backend"] = {"kind": "sagemaker", "endpoint_name": "ep"}
    with pytest.raises(RoutingConfigError) as raised:
        parse_routing_table(doc)
    assert raised.value.path == f"features.{FEATURE}.models[1]"
    assert "unguarded" in raised.value.problem

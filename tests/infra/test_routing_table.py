"""CDK renders the routing table from the platform file; the router's own loader reads it back (the round trip)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import yaml

from spillway.backends.kinds import KINDS, BedrockRef
from spillway.config import parse_routing_table
from spillway.policy import Planner
from stacks.platform import PlatformConfigError, load_platform, parse_platform
from stacks.routing import config_key, render_routing_table, validate_routing_table, with_invoke_ids
from stacks.targets import feature_targets
from tests.infra.config_documents import EXAMPLE, example, region_document


@pytest.mark.parametrize("region", ["us-east-1", "us-west-2"])
def test_round_trip_keeps_every_feature_and_target(region: str) -> None:
    platform = load_platform(EXAMPLE)
    table = parse_routing_table(render_routing_table(platform, region))
    assert set(table.features) == {f.name for f in platform.features_served_in(region)}
    for name, feature in table.features.items():
        source = platform.features[name]
        assert feature.models == source.models
        assert (feature.home_region, feature.failover_regions) == (source.home_region, source.failover_regions)
        assert feature.deadline_ms == source.deadline_ms
        for target in feature_targets(platform, name, region):  # what this cell's router reaches
            rendered = table.targets[target.id]
            assert getattr(rendered.backend, KINDS[target.kind].ref_field) == target.invoke_id


def test_routing_knobs_reach_the_router() -> None:
    """Each feature's routing knobs, as the platform file writes them, are what the router's loader reads."""
    platform = load_platform(EXAMPLE)
    written = {name: spec["routing"] for name, spec in yaml.safe_load(EXAMPLE.read_text())["features"].items()}
    for region in platform.region_names:
        table = parse_routing_table(render_routing_table(platform, region))
        for name, feature in table.features.items():
            knobs = written[name]
            timeouts = knobs.get("attempt_timeout_ms")
            if timeouts is not None:
                assert (feature.attempt_min_ms, feature.attempt_max_ms) == (timeouts["min"], timeouts["max"])
            for knob, value in knobs.get("breaker", {}).items():
                assert getattr(feature.breaker, knob) == value, (name, knob)
            if "order" in knobs:
                assert feature.order == tuple(knobs["order"])


def test_on_demand_first_feature_gets_no_provisioned_target() -> None:
    platform = load_platform(EXAMPLE)
    assert {t.capacity for t in feature_targets(platform, "nightly-recap")} == {"on_demand"}


def test_bad_routing_knob_is_reported_against_the_platform_key() -> None:
    document = example()
    document["features"]["summarize-thread"]["routing"]["attempt_timeout_ms"] = {"min": 9000, "max": 100}
    platform = parse_platform(yaml.safe_dump(document), "bad.yaml")
    with pytest.raises(PlatformConfigError) as caught:
        render_routing_table(platform, "us-east-1")
    assert caught.value.key == "features.summarize-thread.routing.attempt_timeout_ms"
    assert str(caught.value).startswith("bad.yaml: features.summarize-thread.routing.attempt_timeout_ms: min 9000")


def test_a_cell_no_feature_uses_is_refused_with_its_key() -> None:
    document = example()
    document["regions"]["us-east-2"] = region_document("us-east-2", "10.42.0.0/16", ["us-east-2a", "us-east-2b"])
    layers = document["router"]["appconfig_extension_layer_arns"]
    layers["us-east-2"] = layers["us-east-1"].replace("us-east-1", "us-east-2")
    platform = parse_platform(yaml.safe_dump(document), "bad.yaml")
    with pytest.raises(PlatformConfigError) as caught:
        render_routing_table(platform, "us-east-2")
    assert caught.value.key == "regions.us-east-2"
    assert "router would serve nothing" in str(caught.value)


@pytest.mark.parametrize(
    ("path", "key"),
    [
        # Keys of the feature's own `routing:` block, and the routing keys the renderer defaults.
        ("features.summarize-thread.breaker.ttft_ms", "features.summarize-thread.routing.breaker.ttft_ms"),
        ("features.summarize-thread.attempt_timeout_ms", "features.summarize-thread.routing.attempt_timeout_ms"),
        ("features.nightly-recap.order[1]", "features.nightly-recap.routing.order[1]"),
        ("features.nightly-recap.breaker", "features.nightly-recap.routing.breaker"),
        # The feature's own keys: not under routing.
        ("features.summarize-thread.models[1]", "features.summarize-thread.models[1]"),
        ("features.summarize-thread.failover_regions[0]", "features.summarize-thread.failover_regions[0]"),
        ("features.summarize-thread.deadline_ms", "features.summarize-thread.deadline_ms"),
        ("features.summarize-thread.first_capacity", "features.summarize-thread.first_capacity"),
        ("features.summarize-thread", "features.summarize-thread"),
        # Not a feature's: the rendered table's own path.
        (
            "targets.nova-lite/on_demand/us-east-1.backend",
            "(rendered routing table) targets.nova-lite/on_demand/us-east-1.backend",
        ),
    ],
)
def test_error_paths_map_to_the_platform_key(path: str, key: str) -> None:
    assert config_key(load_platform(EXAMPLE), path) == key


def test_a_feature_key_error_is_not_reported_under_routing() -> None:
    platform = load_platform(EXAMPLE)
    table = render_routing_table(platform, "us-east-1")
    table["features"]["summarize-thread"]["max_attempts"] = 0
    with pytest.raises(PlatformConfigError) as caught:
        validate_routing_table(platform, table)
    assert caught.value.key.startswith("features.summarize-thread.max_attempts")


def test_invoke_ids_name_the_cells_profiles_and_pt_and_round_trip() -> None:
    """Plain strings stand in for the models stack's tokens: what the hosted table carries, read by the router."""
    platform = load_platform(EXAMPLE)
    region = "us-east-1"
    base = render_routing_table(platform, region)
    profiles = {
        (f.name, m): f"arn:aws:bedrock:{region}:{platform.account}:application-inference-profile/{f.name}-{m}"
        for f in platform.features_served_in(region)
        for m in f.models
        if platform.models[m].kind == "bedrock"
    }
    pt = {"claude-sonnet": f"arn:aws:bedrock:{region}:{platform.account}:provisioned-model/bought"}
    hosted = with_invoke_ids(platform, region, base, profiles, pt)
    assert "invoke_ids" not in str(render_routing_table(platform, region))  # the bundled table stays token free
    table = parse_routing_table(hosted)
    for name, feature in table.features.items():
        ids = dict(feature.invoke_ids)
        assert all(tid.endswith(f"/{region}") for tid in ids)  # never another region's ARN
        for tid, invoke_id in ids.items():
            model, capacity, _ = tid.split("/")
            assert invoke_id == (profiles[(name, model)] if capacity == "on_demand" else pt[model])
        planned = {s.target.id: s.target.backend for s in Planner(table).candidates(name)}
        for tid, backend in planned.items():
            expected = BedrockRef(ids[tid]) if tid in ids else table.targets[tid].backend
            if isinstance(expected, BedrockRef):  # with the feature's platform-decided Converse members
                expected = replace(expected, defaults=feature.converse_defaults)
            assert backend == expected
    assert any(dict(f.invoke_ids) for f in table.features.values())

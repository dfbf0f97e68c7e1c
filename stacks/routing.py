"""Renders the router's routing table for one cell from the platform config.

The router never imports stacks; the stacks import the router's own loader instead, so every rendered table is
validated by exactly the code that will read it, at synth time. A problem in a feature's `routing:` block is
reported against the platform file's key, like every other config error.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from spillway.backends.kinds import KINDS
from spillway.config import MIN_ATTEMPT_MS, RoutingConfigError, RoutingTable, parse_routing_table
from stacks.platform import CONVERSE_SETTINGS, Platform, PlatformConfigError
from stacks.targets import feature_targets

SCHEMA_VERSION = 1


def render_routing_table(
    platform: Platform, region: str, guardrails: Mapping[str, tuple[str, str]] | None = None
) -> dict[str, Any]:
    """The routing table of `region`'s router: the features it serves and every target they may use.

    A feature with a guardrail is rendered only given `guardrails` (name -> (id, version) of `region`'s models stack,
    deploy-time tokens), under its `converse.defaults.guardrailConfig`. Without them (the token-free table bundled
    with the function, the fallback when AppConfig has none) it is left out, never rendered unguarded: while the
    bundle serves, the router answers it 503 ConfigUnavailable (handler.py).
    """
    served = platform.features_served_in(region)
    if not served:
        raise PlatformConfigError(
            platform.source,
            f"regions.{region}",
            "no feature names this region as its home or a failover region, so its router would serve nothing",
        )
    features: dict[str, Any] = {}
    targets: dict[str, Any] = {}
    for feature in served:
        guardrail = _guardrail_config(platform, region, feature.name, guardrails)
        if feature.guardrail is not None and guardrail is None:
            continue
        reachable = feature_targets(platform, feature.name, region)
        for target in reachable:
            backend = {
                "kind": target.kind,
                KINDS[target.kind].ref_field: target.invoke_id,
                **dict(target.backend_fields),
            }
            entry: dict[str, Any] = {
                "model": target.model,
                "capacity": target.capacity,
                "region": target.region,
                "backend": backend,
            }
            if target.max_in_flight is not None:
                entry["max_in_flight"] = target.max_in_flight
            targets[target.id] = entry
        features[feature.name] = {
            "attempt_timeout_ms": {"min": int(MIN_ATTEMPT_MS), "max": feature.deadline_ms},
            **feature.routing,
            "first_capacity": feature.first_capacity,
            # A model this cell's router cannot reach (another cloud without a path from this cell) is left out.
            "models": [m for m in feature.models if any(t.model == m for t in reachable)],
            "home_region": feature.home_region,
            "failover_regions": list(feature.failover_regions),
            "deadline_ms": feature.deadline_ms,
            "max_attempts": feature.max_attempts,
            **({"converse": converse_settings(feature.converse, guardrail)} if feature.converse else {}),
        }
    table = {
        "version": SCHEMA_VERSION,
        "targets": dict(sorted(targets.items())),
        "features": dict(sorted(features.items())),
    }  # no "limits": the router's own, derived from AWS's limits in spillway/limits.py, apply
    validate_routing_table(platform, table)
    return table


def _guardrail_config(
    platform: Platform, region: str, feature: str, guardrails: Mapping[str, tuple[str, str]] | None
) -> dict[str, str] | None:
    """The feature's Converse guardrailConfig in `region`, or None when it has no guardrail or none is given."""
    name = platform.features[feature].guardrail
    if name is None or guardrails is None:
        return None
    if name not in guardrails:
        key = f"features.{feature}.converse.guardrail"
        raise PlatformConfigError(platform.source, key, f"{region}'s models stack builds no guardrail {name!r}")
    identifier, version = guardrails[name]
    return {"guardrailIdentifier": identifier, "guardrailVersion": version}


def converse_settings(settings: Mapping[str, Any], guardrail: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A feature's `converse:` settings in the routing table's form: the Converse members and who may override."""
    defaults: dict[str, Any] = {}
    if guardrail is not None:
        defaults["guardrailConfig"] = dict(guardrail)
    if "service_tier" in settings:
        defaults["serviceTier"] = {"type": settings["service_tier"]}
    if "latency" in settings:
        defaults["performanceConfig"] = {"latency": settings["latency"]}
    overridable = [CONVERSE_SETTINGS[name][0] for name in settings.get("caller_may_override", ())]
    return {"defaults": defaults, "caller_may_override": overridable}


def with_invoke_ids(
    platform: Platform,
    region: str,
    table: Mapping[str, Any],
    profile_arns: Mapping[tuple[str, str], str],
    provisioned_arns: Mapping[str, str],
) -> dict[str, Any]:
    """`table` (from render_routing_table) with each feature's `invoke_ids`: its on-demand Bedrock targets in `region`
    invoked through the feature's application inference profile (`profile_arns`, by (feature, model)) and its
    purchased PT targets in `region` through the PT's ARN (`provisioned_arns`, by model).

    The ARNs are those of `region`'s models stack, usually deploy-time tokens; the AppConfig-hosted table carries
    them. Targets in other regions keep their base id: their profiles and PT live in another region's stack, and a
    CloudFormation reference cannot cross regions. The bundled routing.json is rendered without this (token free):
    it is the fallback, without per-feature attribution.
    """
    out = copy.deepcopy(dict(table))
    for name, feature in out["features"].items():
        ids: dict[str, str] = {}
        for target in feature_targets(platform, name):
            if target.region != region or target.kind != "bedrock":
                continue
            if target.capacity == "on_demand" and (name, target.model) in profile_arns:
                ids[target.id] = profile_arns[(name, target.model)]
            elif target.capacity == "provisioned" and target.model in provisioned_arns:
                ids[target.id] = provisioned_arns[target.model]
        if ids:
            feature["invoke_ids"] = dict(sorted(ids.items()))
        else:
            feature.pop("invoke_ids", None)
    validate_routing_table(platform, out)
    return out


def validate_routing_table(platform: Platform, table: dict[str, Any]) -> RoutingTable:
    """Load the table with the router's own loader; report a problem against the platform file's key."""
    try:
        return parse_routing_table(table)
    except RoutingConfigError as error:
        raise PlatformConfigError(platform.source, config_key(platform, error.path), error.problem) from None


# The feature keys of the routing table that come from a feature's `routing:` block (or its defaults there).
ROUTING_KEYS = frozenset({"attempt_timeout_ms", "order", "breaker", "fallback_on_context_overflow"})


def config_key(platform: Platform, path: str) -> str:
    """The platform file's key for a routing-table path: `features.<name>.routing.<rest>` when the key comes from
    the feature's `routing:` block, `features.<name>.<rest>` for the feature's own keys (models, home_region...)."""
    parts = path.split(".", 2)
    if len(parts) < 2 or parts[0] != "features":
        return f"(rendered routing table) {path}"
    name = parts[1]
    if len(parts) == 2:
        return f"features.{name}"
    rest = parts[2]
    head = re.split(r"[.\[]", rest, maxsplit=1)[0]
    feature = platform.features.get(name)
    routing = set(feature.routing) if feature is not None else set()
    if head in routing or head in ROUTING_KEYS:
        return f"features.{name}.routing.{rest}"
    return f"features.{name}.{rest}"

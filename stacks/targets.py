"""Targets and the exact ARNs they are invoked on, derived from the platform config in one place.

A target is one place a request can go: (model, capacity, region). The VPC endpoint policies of the network
stacks and the router's IAM policies both come from `invoke_grants`, so the two cannot disagree: a model added to
the config widens both, and nothing else widens either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from spillway.backends.kinds import KINDS, BackendKind, kind_of
from stacks.naming import endpoint_name, partition_of
from stacks.platform import Capacity, Model, Platform, usable_capacities
from stacks.providers import Provider

__all__ = ["KINDS", "BackendKind", "DeployedTarget", "InvokeGrants", "endpoint_grants", "router_grants", "used_targets"]


@dataclass(frozen=True, slots=True)
class DeployedTarget:
    """A target as the stacks derive it from the platform file, with what to grant on it; the router's own view
    of a target is spillway.config.Target, rendered from this through the routing table (stacks/routing.py)."""

    model: str
    capacity: Capacity
    region: str
    kind: str  # a registered backend kind (spillway/backends/kinds.py): which runtime the request enters through
    invoke_id: str  # what the runtime call names: model id, inference profile id, PT ARN or endpoint name
    arns: tuple[str, ...]  # every resource the call may touch, for endpoint and IAM policies
    max_in_flight: int | None
    # The routing table's other backend keys, for a kind of several (openai: base_url, auth, secret_id...).
    backend_fields: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        kind_of(self.kind)  # an unregistered kind fails here, never falls into another kind's grants

    @property
    def id(self) -> str:
        return f"{self.model}/{self.capacity}/{self.region}"


@dataclass(frozen=True, slots=True)
class InvokeGrants:
    """Exact resource ARNs per backend kind (each kind's runtime service), sorted and free of duplicates."""

    by_kind: Mapping[str, tuple[str, ...]]

    @property
    def bedrock(self) -> tuple[str, ...]:
        return self.by_kind.get("bedrock", ())

    @property
    def sagemaker(self) -> tuple[str, ...]:
        return self.by_kind.get("sagemaker", ())

    @property
    def bedrock_runtime(self) -> tuple[str, ...]:
        """What enters through bedrock-runtime: Converse targets and Bedrock's OpenAI-compatible ones (an openai
        target has ARNs only when its provider is Bedrock: stacks/providers.py)."""
        return tuple(sorted({*self.bedrock, *self.by_kind.get("openai", ())}))


def openai_targets(platform: Platform, model: Model) -> list[DeployedTarget]:
    """A `kind: openai` model's targets: one per cell that reaches its provider."""
    assert model.openai is not None  # schema: every openai model names its provider and model
    provider = platform.providers[model.openai.provider]
    targets: list[DeployedTarget] = []
    for region, offer in sorted(model.regions.items()):
        arns: tuple[str, ...] = ()
        if provider.type == "bedrock":  # bedrock-runtime's /openai/v1: authorized on the foundation model
            arns = (f"arn:{partition_of(region)}:bedrock:{region}::foundation-model/{model.openai.wire_model}",)
        fields = provider.backend_fields(region, platform.name)
        if model.openai.images:
            fields["images"] = True
        (capacity,) = offer.capacities
        targets.append(
            DeployedTarget(
                model.name,
                capacity,
                region,
                "openai",
                model.openai.wire_model,
                arns,
                model.openai.max_in_flight,
                tuple(sorted(fields.items())),
            )
        )
    return targets


def model_targets(platform: Platform, model: Model) -> list[DeployedTarget]:
    if model.kind == "openai":
        return openai_targets(platform, model)
    targets: list[DeployedTarget] = []
    for region, offer in sorted(model.regions.items()):
        partition = partition_of(region)
        if offer.endpoint is not None:
            name = endpoint_name(platform, model.name)
            arn = f"arn:{partition}:sagemaker:{region}:{platform.account}:endpoint/{name}"
            targets.append(
                DeployedTarget(
                    model.name, "provisioned", region, "sagemaker", name, (arn,), offer.endpoint.max_in_flight
                )
            )
        if offer.provisioned is not None:
            pt = offer.provisioned
            if pt.arn is not None:
                targets.append(
                    DeployedTarget(model.name, "provisioned", region, "bedrock", pt.arn, (pt.arn,), pt.max_in_flight)
                )
            else:
                # Bought by the models stack: its ARN is a deploy-time token there (ModelsStack adds it to the
                # router's policy; the router stack puts it under the features' invoke_ids in the cell's hosted
                # routing table, stacks/routing.py with_invoke_ids). Named here is what it serves, the foundation
                # model in this region; invoke_id is the PT's name, the base id of tables without that override.
                assert pt.purchase is not None  # schema: arn or create
                assert model.model_id is not None
                served = f"arn:{partition}:bedrock:{region}::foundation-model/{model.model_id}"
                targets.append(
                    DeployedTarget(
                        model.name, "provisioned", region, "bedrock", pt.purchase.name, (served,), pt.max_in_flight
                    )
                )
        if offer.on_demand:
            assert model.model_id is not None  # bedrock models always have one (schema)
            profile = model.inference_profile
            if profile is None:
                arns: tuple[str, ...] = (f"arn:{partition}:bedrock:{region}::foundation-model/{model.model_id}",)
                invoke_id = model.model_id
            else:
                # A cross-region profile routes to the foundation model in each of its regions: IAM needs them all.
                arns = (
                    f"arn:{partition}:bedrock:{region}:{platform.account}:inference-profile/{profile.id}",
                    *(f"arn:{partition_of(r)}:bedrock:{r}::foundation-model/{model.model_id}" for r in profile.regions),
                )
                invoke_id = profile.id
            targets.append(DeployedTarget(model.name, "on_demand", region, "bedrock", invoke_id, arns, None))
    return targets


def feature_targets(platform: Platform, feature_name: str, router_region: str | None = None) -> list[DeployedTarget]:
    """Every target a feature may use: its models, in its regions. A feature that starts on on-demand never
    spills onto provisioned capacity (that is bought for the features that ask for it), so it gets none. Given the
    router's region, only what that router can reach (`reachable_from`)."""
    feature = platform.features[feature_name]
    capacities = usable_capacities(feature.first_capacity)
    return [
        target
        for model in feature.models
        for target in model_targets(platform, platform.models[model])
        if target.region in feature.regions
        and target.capacity in capacities
        and (router_region is None or reachable_from(platform, target, router_region))
    ]


def reachable_from(platform: Platform, target: DeployedTarget, router_region: str) -> bool:
    """Whether `router_region`'s router can reach `target`. Another cloud (or a server in a VPC) is reached over the
    private path of the router's own cell only (its VPN, its resolver rules, its secret and STS endpoints): the other
    cells' targets of that model are theirs. AWS runtimes in other regions are reached through the peering."""
    if target.kind != "openai":
        return True
    model = platform.models[target.model]
    assert model.openai is not None
    return platform.providers[model.openai.provider].type == "bedrock" or target.region == router_region


def providers_reached_from(platform: Platform, region: str) -> tuple[Provider, ...]:
    """The providers `region`'s router uses over its own cell's path (their VPN, resolver rules, secret, STS)."""
    names = {
        model.openai.provider
        for f in platform.features_served_in(region)
        for t in feature_targets(platform, f.name, region)
        if t.kind == "openai" and (model := platform.models[t.model]).openai is not None
    }
    return tuple(platform.providers[name] for name in sorted(names) if platform.providers[name].type != "bedrock")


def used_targets(platform: Platform) -> list[DeployedTarget]:
    """Targets some feature uses, each once, in a stable order."""
    seen: dict[str, DeployedTarget] = {}
    for feature in sorted(platform.features):
        for target in feature_targets(platform, feature):
            seen.setdefault(target.id, target)
    return [seen[key] for key in sorted(seen)]


def _grants(targets: Iterable[DeployedTarget]) -> InvokeGrants:
    arns: dict[str, set[str]] = {name: set() for name in KINDS}
    for target in targets:
        arns[target.kind].update(target.arns)
    return InvokeGrants({name: tuple(sorted(found)) for name, found in arns.items()})


def endpoint_grants(platform: Platform, region: str) -> InvokeGrants:
    """What may be invoked through `region`'s runtime VPC endpoints: the used targets located in that region."""
    return _grants(t for t in used_targets(platform) if t.region == region)


def router_grants(platform: Platform, region: str) -> InvokeGrants:
    """What `region`'s router may invoke: every target of the features it serves, failover regions included."""
    served = {f.name for f in platform.features_served_in(region)}
    return _grants(t for name in sorted(served) for t in feature_targets(platform, name, region))

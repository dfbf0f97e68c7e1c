"""Planning: a feature's policy plus current health -> an ordered plan of targets.

The feature's candidates are every (model, capacity, region) it allows, nested by its `order`, innermost first.
The default order ("spill", "failover", "fallback") gives: first capacity in the home region, on-demand of the same
model there, the same model in each failover region, then the next model of the hierarchy. Candidates are fixed
per routing table and computed once; a plan filters them by health.

Capability first: a target whose backend kind cannot express the request (the registry's capabilities,
spillway/backends/kinds.py) stays in the plan, in its place, marked with what it cannot express, so that the
engine passes it over without sending and traces it as unsupported; it is no health signal and never a probe.
Among the targets that can serve, unavailable ones (open breaker, busy half-open probe slot, capacity cooldown) are
left out. When every capable candidate is unavailable the plan keeps the least bad one as a forced probe (the
soonest to recover of the least severe kind) instead of failing outright.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from itertools import product
from typing import Protocol

from .backends.kinds import BedrockRef, kind_of
from .config import Feature, RoutingTable, Target, target_id


class StepKind(StrEnum):
    PRIMARY = "primary"
    SPILL = "spill"  # same model and region, on-demand instead of provisioned
    FAILOVER = "failover"  # same model, another region
    FALLBACK = "fallback"  # another model of the hierarchy


@dataclass(frozen=True, slots=True)
class PlanStep:
    target: Target
    kind: StepKind
    probe: bool = False  # forced: sent even though the target is not healthy
    unsupported: frozenset[str] = frozenset()  # what of the request its backend cannot express: passed over


@dataclass(frozen=True, slots=True)
class Plan:
    feature: Feature
    steps: tuple[PlanStep, ...]
    skipped: tuple[str, ...] = ()  # candidate target ids left out as unavailable

    @property
    def target_ids(self) -> tuple[str, ...]:
        return tuple(step.target.id for step in self.steps)


class HealthView(Protocol):
    def standing(self, target_id: str) -> tuple[int, float]:
        """(severity, ready_at); severity 0 means available."""
        ...


def candidates(feature: Feature, targets: Mapping[str, Target]) -> tuple[PlanStep, ...]:
    """Every target the feature allows, in its order, regardless of health.

    A target named in the feature's `invoke_ids` is replaced, for this feature only, by a copy whose backend names
    the override (an application inference profile or PT ARN); a Bedrock target's copy also carries the feature's
    platform-decided Converse members (service tier, performance, guardrail). Its id, and so its health, breakers,
    capacity and metrics, stay the target's. Computed once per routing table (Planner), so a plan costs no copy.
    """
    if feature.invoke_ids or feature.converse_defaults:
        targets = {**targets}
        for tid, invoke_id in feature.invoke_ids:
            targets[tid] = replace(targets[tid], backend=BedrockRef(invoke_id))
        for tid, base in targets.items():
            if isinstance(base.backend, BedrockRef) and feature.converse_defaults:
                targets[tid] = replace(base, backend=replace(base.backend, defaults=feature.converse_defaults))
    spill = ("on_demand",) if feature.first_capacity == "provisioned" and "spill" in feature.order else ()
    axes = {
        "spill": (feature.first_capacity, *spill),
        "failover": feature.regions if "failover" in feature.order else (feature.home_region,),
        "fallback": feature.models if "fallback" in feature.order else feature.models[:1],
    }
    # Dimensions left out of `order` are fixed to their first value; they sit outermost, where that is moot.
    nesting = [d for d in ("spill", "failover", "fallback") if d not in feature.order] + list(feature.order)[::-1]
    steps: list[PlanStep] = []
    for combo in product(*(axes[d] for d in nesting)):
        pick = dict(zip(nesting, combo, strict=True))
        tid = target_id(pick["fallback"], pick["spill"], pick["failover"])
        target = targets.get(tid)
        if target is not None:
            steps.append(PlanStep(target, _kind(feature, target)))
    return tuple(steps)


def _kind(feature: Feature, target: Target) -> StepKind:
    if target.model != feature.models[0]:
        return StepKind.FALLBACK
    if target.region != feature.home_region:
        return StepKind.FAILOVER
    if target.capacity != feature.first_capacity:
        return StepKind.SPILL
    return StepKind.PRIMARY


class Planner:
    """Plans for the features of one routing table. Immutable after construction: safe to share across threads."""

    __slots__ = ("_candidates", "table")

    def __init__(self, table: RoutingTable) -> None:
        self.table = table
        self._candidates = {name: candidates(f, table.targets) for name, f in table.features.items()}

    def candidates(self, feature: str) -> tuple[PlanStep, ...]:
        return self._candidates[feature]

    def plan(self, feature: str, health: HealthView, needs: frozenset[str] = frozenset()) -> Plan:
        """Raises KeyError for an unknown feature (the handler rejects those before planning). `needs` is what the
        request asks of a backend (kinds.request_needs); the default asks nothing any kind lacks."""
        steps = self._candidates[feature]
        kept: list[PlanStep] = []
        skipped: list[str] = []
        worst: tuple[int, float, int] | None = None
        capable = False
        for i, step in enumerate(steps):
            missing = kind_of(step.target.backend.kind).missing(needs) if needs else frozenset()
            if missing:
                kept.append(PlanStep(step.target, step.kind, unsupported=missing))
                continue
            severity, ready_at = health.standing(step.target.id)
            if severity == 0:
                kept.append(step)
                capable = True
                continue
            skipped.append(step.target.id)
            rank = (severity, ready_at, i)
            if worst is None or rank < worst:
                worst = rank
        f = self.table.features[feature]
        if capable or worst is None:
            return Plan(f, tuple(kept), tuple(skipped))
        least_bad = steps[worst[2]]
        probe = PlanStep(least_bad.target, least_bad.kind, probe=True)
        return Plan(f, (*kept, probe), tuple(s for s in skipped if s != least_bad.target.id))

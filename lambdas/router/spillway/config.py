"""The routing table: targets, features and their policies, loaded from JSON and validated once.

The CDK side renders this JSON from config/platform.yaml; the router reads it (AppConfig, last known good, or the
bundled default). Every validation error is a RoutingConfigError whose message starts with the JSON path of the
bad key, e.g. ``features.summarize-thread.models[1]: unknown model 'x'``. Unknown keys are errors too, so a typo
never silently falls back to a default.

This module is the one description of the table: the key sets below (``TABLE_KEYS``, ``TARGET_KEYS``,
``FEATURE_KEYS``...) and the dataclasses' types. spillway/schema.py renders the JSON Schema that AppConfig validates
with from them (``python -m spillway.schema`` prints it), and stacks/routing.py renders tables with their defaults.
An example (version 1)::

    {
      "version": 1,
      "targets": {                                  # target id = "<model>/<capacity>/<region>" (the key)
        "claude-sonnet/provisioned/us-east-1": {
          "model": "claude-sonnet", "capacity": "provisioned", "region": "us-east-1",
          "backend": {"kind": "bedrock", "model_id": "<model id, inference profile id or PT ARN>"},
          "max_in_flight": 8
        },
        "llama-escrow/provisioned/us-east-1": {
          "model": "llama-escrow", "capacity": "provisioned", "region": "us-east-1",
          "backend": {"kind": "sagemaker", "endpoint_name": "<endpoint>"}
        }
      },
      "features": {
        "summarize-thread": {
          "first_capacity": "provisioned", "models": ["claude-sonnet"], "home_region": "us-east-1",
          "deadline_ms": 20000, "attempt_timeout_ms": {"min": 300, "max": 8000}, "max_attempts": 4,
          "breaker": {"latency_ms": 12000}
        }
      },
      "limits": {"max_request_bytes": 262144}      # at most (and by default) spillway.limits.MAX_REQUEST_BYTES
    }

What each knob means is said where it is defined: :class:`Target`, :class:`Feature`, :class:`BreakerPolicy`,
:class:`Limits`. Spill means provisioned -> on_demand of the same model; a feature whose first capacity is on_demand
never spills onto provisioned capacity (that capacity is bought for the features that ask for it).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from .backends.kinds import KINDS, BackendRef, RefError  # a target's backend reference is its kind's (the registry)
from .limits import MAX_REQUEST_BYTES

Capacity = Literal["provisioned", "on_demand"]
CAPACITIES: tuple[Capacity, ...] = ("provisioned", "on_demand")
DIMENSIONS = ("spill", "failover", "fallback")
DEFAULT_ORDER = DIMENSIONS
_NAME = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_FEATURE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_MAX_SECONDS = 3600.0
# The smallest useful attempt: a connection and a first byte. The default minimum of every feature and the floor
# the loader holds configured minimums to (an attempt started with less left could only be cut off).
MIN_ATTEMPT_MS = 250.0
# Converse members a feature's platform settings may decide, with what each may be (botocore's enums).
SERVICE_TIERS = ("priority", "default", "flex", "reserved")
LATENCIES = ("standard", "optimized")
GUARDRAIL_TRACES = ("enabled", "disabled", "enabled_full")
PLATFORM_MEMBERS = ("serviceTier", "performanceConfig", "guardrailConfig")
DEFAULT_SHADOW_GRACE_MS = 50.0  # a shadow slower than the primary by more than this is abandoned


@dataclass(frozen=True)
class Keys:
    """The keys one object of the table takes: the loader refuses any other, the JSON Schema lists exactly these."""

    required: frozenset[str]
    optional: frozenset[str] = frozenset()

    @property
    def all(self) -> frozenset[str]:
        return self.required | self.optional


class RoutingConfigError(ValueError):
    """The routing table is invalid. `path` is the JSON path of the bad key."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Target:
    id: str  # "<model>/<capacity>/<region>": the key of the target in the table
    model: str  # [A-Za-z0-9._:-], no "/"
    capacity: Capacity
    region: str
    backend: BackendRef  # {"kind": "bedrock", "model_id": ...} or {"kind": "sagemaker", "endpoint_name": ...}
    max_in_flight: int | None = None  # >= 1, provisioned only: its estimated concurrency, for predictive spillover


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    error_rate: float = 0.5  # unavailable/total over the window that opens the breaker
    slow_rate: float = 0.5  # slow/total over the window that opens it
    window_s: float = 30.0
    min_requests: int = 5  # no rate verdict on fewer outcomes than this
    consecutive_failures: int = 3
    latency_ms: float | None = None  # over it, a served answer counts as slow
    ttft_ms: float | None = None  # time to first token: the breaker trips when the window's percentile is over it
    ttft_percentile: float = 90.0  # which percentile of the window's first tokens is held to ttft_ms (p90)
    cooldown_s: float = 5.0  # first cooldown; doubles on each failed recovery
    max_cooldown_s: float = 120.0  # so a breaker never stays open forever
    half_open_trickle: int = 1  # probes in flight at once while half-open
    ramp_steps: tuple[float, ...] = (0.25, 0.5)  # share of traffic admitted after a good probe, step by step
    ramp_successes: int = 3  # successes needed to climb one step
    capacity_cooldown_s: float = 1.0  # skip a throttled target this long (or its Retry-After, capped)


@dataclass(frozen=True, slots=True)
class ShadowPolicy:
    """Mirror a share of a feature's requests to a candidate target (spillway/shadow.py). The caller never sees the
    shadow: its answer comes from the feature's own route; the shadow's numbers are recorded, never its content."""

    target: str  # a target id of the table: the candidate (another model, tier, region or cloud)
    share: float  # 0..1 of the feature's requests mirrored (a hash of the request id decides)
    grace_ms: float = DEFAULT_SHADOW_GRACE_MS  # 0..1000: the caller's longest wait for it past the primary's answer


@dataclass(frozen=True, slots=True)
class Feature:
    name: str  # the key of the feature in the table: 1-64 of [A-Za-z0-9._-]
    first_capacity: Capacity  # where a request goes first
    models: tuple[str, ...]  # the hierarchy, best first (fallback walks it)
    home_region: str
    failover_regions: tuple[str, ...] = ()  # in order
    # Expansion order, innermost (tried first) to outermost; a dimension left out is not expanded.
    order: tuple[str, ...] = DEFAULT_ORDER
    deadline_ms: float = 20000.0  # the whole request, every attempt included
    # JSON "attempt_timeout_ms": {"min", "max"}: no attempt starts with less than min left (min >= MIN_ATTEMPT_MS),
    # none gets more than max.
    attempt_min_ms: float = MIN_ATTEMPT_MS
    attempt_max_ms: float = 8000.0
    max_attempts: int = 4  # backend calls (1-32), not counting targets skipped unsent
    fallback_on_context_overflow: bool = True  # a context-window overflow tries the next model
    # Streams: an attempt with no first token this long after it is sent is abandoned for the next target (None: the
    # attempt's own timeout); after the first token, a gap longer than inter_token_ms ends the stream incomplete.
    # A buffered request served through a stream (buffered_via_stream) keeps both limits and fails over on either.
    first_token_ms: float | None = None
    inter_token_ms: float = 10000.0
    # A buffered Converse request is served through the backend's streaming API and assembled into Converse's answer
    # (spillway/assemble.py), so its attempts measure time to first token and keep first_token_ms too; false: the
    # buffered APIs, with no first token to measure.
    buffered_via_stream: bool = True
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    # JSON "invoke_ids": {target id: model id or ARN}: a bedrock target of this feature invoked by another id (its
    # application inference profile, a purchased PT), so spend is attributed per feature. Health, breakers, capacity
    # and metrics stay keyed by the target id. Stored as sorted pairs.
    invoke_ids: tuple[tuple[str, str], ...] = ()
    # JSON "converse": {"defaults": {member: value}, "caller_may_override": [member]}: the Converse members of
    # PLATFORM_MEMBERS the platform decides for this feature's Bedrock targets (service tier, latency, guardrail),
    # and those a caller may send anyway (sending another answers 400). Stored as sorted pairs and a set.
    converse_defaults: tuple[tuple[str, Any], ...] = ()
    caller_may_override: frozenset[str] = frozenset()
    shadow: ShadowPolicy | None = None  # JSON "shadow": {"target", "share", "grace_ms"}; none mirrors nothing

    @property
    def regions(self) -> tuple[str, ...]:
        return (self.home_region, *self.failover_regions)


@dataclass(frozen=True, slots=True)
class Limits:
    # The body as the Lambda event carries it; at most what fits in Lambda's payload (spillway/limits.py).
    max_request_bytes: int = MAX_REQUEST_BYTES


TABLE_KEYS = Keys(frozenset({"version", "targets", "features"}), frozenset({"limits"}))
TARGET_KEYS = Keys(frozenset({"model", "capacity", "region", "backend"}), frozenset({"max_in_flight"}))
BACKEND_KEYS = {name: Keys(frozenset({"kind", *kind.fields}), kind.optional_fields) for name, kind in KINDS.items()}
FEATURE_KEYS = Keys(
    frozenset({"first_capacity", "models", "home_region", "deadline_ms", "attempt_timeout_ms", "max_attempts"}),
    frozenset(
        {
            "failover_regions",
            "order",
            "breaker",
            "fallback_on_context_overflow",
            "invoke_ids",
            "converse",
            "shadow",
            "first_token_ms",
            "inter_token_ms",
            "buffered_via_stream",
        }
    ),
)
CONVERSE_KEYS = Keys(frozenset(), frozenset({"defaults", "caller_may_override"}))
CONVERSE_DEFAULTS_KEYS = Keys(frozenset(), frozenset(PLATFORM_MEMBERS))
SERVICE_TIER_KEYS = Keys(frozenset({"type"}))
PERFORMANCE_KEYS = Keys(frozenset({"latency"}))
GUARDRAIL_KEYS = Keys(frozenset({"guardrailIdentifier", "guardrailVersion"}), frozenset({"trace"}))
SHADOW_KEYS = Keys(frozenset({"target", "share"}), frozenset({"grace_ms"}))
MAX_SHADOW_GRACE_MS = 1000.0
ATTEMPT_TIMEOUT_KEYS = Keys(frozenset({"min", "max"}))
BREAKER_KEYS = Keys(frozenset(), frozenset(BreakerPolicy.__dataclass_fields__))
LIMITS_KEYS = Keys(frozenset(), frozenset(Limits.__dataclass_fields__))
NAME_PATTERN = _NAME.pattern
FEATURE_NAME_PATTERN = _FEATURE.pattern


@dataclass(frozen=True, slots=True)
class RoutingTable:
    version: int
    targets: Mapping[str, Target]
    features: Mapping[str, Feature]
    limits: Limits = field(default_factory=Limits)


def target_id(model: str, capacity: str, region: str) -> str:
    return f"{model}/{capacity}/{region}"


def load_routing_table(text: str | bytes) -> RoutingTable:
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RoutingConfigError("$", f"not valid JSON ({type(exc).__name__} at position {_pos(exc)})") from None
    return parse_routing_table(raw)


def load_routing_table_file(path: str | Path) -> RoutingTable:
    return load_routing_table(Path(path).read_bytes())


def parse_routing_table(raw: object) -> RoutingTable:
    top = _obj(raw, "$")
    _keys(top, "$", TABLE_KEYS)
    version = _int(top["version"], "version", low=1)
    if version != 1:
        raise RoutingConfigError("version", f"unsupported version {version} (this router reads 1)")
    targets = {tid: _target(tid, value) for tid, value in _obj(top["targets"], "targets").items()}
    if not targets:
        raise RoutingConfigError("targets", "at least one target is required")
    features_raw = _obj(top["features"], "features")
    if not features_raw:
        raise RoutingConfigError("features", "at least one feature is required")
    features = {name: _feature(name, value, targets) for name, value in features_raw.items()}
    limits = Limits()
    if "limits" in top:
        lim = _obj(top["limits"], "limits")
        _keys(lim, "limits", LIMITS_KEYS)
        if "max_request_bytes" in lim:
            limits = Limits(_int(lim["max_request_bytes"], "limits.max_request_bytes", low=1, high=MAX_REQUEST_BYTES))
    return RoutingTable(version=version, targets=targets, features=features, limits=limits)


def _target(tid: str, raw: object) -> Target:
    path = f"targets.{tid}"
    obj = _obj(raw, path)
    _keys(obj, path, TARGET_KEYS)
    model = _name(obj["model"], f"{path}.model")
    capacity = _capacity(obj["capacity"], f"{path}.capacity")
    region = _name(obj["region"], f"{path}.region")
    expected = target_id(model, capacity, region)
    if tid != expected:
        raise RoutingConfigError(path, f"target id must be '<model>/<capacity>/<region>', here '{expected}'")
    backend = _backend(obj["backend"], f"{path}.backend")
    max_in_flight = None
    if "max_in_flight" in obj:
        max_in_flight = _int(obj["max_in_flight"], f"{path}.max_in_flight", low=1)
        if capacity != "provisioned":
            raise RoutingConfigError(f"{path}.max_in_flight", "only a provisioned target has a size")
    return Target(tid, model, capacity, region, backend, max_in_flight)


def _backend(raw: object, path: str) -> BackendRef:
    """A target's backend, by its kind's entry in the registry (spillway/backends/kinds.py)."""
    obj = _obj(raw, path)
    name = obj.get("kind")
    kind = KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        known = ", ".join(f"'{known}'" for known in sorted(KINDS))
        raise RoutingConfigError(f"{path}.kind", f"must be one of {known}, not {name!r}")
    _keys(obj, path, BACKEND_KEYS[kind.name])
    if kind.parse is not None:  # a kind of several keys checks them itself (the registry's RefError names one)
        try:
            return kind.parse(obj)
        except RefError as error:
            raise RoutingConfigError(f"{path}.{error.key}", error.problem) from None
    return kind.make_ref(_text(obj[kind.ref_field], f"{path}.{kind.ref_field}"))


def _feature(name: str, raw: object, targets: Mapping[str, Target]) -> Feature:
    path = f"features.{name}"
    if not _FEATURE.match(name):
        raise RoutingConfigError(path, "a feature name is 1-64 of [A-Za-z0-9._-]")
    obj = _obj(raw, path)
    _keys(obj, path, FEATURE_KEYS)
    known_models = {t.model for t in targets.values()}
    known_regions = {t.region for t in targets.values()}
    first = _capacity(obj["first_capacity"], f"{path}.first_capacity")
    models = _names(obj["models"], f"{path}.models", known_models, "model", nonempty=True)
    home = _name(obj["home_region"], f"{path}.home_region")
    if home not in known_regions:
        raise RoutingConfigError(f"{path}.home_region", f"unknown region '{home}' (no target there)")
    failover = _names(obj.get("failover_regions", []), f"{path}.failover_regions", known_regions, "region")
    if home in failover:
        at = failover.index(home)
        raise RoutingConfigError(f"{path}.failover_regions[{at}]", f"'{home}' is the home region")
    order = _order(obj.get("order", list(DEFAULT_ORDER)), f"{path}.order")
    deadline = _num(obj["deadline_ms"], f"{path}.deadline_ms", low=1, high=_MAX_SECONDS * 1000)
    timeout = _obj(obj["attempt_timeout_ms"], f"{path}.attempt_timeout_ms")
    _keys(timeout, f"{path}.attempt_timeout_ms", ATTEMPT_TIMEOUT_KEYS)
    t_min = _num(timeout["min"], f"{path}.attempt_timeout_ms.min")
    if t_min < MIN_ATTEMPT_MS:
        raise RoutingConfigError(
            f"{path}.attempt_timeout_ms.min",
            f"{t_min:g} is below {MIN_ATTEMPT_MS:g}: no attempt can be answered in less, it would only be cut off",
        )
    t_max = _num(timeout["max"], f"{path}.attempt_timeout_ms.max", low=1)
    if t_min > t_max:
        raise RoutingConfigError(f"{path}.attempt_timeout_ms", f"min {t_min:g} is above max {t_max:g}")
    if t_min > deadline:
        raise RoutingConfigError(f"{path}.attempt_timeout_ms.min", f"{t_min:g} leaves no attempt in the deadline")
    max_attempts = _int(obj["max_attempts"], f"{path}.max_attempts", low=1, high=32)
    overflow = obj.get("fallback_on_context_overflow", True)
    if not isinstance(overflow, bool):
        raise RoutingConfigError(f"{path}.fallback_on_context_overflow", "must be true or false")
    breaker = _breaker(obj.get("breaker", {}), f"{path}.breaker")
    first_token = _opt_num(obj.get("first_token_ms"), f"{path}.first_token_ms")
    if first_token is not None and not MIN_ATTEMPT_MS <= first_token <= t_max:
        raise RoutingConfigError(
            f"{path}.first_token_ms", f"{first_token:g} must lie within {MIN_ATTEMPT_MS:g} and the attempt maximum"
        )
    inter_token = _num(obj.get("inter_token_ms", 10000.0), f"{path}.inter_token_ms", low=1, high=_MAX_SECONDS * 1000)
    via_stream = obj.get("buffered_via_stream", True)
    if not isinstance(via_stream, bool):
        raise RoutingConfigError(f"{path}.buffered_via_stream", "must be true or false")
    invoke_ids = _invoke_ids(
        obj.get("invoke_ids", {}), f"{path}.invoke_ids", targets, models=models, regions=(home, *failover), first=first
    )
    defaults, overridable = _converse(obj.get("converse", {}), f"{path}.converse")
    _guarded_models_on_bedrock(defaults, models, targets, path)
    feature = Feature(
        name=name,
        first_capacity=first,
        models=models,
        home_region=home,
        failover_regions=failover,
        order=order,
        deadline_ms=deadline,
        attempt_min_ms=t_min,
        attempt_max_ms=t_max,
        max_attempts=max_attempts,
        fallback_on_context_overflow=overflow,
        first_token_ms=first_token,
        inter_token_ms=inter_token,
        buffered_via_stream=via_stream,
        breaker=breaker,
        invoke_ids=invoke_ids,
        converse_defaults=defaults,
        caller_may_override=overridable,
        shadow=None if obj.get("shadow") is None else parse_shadow(obj["shadow"], f"{path}.shadow", targets),
    )
    reachable = {
        t.model
        for t in targets.values()
        if t.region in feature.regions and (t.capacity == first or ("spill" in order and first == "provisioned"))
    }
    for i, model in enumerate(models):
        if model not in reachable:
            raise RoutingConfigError(f"{path}.models[{i}]", f"model '{model}' has no target this feature may use")
    primary = target_id(models[0], first, home)
    if primary not in targets:
        raise RoutingConfigError(f"{path}.first_capacity", f"no target '{primary}' for the first attempt")
    return feature


def _invoke_ids(
    raw: object,
    path: str,
    targets: Mapping[str, Target],
    *,
    models: tuple[str, ...],
    regions: tuple[str, ...],
    first: Capacity,
) -> tuple[tuple[str, str], ...]:
    """A feature's per-target invoke ids: only bedrock targets of its models, regions and capacities."""
    obj = _obj(raw, path)
    capacities = CAPACITIES if first == "provisioned" else (first,)
    out: list[tuple[str, str]] = []
    for tid, value in obj.items():
        at = f"{path}.{tid}"
        target = targets.get(tid)
        if target is None:
            raise RoutingConfigError(at, f"unknown target '{tid}'")
        if target.model not in models or target.region not in regions or target.capacity not in capacities:
            raise RoutingConfigError(at, f"target '{tid}' is not one this feature may use")
        if target.backend.kind != "bedrock":
            raise RoutingConfigError(
                at, f"target '{tid}' is {target.backend.kind}: only a bedrock target has a model id"
            )
        out.append((tid, _text(value, at)))
    return tuple(sorted(out))


def parse_shadow(raw: object, path: str, targets: Mapping[str, Target]) -> ShadowPolicy:
    """A feature's shadow: the candidate must be one of the table's targets (the flags profile's entries too)."""
    obj = _obj(raw, path)
    _keys(obj, path, SHADOW_KEYS)
    candidate = _text(obj["target"], f"{path}.target")
    if candidate not in targets:
        raise RoutingConfigError(f"{path}.target", f"unknown target '{candidate[:160]}'")
    share = _num(obj["share"], f"{path}.share", low=0.0, high=1.0)
    grace = _num(obj.get("grace_ms", DEFAULT_SHADOW_GRACE_MS), f"{path}.grace_ms", low=0.0, high=MAX_SHADOW_GRACE_MS)
    return ShadowPolicy(candidate, share, grace)


def _converse(raw: object, path: str) -> tuple[tuple[tuple[str, Any], ...], frozenset[str]]:
    """A feature's platform-decided Converse members and those a caller may override."""
    obj = _obj(raw, path)
    _keys(obj, path, CONVERSE_KEYS)
    at = f"{path}.defaults"
    defaults = _obj(obj.get("defaults", {}), at)
    _keys(defaults, at, CONVERSE_DEFAULTS_KEYS)
    if "serviceTier" in defaults:
        tier = _obj(defaults["serviceTier"], f"{at}.serviceTier")
        _keys(tier, f"{at}.serviceTier", SERVICE_TIER_KEYS)
        _choice(tier["type"], f"{at}.serviceTier.type", SERVICE_TIERS)
    if "performanceConfig" in defaults:
        performance = _obj(defaults["performanceConfig"], f"{at}.performanceConfig")
        _keys(performance, f"{at}.performanceConfig", PERFORMANCE_KEYS)
        _choice(performance["latency"], f"{at}.performanceConfig.latency", LATENCIES)
    if "guardrailConfig" in defaults:
        guardrail = _obj(defaults["guardrailConfig"], f"{at}.guardrailConfig")
        _keys(guardrail, f"{at}.guardrailConfig", GUARDRAIL_KEYS)
        for key in ("guardrailIdentifier", "guardrailVersion"):
            _text(guardrail[key], f"{at}.guardrailConfig.{key}")
        if "trace" in guardrail:
            _choice(guardrail["trace"], f"{at}.guardrailConfig.trace", GUARDRAIL_TRACES)
    overridable = obj.get("caller_may_override", [])
    if not isinstance(overridable, list):
        raise RoutingConfigError(f"{path}.caller_may_override", f"must be a list drawn from {list(PLATFORM_MEMBERS)}")
    for i, member in enumerate(overridable):
        _choice(member, f"{path}.caller_may_override[{i}]", PLATFORM_MEMBERS)
    return tuple(sorted(defaults.items())), frozenset(overridable)


def _guarded_models_on_bedrock(
    defaults: tuple[tuple[str, Any], ...], models: tuple[str, ...], targets: Mapping[str, Target], path: str
) -> None:
    """A guardrail is applied by Bedrock: a feature with one may use no model served otherwise (it would answer
    unguarded)."""
    if not any(member == "guardrailConfig" for member, _ in defaults):
        return
    for i, model in enumerate(models):
        kinds = {t.backend.kind for t in targets.values() if t.model == model}
        if kinds != {"bedrock"}:
            raise RoutingConfigError(
                f"{path}.models[{i}]",
                f"model '{model}' is not served by Bedrock alone, and a guardrail applies to Bedrock targets: "
                "a request it served would go unguarded",
            )


def _choice(raw: object, path: str, choices: tuple[str, ...]) -> str:
    if raw not in choices:
        raise RoutingConfigError(path, f"must be one of {', '.join(choices)}, not {raw!r}")
    return raw  # narrowed to str by the membership test


def _breaker(raw: object, path: str) -> BreakerPolicy:
    obj = _obj(raw, path)
    d = BreakerPolicy()
    _keys(obj, path, BREAKER_KEYS)
    p = f"{path}."
    rate = obj.get("error_rate", d.error_rate)
    ramp_raw = obj.get("ramp_steps", list(d.ramp_steps))
    if not isinstance(ramp_raw, list):
        raise RoutingConfigError(f"{p}ramp_steps", "must be a list of fractions")
    ramp = tuple(_num(v, f"{p}ramp_steps[{i}]", low=0.0, high=1.0) for i, v in enumerate(ramp_raw))
    for i, step in enumerate(ramp):
        if step <= 0 or (i and step <= ramp[i - 1]):
            raise RoutingConfigError(f"{p}ramp_steps[{i}]", "steps must rise strictly within (0, 1]")
    policy = BreakerPolicy(
        error_rate=_num(rate, f"{p}error_rate", low=0.0, high=1.0),
        slow_rate=_num(obj.get("slow_rate", rate), f"{p}slow_rate", low=0.0, high=1.0),
        window_s=_num(obj.get("window_s", d.window_s), f"{p}window_s", low=1, high=_MAX_SECONDS),
        min_requests=_int(obj.get("min_requests", d.min_requests), f"{p}min_requests", low=1),
        consecutive_failures=_int(
            obj.get("consecutive_failures", d.consecutive_failures), f"{p}consecutive_failures", low=1
        ),
        latency_ms=_opt_num(obj.get("latency_ms"), f"{p}latency_ms"),
        ttft_ms=_opt_num(obj.get("ttft_ms"), f"{p}ttft_ms"),
        ttft_percentile=_num(obj.get("ttft_percentile", d.ttft_percentile), f"{p}ttft_percentile", low=50, high=99.9),
        cooldown_s=_num(obj.get("cooldown_s", d.cooldown_s), f"{p}cooldown_s", low=0.001, high=_MAX_SECONDS),
        max_cooldown_s=_num(
            obj.get("max_cooldown_s", d.max_cooldown_s), f"{p}max_cooldown_s", low=0.001, high=_MAX_SECONDS
        ),
        half_open_trickle=_int(obj.get("half_open_trickle", d.half_open_trickle), f"{p}half_open_trickle", low=1),
        ramp_steps=ramp,
        ramp_successes=_int(obj.get("ramp_successes", d.ramp_successes), f"{p}ramp_successes", low=1),
        capacity_cooldown_s=_num(
            obj.get("capacity_cooldown_s", d.capacity_cooldown_s), f"{p}capacity_cooldown_s", low=0, high=60
        ),
    )
    if policy.error_rate == 0 or policy.slow_rate == 0:
        raise RoutingConfigError(f"{p}error_rate", "a rate of 0 would open the breaker on the first outcome")
    if policy.cooldown_s > policy.max_cooldown_s:
        raise RoutingConfigError(f"{p}cooldown_s", f"{policy.cooldown_s:g} is above max_cooldown_s")
    return policy


def _order(raw: object, path: str) -> tuple[str, ...]:
    if not isinstance(raw, list):
        raise RoutingConfigError(path, f"must be a list drawn from {list(DIMENSIONS)}")
    for i, item in enumerate(raw):
        if item not in DIMENSIONS:
            raise RoutingConfigError(f"{path}[{i}]", f"unknown dimension {item!r}, expected one of {DIMENSIONS}")
        if item in raw[:i]:
            raise RoutingConfigError(f"{path}[{i}]", f"'{item}' is listed twice")
    return tuple(cast(list[str], raw))


# -- small typed readers: each names the path of what it rejects -------------------------------------------------


def _obj(raw: object, path: str) -> Mapping[str, Any]:
    if not isinstance(raw, dict):
        raise RoutingConfigError(path, f"must be an object, not {_kind(raw)}")
    return cast(Mapping[str, Any], raw)


def _keys(obj: Mapping[str, Any], path: str, keys: Keys) -> None:
    for key in sorted(keys.required - obj.keys()):
        raise RoutingConfigError(f"{path}.{key}" if path != "$" else key, "is required")
    for key in obj:
        if key not in keys.all:
            raise RoutingConfigError(f"{path}.{key}" if path != "$" else key, "unknown key")


def _text(raw: object, path: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise RoutingConfigError(path, f"must be a non-empty string, not {_kind(raw)}")
    return raw


def _name(raw: object, path: str) -> str:
    value = _text(raw, path)
    if not _NAME.match(value):
        raise RoutingConfigError(path, f"'{value[:64]}' is not a name: use 1-128 of [A-Za-z0-9._:-]")
    return value


def _names(raw: object, path: str, known: set[str], what: str, *, nonempty: bool = False) -> tuple[str, ...]:
    if not isinstance(raw, list):
        raise RoutingConfigError(path, f"must be a list of {what}s, not {_kind(raw)}")
    if nonempty and not raw:
        raise RoutingConfigError(path, f"at least one {what} is required")
    out: list[str] = []
    for i, item in enumerate(raw):
        value = _text(item, f"{path}[{i}]")
        if value not in known:
            raise RoutingConfigError(f"{path}[{i}]", f"unknown {what} '{value}'")
        if value in out:
            raise RoutingConfigError(f"{path}[{i}]", f"'{value}' is listed twice")
        out.append(value)
    return tuple(out)


def _capacity(raw: object, path: str) -> Capacity:
    if raw not in CAPACITIES:
        raise RoutingConfigError(path, f"must be 'provisioned' or 'on_demand', not {raw!r}")
    return raw  # narrowed to Capacity by the membership test


def _num(raw: object, path: str, *, low: float | None = None, high: float | None = None) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise RoutingConfigError(path, f"must be a number, not {_kind(raw)}")
    if low is not None and raw < low:
        raise RoutingConfigError(path, f"{raw:g} is below {low:g}")
    if high is not None and raw > high:
        raise RoutingConfigError(path, f"{raw:g} is above {high:g}")
    return float(raw)


def _opt_num(raw: object, path: str) -> float | None:
    return None if raw is None else _num(raw, path, low=1)


def _int(raw: object, path: str, *, low: int | None = None, high: int | None = None) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise RoutingConfigError(path, f"must be an integer, not {_kind(raw)}")
    _num(raw, path, low=low, high=high)
    return raw


def _kind(raw: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(raw), f"a {type(raw).__name__}")


def _pos(exc: Exception) -> int:
    return int(getattr(exc, "pos", getattr(exc, "start", -1)))

"""The routing table's JSON Schema (what AppConfig validates with) and the router's loader agree, over generated
tables that use every knob: a table the loader accepts passes the schema, and a key the loader refuses (unknown,
missing, of the wrong type) the schema refuses too. Same for the flags and the router's flag parser."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spillway import config, schema
from spillway.config import MIN_ATTEMPT_MS, RoutingConfigError, parse_routing_table
from spillway.limits import MAX_REQUEST_BYTES
from spillway.routing_source import CANARY_KEYS, FLAGS_KEYS, _canaries, _shadow_flags

MODELS = ("claude-sonnet", "nova-lite", "llama-escrow")
REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
TABLE = jsonschema.Draft4Validator(schema.routing_table_schema())
FLAGS = jsonschema.Draft4Validator(schema.flags_schema())

Draw = Callable[[st.SearchStrategy[Any]], Any]
unit = st.floats(min_value=0.01, max_value=1.0)
seconds = st.floats(min_value=1.0, max_value=3600.0)
counts = st.integers(min_value=1, max_value=50)


DEFAULT_BREAKER = config.BreakerPolicy()


def _cooldowns(draw: Draw, knobs: dict[str, Any]) -> None:
    low = draw(st.floats(min_value=0.001, max_value=60.0))
    high = draw(st.floats(min_value=low, max_value=3600.0))
    if draw(st.booleans()):
        knobs["cooldown_s"] = min(low, DEFAULT_BREAKER.max_cooldown_s)
    if draw(st.booleans()):
        knobs["max_cooldown_s"] = max(high, DEFAULT_BREAKER.cooldown_s, knobs.get("cooldown_s", 0.0))


# Every optional knob of every object, each with a strategy of values the loader accepts. A knob added to the loader
# fails test_the_strategies_cover_every_knob until it is generated here, and so checked against the schema.
BREAKER_KNOBS: dict[str, st.SearchStrategy[Any]] = {
    "error_rate": unit,
    "slow_rate": unit,
    "window_s": seconds,
    "min_requests": counts,
    "consecutive_failures": counts,
    "latency_ms": st.none() | st.floats(min_value=1.0, max_value=60000.0),
    "ttft_ms": st.none() | st.integers(min_value=1, max_value=60000),
    "ttft_percentile": st.floats(min_value=50.0, max_value=99.9),
    "half_open_trickle": counts,
    "ramp_steps": st.lists(unit, max_size=4, unique=True).map(sorted),
    "ramp_successes": counts,
    "capacity_cooldown_s": st.floats(min_value=0.0, max_value=60.0),
}
COOLDOWN_KNOBS = {"cooldown_s", "max_cooldown_s"}  # drawn together (cooldown_s <= max_cooldown_s)


@st.composite
def breakers(draw: Draw) -> dict[str, Any]:
    names = draw(st.sets(st.sampled_from(sorted(BREAKER_KNOBS))))
    knobs = {name: draw(BREAKER_KNOBS[name]) for name in sorted(names)}
    _cooldowns(draw, knobs)
    return knobs


BACKENDS: dict[str, Any] = {
    "bedrock": lambda ref: {"kind": "bedrock", "model_id": ref},
    "sagemaker": lambda ref: {"kind": "sagemaker", "endpoint_name": ref},
    "openai": lambda ref: {"kind": "openai", "base_url": "https://api.example.com/v1", "model": ref, "auth": "sigv4"},
}


@st.composite
def tables(draw: Draw) -> dict[str, Any]:
    models = draw(st.lists(st.sampled_from(MODELS), min_size=1, max_size=2, unique=True))
    regions = draw(st.lists(st.sampled_from(REGIONS), min_size=1, max_size=2, unique=True))
    targets: dict[str, Any] = {}
    for model in models:
        for region in regions:
            for capacity in config.CAPACITIES:
                kind = draw(st.sampled_from(sorted(config.BACKEND_KEYS)))
                ref = f"{model}-{capacity}-{region}"
                backend = BACKENDS[kind](ref)
                entry: dict[str, Any] = {"model": model, "capacity": capacity, "region": region, "backend": backend}
                if capacity == "provisioned" and draw(st.booleans()):
                    entry["max_in_flight"] = draw(counts)
                targets[config.target_id(model, capacity, region)] = entry
    features: dict[str, Any] = {}
    for name in draw(st.lists(st.from_regex(r"[a-z][a-z0-9._-]{0,20}", fullmatch=True), min_size=1, max_size=2)):
        features[name] = draw(feature_of(targets, models, regions))
    table: dict[str, Any] = {"version": 1, "targets": targets, "features": features}
    if draw(st.booleans()):
        table["limits"] = {"max_request_bytes": draw(st.integers(min_value=1, max_value=MAX_REQUEST_BYTES))}
    return table


@st.composite
def feature_of(draw: Draw, targets: dict[str, Any], models: list[str], regions: list[str]) -> dict[str, Any]:
    chosen = draw(st.permutations(models).flatmap(lambda m: st.integers(1, len(m)).map(lambda n: list(m[:n]))))
    home = draw(st.sampled_from(regions))
    failover = draw(st.lists(st.sampled_from([r for r in regions if r != home] or [home]), unique=True))
    failover = [r for r in failover if r != home]
    first = draw(st.sampled_from(config.CAPACITIES))
    deadline = draw(st.floats(min_value=MIN_ATTEMPT_MS, max_value=3_600_000.0))
    low = draw(st.floats(min_value=MIN_ATTEMPT_MS, max_value=deadline))
    high = draw(st.floats(min_value=low, max_value=3_600_000.0))
    feature: dict[str, Any] = {
        "first_capacity": first,
        "models": chosen,
        "home_region": home,
        "deadline_ms": deadline,
        "attempt_timeout_ms": {"min": low, "max": high},
        "max_attempts": draw(st.integers(min_value=1, max_value=32)),
    }
    names = draw(st.sets(st.sampled_from(sorted(config.FEATURE_KEYS.optional))))
    regions_used = (home, *failover) if "failover_regions" in names else (home,)
    capacities = config.CAPACITIES if first == "provisioned" else (first,)
    usable = sorted(
        tid
        for tid, t in targets.items()
        if t["backend"]["kind"] == "bedrock"
        and t["model"] in chosen
        and t["region"] in regions_used
        and t["capacity"] in capacities
    )
    knobs: dict[str, st.SearchStrategy[Any]] = {
        "failover_regions": st.just(failover),
        "order": st.lists(st.sampled_from(config.DIMENSIONS), unique=True),
        "breaker": breakers(),
        "fallback_on_context_overflow": st.booleans(),
        "invoke_ids": st.dictionaries(st.sampled_from(usable), st.just("arn:aws:bedrock:x:1:profile/p"))
        if usable
        else st.just({}),
        "first_token_ms": st.one_of(st.none(), st.floats(min_value=MIN_ATTEMPT_MS, max_value=high)),
        "inter_token_ms": st.floats(min_value=1, max_value=3_600_000.0),
        "buffered_via_stream": st.booleans(),
        "converse": st.fixed_dictionaries(
            {},
            optional={
                "defaults": st.fixed_dictionaries(
                    {},
                    optional={
                        "serviceTier": st.builds(lambda t: {"type": t}, st.sampled_from(config.SERVICE_TIERS)),
                        "performanceConfig": st.builds(lambda v: {"latency": v}, st.sampled_from(config.LATENCIES)),
                    },
                ),
                "caller_may_override": st.lists(st.sampled_from(config.PLATFORM_MEMBERS), unique=True),
            },
        ),
        "shadow": st.fixed_dictionaries(
            {"target": st.sampled_from(sorted(targets)), "share": st.floats(0.0, 1.0)},
            optional={"grace_ms": st.floats(0.0, config.MAX_SHADOW_GRACE_MS)},
        ),
    }
    assert set(knobs) == config.FEATURE_KEYS.optional, "every feature knob is generated"
    for name in sorted(names):
        feature[name] = draw(knobs[name])
    return feature


def _levels(table: dict[str, Any]) -> list[tuple[str, dict[str, Any], config.Keys]]:
    """Each object of the table with the keys the loader takes there."""
    target = next(iter(table["targets"].values()))
    feature = next(iter(table["features"].values()))
    feature.setdefault("breaker", {})
    table.setdefault("limits", {})
    return [
        ("$", table, config.TABLE_KEYS),
        ("target", target, config.TARGET_KEYS),
        ("backend", target["backend"], config.BACKEND_KEYS[target["backend"]["kind"]]),
        ("feature", feature, config.FEATURE_KEYS),
        ("attempt_timeout_ms", feature["attempt_timeout_ms"], config.ATTEMPT_TIMEOUT_KEYS),
        ("breaker", feature["breaker"], config.BREAKER_KEYS),
        ("limits", table["limits"], config.LIMITS_KEYS),
    ]


def _both_refuse(table: dict[str, Any]) -> None:
    with pytest.raises(RoutingConfigError):
        parse_routing_table(table)
    assert not TABLE.is_valid(table), "the schema accepts what the loader refuses"


@settings(max_examples=60, deadline=None)
@given(tables())
def test_a_table_the_loader_accepts_passes_the_schema(table: dict[str, Any]) -> None:
    parse_routing_table(copy.deepcopy(table))
    TABLE.validate(table)


@settings(max_examples=40, deadline=None)
@given(tables(), st.data())
def test_an_unknown_key_is_refused_by_both(table: dict[str, Any], data: st.DataObject) -> None:
    base = copy.deepcopy(table)
    _levels(base)  # empty breaker and limits objects are valid: add them before breaking one level
    parse_routing_table(base)
    TABLE.validate(base)
    levels = _levels(base)
    _, obj, _ = data.draw(st.sampled_from(levels))
    obj[data.draw(st.sampled_from(["unknown_knob", "Deadline_ms", "breaker_"]))] = 1
    _both_refuse(base)


@settings(max_examples=40, deadline=None)
@given(tables(), st.data())
def test_a_missing_required_key_is_refused_by_both(table: dict[str, Any], data: st.DataObject) -> None:
    levels = [(name, obj, keys) for name, obj, keys in _levels(table) if keys.required]
    _, obj, keys = data.draw(st.sampled_from(levels))
    del obj[data.draw(st.sampled_from(sorted(keys.required)))]
    _both_refuse(table)


def _wrong_type(value: Any) -> Any:
    if isinstance(value, str):
        return 7
    if isinstance(value, bool):
        return "true"
    if isinstance(value, int | float) or value is None:
        return "7"
    return "x"  # lists and objects


@settings(max_examples=60, deadline=None)
@given(tables(), st.data())
def test_a_knob_of_the_wrong_type_is_refused_by_both(table: dict[str, Any], data: st.DataObject) -> None:
    levels = [(name, obj, keys) for name, obj, keys in _levels(table) if obj and name != "$"]
    _, obj, _ = data.draw(st.sampled_from(levels))
    key = data.draw(st.sampled_from(sorted(k for k in obj if k != "kind")))
    obj[key] = _wrong_type(obj[key])
    _both_refuse(table)


def test_the_strategies_cover_every_knob() -> None:
    assert config.BREAKER_KEYS.optional == set(BREAKER_KNOBS) | COOLDOWN_KNOBS
    assert config.TARGET_KEYS.optional == {"max_in_flight"}
    assert config.TABLE_KEYS.optional == {"limits"}
    assert config.LIMITS_KEYS.optional == {"max_request_bytes"}
    assert config.ATTEMPT_TIMEOUT_KEYS.optional == set()
    assert set(BACKENDS) == set(config.BACKEND_KEYS)
    assert all(not keys.optional for kind, keys in config.BACKEND_KEYS.items() if kind != "openai")


def test_a_knob_the_renderer_cannot_type_fails_the_render(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = config.FEATURE_KEYS
    monkeypatch.setattr(config, "FEATURE_KEYS", config.Keys(keys.required, keys.optional | {"service_level"}))
    with pytest.raises(schema.SchemaRenderError, match=r"^features\.\*\.service_level: not a field of Feature"):
        schema.routing_table_schema()


def test_the_schema_is_a_valid_draft4_schema() -> None:
    jsonschema.Draft4Validator.check_schema(schema.routing_table_schema())
    jsonschema.Draft4Validator.check_schema(schema.flags_schema())


# -- flags -------------------------------------------------------------------------------------------------------

canary_entries = st.fixed_dictionaries(
    {"model": st.sampled_from(MODELS), "share": st.floats(min_value=0.0, max_value=1.0)},
    optional={"enabled": st.booleans()},
)
shadow_entries = st.fixed_dictionaries(
    {"target": st.sampled_from(["nova-lite/on_demand/us-east-1"]), "share": st.floats(min_value=0.0, max_value=1.0)},
    optional={"enabled": st.booleans(), "grace_ms": st.floats(0.0, 1000.0)},
)
_flag_features = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
flag_documents = st.fixed_dictionaries(
    {},
    optional={
        "canary": st.dictionaries(_flag_features, canary_entries),
        "shadow": st.dictionaries(_flag_features, shadow_entries),
    },
)


def _parse_flags(doc: dict[str, Any]) -> list[tuple[str, str]]:
    events: list[tuple[str, str]] = []
    _canaries(doc, lambda kind, detail: events.append((kind, detail)))
    _shadow_flags(doc, lambda kind, detail: events.append((kind, detail)))
    return events


@settings(max_examples=40, deadline=None)
@given(flag_documents)
def test_flags_the_router_accepts_pass_the_schema(doc: dict[str, Any]) -> None:
    assert _parse_flags(doc) == []
    FLAGS.validate(doc)
    assert {"canary", "shadow"} == FLAGS_KEYS.all
    assert {"model", "share", "enabled"} == CANARY_KEYS.all


@pytest.mark.parametrize(
    "entry",
    [
        {"model": "nova-lite", "share": 0.1, "shares": 0.2},
        {"model": "nova-lite"},
        {"model": "nova-lite", "share": "0.1"},
        {"model": "nova-lite", "share": 0.1, "enabled": "no"},
        {"model": 7, "share": 0.1},
    ],
)
def test_a_flag_entry_the_router_refuses_fails_the_schema(entry: dict[str, Any]) -> None:
    doc = {"canary": {"summarize-thread": entry}}
    assert ("flags_invalid", "entry") in _parse_flags(doc) or ("flags_invalid", "share") in _parse_flags(doc)
    assert not FLAGS.is_valid(doc)

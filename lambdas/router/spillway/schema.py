"""The JSON Schemas (draft-04, what AppConfig validators speak) of the routing table and the flags, rendered from
the loader's own description of them: the key sets and dataclass types of spillway/config.py and the flag keys of
spillway/routing_source.py. Nothing here is written twice: a knob added to the loader is in the schema at the next
synth, and a knob whose type cannot be rendered fails the render (and CI) instead of being refused at deploy.

The schema checks structure: keys (required, optional, nothing else), types, enums and name patterns. It is never
stricter than the loader. Bounds and cross-references (a feature's models and regions name existing targets) stay
with the loader, which checks every table at synth (stacks/routing.py) and at run time (last known good).
Not imported by the handler: only the stacks and the tests use it.

``python -m spillway.schema`` prints the routing table's schema.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

from . import config
from .backends.kinds import OPENAI_AUTH_MODES
from .config import Keys
from .routing_source import CANARY_KEYS, FLAGS_KEYS, SHADOW_FLAG_KEYS

DRAFT4 = "http://json-schema.org/draft-04/schema#"
_TARGET_ID = f"^{config.NAME_PATTERN[1:-1]}/({'|'.join(config.CAPACITIES)})/{config.NAME_PATTERN[1:-1]}$"


class SchemaRenderError(TypeError):
    """A knob of the loader has no JSON Schema rendering: say how in this module."""


def routing_table_schema() -> dict[str, Any]:
    target = _object(config.TARGET_KEYS, _properties("targets.*", config.Target, config.TARGET_KEYS, _target_props()))
    feature = _object(
        config.FEATURE_KEYS, _properties("features.*", config.Feature, config.FEATURE_KEYS, _feature_props())
    )
    limits = _object(config.LIMITS_KEYS, _properties("limits", config.Limits, config.LIMITS_KEYS, {}))
    return {
        "$schema": DRAFT4,
        "title": "Spillway routing table, version 1 (rendered from lambdas/router/spillway/config.py)",
        **_object(
            config.TABLE_KEYS,
            {
                "version": {"enum": [1]},
                "targets": _map(_TARGET_ID, target, min_properties=1),
                "features": _map(config.FEATURE_NAME_PATTERN, feature, min_properties=1),
                "limits": limits,
            },
        ),
    }


def flags_schema() -> dict[str, Any]:
    canary = {
        "model": _NAME,
        "share": {"type": "number", "minimum": 0, "maximum": 1},
        "enabled": {"type": "boolean"},
    }
    entry = _object(CANARY_KEYS, _exactly("flags.canary.*", CANARY_KEYS, canary))
    return {
        "$schema": DRAFT4,
        "title": "Spillway flags (rendered from lambdas/router/spillway/routing_source.py)",
        **_object(
            FLAGS_KEYS,
            {
                "canary": _map(config.FEATURE_NAME_PATTERN, entry),
                "shadow": _map(config.FEATURE_NAME_PATTERN, _shadow(SHADOW_FLAG_KEYS, "flags.shadow.*")),
            },
        ),
    }


# -- what types cannot say --------------------------------------------------------------------------------------

_NAME = {"type": "string", "pattern": config.NAME_PATTERN}
_NAMES = {"type": "array", "items": _NAME, "uniqueItems": True}
_TEXT = {"type": "string", "minLength": 1}
# Backend keys that are not free text (an openai backend's auth mode and image flag).
_BACKEND_TYPES: dict[str, Any] = {"auth": {"enum": list(OPENAI_AUTH_MODES)}, "images": {"type": "boolean"}}


def _target_props() -> dict[str, Any]:
    """A target's keys whose JSON differs from its field: names, and the backend, one object per kind."""
    backends = [
        _object(
            keys, {"kind": {"enum": [kind]}, **{key: _BACKEND_TYPES.get(key, _TEXT) for key in keys.all - {"kind"}}}
        )
        for kind, keys in sorted(config.BACKEND_KEYS.items())
    ]
    return {"model": _NAME, "region": _NAME, "backend": {"oneOf": backends}}


def _feature_props() -> dict[str, Any]:
    """A feature's keys whose JSON differs from its field: names, the order's vocabulary, nested objects."""
    breaker = _object(
        config.BREAKER_KEYS, _properties("features.*.breaker", config.BreakerPolicy, config.BREAKER_KEYS, {})
    )
    return {
        "models": {**_NAMES, "minItems": 1},
        "home_region": _NAME,
        "failover_regions": _NAMES,
        "order": {"type": "array", "items": {"enum": list(config.DIMENSIONS)}, "uniqueItems": True},
        "attempt_timeout_ms": _object(
            config.ATTEMPT_TIMEOUT_KEYS, {key: {"type": "number"} for key in config.ATTEMPT_TIMEOUT_KEYS.all}
        ),
        "breaker": breaker,
        "invoke_ids": _map(_TARGET_ID, _TEXT),
        "converse": _object(
            config.CONVERSE_KEYS,
            {
                "defaults": _object(
                    config.CONVERSE_DEFAULTS_KEYS,
                    {
                        "serviceTier": _object(
                            config.SERVICE_TIER_KEYS, {"type": {"enum": list(config.SERVICE_TIERS)}}
                        ),
                        "performanceConfig": _object(
                            config.PERFORMANCE_KEYS, {"latency": {"enum": list(config.LATENCIES)}}
                        ),
                        "guardrailConfig": _object(
                            config.GUARDRAIL_KEYS,
                            {
                                "guardrailIdentifier": _TEXT,
                                "guardrailVersion": _TEXT,
                                "trace": {"enum": list(config.GUARDRAIL_TRACES)},
                            },
                        ),
                    },
                ),
                "caller_may_override": {
                    "type": "array",
                    "items": {"enum": list(config.PLATFORM_MEMBERS)},
                    "uniqueItems": True,
                },
            },
        ),
        "shadow": _shadow(config.SHADOW_KEYS, "features.*.shadow"),
    }


def _shadow(keys: Keys, path: str) -> dict[str, Any]:
    """A shadow entry (the table's, or the flags' with its `enabled`): the candidate's target id and a share."""
    rendered = {
        "target": {"type": "string", "pattern": _TARGET_ID},
        "share": {"type": "number", "minimum": 0, "maximum": 1},
        "grace_ms": {"type": "number", "minimum": 0, "maximum": config.MAX_SHADOW_GRACE_MS},
        "enabled": {"type": "boolean"},
        "judge": _judge(f"{path}.judge"),
    }
    return _object(keys, _exactly(path, keys, {key: rendered[key] for key in keys.all}))


def _judge(path: str) -> dict[str, Any]:
    """A shadow's judge: its target id, the share of served shadows judged, and its cost bound."""
    keys = config.JUDGE_KEYS
    rendered = {
        "target": {"type": "string", "pattern": _TARGET_ID},
        "share": {"type": "number", "minimum": 0, "maximum": 1},
        "max_per_minute": {"type": "integer", "minimum": 1, "maximum": config.MAX_JUDGE_PER_MINUTE},
        "max_answer_tokens": {"type": "integer", "minimum": 1, "maximum": config.MAX_JUDGE_ANSWER_TOKENS},
    }
    return _object(keys, _exactly(path, keys, rendered))


# -- rendering -----------------------------------------------------------------------------------------------------


def _object(keys: Keys, properties: dict[str, Any]) -> dict[str, Any]:
    ordered = {key: properties[key] for key in sorted(properties)}  # the same template on every synth
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": ordered}
    if keys.required:
        schema["required"] = sorted(keys.required)
    return schema


def _map(key_pattern: str, value: dict[str, Any], *, min_properties: int = 0) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "patternProperties": {key_pattern: value},
    }
    if min_properties:
        schema["minProperties"] = min_properties
    return schema


def _exactly(path: str, keys: Keys, properties: dict[str, Any]) -> dict[str, Any]:
    missing = sorted(keys.all - properties.keys())
    extra = sorted(properties.keys() - keys.all)
    if missing or extra:
        raise SchemaRenderError(f"{path}: no rendering for {missing}, rendering for unknown keys {extra}")
    return {key: properties[key] for key in sorted(properties)}


def _properties(path: str, cls: type, keys: Keys, explicit: dict[str, Any]) -> dict[str, Any]:
    """Each key of `keys`: its explicit rendering, else the type of `cls`'s field of the same name."""
    hints = typing.get_type_hints(cls)
    rendered = dict(explicit)
    for key in keys.all - explicit.keys():
        if key not in hints:
            raise SchemaRenderError(f"{path}.{key}: not a field of {cls.__name__}; render it in spillway/schema.py")
        rendered[key] = _of_type(f"{path}.{key}", hints[key])
    return _exactly(path, keys, rendered)


_SIMPLE: dict[Any, dict[str, Any]] = {bool: {"type": "boolean"}, int: {"type": "integer"}, float: {"type": "number"}}


def _of_type(path: str, hint: Any) -> dict[str, Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in _SIMPLE:
        return dict(_SIMPLE[hint])
    if hint is str:
        return dict(_TEXT)
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (types.UnionType, typing.Union) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        rendered = _of_type(path, inner)
        if "type" not in rendered:
            raise SchemaRenderError(f"{path}: cannot render an optional {inner!r}")
        return {**rendered, "type": [rendered["type"], "null"]}
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return {"type": "array", "items": _of_type(f"{path}[]", args[0])}
    if dataclasses.is_dataclass(hint):
        raise SchemaRenderError(f"{path}: a nested object needs its Keys; render it in spillway/schema.py")
    raise SchemaRenderError(f"{path}: no JSON Schema for {hint!r}; render it in spillway/schema.py")


if __name__ == "__main__":
    print(json.dumps(routing_table_schema(), indent=2, sort_keys=True))

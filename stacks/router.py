"""The router of one cell (one region), composed of one construct per concern (stacks/constructs/):

- `RouterKey`: the cell's CMK for the router's data.
- `RouterMonitoring`: the alarm topic, alarms and dashboard (the 5xx alarm is AppConfig's rollback monitor).
- `HealthTable`: the global health table (owned by the first region's stack) and this cell's backups of it.
- `RoutingConfig`: AppConfig delivery of the routing table and the canary flags, validated by the JSON Schemas below.
- `RouterFunction`: the Lambda, its role (customer-managed policies only) and layers.
- `RouterApi`: the REST API with its resource policy, validation, gateway responses, usage plans and logs.
- `RouterWebAcl`: the WAF on the API's stage.

The schemas the API Gateway model and the AppConfig validators speak are rendered here (routing_table_schema,
flags_schema, converse_request_schema) and handed to the constructs as parameters. A new concern is one more
construct built in `RouterStack.__init__` from the attributes of the ones before it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aws_cdk import aws_apigateway as apigw
from constructs import Construct

from stacks.cell import CellStack
from stacks.constructs.fleet_store import FleetStore
from stacks.constructs.health_table import HealthTable
from stacks.constructs.monitoring import RouterMonitoring
from stacks.constructs.router_api import RouterApi
from stacks.constructs.router_function import FunctionNetwork, RouterFunction
from stacks.constructs.router_key import RouterKey
from stacks.constructs.routing_config import RoutingConfig
from stacks.constructs.web_acl import RouterWebAcl
from stacks.models import router_invoke_policy_names
from stacks.packaging import dependencies_layer_dir, stage_router_code
from stacks.platform import Platform
from stacks.routing import render_routing_table, with_invoke_ids

if TYPE_CHECKING:
    from stacks.models import ModelsStack
    from stacks.network import NetworkStack

INTEGRATION_MARGIN_S = 1  # API Gateway waits this much longer than the longest feature deadline
FUNCTION_MARGIN_S = 3  # and the Lambda this much longer again (telemetry flush after the answer)


def served_deadline_s(platform: Platform, region: str) -> int:
    """The longest deadline of the features the cell serves, in whole seconds (rounded up)."""
    deadlines = [f.deadline_ms for f in platform.features_served_in(region)] or [1000]
    return -(-max(deadlines) // 1000)


# --- the routing table's JSON Schema (AppConfig validator, draft-04) -------------------------------------------

_NAME = "^[A-Za-z0-9._:-]{1,128}$"


def routing_table_schema() -> dict[str, Any]:
    """JSON Schema (draft-04, what AppConfig validators speak) of the routing table, version 1.

    It mirrors the structure documented in lambdas/router/spillway/config.py: keys, types, enums and bounds. The
    cross-references (a feature's models and regions name existing targets) stay with the router's own loader, which
    also validates every table at synth time (stacks/routing.py) and rejects a bad one at run time (last known good).
    """
    number = {"type": "number", "minimum": 0}
    positive_int = {"type": "integer", "minimum": 1}
    names = {"type": "array", "items": {"type": "string", "pattern": _NAME}, "uniqueItems": True}
    capacity = {"type": "string", "enum": ["provisioned", "on_demand"]}
    nonempty = {"type": "string", "minLength": 1}
    breaker_keys = (
        "error_rate", "slow_rate", "window_s", "min_requests", "consecutive_failures", "latency_ms", "ttft_ms",
        "cooldown_s", "max_cooldown_s", "half_open_trickle", "ramp_steps", "ramp_successes", "capacity_cooldown_s",
    )  # fmt: skip
    breaker_props: dict[str, Any] = dict.fromkeys(breaker_keys, number)
    breaker_props["ramp_steps"] = {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}}
    breaker_props["latency_ms"] = {"type": ["number", "null"], "minimum": 0}
    breaker_props["ttft_ms"] = {"type": ["number", "null"], "minimum": 0}
    target = {
        "type": "object",
        "additionalProperties": False,
        "required": ["model", "capacity", "region", "backend"],
        "properties": {
            "model": {"type": "string", "pattern": _NAME},
            "capacity": capacity,
            "region": {"type": "string", "pattern": _NAME},
            "max_in_flight": positive_int,
            "backend": {
                "oneOf": [
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["kind", "model_id"],
                        "properties": {"kind": {"enum": ["bedrock"]}, "model_id": {"type": "string", "minLength": 1}},
                    },
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["kind", "endpoint_name"],
                        "properties": {
                            "kind": {"enum": ["sagemaker"]},
                            "endpoint_name": {"type": "string", "minLength": 1},
                        },
                    },
                ]
            },
        },
    }
    feature = {
        "type": "object",
        "additionalProperties": False,
        "required": ["first_capacity", "models", "home_region", "deadline_ms", "attempt_timeout_ms", "max_attempts"],
        "properties": {
            "first_capacity": capacity,
            "models": {**names, "minItems": 1},
            "home_region": {"type": "string", "pattern": _NAME},
            "failover_regions": names,
            "order": {
                "type": "array",
                "items": {"enum": ["spill", "failover", "fallback"]},
                "uniqueItems": True,
            },
            "deadline_ms": {"type": "number", "minimum": 1},
            "attempt_timeout_ms": {
                "type": "object",
                "additionalProperties": False,
                "required": ["min", "max"],
                "properties": {"min": number, "max": number},
            },
            "max_attempts": positive_int,
            "fallback_on_context_overflow": {"type": "boolean"},
            "breaker": {"type": "object", "additionalProperties": False, "properties": breaker_props},
            "invoke_ids": {
                "type": "object",
                "patternProperties": {"^[A-Za-z0-9._:-]+/(provisioned|on_demand)/[A-Za-z0-9._:-]+$": nonempty},
                "additionalProperties": False,
            },
        },
    }
    return {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "title": "Spillway routing table, version 1 (lambdas/router/spillway/config.py)",
        "type": "object",
        "additionalProperties": False,
        "required": ["version", "targets", "features"],
        "properties": {
            "version": {"enum": [1]},
            "targets": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": False,
                "patternProperties": {"^[A-Za-z0-9._:-]+/(provisioned|on_demand)/[A-Za-z0-9._:-]+$": target},
            },
            "features": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": False,
                "patternProperties": {"^[A-Za-z0-9._-]{1,64}$": feature},
            },
            "limits": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"max_request_bytes": positive_int},
            },
        },
    }


def flags_schema() -> dict[str, Any]:
    """JSON Schema (draft-04) of the flags profile: ``{"canary": {feature: {"model": name, "share": 0..1}}}``."""
    return {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "canary": {
                "type": "object",
                "additionalProperties": False,
                "patternProperties": {
                    "^[A-Za-z0-9._-]{1,64}$": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["model", "share"],
                        "properties": {
                            "model": {"type": "string", "pattern": _NAME},
                            "share": {"type": "number", "minimum": 0, "maximum": 1},
                        },
                    }
                },
            }
        },
    }


def converse_request_schema() -> apigw.JsonSchema:
    """The API Gateway model of the converse body, rendered from the router's own contract (spillway.api): the
    members and their types only; the handler validates the details."""
    from spillway.api import gateway_request_schema  # noqa: PLC0415 (stacks.routing puts the router on the path)

    return _api_gateway_schema(gateway_request_schema())


def _api_gateway_schema(doc: Mapping[str, Any]) -> apigw.JsonSchema:
    """A JSON Schema (draft 4) document as CDK's JsonSchema: camelCase keys to snake_case, nested schemas too."""
    kwargs: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "$schema":
            kwargs["schema"] = apigw.JsonSchemaVersion.DRAFT4
        elif key == "type":
            kwargs["type"] = apigw.JsonSchemaType[value.upper()]
        elif key == "properties":
            kwargs["properties"] = {name: _api_gateway_schema(member) for name, member in value.items()}
        elif key == "items":
            kwargs["items"] = _api_gateway_schema(value)
        else:
            kwargs[re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()] = value
    return apigw.JsonSchema(**kwargs)


# --- the stack -------------------------------------------------------------------------------------------------


class RouterStack(CellStack):
    """One cell's router: the concerns above, in dependency order."""

    def __init__(
        self, scope: Construct, construct_id: str, *, platform: Platform, region: str, network: NetworkStack,
        models: ModelsStack, **kwargs: Any,
    ) -> None:  # fmt: skip
        layer_arn = platform.router.extension_layer_arn(platform.source, region)  # a config error before any construct
        deps = dependencies_layer_dir()
        super().__init__(
            scope,
            construct_id,
            platform=platform,
            region=region,
            kind="router",
            description=f"{platform.name} router in {region}: Lambda, private API, health, config",
            **kwargs,
        )
        self.network = network
        self.models = models
        self.add_stack_dependency(network)
        self.add_stack_dependency(models)
        self.table = render_routing_table(platform, region)  # token free: bundled with the function
        # What AppConfig hosts: the same table plus, per feature, the cell's application inference profiles and
        # purchased PT (deploy-time ARNs of this region's models stack) under invoke_ids.
        self.hosted_table = with_invoke_ids(
            platform,
            region,
            self.table,
            {pair: profile.attr_inference_profile_arn for pair, profile in models.application_profiles.items()},
            dict(models.provisioned.arns) if models.provisioned is not None else {},
        )
        self.features = tuple(sorted(self.table["features"]))
        self.targets = tuple(sorted(self.table["targets"]))
        deadline_s = served_deadline_s(platform, region)

        self.key = RouterKey(self, "Key", platform=platform, region=region).key
        # Before AppConfig: the environment's rollback monitor is one of the alarms.
        self.monitoring = RouterMonitoring(
            self, "Monitoring", platform=platform, region=region, key=self.key, features=self.features
        )
        self.health = HealthTable(self, "Health", platform=platform, region=region, key=self.key)
        self.config = RoutingConfig(
            self, "RoutingConfig", platform=platform, region=region, key=self.key,
            rollback_alarm=self.monitoring.rollback_alarm, hosted_table=self.hosted_table,
            table_schema=routing_table_schema(), flags_schema=flags_schema(),
        )  # fmt: skip
        # Fleet-wide breaker evidence and PT leases: the function gets its connect policy and environment.
        self.fleet_store = FleetStore(
            self, "FleetStore", platform=platform.name, account=platform.account, region=region,
            settings=platform.router.fleet_store, vpc=network.vpc, subnets=network.vpc.isolated_subnets,
            router_security_group=network.router_security_group,
        )  # fmt: skip
        self.code_dir = stage_router_code(self.table)
        self.router_function = RouterFunction(
            self, "RouterFunction", platform=platform, region=region,
            network=FunctionNetwork(
                vpc=network.vpc, subnets=network.isolated_subnets, security_group=network.router_security_group,
                log_key=network.log_key,
            ),
            key=self.key, invoke_policies=[models.router_invoke_policy],
            failover_policy_names=router_invoke_policy_names(platform, region)[1:],
            health_table_name=self.health.table_name, health_table_arn=self.health.table_arn, config=self.config,
            code_dir=self.code_dir, deps_dir=deps, extension_layer_arn=layer_arn,
            timeout_s=deadline_s + INTEGRATION_MARGIN_S + FUNCTION_MARGIN_S,
            store_policies=[self.fleet_store.connect_policy], store_environment=self.fleet_store.environment,
        )  # fmt: skip
        self.function = self.router_function.function
        self.router_api = RouterApi(
            self, "RouterApi", platform=platform, region=region, vpc=network.vpc, subnets=network.isolated_subnets,
            log_key=network.log_key, function=self.function, converse_schema=converse_request_schema(),
            integration_timeout_s=deadline_s + INTEGRATION_MARGIN_S,
        )  # fmt: skip
        self.api = self.router_api.api
        self.web_acl = RouterWebAcl(
            self, "WebAcl", platform=platform, region=region, stage=self.api.deployment_stage,
            log_key=network.log_key,
        )  # fmt: skip

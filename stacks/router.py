"""The router of one cell (one region), composed of one construct per concern (stacks/constructs/):

- `RouterKey`: the cell's CMK for the router's data.
- `RouterMonitoring`: the alarm topic, alarms and dashboard (the 5xx alarm is AppConfig's rollback monitor).
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
from stacks.constructs.monitoring import RouterMonitoring
from stacks.constructs.router_api import RouterApi
from stacks.constructs.router_function import FunctionNetwork, RouterFunction
from stacks.constructs.router_key import RouterKey
from stacks.constructs.routing_config import RoutingConfig
from stacks.constructs.web_acl import RouterWebAcl
from stacks.models import router_invoke_policy_names
from stacks.packaging import dependencies_layer_dir, stage_router_code
from stacks.platform import Platform, served_deadline_s
from stacks.routing import render_routing_table, with_invoke_ids

if TYPE_CHECKING:
    from stacks.models import ModelsStack
    from stacks.network import NetworkStack

INTEGRATION_MARGIN_S = 1  # API Gateway waits this much longer than the longest feature deadline
FUNCTION_MARGIN_S = 3  # and the Lambda this much longer again (telemetry flush after the answer)


# --- the routing table's JSON Schema (AppConfig validator, draft-04) -------------------------------------------


def routing_table_schema() -> dict[str, Any]:
    """The routing table's JSON Schema, rendered from the router's loader (spillway/schema.py)."""
    from spillway.schema import routing_table_schema as render  # noqa: PLC0415

    return render()


def flags_schema() -> dict[str, Any]:
    """The flags profile's JSON Schema, rendered from the router's flag parser (spillway/schema.py)."""
    from spillway.schema import flags_schema as render  # noqa: PLC0415

    return render()


def converse_request_schema() -> apigw.JsonSchema:
    """The API Gateway model of the converse body, rendered from the router's own contract (spillway.api): the
    members and their types only; the handler validates the details."""
    from spillway.api import gateway_request_schema  # noqa: PLC0415 (stacks/__init__.py puts the router on the path)

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
            description=f"{platform.name} router in {region}: Lambda, private API, fleet store, config",
            **kwargs,
        )
        self.network = network
        self.models = models
        self.add_stack_dependency(network)
        self.add_stack_dependency(models)
        self.table = render_routing_table(platform, region)  # token free, no guarded feature: bundled with the function
        # What AppConfig hosts: the same table plus the guarded features (with the cell's guardrail ids) and, per
        # feature, the cell's application inference profiles and purchased PT (deploy-time ARNs of this region's
        # models stack) under invoke_ids.
        guardrails = {name: (g.guardrail_id, g.version_number) for name, g in models.guardrails.items()}
        self.hosted_table = with_invoke_ids(
            platform,
            region,
            render_routing_table(platform, region, guardrails),
            {pair: profile.attr_inference_profile_arn for pair, profile in models.application_profiles.items()},
            dict(models.provisioned.arns) if models.provisioned is not None else {},
        )
        self.features = tuple(sorted(self.hosted_table["features"]))
        self.targets = tuple(sorted(self.hosted_table["targets"]))
        deadline_s = served_deadline_s(platform, region)

        self.key = RouterKey(self, "Key", platform=platform, region=region).key
        # Before AppConfig: the environment's rollback monitor is one of the alarms.
        self.monitoring = RouterMonitoring(
            self, "Monitoring", platform=platform, region=region, key=self.key, features=self.features
        )
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
            config=self.config,
            code_dir=self.code_dir, deps_dir=deps, extension_layer_arn=layer_arn,
            timeout_s=deadline_s + INTEGRATION_MARGIN_S + FUNCTION_MARGIN_S,
            store_policies=[self.fleet_store.connect_policy], store_environment=self.fleet_store.environment,
        )  # fmt: skip
        self.function = self.router_function.function
        self.router_api = RouterApi(
            self, "RouterApi", platform=platform, region=region, vpc=network.vpc, subnets=network.isolated_subnets,
            log_key=network.log_key, function=self.function, converse_schema=converse_request_schema(),
            integration_timeout_s=deadline_s + INTEGRATION_MARGIN_S, streams=self.router_function.streams,
        )  # fmt: skip
        self.api = self.router_api.api
        self.web_acl = RouterWebAcl(
            self, "WebAcl", platform=platform, region=region, stage=self.api.deployment_stage,
            log_key=network.log_key,
        )  # fmt: skip

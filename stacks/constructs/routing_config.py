"""Routing config delivery through AWS AppConfig: an application, the cell's environment with the router's 5xx
alarm as rollback monitor, a linear deployment strategy, and two hosted profiles with JSON Schema validators: the
routing table (this cell's table, with per-feature invoke ids naming deploy-time ARNs) and the canary flags.

The schemas are parameters: stacks/router.py renders them (routing_table_schema, flags_schema).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_appconfig as appconfig
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from stacks.constructs.concern import Concern
from stacks.naming import appconfig_application_name
from stacks.platform import Platform

APPCONFIG_PROFILE = "routing-table"
APPCONFIG_FLAGS_PROFILE = "flags"


def _sorted_keys(value: Any) -> Any:
    """`value` with every object's keys sorted (what json.dumps(sort_keys=True) gave, for to_json_string)."""
    if isinstance(value, Mapping):
        return {key: _sorted_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(item) for item in value]
    return value


class RoutingConfig(Concern):
    """`configuration_arns` (routing table, flags) are what the router's role may read; `prefetch` what its
    AppConfig extension loads at init."""

    def __init__(
        self, scope: Construct, construct_id: str, *, platform: Platform, region: str, key: kms.IKey,
        rollback_alarm: cw.IAlarm, hosted_table: Mapping[str, Any], table_schema: Mapping[str, Any],
        flags_schema: Mapping[str, Any],
    ) -> None:  # fmt: skip
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.application_name = appconfig_application_name(platform)
        self.environment_name = region
        self.application = appconfig.Application(
            self,
            "ConfigApplication",
            application_name=self.application_name,
            description=f"{platform.name} router configuration (routing table) in {region}",
        )
        monitor_role = iam.Role(
            self,
            "ConfigMonitorRole",
            description="AWS AppConfig reads the router's rollback alarm during deployments",
            assumed_by=iam.ServicePrincipal(
                "appconfig.amazonaws.com", conditions={"StringEquals": {"aws:SourceAccount": platform.account}}
            ),
        )
        monitor_role.add_managed_policy(
            iam.ManagedPolicy(
                self,
                "ConfigMonitorPolicy",
                description="Describe the router's 5xx alarm only (AppConfig automatic rollback)",
                statements=[
                    iam.PolicyStatement(actions=["cloudwatch:DescribeAlarms"], resources=[rollback_alarm.alarm_arn])
                ],
            )
        )
        self.environment = appconfig.Environment(
            self,
            "ConfigEnvironment",
            application=self.application,
            environment_name=self.environment_name,
            description=f"The {region} cell; a deployment rolls back when the router's 5xx alarm fires",
            monitors=[appconfig.Monitor.from_cloud_watch_alarm(rollback_alarm, monitor_role)],
        )
        self.deployment_strategy = appconfig.DeploymentStrategy(
            self,
            "ConfigStrategy",
            deployment_strategy_name=f"{platform.name}-router-linear-20pct-{region}",
            description="20% of the router instances a minute, then 5 minutes of bake time watching the 5xx alarm",
            rollout_strategy=appconfig.RolloutStrategy.linear(
                growth_factor=20,
                deployment_duration=cdk.Duration.minutes(5),
                final_bake_time=cdk.Duration.minutes(5),
            ),
        )
        self.routing_profile = appconfig.HostedConfiguration(
            self,
            "RoutingTable",
            application=self.application,
            name=APPCONFIG_PROFILE,
            description="The cell's routing table, rendered from config/platform.yaml by stacks/routing.py",
            type=appconfig.ConfigurationType.FREEFORM,
            # Token-aware JSON: the invoke ids are attribute references of the models stack.
            content=appconfig.ConfigurationContent.from_inline_json(stack.to_json_string(_sorted_keys(hosted_table))),
            validators=[appconfig.JsonSchemaValidator.from_inline(json.dumps(table_schema, sort_keys=True))],
            deployment_strategy=self.deployment_strategy,
            deploy_to=[self.environment],
            kms_key=key,
            deployment_key=key,
        )
        # Canary flags (lambdas/router/spillway/routing_source.py): operators deploy new versions of this profile on
        # their own, through the same strategy and rollback monitor; the stack only creates it, with no canary.
        self.flags_profile = appconfig.HostedConfiguration(
            self,
            "Flags",
            application=self.application,
            name=APPCONFIG_FLAGS_PROFILE,
            description='Router flags: canary shares per feature, {"canary": {feature: {model, share}}}',
            type=appconfig.ConfigurationType.FREEFORM,
            content=appconfig.ConfigurationContent.from_inline_json(json.dumps({"canary": {}})),
            validators=[appconfig.JsonSchemaValidator.from_inline(json.dumps(flags_schema, sort_keys=True))],
            deployment_strategy=self.deployment_strategy,
            deploy_to=[self.environment],
            kms_key=key,
            deployment_key=key,
        )
        # The flags deployment waits for the table's: AppConfig runs one deployment per environment at a time.
        self.flags_profile.node.add_dependency(self.routing_profile)
        self.configuration_arns = tuple(
            f"arn:{stack.partition}:appconfig:{stack.region}:{stack.account}:application/"
            f"{self.application.application_id}/environment/{self.environment.environment_id}/"
            f"configuration/{profile.configuration_profile_id}"
            for profile in (self.routing_profile, self.flags_profile)
        )
        self.prefetch = ",".join(
            f"/applications/{self.application_name}/environments/{self.environment_name}/configurations/{profile}"
            for profile in (APPCONFIG_PROFILE, APPCONFIG_FLAGS_PROFILE)
        )

"""The cell's router key: one CMK for the router's data (environment, health table replica, backups, routing
configuration, alarm topic), with a deterministic alias so other cells can name it without a reference."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from stacks.constructs.concern import Concern
from stacks.naming import router_key_alias
from stacks.platform import Platform


class RouterKey(Concern):
    def __init__(self, scope: Construct, construct_id: str, *, platform: Platform, region: str) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "RouterKey",
            alias=router_key_alias(platform, region),
            description=f"{platform.name} router data in {region}: environment, health table, "
            "backups, routing configuration, alarm topic",
            enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        # CloudWatch alarms publish to the encrypted alarm topic: the service needs the key, for this account only.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmsOfThisAccount",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=["*"],  # in a key policy, "*" is this key
                conditions={"StringEquals": {"aws:SourceAccount": platform.account}},
            )
        )

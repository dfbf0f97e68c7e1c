"""The cell's router key: one CMK for the router's data (environment, routing configuration, alarm topic), with a
deterministic alias (stacks/naming.py). The fleet store has its own key (stacks/constructs/fleet_store.py)."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.constructs.concern import Concern
from stacks.constructs.key_policy import ServiceUse, restricted_key
from stacks.naming import alarm_topic_name, function_arn, partition_of, router_key_alias
from stacks.platform import Platform


class RouterKey(Concern):
    def __init__(
        self, scope: Construct, construct_id: str, *, platform: Platform, region: str,
        extra_uses: Sequence[ServiceUse] = (),
    ) -> None:  # fmt: skip
        """`extra_uses`: further services that hold router data with this key (a new concern adds its own)."""
        super().__init__(scope, construct_id)
        partition = partition_of(region)
        topic_arn = f"arn:{partition}:sns:{region}:{platform.account}:{alarm_topic_name(platform, region)}"
        self.key = restricted_key(
            self,
            "RouterKey",
            alias=router_key_alias(platform, region),
            description=f"{platform.name} router data in {region}: environment, routing configuration, alarm topic",
            uses=[
                # The function's environment.
                ServiceUse("lambda", {"aws:lambda:FunctionArn": function_arn(platform, region)}),
                # The alarm topic.
                ServiceUse("sns", {"aws:sns:topicArn": topic_arn}),
                ServiceUse("appconfig"),  # the routing configuration and its deployments
                *extra_uses,
            ],
            service_statements=[
                # CloudWatch alarms publish to the encrypted alarm topic: the service needs the key, this account only.
                iam.PolicyStatement(
                    sid="CloudWatchAlarmsOfThisAccount",
                    principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                    actions=["kms:Decrypt", "kms:GenerateDataKey"],
                    resources=["*"],  # in a key policy, "*" is this key
                    conditions={"StringEquals": {"aws:SourceAccount": platform.account}},
                )
            ],
        )

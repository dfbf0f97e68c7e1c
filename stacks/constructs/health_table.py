"""The shared health table: one DynamoDB global table (``<platform>-health``) owned by the first region's router
stack with a replica in every other cell, and every cell's daily backup of its own replica.

Each replica is encrypted with its own cell's router key, named across regions by its deterministic alias ARN, so
synthesis needs no cross-region reference; the owner stack deploys after the other router stacks (assembly.py).
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_backup as backup
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_kms as kms
from constructs import Construct

from stacks.constructs.concern import Concern
from stacks.naming import health_table_arn, health_table_name, router_key_alias_arn, router_name
from stacks.platform import Platform

HEALTH_TTL_ATTRIBUTE = "expires_at"


def health_table_owner(platform: Platform) -> str:
    """The region whose router stack defines the global health table (the others hold replicas)."""
    return platform.region_names[0]


class HealthTable(Concern):
    """The table (in the owner's cell) and the cell's backup plan of its replica."""

    def __init__(self, scope: Construct, construct_id: str, *, platform: Platform, region: str, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.table_name = health_table_name(platform)
        self.table_arn = health_table_arn(platform, region)
        self.table: dynamodb.TableV2 | None = None
        if region == health_table_owner(platform):
            self.table = self._table(platform, region, key)
        self.backup_plan, self.backup_selection = self._backup(platform, region, key)

    def _table(self, platform: Platform, region: str, key: kms.IKey) -> dynamodb.TableV2:
        others = [r for r in platform.region_names if r != region]
        return dynamodb.TableV2(
            self,
            "HealthTable",
            table_name=self.table_name,
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            billing=dynamodb.Billing.on_demand(),
            time_to_live_attribute=HEALTH_TTL_ATTRIBUTE,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            deletion_protection=True,
            removal_policy=cdk.RemovalPolicy.RETAIN,
            encryption=dynamodb.TableEncryptionV2.customer_managed_key(
                key, replica_key_arns={r: router_key_alias_arn(platform, r) for r in others}
            ),
            replicas=[
                dynamodb.ReplicaTableProps(
                    region=r,
                    point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                        point_in_time_recovery_enabled=True
                    ),
                    deletion_protection=True,
                )
                for r in others
            ],
        )

    def _backup(
        self, platform: Platform, region: str, key: kms.IKey
    ) -> tuple[backup.BackupPlan, backup.BackupSelection]:
        vault = backup.BackupVault(
            self,
            "BackupVault",
            backup_vault_name=router_name(platform, region),
            encryption_key=key,
            block_recovery_point_deletion=True,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        plan = backup.BackupPlan(
            self,
            "BackupPlan",
            backup_plan_name=router_name(platform, region),
            backup_plan_rules=[
                backup.BackupPlanRule(
                    rule_name="Daily35Days",
                    backup_vault=vault,
                    schedule_expression=events.Schedule.cron(hour="3", minute="15"),
                    delete_after=cdk.Duration.days(35),
                )
            ],
        )
        # The owner's replica by its token (so the table is created first), every other cell's replica by name.
        arn = self.table.table_arn if self.table is not None else self.table_arn
        selection = plan.add_selection(
            "HealthTable",
            backup_selection_name=f"{self.table_name}-{region}",
            resources=[backup.BackupResource.from_arn(arn)],
        )
        # Only AWS Backup acting for this account may assume the selection's role (CDK's trust has no condition).
        role = selection.node.find_child("Role").node.default_child
        assert isinstance(role, cdk.CfnResource)
        role.add_property_override(
            "AssumeRolePolicyDocument.Statement.0.Condition", {"StringEquals": {"aws:SourceAccount": platform.account}}
        )
        return plan, selection

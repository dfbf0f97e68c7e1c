"""A CloudWatch Logs group encrypted with a customer-managed KMS key, with a retention from the platform config.

`LogsKey` is the key: rotation on, and a key policy that lets administrators manage it without using it and only
CloudWatch Logs of its own region use it, only for log groups of its own account (the
`kms:EncryptionContext:aws:logs:arn` condition). A cell creates one
(`NetworkStack.log_key`) and later stacks may reuse it, or create their own with `EncryptedLogGroup(key=None)`.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.constructs.key_policy import restrict_key_policy

# CloudWatch Logs accepts only these retention periods; the platform schema already rejects any other.
_RETENTION: dict[int, logs.RetentionDays] = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1096: logs.RetentionDays.THREE_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    2192: logs.RetentionDays.SIX_YEARS,
    2557: logs.RetentionDays.SEVEN_YEARS,
    2922: logs.RetentionDays.EIGHT_YEARS,
    3288: logs.RetentionDays.NINE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}


def retention(days: int) -> logs.RetentionDays:
    try:
        return _RETENTION[days]
    except KeyError:
        raise ValueError(f"{days} is not a CloudWatch Logs retention period") from None


class LogsKey(Construct):
    """A rotating customer-managed key that CloudWatch Logs of this stack's region may use for this account only."""

    def __init__(self, scope: Construct, construct_id: str, *, description: str) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.key = kms.Key(
            self,
            "Key",
            description=description,
            enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        log_groups = f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:log-group:*"
        # Administrators manage it; only CloudWatch Logs uses it (stacks/constructs/key_policy.py).
        restrict_key_policy(
            self.key,
            uses=(),
            service_statements=[
                iam.PolicyStatement(
                    sid="CloudWatchLogsOfThisAccountAndRegion",
                    principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
                    actions=["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
                    resources=["*"],  # in a key policy, "*" is this key
                    conditions={"ArnLike": {"kms:EncryptionContext:aws:logs:arn": log_groups}},
                )
            ],
        )


class EncryptedLogGroup(Construct):
    """A log group with a retention period, encrypted with `key` (or with a new `LogsKey` when none is given)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        retention_days: int,
        key: kms.IKey | None = None,
        log_group_name: str | None = None,
        removal_policy: cdk.RemovalPolicy = cdk.RemovalPolicy.RETAIN,
    ) -> None:
        super().__init__(scope, construct_id)
        if key is None:
            key = LogsKey(self, "Key", description=f"CloudWatch Logs encryption for {self.node.path}").key
        self.key = key
        self.log_group = logs.LogGroup(
            self,
            "LogGroup",
            log_group_name=log_group_name,
            encryption_key=key,
            retention=retention(retention_days),
            removal_policy=removal_policy,
        )

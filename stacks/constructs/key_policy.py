"""Key policies that separate key administration from key use.

CDK's default key policy gives the account root `kms:*`: any principal IAM allows may decrypt directly. Every key of
the platform gets this policy instead:
- **KeyAdministrators**: the account (IAM decides which administrators and deployment roles) may manage the key
  (policy, rotation, aliases, tags, deletion) but not use it: no Encrypt, Decrypt, GenerateDataKey or ReEncrypt.
- **UseThrough<Service>**: principals of the account may use the key only through the AWS services that hold the
  data (`kms:ViaService` = ``<service>.<region>.amazonaws.com``), and, where the service sets one, only with its
  encryption context (for example DynamoDB's table name, SNS's topic ARN, S3's bucket ARN).
- **GrantsForAwsResources**: grants only for AWS resources (`kms:GrantIsForAWSResource`) through those services.
- Service principals that encrypt on their own (CloudWatch Logs, CloudWatch alarms) get their own statements with
  their account and context conditions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

ADMIN_ACTIONS = (
    "kms:CancelKeyDeletion",
    "kms:CreateAlias",
    "kms:DeleteAlias",
    "kms:DescribeKey",
    "kms:DisableKey",
    "kms:DisableKeyRotation",
    "kms:EnableKey",
    "kms:EnableKeyRotation",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListAliases",
    "kms:ListGrants",
    "kms:ListKeyPolicies",
    "kms:ListKeyRotations",
    "kms:ListResourceTags",
    "kms:PutKeyPolicy",
    "kms:RetireGrant",
    "kms:RevokeGrant",
    "kms:RotateKeyOnDemand",
    "kms:ScheduleKeyDeletion",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateAlias",
    "kms:UpdateKeyDescription",
)
USE_ACTIONS = ("kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*")


@dataclass(frozen=True, slots=True)
class ServiceUse:
    """One AWS service that uses the key for its callers, and the encryption context it always sets (if any)."""

    service: str  # the service's endpoint prefix: dynamodb, lambda, s3, sns, ...
    context: Mapping[str, str] = field(default_factory=dict)  # kms:EncryptionContext:<key> -> value (ArnLike-safe)


def restrict_key_policy(
    key: kms.Key, *, uses: Sequence[ServiceUse], service_statements: Sequence[iam.PolicyStatement] = ()
) -> None:
    """Replace `key`'s policy: administrators without use, use only through `uses`, plus `service_statements`."""
    stack = cdk.Stack.of(key)
    root = {"AWS": f"arn:{stack.partition}:iam::{stack.account}:root"}
    statements: list[object] = [
        {
            "Sid": "KeyAdministrators",
            "Effect": "Allow",
            "Principal": root,
            "Action": list(ADMIN_ACTIONS),
            "Resource": "*",
        }
    ]
    for use in uses:
        condition: dict[str, dict[str, object]] = {
            "StringEquals": {
                "kms:CallerAccount": stack.account,
                "kms:ViaService": f"{use.service}.{stack.region}.amazonaws.com",
            }
        }
        if use.context:
            condition["StringLike"] = {f"kms:EncryptionContext:{k}": v for k, v in sorted(use.context.items())}
        statements.append(
            {
                "Sid": "UseThrough" + "".join(p.capitalize() for p in use.service.split("-")),
                "Effect": "Allow",
                "Principal": root,
                "Action": list(USE_ACTIONS),
                "Resource": "*",
                "Condition": condition,
            }
        )
    if uses:
        statements.append(
            {
                "Sid": "GrantsForAwsResources",
                "Effect": "Allow",
                "Principal": root,
                "Action": "kms:CreateGrant",
                "Resource": "*",
                "Condition": {
                    "StringEquals": {
                        "kms:CallerAccount": stack.account,
                        "kms:ViaService": [f"{u.service}.{stack.region}.amazonaws.com" for u in uses],
                    },
                    "Bool": {"kms:GrantIsForAWSResource": "true"},
                },
            }
        )
    statements.extend(statement.to_statement_json() for statement in service_statements)
    resource = key.node.default_child
    assert isinstance(resource, kms.CfnKey)
    resource.add_property_override("KeyPolicy", {"Version": "2012-10-17", "Statement": statements})


def restricted_key(
    scope: Construct,
    construct_id: str,
    *,
    description: str,
    uses: Sequence[ServiceUse],
    service_statements: Sequence[iam.PolicyStatement] = (),
    alias: str | None = None,
) -> kms.Key:
    """A rotating customer-managed key, retained on deletion, with the policy `restrict_key_policy` writes."""
    key = kms.Key(
        scope,
        construct_id,
        alias=alias,
        description=description,
        enable_key_rotation=True,
        removal_policy=cdk.RemovalPolicy.RETAIN,
    )
    restrict_key_policy(key, uses=uses, service_statements=service_statements)
    return key

"""CDK's cross-region reference providers, brought under the house rules.

`cross_region_references=True` (network and links stacks: peer VPC ids, peering connection ids) makes CDK add two
singleton Lambda providers while it prepares the app, after every construct and aspect has run: the export writer
(puts /cdk/exports/<consumer stack>/* SSM parameters in the consuming region) and the export reader. Left alone they
log to implicit /aws/lambda groups with no CMK and no retention, carry AWSLambdaBasicExecutionRole (any log group),
and the writer may change every /cdk/exports/* parameter of the peer region.

`contain_cross_region_providers` registers a validation on the stack: validations run after that preparation and
before the templates are written, so it can still amend the providers' resources. It points each provider's function
at a CMK-encrypted log group with the platform's retention (created with the stack), replaces the managed policy by
its own log group's two actions, and narrows the writer to the parameters of the consuming links stacks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aws_cdk as cdk
import jsii
from aws_cdk import aws_logs as logs
from constructs import IConstruct, IValidation

from stacks.constructs.encrypted_log_group import EncryptedLogGroup
from stacks.naming import stack_name

if TYPE_CHECKING:
    from aws_cdk import aws_kms as kms

    from stacks.cell import CellStack

WRITER = "Custom::CrossRegionExportWriterCustomResourceProvider"
READER = "Custom::CrossRegionExportReaderCustomResourceProvider"
PROVIDERS = {WRITER: "CrossRegionExportWriterLogs", READER: "CrossRegionExportReaderLogs"}


def consumer_parameter_arns(stack: CellStack) -> list[str]:
    """The SSM parameters this stack's writer may change: those of the links stack of every other region."""
    platform = stack.platform
    return [
        f"arn:{stack.partition}:ssm:{peer}:{platform.account}:parameter/cdk/exports/"
        f"{stack_name(platform, 'links', peer)}/*"
        for peer in platform.region_names
        if peer != stack.region_name
    ]


@jsii.implements(IValidation)
class _ContainProviders:
    def __init__(self, stack: CellStack, groups: dict[str, EncryptedLogGroup]) -> None:
        self.stack = stack
        self.groups = groups

    def validate(self) -> list[str]:
        errors = []
        for provider_id in PROVIDERS:
            provider = self.stack.node.try_find_child(provider_id)
            group = self.groups.get(provider_id)
            if (provider is None) != (group is None):
                errors.append(f"{provider_id}: CDK {'added' if group is None else 'did not add'} it, contrary to plan")
            if provider is None or group is None:
                continue
            role = confine_provider(provider, group.log_group)
            if provider_id == WRITER:
                role.add_property_override(
                    "Policies.0.PolicyDocument.Statement.0.Resource", consumer_parameter_arns(self.stack)
                )
        return errors


def confine_provider(provider: IConstruct, log_group: logs.ILogGroup) -> cdk.CfnResource:
    """A CDK CustomResourceProvider (Handler and Role, plain CfnResources) logs to `log_group` only: its function
    points there and depends on it, and its role's AWSLambdaBasicExecutionRole (any group) gives way to that group's
    two actions. Returns the role."""
    handler = provider.node.find_child("Handler")
    role = provider.node.find_child("Role")
    assert isinstance(handler, cdk.CfnResource)
    assert isinstance(role, cdk.CfnResource)
    handler.add_property_override("LoggingConfig", {"LogGroup": log_group.log_group_name})
    group_resource = log_group.node.default_child
    assert isinstance(group_resource, cdk.CfnResource)
    handler.add_dependency(group_resource)
    role.add_property_override("ManagedPolicyArns", [])
    role.add_property_override(
        "Policies.1",
        {
            "PolicyName": "OwnLogGroup",
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                        "Resource": log_group.log_group_arn,
                    }
                ],
            },
        },
    )
    return role


def contain_cross_region_providers(stack: CellStack, key: kms.IKey, *, writer: bool, reader: bool) -> None:
    """Log groups for the providers CDK will add to `stack` (`writer`: it exports to another region; `reader`: it
    imports from one), created now so their references resolve, and the validation that wires them (see above);
    a plan that does not match what CDK adds fails the synthesis."""
    planned = {WRITER: writer, READER: reader}
    groups = {
        provider_id: EncryptedLogGroup(
            stack,
            construct_id,
            retention_days=stack.platform.log_retention_days,
            key=key,
            log_group_name=f"/{stack.platform.name}/{stack.region_name}/{stack.stack_name}-{construct_id}",
        )
        for provider_id, construct_id in PROVIDERS.items()
        if planned[provider_id]
    }
    stack.node.add_validation(_ContainProviders(stack, groups))

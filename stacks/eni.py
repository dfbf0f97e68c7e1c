"""The network-interface permissions a VPC Lambda's role needs, and the guard that keeps them Lambda's own."""

from __future__ import annotations

from aws_cdk import aws_iam as iam

# The network-interface actions Lambda performs with a VPC function's role, outside the function's execution
# environment. IAM has no resource or condition key that scopes them to the function's subnets before the
# interface exists, so the role allows them on "*" and `eni_guard` keeps them Lambda's alone.
ENI_ACTIONS = (
    "ec2:AssignPrivateIpAddresses",
    "ec2:CreateNetworkInterface",
    "ec2:DeleteNetworkInterface",
    "ec2:UnassignPrivateIpAddresses",
)


def eni_guard(*function_arns: str) -> iam.PolicyStatement:
    """Deny the ENI actions to code running in the functions (AWS Lambda's documented lambda:SourceFunctionArn guard).

    Lambda puts `lambda:SourceFunctionArn` on requests made with the role's credentials from inside a function's
    execution environment, and not on the ENI calls it makes itself to attach the function to its VPC. So a Deny
    when the key equals the function's ARN stops the function's code (or anyone who obtains its credentials there)
    from creating, deleting or re-addressing interfaces, and leaves Lambda's own attachment untouched. (The inverse,
    ArnNotEquals, would match Lambda's own calls, which carry no key, and break the VPC attachment.)
    """
    return iam.PolicyStatement(
        sid="NoNetworkInterfaceActionsFromFunctionCode",
        effect=iam.Effect.DENY,
        actions=list(ENI_ACTIONS),
        resources=["*"],
        conditions={"ArnEquals": {"lambda:SourceFunctionArn": list(function_arns)}},
    )

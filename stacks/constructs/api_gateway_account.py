"""API Gateway's account-level CloudWatch role (AWS::ApiGateway::Account), only where the platform file opts in
(`router.api.account_cloudwatch_role: true`).

The setting is one per account and region and applies to every REST API there, so it is not a side effect of the
router's API: it is this construct, created only on request. Its trust policy admits API Gateway for this account's
APIs of this region only. The resources keep the logical ids they had as children of the API (CDK's
`cloud_watch_role=True`), so an existing deployment keeps its role.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.constructs.concern import Concern, make_unique_id

PUSH_TO_CLOUDWATCH = "service-role/AmazonAPIGatewayPushToCloudWatchLogs"


class ApiGatewayAccountRole(Concern):
    """`role` and `account` (the account and region's API Gateway setting)."""

    def __init__(self, scope: Construct, construct_id: str, *, api: apigw.RestApi) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.role = iam.Role(
            self,
            "CloudWatchRole",
            description="API Gateway's account-level role for access and execution logs (router.api."
            "account_cloudwatch_role)",
            assumed_by=iam.ServicePrincipal(
                "apigateway.amazonaws.com",
                conditions={
                    "StringEquals": {"aws:SourceAccount": stack.account},
                    "ArnLike": {"aws:SourceArn": f"arn:{stack.partition}:apigateway:{stack.region}::/restapis/*"},
                },
            ),
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(PUSH_TO_CLOUDWATCH)],
        )
        self.role.apply_removal_policy(cdk.RemovalPolicy.RETAIN)
        self.account = apigw.CfnAccount(self, "Account", cloud_watch_role_arn=self.role.role_arn)
        api.deployment_stage.node.add_dependency(self.account)
        # The ids CDK gave them as the API's children (Api/CloudWatchRole, Api/Account): nothing is replaced.
        api_id = api.node.id
        role_resource = self.role.node.default_child
        assert isinstance(role_resource, cdk.CfnElement)
        role_resource.override_logical_id(make_unique_id([api_id, "CloudWatchRole", "Resource"]))
        self.account.override_logical_id(make_unique_id([api_id, "Account"]))

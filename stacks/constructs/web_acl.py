"""The router API's WAF: a regional web ACL on the stage (AWS managed rules and a per-source rate rule), logging
to a CMK-encrypted ``aws-waf-logs-*`` group."""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_kms as kms
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from stacks.constructs.concern import Concern
from stacks.constructs.encrypted_log_group import EncryptedLogGroup
from stacks.naming import router_name
from stacks.platform import Platform


def _visibility(metric: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
    return wafv2.CfnWebACL.VisibilityConfigProperty(
        cloud_watch_metrics_enabled=True, metric_name=metric, sampled_requests_enabled=False
    )


def _managed(priority: int, group: str, overrides: Sequence[str] = ()) -> wafv2.CfnWebACL.RuleProperty:
    return wafv2.CfnWebACL.RuleProperty(
        name=group,
        priority=priority,
        override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
        statement=wafv2.CfnWebACL.StatementProperty(
            managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                vendor_name="AWS",
                name=group,
                rule_action_overrides=[
                    wafv2.CfnWebACL.RuleActionOverrideProperty(
                        name=rule, action_to_use=wafv2.CfnWebACL.RuleActionProperty(count={})
                    )
                    for rule in overrides
                ]
                or None,
            )
        ),
        visibility_config=_visibility(group),
    )


class RouterWebAcl(Concern):
    """`web_acl`, `association`, `log_group`."""

    def __init__(
        self, scope: Construct, construct_id: str, *, platform: Platform, region: str, stage: apigw.Stage,
        log_key: kms.IKey,
    ) -> None:  # fmt: skip
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        name = router_name(platform, region)
        settings = platform.router
        self.web_acl = wafv2.CfnWebACL(
            self,
            "WebAcl",
            name=name,
            description="Router API: AWS managed rules and a per-source rate limit",
            scope="REGIONAL",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            visibility_config=_visibility(name),
            rules=[
                # Converse bodies are up to the routing table's max_request_bytes (256 KiB), over the common rule
                # set's 8 KiB body limit: that one rule counts instead of blocking; the handler enforces the size.
                _managed(0, "AWSManagedRulesCommonRuleSet", ["SizeRestrictions_BODY"]),
                _managed(1, "AWSManagedRulesKnownBadInputsRuleSet"),
                _managed(2, "AWSManagedRulesAmazonIpReputationList"),
                wafv2.CfnWebACL.RuleProperty(
                    name="RatePerSource",
                    priority=3,
                    action=wafv2.CfnWebACL.RuleActionProperty(block={}),
                    statement=wafv2.CfnWebACL.StatementProperty(
                        rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                            # No single source may use more than the whole stage's rate over five minutes.
                            limit=max(100, settings.rate_limit * 300),
                            aggregate_key_type="IP",
                            evaluation_window_sec=300,
                        )
                    ),
                    visibility_config=_visibility("RatePerSource"),
                ),
            ],
        )
        self.association = wafv2.CfnWebACLAssociation(
            self, "WebAclAssociation", resource_arn=stage.stage_arn, web_acl_arn=self.web_acl.attr_arn
        )
        self.log_group = EncryptedLogGroup(
            self,
            "WafLogs",
            retention_days=platform.log_retention_days,
            key=log_key,
            log_group_name=f"aws-waf-logs-{name}",  # WAF delivers only to groups named aws-waf-logs-*
        ).log_group
        logging = wafv2.CfnLoggingConfiguration(
            self,
            "WebAclLogging",
            resource_arn=self.web_acl.attr_arn,
            log_destination_configs=[
                f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:log-group:{self.log_group.log_group_name}"
            ],
            # SigV4 signatures, session tokens and API keys stay out of the WAF logs (WAF never logs bodies).
            redacted_fields=[
                wafv2.CfnLoggingConfiguration.FieldToMatchProperty(single_header={"Name": header})
                for header in ("authorization", "x-amz-security-token", "x-api-key")
            ],
        )
        logging.node.add_dependency(self.log_group)

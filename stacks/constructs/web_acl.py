"""The router API's WAF: a regional web ACL on the stage, logging only what it blocks, with no request content.

Zero knowledge holds in the WAF too:
- **No body inspection where a prompt can be.** The AWS managed groups with body rules (Common: cross-site
  scripting, file inclusion, metadata addresses; Known Bad Inputs: Log4j, Java deserialization) carry a scope-down
  statement: they run only on requests that have no body and are not on a prompt-carrying route. A prompt that
  contains code, a path or an address is neither blocked nor copied into a log by them; every route that takes a body
  (today ``POST /v1/features/{feature}/converse``, and any later one) is outside their reach by the body-size test
  alone. IAM (SigV4), the resource policy, the API's request model and the handler's validation guard those bodies;
  the IP reputation list and the rate rule still see every request.
- **Logs without content.** WAF logs only the requests it blocks (a logging filter), with the query string and every
  header a caller sends to this API redacted except ``host``, ``content-type`` and ``content-length``; WAF never
  logs bodies.
- **A rate rule that means something.** One source address may send at most what the busiest calling service's whole
  usage plan allows (or, without calling services, half the stage's throttle) per minute; beyond it WAF answers 429
  with ``Retry-After`` in the router's error shape. The stage and the usage plans throttle the sum; this rule stops a
  single misbehaving client from using up a service's plan before its other clients get a request through.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_kms as kms
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from stacks.constructs.concern import Concern
from stacks.constructs.encrypted_log_group import EncryptedLogGroup
from stacks.constructs.router_api import API_RESOURCES, STREAM_RESOURCE
from stacks.naming import router_name
from stacks.platform import Platform, RouterSettings

# Managed groups with rules that inspect the body: they get the scope-down statement.
BODY_INSPECTING_GROUPS = ("AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet")
OTHER_GROUPS = ("AWSManagedRulesAmazonIpReputationList",)
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
RATE_WINDOW_S = 60
WAF_MIN_RATE_LIMIT = 10  # the smallest limit a rate-based rule accepts
RATE_RETRY_AFTER_S = 60
# What a WAF log may show of a request's headers; every other header the API's callers send is redacted.
LOGGED_HEADERS = ("host", "content-type", "content-length")
REDACTED_HEADERS = (
    "authorization",
    "x-amz-security-token",
    "x-amz-date",
    "x-amz-content-sha256",
    "x-amz-user-agent",
    "x-amzn-trace-id",
    "x-api-key",
    "x-forwarded-for",
    "cookie",
    "referer",
    "user-agent",
    "from",
    "origin",
)
RATE_LIMITED_BODY = "RateLimited"


def prompt_route_patterns(
    resources: Iterable[tuple[str, str]] = (*API_RESOURCES, STREAM_RESOURCE),
) -> tuple[str, ...]:
    """A regular expression per API route that takes a body (prompt-carrying), path parameters as one segment.

    The streaming route is listed whether or not the API deploys it yet: it is never body-inspected."""
    patterns = []
    for method, path in resources:
        if method in BODY_METHODS:
            segments = ["[^/]+" if part.startswith("{") else part for part in path.strip("/").split("/")]
            patterns.append("/" + "/".join(segments) + "/?$")
    return tuple(patterns)


def per_source_rate_limit(settings: RouterSettings) -> int:
    """Requests one source address may send per RATE_WINDOW_S: the busiest calling service's plan rate, or half the
    stage's rate without calling services (never the whole stage, which the stage throttle already caps)."""
    services = [service.rate_limit for service in settings.calling_services.values()]
    per_second = max(services) if services else max(1, settings.rate_limit // 2)
    return max(WAF_MIN_RATE_LIMIT, per_second * RATE_WINDOW_S)


def _visibility(metric: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
    return wafv2.CfnWebACL.VisibilityConfigProperty(
        cloud_watch_metrics_enabled=True, metric_name=metric, sampled_requests_enabled=False
    )


def _no_prompt_scope_down() -> dict[str, Any]:
    """Requests with no body and not on a prompt-carrying route (in CloudFormation's shape)."""
    body_is_empty = {
        "SizeConstraintStatement": {
            "FieldToMatch": {"Body": {"OversizeHandling": "NO_MATCH"}},
            "ComparisonOperator": "EQ",
            "Size": 0,
            "TextTransformations": [{"Priority": 0, "Type": "NONE"}],
        }
    }
    off_prompt_routes = [
        {
            "NotStatement": {
                "Statement": {
                    "RegexMatchStatement": {
                        "FieldToMatch": {"UriPath": {}},
                        "RegexString": pattern,
                        "TextTransformations": [{"Priority": 0, "Type": "URL_DECODE"}],
                    }
                }
            }
        }
        for pattern in prompt_route_patterns()
    ]
    statements = [body_is_empty, *off_prompt_routes]
    return {"AndStatement": {"Statements": statements}} if len(statements) > 1 else body_is_empty


def _managed(priority: int, group: str, scope_down: Mapping[str, Any] | None) -> dict[str, Any]:
    statement: dict[str, Any] = {"VendorName": "AWS", "Name": group}
    if scope_down is not None:
        statement["ScopeDownStatement"] = dict(scope_down)
    return {
        "Name": group,
        "Priority": priority,
        "OverrideAction": {"None": {}},
        "Statement": {"ManagedRuleGroupStatement": statement},
        "VisibilityConfig": {"CloudWatchMetricsEnabled": True, "MetricName": group, "SampledRequestsEnabled": False},
    }


def _rate_rule(priority: int, limit: int) -> dict[str, Any]:
    return {
        "Name": "RatePerSource",
        "Priority": priority,
        "Action": {
            "Block": {
                "CustomResponse": {
                    "ResponseCode": 429,
                    "CustomResponseBodyKey": RATE_LIMITED_BODY,
                    "ResponseHeaders": [{"Name": "Retry-After", "Value": str(RATE_RETRY_AFTER_S)}],
                }
            }
        },
        "Statement": {
            "RateBasedStatement": {"Limit": limit, "AggregateKeyType": "IP", "EvaluationWindowSec": RATE_WINDOW_S}
        },
        "VisibilityConfig": {
            "CloudWatchMetricsEnabled": True,
            "MetricName": "RatePerSource",
            "SampledRequestsEnabled": False,
        },
    }


def _rate_limited_body() -> str:
    message = f"this client is over its per-source rate limit; retry after {RATE_RETRY_AFTER_S} seconds"
    return json.dumps({"error": {"code": "TooManyRequests", "message": message, "request_id": "waf"}})


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
        groups: Sequence[dict[str, Any]] = [
            *(_managed(i, group, _no_prompt_scope_down()) for i, group in enumerate(BODY_INSPECTING_GROUPS)),
            *(_managed(len(BODY_INSPECTING_GROUPS) + i, group, None) for i, group in enumerate(OTHER_GROUPS)),
        ]
        self.rate_limit = per_source_rate_limit(settings)
        self.web_acl = wafv2.CfnWebACL(
            self,
            "WebAcl",
            name=name,
            description="Router API: AWS managed rules off prompt-carrying requests and a per-source rate limit",
            scope="REGIONAL",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            visibility_config=_visibility(name),
        )
        # Rules and bodies in CloudFormation's own shape (the scope-down statements nest several levels deep).
        self.web_acl.add_property_override("Rules", [*groups, _rate_rule(len(groups), self.rate_limit)])
        self.web_acl.add_property_override(
            "CustomResponseBodies",
            {RATE_LIMITED_BODY: {"ContentType": "APPLICATION_JSON", "Content": _rate_limited_body()}},
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
            # No request content: the query string and every header but LOGGED_HEADERS (WAF never logs bodies).
            redacted_fields=[
                wafv2.CfnLoggingConfiguration.FieldToMatchProperty(query_string={}),
                *(
                    wafv2.CfnLoggingConfiguration.FieldToMatchProperty(single_header={"Name": header})
                    for header in REDACTED_HEADERS
                ),
            ],
            # Only what WAF blocks is logged: allowed requests leave no record here (the access log has them).
            logging_filter={
                "DefaultBehavior": "DROP",
                "Filters": [
                    {
                        "Behavior": "KEEP",
                        "Requirement": "MEETS_ANY",
                        "Conditions": [{"ActionCondition": {"Action": "BLOCK"}}],
                    }
                ],
            },
        )
        logging.node.add_dependency(self.log_group)

"""The router's WAF, read from the synthesized templates: no managed rule with body rules ever sees a request that
can carry a prompt, WAF logs keep no request content, and the rate rule is derived from the usage plans."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from stacks.constructs.web_acl import per_source_rate_limit
from stacks.platform import Platform
from tests.infra.conftest import Template, resources_of

# AWS managed rule groups whose rules inspect the request body (AWS WAF developer guide, "AWS Managed Rules rule
# groups list"); a group not listed here and not known to be body-free fails the test until it is classified.
BODY_RULE_GROUPS = {
    "AWSManagedRulesCommonRuleSet",
    "AWSManagedRulesKnownBadInputsRuleSet",
    "AWSManagedRulesSQLiRuleSet",
    "AWSManagedRulesLinuxRuleSet",
    "AWSManagedRulesUnixRuleSet",
    "AWSManagedRulesWindowsRuleSet",
    "AWSManagedRulesPHPRuleSet",
    "AWSManagedRulesWordPressRuleSet",
    "AWSManagedRulesAdminProtectionRuleSet",
}
BODY_FREE_GROUPS = {"AWSManagedRulesAmazonIpReputationList", "AWSManagedRulesAnonymousIpList"}
BODY_INSPECTION_LIMIT = 8 * 1024  # API Gateway's default body inspection size in WAF
# Headers a SigV4-signing caller (botocore, the AWS SDKs) or an HTTP client may send with a request.
CALLER_HEADERS = (
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
    "x-amz-user-agent",
    "x-api-key",
    "user-agent",
    "cookie",
)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes = b""


PROMPT = json.dumps({"messages": [{"role": "user", "content": [{"text": "<script>alert(1)</script> ../etc"}]}]})
PROMPT_REQUESTS = (
    Request("POST", "/live/v1/features/summarize-thread/converse", PROMPT.encode()),
    Request("POST", "/v1/features/nightly-recap/converse/", PROMPT.encode()),
    Request("POST", "/live/v1/features/summarize-thread/converse-stream", PROMPT.encode()),  # a later route
    Request("POST", "/live/v1/chat/completions", PROMPT.encode()),  # a later route
    Request("GET", "/live/v1/features/summarize-thread/converse", PROMPT.encode()),  # a body on a GET
    Request("POST", "/live/v1/features/summarize-thread/converse", b""),  # the route itself, even without a body
    Request("POST", "/live/v1/features/summarize-thread/converse", b"x" * (BODY_INSPECTION_LIMIT + 1)),
)
BODILESS_REQUESTS = (Request("GET", "/live/v1/health"), Request("GET", "/live/v1/features"))


def _transform(value: str, transformations: list[Mapping[str, Any]]) -> str:
    for step in sorted(transformations, key=lambda t: t["Priority"]):
        kind = step["Type"]
        if kind == "URL_DECODE":
            value = urllib.parse.unquote(value)
        elif kind == "LOWERCASE":
            value = value.lower()
        elif kind != "NONE":
            raise AssertionError(f"text transformation {kind} is not modelled here")
    return value


def _field(field: Mapping[str, Any], request: Request) -> tuple[str | None, bool]:
    """(value, oversize) of a field to match."""
    if "UriPath" in field:
        return request.path, False
    if "Method" in field:
        return request.method, False
    if "Body" in field:
        return request.body.decode("latin-1"), len(request.body) > BODY_INSPECTION_LIMIT
    raise AssertionError(f"field {sorted(field)} is not modelled here")


def matches(statement: Mapping[str, Any], request: Request) -> bool:
    """A small evaluator of WAF statements (AWS WAF developer guide, rule statements), enough for scope-downs."""
    ((kind, body),) = statement.items()
    if kind == "AndStatement":
        return all(matches(s, request) for s in body["Statements"])
    if kind == "OrStatement":
        return any(matches(s, request) for s in body["Statements"])
    if kind == "NotStatement":
        return not matches(body["Statement"], request)
    return _leaf(kind, body, request)


def _leaf(kind: str, body: Mapping[str, Any], request: Request) -> bool:
    if kind not in {"SizeConstraintStatement", "RegexMatchStatement", "ByteMatchStatement"}:
        raise AssertionError(f"statement {kind} is not modelled here")
    value, oversize = _field(body["FieldToMatch"], request)
    if oversize:
        handling = body["FieldToMatch"]["Body"].get("OversizeHandling", "CONTINUE")
        # NO_MATCH: the statement does not match; MATCH or CONTINUE (inspects the first bytes): count it as seen.
        return handling != "NO_MATCH"
    assert value is not None
    value = _transform(value, body["TextTransformations"])
    if kind == "RegexMatchStatement":
        return re.search(body["RegexString"], value) is not None
    if kind == "ByteMatchStatement":
        target = body["SearchString"]
        return {
            "EXACTLY": value == target,
            "CONTAINS": target in value,
            "STARTS_WITH": value.startswith(target),
            "ENDS_WITH": value.endswith(target),
        }[body["PositionalConstraint"]]
    size, limit = len(value.encode("latin-1")), body["Size"]
    comparisons = {"EQ": size == limit, "NE": size != limit, "LE": size <= limit, "LT": size < limit}
    comparisons.update({"GE": size >= limit, "GT": size > limit})
    return comparisons[body["ComparisonOperator"]]


def prompt_exposures(acl: Mapping[str, Any]) -> list[str]:
    """Every (group, request) where a managed group with body rules would inspect a prompt-carrying request."""
    exposed = []
    for rule in acl["Rules"]:
        group = rule["Statement"].get("ManagedRuleGroupStatement")
        if group is None:
            continue
        name = group["Name"]
        assert name in BODY_RULE_GROUPS | BODY_FREE_GROUPS, f"classify {name}: does it inspect bodies?"
        if name in BODY_FREE_GROUPS:
            continue
        scope = group.get("ScopeDownStatement")
        for request in PROMPT_REQUESTS:
            if scope is None or matches(scope, request):
                exposed.append(f"{name} sees {request.method} {request.path} ({len(request.body)} bytes)")
    return exposed


@pytest.fixture(scope="module")
def acls(platform: Platform, templates: Mapping[str, Template]) -> dict[str, Mapping[str, Any]]:
    found = {}
    for region in platform.region_names:
        (acl,) = resources_of(templates[f"{platform.name}-router-{region}"], "AWS::WAFv2::WebACL").values()
        found[region] = acl["Properties"]
    return found


def test_no_managed_body_rule_sees_a_prompt(acls: Mapping[str, Mapping[str, Any]]) -> None:
    for region, acl in acls.items():
        assert prompt_exposures(acl) == [], region
        # The scoped groups still guard the requests that carry no prompt (the scope-down is not "nothing").
        for rule in acl["Rules"]:
            group = rule["Statement"].get("ManagedRuleGroupStatement")
            if group is not None and group["Name"] in BODY_RULE_GROUPS:
                assert all(matches(group["ScopeDownStatement"], r) for r in BODILESS_REQUESTS), group["Name"]


def test_a_group_without_its_scope_down_is_caught(acls: Mapping[str, Mapping[str, Any]]) -> None:
    planted = copy.deepcopy(next(iter(acls.values())))
    for rule in planted["Rules"]:
        rule["Statement"].get("ManagedRuleGroupStatement", {}).pop("ScopeDownStatement", None)
    assert any("AWSManagedRulesCommonRuleSet sees POST" in e for e in prompt_exposures(planted))
    widened = copy.deepcopy(next(iter(acls.values())))
    for rule in widened["Rules"]:  # a scope-down on the path alone would let a later prompt route through
        group = rule["Statement"].get("ManagedRuleGroupStatement", {})
        if "ScopeDownStatement" in group:
            group["ScopeDownStatement"] = group["ScopeDownStatement"]["AndStatement"]["Statements"][1]
    assert any("converse-stream" in e for e in prompt_exposures(widened))


def test_waf_logs_only_blocks_and_no_request_content(platform: Platform, templates: Mapping[str, Template]) -> None:
    for region in platform.region_names:
        template = templates[f"{platform.name}-router-{region}"]
        (logging,) = resources_of(template, "AWS::WAFv2::LoggingConfiguration").values()
        props = logging["Properties"]
        assert props["LoggingFilter"]["DefaultBehavior"] == "DROP"
        kept = [c for f in props["LoggingFilter"]["Filters"] if f["Behavior"] == "KEEP" for c in f["Conditions"]]
        assert kept == [{"ActionCondition": {"Action": "BLOCK"}}]
        redacted = props["RedactedFields"]
        assert {"QueryString": {}} in redacted
        headers = {f["SingleHeader"]["Name"] for f in redacted if "SingleHeader" in f}
        assert set(CALLER_HEADERS) <= headers, set(CALLER_HEADERS) - headers
        assert len(redacted) <= 100  # WAF's limit on redacted fields


def test_rate_rule_is_the_busiest_plan_not_the_stage(platform: Platform, acls: Mapping[str, Mapping[str, Any]]) -> None:
    settings = platform.router
    busiest = max(s.rate_limit for s in settings.calling_services.values())
    for acl in acls.values():
        (rule,) = [r for r in acl["Rules"] if "RateBasedStatement" in r["Statement"]]
        rate = rule["Statement"]["RateBasedStatement"]
        per_second = rate["Limit"] / rate["EvaluationWindowSec"]
        assert rate["AggregateKeyType"] == "IP"
        assert per_second == busiest < settings.rate_limit
        assert rate["Limit"] == per_source_rate_limit(settings)
        response = rule["Action"]["Block"]["CustomResponse"]
        assert response["ResponseCode"] == 429
        assert {"Name": "Retry-After", "Value": str(rate["EvaluationWindowSec"])} in response["ResponseHeaders"]
        body = json.loads(acl["CustomResponseBodies"][response["CustomResponseBodyKey"]]["Content"])
        assert set(body["error"]) == {"code", "message", "request_id"}


def test_rate_without_calling_services_is_half_the_stage(platform: Platform) -> None:
    bare = dataclasses.replace(platform.router, calling_services={})
    assert per_source_rate_limit(bare) == platform.router.rate_limit // 2 * 60

"""Checks of the API edge: authorization, the WAF in front of prompt-carrying routes and what its logs keep."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from review import policy as pol
from review.cfn import CloudAssembly, Resource, as_list, references
from review.check import Check, judge, predicate, simple, where

# AWS managed rule groups with rules on the request body (their rule lists in the AWS WAF Developer Guide:
# CrossSiteScripting_BODY, GenericLFI_BODY, EC2MetaDataSSRF_BODY, Log4JRCE_BODY, SQLi_BODY, ...).
BODY_RULE_GROUPS = frozenset(
    {
        "AWSManagedRulesCommonRuleSet",
        "AWSManagedRulesKnownBadInputsRuleSet",
        "AWSManagedRulesSQLiRuleSet",
        "AWSManagedRulesLinuxRuleSet",
        "AWSManagedRulesUnixRuleSet",
        "AWSManagedRulesWindowsRuleSet",
        "AWSManagedRulesPHPRuleSet",
        "AWSManagedRulesWordPressRuleSet",
        "AWSManagedRulesACFPRuleSet",
        "AWSManagedRulesATPRuleSet",
    }
)
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Headers that carry credentials: a WAF log must never keep them.
CREDENTIAL_HEADERS = ("authorization", "x-amz-security-token")


@dataclass(frozen=True)
class Route:
    api: Resource
    method: Resource
    verb: str
    path: str  # /v1/features/{feature}/converse
    integration: Resource | None  # the function it invokes, when the template names it

    @property
    def carries_prompt(self) -> bool:
        """A route whose request body reaches a function: a prompt may be in it."""
        return self.verb in BODY_METHODS and self.integration is not None

    def sample(self) -> str:
        return re.sub(r"\{[^}]+\}", "example", self.path)


def api_routes(a: CloudAssembly) -> list[Route]:
    """Every REST API method with its full path and the function its integration invokes."""
    routes = []
    for method in a.resources("AWS::ApiGateway::Method"):
        api = a.resolve(method.stack, method.properties.get("RestApiId"))
        if api is None:
            continue
        parts: list[str] = []
        node = a.resolve(method.stack, method.properties.get("ResourceId"))
        while node is not None and node.type == "AWS::ApiGateway::Resource":
            parts.insert(0, pol.text(node.properties.get("PathPart", "")))
            node = a.resolve(node.stack, node.properties.get("ParentId"))
        integration = a.resolve(method.stack, (method.properties.get("Integration") or {}).get("Uri"))
        if integration is not None and integration.type != "AWS::Lambda::Function":
            integration = None
        routes.append(
            Route(api, method, str(method.properties.get("HttpMethod", "")), "/" + "/".join(parts), integration)
        )
    return routes


@predicate
def api_iam_auth(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every API method (but CORS preflight) requires SigV4 (AWS_IAM) authorization."""
    return simple(
        "api_iam_auth",
        [r for r in api_routes(a) if r.verb != "OPTIONS"],
        lambda r: r.method.properties.get("AuthorizationType") == "AWS_IAM",
        lambda r: f"{where(r.method)} {r.verb} {r.path}: auth {r.method.properties.get('AuthorizationType', 'NONE')}",
    )


def web_acls_of(a: CloudAssembly, api: Resource) -> list[Resource]:
    found = []
    for association in a.resources("AWS::WAFv2::WebACLAssociation"):
        if association.stack == api.stack and api.logical_id in references(association.properties.get("ResourceArn")):
            acl = a.resolve(association.stack, association.properties.get("WebACLArn"))
            if acl is not None:
                found.append(acl)
    return found


def _walk(value: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(value, Mapping):
        yield value
        for child in value.values():
            yield from _walk(child)
    elif isinstance(value, list):
        for child in value:
            yield from _walk(child)


def inspects_body(rule: Mapping[str, Any]) -> bool:
    for node in _walk(rule.get("Statement")):
        group = node.get("ManagedRuleGroupStatement")
        if isinstance(group, Mapping) and group.get("Name") in BODY_RULE_GROUPS:
            return True
        field = node.get("FieldToMatch")
        if isinstance(field, Mapping) and ({"Body", "JsonBody"} & set(field)):
            return True
    return False


def _patterns(a: CloudAssembly, acl: Resource, statement: Mapping[str, Any]) -> list[str]:
    target = a.resolve(acl.stack, statement.get("Arn"))
    return [str(x) for x in as_list(target.properties.get("RegularExpressionList"))] if target else []


def matches_path(a: CloudAssembly, acl: Resource, statement: Mapping[str, Any], path: str) -> bool:
    """Whether a WAF statement on the URI path matches `path` (ByteMatch, Regex, pattern sets, And/Or)."""
    if "OrStatement" in statement:
        return any(matches_path(a, acl, s, path) for s in as_list(statement["OrStatement"].get("Statements")))
    if "AndStatement" in statement:
        return all(matches_path(a, acl, s, path) for s in as_list(statement["AndStatement"].get("Statements")))
    for kind, inner in statement.items():
        if not isinstance(inner, Mapping) or "UriPath" not in (inner.get("FieldToMatch") or {}):
            continue
        lower = any(t.get("Type") == "LOWERCASE" for t in as_list(inner.get("TextTransformations")))
        subject = path.lower() if lower else path
        if kind == "ByteMatchStatement":
            needle = str(inner.get("SearchString", ""))
            return {
                "EXACTLY": subject == needle,
                "STARTS_WITH": subject.startswith(needle),
                "ENDS_WITH": subject.endswith(needle),
                "CONTAINS": needle in subject,
                "CONTAINS_WORD": re.search(rf"(^|\W){re.escape(needle)}(\W|$)", subject) is not None,
            }.get(str(inner.get("PositionalConstraint")), False)
        if kind == "RegexMatchStatement":
            return re.search(str(inner.get("RegexString", "")), subject) is not None
        if kind == "RegexPatternSetReferenceStatement":
            return any(re.search(p, subject) for p in _patterns(a, acl, inner))
    return False


def excludes(a: CloudAssembly, acl: Resource, rule: Mapping[str, Any], paths: list[str]) -> bool:
    """Whether a rule (its scope-down or its own statement) holds a NotStatement that matches every path."""
    for node in _walk(rule.get("Statement")):
        negated = node.get("NotStatement")
        if isinstance(negated, Mapping) and all(matches_path(a, acl, negated.get("Statement") or {}, p) for p in paths):
            return True
    return False


def _stage_names(a: CloudAssembly, api: Resource) -> list[str]:
    return [
        pol.text(s.properties.get("StageName"))
        for s in a.resources("AWS::ApiGateway::Stage")
        if s.stack == api.stack and api.logical_id in references(s.properties.get("RestApiId"))
    ]


@dataclass(frozen=True)
class Edge:
    """One API with its prompt-carrying routes, and the web ACLs in front of it."""

    api: Resource
    routes: list[Route]
    acls: list[Resource]


def prompt_edges(a: CloudAssembly) -> list[Edge]:
    by_api: dict[tuple[str, str], list[Route]] = {}
    for route in api_routes(a):
        if route.carries_prompt:
            by_api.setdefault(route.api.key, []).append(route)
    return [Edge(routes[0].api, routes, web_acls_of(a, routes[0].api)) for routes in by_api.values()]


def prompt_inspection_reasons(a: CloudAssembly, edge: Edge) -> list[str]:
    stages = _stage_names(a, edge.api)
    reasons = []
    for route in edge.routes:
        # WAF sees the path as the stage's URL gives it; a match with or without the stage prefix counts.
        candidates = [route.sample()] + [f"/{stage}{route.sample()}" for stage in stages]
        for acl in edge.acls:
            for rule in as_list(acl.properties.get("Rules")):
                if inspects_body(rule) and not any(excludes(a, acl, rule, [c]) for c in candidates):
                    reasons.append(
                        f"{where(acl)} rule {rule.get('Name')} inspects the body of {route.verb} {route.path}"
                    )
    return reasons


@predicate
def waf_skips_prompt_bodies(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """No WAF rule inspects the body of a prompt-carrying route (a POST, PUT or PATCH integrated with a function):
    every body-inspecting rule (AWS managed groups with body rules, or a match on Body/JsonBody) excludes those
    paths with a scope-down NotStatement on the URI path. Otherwise a prompt with code in it is blocked, and the WAF
    log keeps the matched text."""
    return judge(
        "waf_skips_prompt_bodies",
        prompt_edges(a),
        lambda edge: prompt_inspection_reasons(a, edge),
        lambda edge: (
            f"{where(edge.api)} {', '.join(f'{r.verb} {r.path}' for r in edge.routes)} behind "
            f"{', '.join(where(x) for x in edge.acls) or 'no web ACL'}"
        ),
    )


def credential_headers(a: CloudAssembly, acl: Resource) -> tuple[str, ...]:
    """SigV4's headers, and x-api-key where an API behind this web ACL requires API keys."""
    keyed = any(
        r.method.properties.get("ApiKeyRequired")
        for r in api_routes(a)
        if any(x.key == acl.key for x in web_acls_of(a, r.api))
    )
    return (*CREDENTIAL_HEADERS, "x-api-key") if keyed else CREDENTIAL_HEADERS


def waf_logging_reasons(a: CloudAssembly, acl: Resource) -> list[str]:
    configs = [
        c
        for c in a.resources("AWS::WAFv2::LoggingConfiguration")
        if c.stack == acl.stack and acl.logical_id in references(c.properties.get("ResourceArn"))
    ]
    if not configs:
        return ["no logging configuration"]
    reasons = []
    for config in configs:
        redacted = {
            str(field["SingleHeader"].get("Name", "")).lower()
            for field in as_list(config.properties.get("RedactedFields"))
            if isinstance(field, Mapping) and isinstance(field.get("SingleHeader"), Mapping)
        }
        whole = {k for f in as_list(config.properties.get("RedactedFields")) if isinstance(f, Mapping) for k in f}
        missing = [h for h in credential_headers(a, acl) if h not in redacted]
        if missing:
            reasons.append(f"{where(config)} keeps the {', '.join(missing)} header")
        if "QueryString" not in whole:
            reasons.append(f"{where(config)} keeps the query string")
        if not config.properties.get("LoggingFilter"):
            reasons.append(f"{where(config)} has no logging filter: every request is logged")
    return reasons


@predicate
def waf_logs_redacted(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every web ACL logs through a logging configuration that redacts the credential headers (SigV4's, and
    x-api-key where the API requires keys) and the query string, and filters what it keeps: a WAF log records no
    request content."""
    return judge(
        "waf_logs_redacted",
        list(a.resources("AWS::WAFv2::WebACL")),
        lambda acl: waf_logging_reasons(a, acl),
        where,
    )


def _stage_rate(a: CloudAssembly, acl: Resource) -> float | None:
    """The highest steady-state rate (requests per second) of the stages this web ACL is associated with."""
    rates = []
    for association in a.resources("AWS::WAFv2::WebACLAssociation"):
        if association.stack != acl.stack or acl.logical_id not in references(association.properties.get("WebACLArn")):
            continue
        for stage in a.resources("AWS::ApiGateway::Stage"):
            if stage.stack == acl.stack and stage.logical_id in references(association.properties.get("ResourceArn")):
                rates += [
                    float(m["ThrottlingRateLimit"])
                    for m in as_list(stage.properties.get("MethodSettings"))
                    if isinstance(m, Mapping) and isinstance(m.get("ThrottlingRateLimit"), int | float)
                ]
    return max(rates) if rates else None


def rate_rule_reasons(a: CloudAssembly, acl: Resource) -> list[str]:
    rules = [
        rule
        for rule in as_list(acl.properties.get("Rules"))
        if isinstance(rule, Mapping) and "RateBasedStatement" in (rule.get("Statement") or {})
    ]
    if not rules:
        return ["no rate-based rule"]
    stage_rate = _stage_rate(a, acl)
    reasons = []
    for rule in rules:
        statement = rule["Statement"]["RateBasedStatement"]
        window = int(statement.get("EvaluationWindowSec", 300))
        limit = int(statement.get("Limit", 0))
        if stage_rate is not None and limit >= stage_rate * window:
            reasons.append(
                f"rule {rule.get('Name')} admits {limit} requests per {window} s per source: the whole stage's "
                f"throttle ({stage_rate:g}/s x {window} s = {stage_rate * window:g}), so it never limits one source"
            )
    return reasons


@predicate
def waf_rate_below_stage(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every web ACL has a rate-based rule whose limit per source is below what the stage it protects admits in the
    same window: one source cannot take the whole API."""
    return judge(
        "waf_rate_below_stage",
        list(a.resources("AWS::WAFv2::WebACL")),
        lambda acl: rate_rule_reasons(a, acl),
        where,
    )

"""Checks of who may do what: invoke grants, administrator grants, trust policies, users, the API's callers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from review import inventory as inv
from review import policy as pol
from review.cfn import CloudAssembly, Resource, as_list
from review.check import Check, judge, predicate, simple, where

# Service principals that take no aws:SourceAccount / aws:SourceArn in a trust policy: a function's execution role
# is assumed by Lambda for that function only.
UNSCOPED_SERVICES = frozenset({"lambda.amazonaws.com", "edgelambda.amazonaws.com"})


def _allows(a: CloudAssembly) -> list[inv.Statement]:
    return [s for s in inv.iam_statements(a) if s.effect == "Allow" and s.kind != "trust"]


def _service_of(s: inv.Statement) -> str:
    return inv.endpoint_service(s.resource) if s.resource.type == "AWS::EC2::VPCEndpoint" else ""


def _invokes(s: inv.Statement) -> bool:
    return any(inv.is_invoke(x, _service_of(s)) for x in s.actions)


def wildcard_invoke_reasons(s: inv.Statement) -> list[str]:
    """Why an Allow of an invoke action is not on exact resources: `*`, every resource of the service, NotResource,
    or a pattern without an aws:ResourceTag condition. `execute-api:/...` in an API's own policy is that API."""
    if s.effect != "Allow" or s.kind == "trust" or not _invokes(s):
        return []
    if s.raw and "NotResource" in s.raw:
        return ["NotResource: everything but a few"]
    raw = [pol.text(x) for x in as_list(s.raw.get("Resource"))] if s.raw else s.resources
    reasons = []
    for resource in raw:
        if resource.startswith("execute-api:/") and s.resource.type == "AWS::ApiGateway::RestApi":
            continue
        if pol.every_resource(resource):
            reasons.append(f"on every resource ({resource})")
        elif pol.wildcard(resource) and not pol.has_condition(s.raw, ("aws:resourcetag",)):
            reasons.append(f"on a pattern without an aws:ResourceTag condition ({resource})")
    return reasons


def wildcard_invoke(s: inv.Statement) -> bool:
    return bool(wildcard_invoke_reasons(s))


@predicate
def iam_no_wildcard_invoke(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """No Allow of an invoke action (Bedrock, SageMaker, Lambda, API) on `*`, on every resource of its service, or
    on a pattern not held by a resource tag, in any policy (identity, resource or endpoint)."""
    return judge(
        "iam_no_wildcard_invoke",
        [s for s in _allows(a) if _invokes(s)],
        wildcard_invoke_reasons,
        lambda s: f"{where(s.resource)} ({s.where}) for {s.principal}: {', '.join(s.actions)}",
    )


@predicate
def iam_no_full_admin(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """No identity policy allows `*` actions on `*` resources."""
    subjects = [s for s in _allows(a) if s.resource.type.startswith("AWS::IAM::")]
    return simple(
        "iam_no_full_admin",
        subjects,
        lambda s: not ("*" in s.actions and "*" in [pol.text(x) for x in as_list(s.raw.get("Resource"))]),
        lambda s: f"{where(s.resource)} ({s.where}) for {s.principal}: {len(s.actions)} actions",
    )


def trust_reasons(s: inv.Statement) -> list[str]:
    if s.effect != "Allow":
        return []
    reasons = []
    for kind, value in pol.principals(s.raw):
        if kind == "*":
            reasons.append("assumable by any principal")
        elif kind == "Service" and value not in UNSCOPED_SERVICES:
            if not pol.has_condition(s.raw, pol.SOURCE_SCOPE):
                reasons.append(f"{value} without aws:SourceAccount or aws:SourceArn (confused deputy)")
        elif kind == "AWS" and pol.is_account_root(value) and not s.raw.get("Condition"):
            reasons.append(f"assumable by every principal of {value} without a condition")
    return reasons


@predicate
def trust_policies_scoped(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """No role may be assumed by any principal; a service may assume a role only for this account or resource
    (aws:SourceAccount / aws:SourceArn), Lambda execution roles excepted."""
    return judge(
        "trust_policies_scoped",
        [s for s in inv.iam_statements(a) if s.kind == "trust"],
        trust_reasons,
        lambda s: f"{where(s.resource)} assumable by {s.principal}",
    )


@predicate
def iam_no_users_or_keys(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """No IAM users and no access keys: people and CI use federated, short-lived credentials."""
    if not a.stacks:
        return Check("iam_no_users_or_keys", None)
    found = list(a.resources("AWS::IAM::User", "AWS::IAM::AccessKey", "AWS::IAM::UserToGroupAddition"))
    return Check(
        "iam_no_users_or_keys",
        not found,
        [f"{len(a.stacks)} stacks: no IAM user, no access key"] if not found else [],
        [f"{where(r)}: {r.type}" for r in found],
    )


def caller_reasons(api: Resource) -> list[str]:
    document = api.properties.get("Policy")
    if not isinstance(document, Mapping):
        return ["no resource policy: any principal IAM allows may call"]
    reasons = []
    for statement in as_list(document.get("Statement")):
        if not isinstance(statement, Mapping) or not pol.is_allow(statement):
            continue
        for kind, value in pol.principals(statement):
            if kind == "*" and not pol.has_condition(statement, pol.PRINCIPAL_PERIMETER):
                reasons.append("admits any principal")
            elif kind == "AWS" and pol.is_account_root(value):
                reasons.append(f"admits the account root {value} (every principal of that account)")
            elif kind == "AWS" and pol.wildcard(value):
                reasons.append(f"admits a pattern of principals {value}")
    return reasons


@predicate
def api_callers_exact(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every REST API's resource policy admits its callers by exact role ARN: no account root, no `*`."""
    return judge(
        "api_callers_exact",
        list(a.resources("AWS::ApiGateway::RestApi")),
        caller_reasons,
        lambda r: f"{where(r)}",
    )

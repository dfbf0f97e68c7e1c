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
        elif _function_versions(resource) or _one_api(resource):
            continue
        elif pol.wildcard(resource) and not pol.has_condition(s.raw, ("aws:resourcetag",)):
            reasons.append(f"on a pattern without an aws:ResourceTag condition ({resource})")
    return reasons


def _function_versions(resource: str) -> bool:
    """`<one function's ARN>:*`: every version and alias of one exact function, not a pattern over functions."""
    base = resource.removesuffix(":*")
    exact = base != resource and not pol.wildcard(base)
    return exact and (base.endswith(".Arn") or ":function:" in base)


def _one_api(resource: str) -> bool:
    """`arn:aws:execute-api:<region>:<account>:<api id>/*`: the stages, methods and paths of one exact API."""
    parts = pol.arn_parts(resource)
    if parts is None or parts[2] != "execute-api":
        return False
    api_id = parts[5].split("/", 1)[0]
    return bool(api_id) and not pol.wildcard(api_id) and pol.account_pinned(resource)


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
                reasons.append("no aws:SourceAccount or aws:SourceArn condition (confused deputy)")
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


TAGGING_ACTIONS = (
    "tagresource",
    "untagresource",
    "createtags",
    "deletetags",
    "addtagstoresource",
    "removetagsfromresource",
)


def _tagging(action: str) -> bool:
    name = action.lower().split(":", 1)[-1]
    return name in TAGGING_ACTIONS or action.strip() == "*" or action.lower().endswith(":*")


def _service(arn: str) -> str:
    parts = pol.arn_parts(arn)
    return parts[2] if parts else ""


def abac_services(a: CloudAssembly) -> set[str]:
    """Services some policy grants on by resource tag (aws:ResourceTag): there a tag opens a door."""
    return {
        _service(pol.text(r))
        for s in inv.iam_statements(a)
        if s.raw and s.effect == "Allow" and pol.has_condition(s.raw, ("aws:resourcetag",))
        for r in as_list(s.raw.get("Resource"))
    } - {""}


def tagging_reasons(s: inv.Statement, abac: set[str]) -> list[str]:
    raw = [pol.text(x) for x in as_list(s.raw.get("Resource"))]
    patterns = [r for r in raw if pol.wildcard(r) and (_service(r) in abac or r == "*")]
    if not patterns:
        return []
    reasons = []
    if not pol.has_condition(s.raw, ("aws:resourcetag",)):
        reasons.append(f"may tag any resource of {', '.join(patterns)} (no aws:ResourceTag condition), then act on it")
    if not pol.has_condition(s.raw, ("aws:tagkeys",)):
        reasons.append("tag keys not fixed (no aws:TagKeys condition)")
    return reasons


@predicate
def iam_tagging_scoped(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """No identity policy lets a principal tag its way into resources: where some policy grants by resource tag,
    tagging on a resource pattern of that service is held to resources that already carry the tag (aws:ResourceTag)
    with the tag keys fixed (aws:TagKeys). A tag condition on the request alone lets the role tag any matching
    resource and then use every grant that tag opens."""
    abac = abac_services(a)
    subjects = [
        s
        for s in _allows(a)
        if s.resource.type.startswith("AWS::IAM::") and any(_tagging(x) for x in s.actions) and s.raw
    ]
    return judge(
        "iam_tagging_scoped",
        subjects,
        lambda s: tagging_reasons(s, abac),
        lambda s: f"{where(s.resource)} ({s.where}) for {s.principal}: {', '.join(s.actions)}",
    )

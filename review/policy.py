"""Reading one IAM policy statement the way a strict reviewer does: who it admits, what it allows, on what, and
under which conditions. Values are rendered first (`Ref`/`GetAtt` become names), so a token never looks like `*`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from review.cfn import as_list, render

# Condition keys that keep a statement to resources of one's own account or organization (a resource perimeter).
RESOURCE_PERIMETER = ("aws:resourceaccount", "aws:resourceorgid", "aws:resourceorgpaths")
# ... and to principals of one's own account or organization (a principal perimeter).
PRINCIPAL_PERIMETER = (
    "aws:principalaccount",
    "aws:principalorgid",
    "aws:principalorgpaths",
    "aws:principalarn",
    "aws:sourcevpce",
    "aws:sourcevpc",
)
# Condition keys that tie a service principal to one account or resource (the confused-deputy guard).
SOURCE_SCOPE = ("aws:sourceaccount", "aws:sourcearn", "aws:sourceorgid", "aws:sourceorgpaths")

_ACCOUNT = re.compile(r"^\d{12}$")


def text(value: Any) -> str:
    return render(value)


def actions(statement: Mapping[str, Any]) -> list[str]:
    return [text(x) for x in as_list(statement.get("Action"))]


def resources(statement: Mapping[str, Any]) -> list[str]:
    return [text(x) for x in as_list(statement.get("Resource"))]


def is_allow(statement: Mapping[str, Any]) -> bool:
    return statement.get("Effect") == "Allow"


def condition_keys(statement: Mapping[str, Any]) -> set[str]:
    condition = statement.get("Condition")
    if not isinstance(condition, Mapping):
        return set()
    return {str(key).lower() for tests in condition.values() if isinstance(tests, Mapping) for key in tests}


def has_condition(statement: Mapping[str, Any], keys: tuple[str, ...]) -> bool:
    found = condition_keys(statement)
    # Keys with a suffix count: aws:ResourceTag/<tag>, kms:EncryptionContext:<key>.
    return any(k in found or any(f.startswith((k + "/", k + ":")) for f in found) for k in keys)


def every_action(action: str) -> bool:
    """`*` or `service:*`: every action (of one service, or of all)."""
    return action.strip() == "*" or action.strip().endswith(":*")


def arn_parts(arn: str) -> list[str] | None:
    parts = arn.split(":", 5)
    return parts if len(parts) == 6 and parts[0] == "arn" else None


def every_resource(resource: str) -> bool:
    """`*`, or an ARN whose resource part is only wildcards (`*`, `*/*`): every resource of its service."""
    if resource.strip() == "*":
        return True
    parts = arn_parts(resource)
    return parts is not None and set(parts[5]) <= {"*", "/"}


def account_pinned(resource: str) -> bool:
    """An ARN that can only name resources of one account: its account field is an account id, or it is empty (an
    AWS-owned resource such as a foundation model, or S3, whose ARNs carry no account) and the name, or for S3 the
    bucket, has no wildcard."""
    parts = arn_parts(resource)
    if parts is None:
        return False
    account = parts[4]
    if _ACCOUNT.match(account) or account == "${AWS::AccountId}":
        return True
    if account or not parts[2]:
        return False
    # S3: a bucket name is global, so an exact bucket (objects under it may be a pattern) is one account's.
    exact = parts[5].split("/", 1)[0] if parts[2] == "s3" else parts[5]
    return not wildcard(exact)


def wildcard(resource: str) -> bool:
    return "*" in resource or "?" in resource


def principals(statement: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(kind, value) pairs: ("AWS", arn), ("Service", name), ("*", "*")..."""
    principal = statement.get("Principal")
    if principal is None:
        return []
    if principal == "*":
        return [("*", "*")]
    out: list[tuple[str, str]] = []
    if isinstance(principal, Mapping):
        for kind, values in principal.items():
            for value in as_list(values):
                out.append(("*", "*") if value == "*" else (str(kind), text(value)))
    return out


def is_account_root(value: str) -> bool:
    """`arn:aws:iam::123456789012:root`, a bare account id, or the account pseudo parameter: every principal of the
    account that IAM lets through."""
    return value.endswith(":root") or bool(_ACCOUNT.match(value)) or value == "${AWS::AccountId}"

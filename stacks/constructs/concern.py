"""A construct that groups one concern's resources without entering their CloudFormation logical ids.

A logical id is derived from a resource's construct path. Moving a resource into a new construct would change it,
and CloudFormation would replace the resource on the next deployment: a new KMS key (the old one is retained and
orphaned), a new health table (refused: deletion protection), new API keys. A `Concern` is skipped when its stack
(`CellStack._allocate_logical_id`) computes logical ids, so stacks can be split into constructs without replacing
anything; the ids stay those of the flat stack the resources were first deployed from.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import aws_cdk as cdk
from constructs import Construct, IConstruct

# aws-cdk-lib's makeUniqueId (core/lib/private/uniqueid.ts), which Stack.allocateLogicalId applies to the path.
_HIDDEN_ID = "Default"
_HIDDEN_FROM_HUMAN_ID = "Resource"
_HASH_LEN = 8
_MAX_HUMAN_LEN = 240
_MAX_ID_LEN = 255
_NON_ALPHANUMERIC = re.compile(r"[^A-Za-z0-9]")


class Concern(Construct):
    """One concern of a stack (its function, its API, its alarms...): a scope for its resources, absent from their
    logical ids. Children of a concern keep the ids they would have as direct children of the stack, so two
    concerns of one stack must not hold children with the same id."""


def make_unique_id(components: Sequence[str]) -> str:
    """CDK's logical id for a path: the path itself when it is one component, else its readable part and a hash."""
    parts = [c for c in components if c != _HIDDEN_ID]
    if not parts:
        raise ValueError("a logical id needs at least one path component")
    if len(parts) == 1:
        candidate = _NON_ALPHANUMERIC.sub("", parts[0])
        if len(candidate) <= _MAX_ID_LEN:
            return candidate
    digest = hashlib.md5("/".join(parts).encode(), usedforsecurity=False).hexdigest()[:_HASH_LEN].upper()
    human: list[str] = []
    for part in parts:
        if not human or not human[-1].endswith(part):
            human.append(part)
    readable = "".join(_NON_ALPHANUMERIC.sub("", p) for p in human if p != _HIDDEN_FROM_HUMAN_ID)
    return readable[:_MAX_HUMAN_LEN] + digest


def path_without_concerns(construct: IConstruct, stack: cdk.Stack) -> list[str]:
    """The ids from `stack` (exclusive) down to `construct`, with every `Concern` left out."""
    scopes = construct.node.scopes
    start = scopes.index(stack) + 1
    return [scope.node.id for scope in scopes[start:] if not isinstance(scope, Concern)]


def flat_unique_id(construct: IConstruct) -> str:
    """What `Names.node_unique_id(construct)` was before concerns existed (the app-level path, concerns left out).
    Some L2s build construct ids from it (API Gateway's Lambda permissions name their API that way)."""
    stack = cdk.Stack.of(construct)
    return make_unique_id([*[s.node.id for s in stack.node.scopes[1:]], *path_without_concerns(construct, stack)])

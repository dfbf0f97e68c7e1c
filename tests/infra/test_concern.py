"""Concern constructs stay out of logical ids (stacks/constructs/concern.py): a resource keeps the id it had as a
direct child of its stack, so splitting a stack into constructs replaces nothing on deployment."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_sns as sns

from stacks.cell import CellStack
from stacks.constructs.concern import Concern, make_unique_id
from stacks.platform import load_platform
from tests.infra.config_documents import EXAMPLE


def _logical_id(stack: cdk.Stack, construct: sns.Topic) -> str:
    child = construct.node.default_child
    assert isinstance(child, cdk.CfnElement)
    return str(stack.resolve(child.logical_id))


def test_make_unique_id_is_cdks() -> None:
    stack = cdk.Stack(cdk.App(), "Plain")
    nested = cdk.Resource(stack, "Outer")
    for scope, name in ((stack, "Topic"), (nested, "Inner"), (stack, "Default")):
        topic = sns.Topic(scope, name)
        expected = _logical_id(stack, topic)
        path = [s.node.id for s in topic.node.default_child.node.scopes[2:]]  # below the stack  # type: ignore[union-attr]
        assert make_unique_id(path) == expected


def test_a_concern_leaves_the_logical_id_unchanged_and_a_plain_construct_does_not() -> None:
    platform = load_platform(EXAMPLE)
    region = platform.region_names[0]

    def stack(name: str) -> CellStack:
        return CellStack(cdk.App(), name, platform=platform, region=region, kind="test", description="test")

    flat = stack("S")
    grouped = stack("S")
    plain = stack("S")
    expected = _logical_id(flat, sns.Topic(flat, "AlarmTopic"))
    assert _logical_id(grouped, sns.Topic(Concern(grouped, "Monitoring"), "AlarmTopic")) == expected
    assert _logical_id(plain, sns.Topic(cdk.Resource(plain, "Monitoring"), "AlarmTopic")) != expected

"""The registry of backend kinds: every kind is known everywhere it matters, and an unknown one fails loudly."""

from __future__ import annotations

import botocore.session
import pytest

from spillway.backends import ClientPool
from spillway.backends.kinds import EVERYTHING, KINDS, kind_of, make_backends
from stacks.platform import MODEL_PARSERS
from stacks.targets import DeployedTarget, InvokeGrants


def test_every_kind_has_a_platform_parser_and_a_runtime() -> None:
    assert set(MODEL_PARSERS) == {name for name, kind in KINDS.items() if kind.in_platform_file}
    backends = make_backends(ClientPool(lambda service, region, config: None))
    assert set(backends) == set(KINDS)
    session = botocore.session.get_session()
    for name, kind in KINDS.items():
        assert kind.service == type(backends[name]).SERVICE
        assert kind.service in session.get_available_services()
        assert kind.can <= EVERYTHING
        assert kind.invoke_actions


def test_an_unknown_kind_fails_loudly_naming_the_known_ones() -> None:
    with pytest.raises(KeyError, match="the kinds are bedrock, openai, sagemaker"):
        kind_of("vertex")
    with pytest.raises(KeyError, match="bedrock, openai, sagemaker"):
        DeployedTarget("m", "on_demand", "us-east-1", "vertex", "x", ("arn:aws:x",), None)


def test_grants_are_kept_per_kind() -> None:
    grants = InvokeGrants({"bedrock": ("arn:b",), "sagemaker": ("arn:s",)})
    assert (grants.bedrock, grants.sagemaker) == (("arn:b",), ("arn:s",))
    assert InvokeGrants({}).sagemaker == ()

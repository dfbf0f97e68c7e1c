"""Synthesizes the example platform once per test session; every infra test reads the shared templates."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from stacks.assembly import Assembly, SynthResult, build, synthesize
from stacks.platform import Platform, load_platform
from tests.infra.config_documents import EXAMPLE

Template = Mapping[str, Any]


@pytest.fixture(scope="session")
def platform() -> Platform:
    return load_platform(EXAMPLE)


@pytest.fixture(scope="session")
def assembly(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Assembly:
    # CloudFormation's own validation stays on here: this is the one synthesis the suite keeps fully honest.
    return build(platform, outdir=tmp_path_factory.mktemp("cdk.out"), cloudformation_validation=True)


@pytest.fixture(scope="session")
def synth(assembly: Assembly) -> SynthResult:
    return synthesize(assembly)


@pytest.fixture(scope="session")
def templates(assembly: Assembly, synth: SynthResult) -> dict[str, Template]:
    """Every template by stack name."""
    return {
        stack.stack_name: json.loads((synth.outdir / stack.template_file).read_text(encoding="utf-8"))
        for stack in assembly.stacks
    }


def resources_of(template: Template, resource_type: str) -> dict[str, Mapping[str, Any]]:
    """The resources of one type in a template, by logical id."""
    return {
        logical_id: resource
        for logical_id, resource in template.get("Resources", {}).items()
        if resource["Type"] == resource_type
    }


PT_EXAMPLE = EXAMPLE.parent / "examples" / "platform-pt.yaml"  # the example, buying PT in us-west-2


@pytest.fixture(scope="session")
def pt_platform() -> Platform:
    return load_platform(PT_EXAMPLE)


@pytest.fixture(scope="session")
def pt_synth(pt_platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> tuple[Assembly, SynthResult]:
    assembly = build(pt_platform, outdir=tmp_path_factory.mktemp("pt.out"), cloudformation_validation=False)
    return assembly, synthesize(assembly)


@pytest.fixture(scope="session")
def pt_templates(pt_synth: tuple[Assembly, SynthResult]) -> dict[str, Template]:
    """Every template of the PT-buying example, by stack name."""
    return templates_of(*pt_synth)


def templates_of(assembly: Assembly, result: SynthResult) -> dict[str, Template]:
    """Every template of a synthesized assembly, by stack name."""
    return {
        stack.stack_name: json.loads((result.outdir / stack.template_file).read_text(encoding="utf-8"))
        for stack in assembly.stacks
    }


@pytest.fixture(scope="session")
def opted_in_models(pt_platform: Platform, pt_templates: Mapping[str, Template]) -> Template:
    """The models stack that buys PT in the PT example."""
    return pt_templates[f"{pt_platform.name}-models-us-west-2"]

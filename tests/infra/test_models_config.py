"""The model part of the platform schema: one clear error per bad model config, and PT purchases opted into twice."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from stacks.platform import PlatformConfigError, parse_platform, purchase_sentence
from stacks.targets import endpoint_grants, router_grants
from tests.infra.config_documents import EXAMPLE, SOURCE, assert_names_key, example, parse, rejects

SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"
EAST_PT = ("models", "claude-sonnet", "regions", "us-east-1", "provisioned")
EAST_ENDPOINT = ("models", "llama-escrow", "regions", "us-east-1", "endpoint")


def at(document: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    node: Any = document
    for part in path:
        node = node[part]
    return node


def buy(document: dict[str, Any], units: int = 1, commitment: str = "ONE_MONTH", *, allow: bool = True) -> None:
    """Turn the us-east-1 Sonnet PT from an existing ARN into a purchase, as an operator would."""
    document["platform"]["allow_provisioned_purchase"] = allow
    at(document, EAST_PT[:-1])["provisioned"] = {
        "max_in_flight": 8,
        "create": {
            "model_units": units,
            "commitment": commitment,
            "acknowledge_cost": purchase_sentence(units, commitment, SONNET, "us-east-1"),
        },
    }


def _create(document: dict[str, Any]) -> dict[str, Any]:
    return at(document, EAST_PT)["create"]


def _pt_without_units(d: dict[str, Any]) -> None:
    buy(d)
    del _create(d)["model_units"]


def _unknown_term(d: dict[str, Any]) -> None:
    buy(d)
    _create(d)["commitment"] = "ONE_YEAR"


def _typo_in_units(d: dict[str, Any]) -> None:
    buy(d)
    _create(d)["model_units"] = 10  # the sentence still says 1


def _no_platform_switch(d: dict[str, Any]) -> None:
    buy(d, allow=False)


def _arn_and_create(d: dict[str, Any]) -> None:
    buy(d)
    at(d, EAST_PT)["arn"] = "arn:aws:bedrock:us-east-1:111122223333:provisioned-model/abc"


def _schedule_one_instance(d: dict[str, Any]) -> None:
    at(d, EAST_ENDPOINT)["schedule"][0]["min_instances"] = 1


@pytest.mark.parametrize(
    ("mutate", "key", "words"),
    [
        pytest.param(
            _pt_without_units,
            "models.claude-sonnet.regions.us-east-1.provisioned.create.model_units",
            "missing required field: how many model units to buy",
            id="pt-without-model-units",
        ),
        pytest.param(
            _unknown_term,
            "models.claude-sonnet.regions.us-east-1.provisioned.create.commitment",
            "unknown commitment term 'ONE_YEAR' (expected one of: NO_COMMITMENT, ONE_MONTH, SIX_MONTHS)",
            id="unknown-commitment-term",
        ),
        pytest.param(
            lambda d: at(d, EAST_ENDPOINT).__setitem__("min_instances", 1),
            "models.llama-escrow.regions.us-east-1.endpoint.min_instances",
            "at least two instances across zones",
            id="one-instance",
        ),
        pytest.param(
            _schedule_one_instance,
            "models.llama-escrow.regions.us-east-1.endpoint.schedule[0].min_instances",
            "at least two instances across zones",
            id="scheduled-one-instance",
        ),
        pytest.param(
            lambda d: at(d, EAST_ENDPOINT).pop("model_data_url"),
            "models.llama-escrow.regions.us-east-1.endpoint.model_data_url",
            "a SageMaker escrow model needs its artifact",
            id="sagemaker-without-artifact",
        ),
        pytest.param(
            _typo_in_units,
            "models.claude-sonnet.regions.us-east-1.provisioned.create.acknowledge_cost",
            "must read exactly: 'I accept a paid Provisioned Throughput of 10 model unit(s)",
            id="pt-sentence-does-not-match-units",
        ),
        pytest.param(
            _no_platform_switch,
            "models.claude-sonnet.regions.us-east-1.provisioned.create",
            "platform.allow_provisioned_purchase is not true",
            id="pt-without-platform-switch",
        ),
        pytest.param(
            lambda d: d["platform"].__setitem__("allow_provisioned_purchase", True),
            "platform.allow_provisioned_purchase",
            "no model has a provisioned.create block",
            id="armed-switch-without-purchase",
        ),
        pytest.param(
            lambda d: d["platform"].__setitem__("allow_provisioned_purchase", "yes please"),
            "platform.allow_provisioned_purchase",
            "expected true or false",
            id="switch-not-boolean",
        ),
        pytest.param(
            _arn_and_create,
            "models.claude-sonnet.regions.us-east-1.provisioned",
            "exactly one of arn",
            id="pt-arn-and-create",
        ),
        pytest.param(
            lambda d: at(d, EAST_PT).__setitem__("crate", {"model_units": 1}),
            "models.claude-sonnet.regions.us-east-1.provisioned.crate",
            "unknown field",
            id="pt-create-typo",
        ),
        pytest.param(
            lambda d: at(d, EAST_ENDPOINT).__setitem__("instance_type", "ml.g5.2xlarge"),
            "models.llama-escrow.regions.us-east-1.endpoint.instance_type",
            "local NVMe storage",
            id="instance-type-refuses-kms",
        ),
        pytest.param(
            lambda d: at(d, EAST_ENDPOINT).__setitem__("model_data_url", "s3://someone-elses-bucket/model.tar.gz"),
            "models.llama-escrow.regions.us-east-1.endpoint.model_data_url",
            "s3://spillway-llama-escrow-111122223333-us-east-1/",
            id="artifact-outside-own-bucket",
        ),
        pytest.param(
            lambda d: at(d, EAST_ENDPOINT)["schedule"][0].__setitem__("expression", "every monday"),
            "models.llama-escrow.regions.us-east-1.endpoint.schedule[0].expression",
            "not a valid schedule expression",
            id="bad-schedule-expression",
        ),
        pytest.param(
            lambda d: at(d, EAST_ENDPOINT)["schedule"][1].__setitem__("name", "business-hours"),
            "models.llama-escrow.regions.us-east-1.endpoint.schedule[1].name",
            "duplicate 'business-hours'",
            id="duplicate-schedule-name",
        ),
    ],
)
def test_bad_model_config_names_file_and_key(mutate: Callable[[dict[str, Any]], None], key: str, words: str) -> None:
    assert_names_key(rejects(mutate), key, words)


def test_duplicate_model_names_are_rejected_with_their_lines() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    nova = text.index("  nova-lite:\n")
    end = text.index("  llama-escrow:\n")
    duplicated = text[:end] + text[nova:end] + text[end:]  # nova-lite twice: YAML alone would keep the last
    first_line = text[:nova].count("\n") + 1
    second_line = duplicated[: end + 1].count("\n") + 1
    with pytest.raises(PlatformConfigError) as caught:
        parse_platform(duplicated, SOURCE)
    assert caught.value.key == "models.nova-lite"
    assert str(caught.value) == (
        f"{SOURCE}: models.nova-lite: duplicate key 'nova-lite' at line {second_line} (first at line {first_line}); "
        "YAML would silently keep only the last one"
    )


def test_duplicate_keys_are_rejected_anywhere() -> None:
    with pytest.raises(PlatformConfigError, match=r"^bad\.yaml: platform\.name: duplicate key 'name' at line 3"):
        parse_platform("platform:\n  name: a\n  name: b\n", SOURCE)


def test_example_buys_nothing() -> None:
    platform = parse(example())
    assert not platform.allow_provisioned_purchase
    assert all(offer.purchase is None for m in platform.models.values() for offer in m.regions.values())


@pytest.mark.parametrize(("commitment", "duration"), [("NO_COMMITMENT", None), ("ONE_MONTH", "OneMonth"),
                                                      ("SIX_MONTHS", "SixMonths")])  # fmt: skip
def test_purchase_opt_in(commitment: str, duration: str | None) -> None:
    document = example()
    buy(document, units=2, commitment=commitment)
    platform = parse(document)
    purchase = platform.models["claude-sonnet"].regions["us-east-1"].purchase
    assert purchase is not None
    assert (purchase.model_units, purchase.commitment, purchase.commitment_duration) == (2, commitment, duration)
    assert purchase.name == "spillway-claude-sonnet-us-east-1"
    # The purchased PT's ARN is a deploy-time token; the grants name what it serves, the foundation model.
    served = f"arn:aws:bedrock:us-east-1::foundation-model/{SONNET}"
    assert served in endpoint_grants(platform, "us-east-1").bedrock
    assert served in router_grants(platform, "us-west-2").bedrock
    assert not any("sonnetuse1pt01" in arn for arn in router_grants(platform, "us-east-1").bedrock)


def test_schedule_and_artifact_are_read() -> None:
    endpoint = parse(example()).models["llama-escrow"].regions["us-east-1"].endpoint
    assert endpoint is not None
    assert endpoint.artifact_bucket == "spillway-llama-escrow-111122223333-us-east-1"
    assert endpoint.artifact_prefix == "llama-escrow/v1/"
    assert [(s.name, s.min_instances, s.max_instances) for s in endpoint.schedule] == [
        ("business-hours", 3, 6),
        ("after-hours", 2, 4),
    ]
    assert endpoint.schedule[0].timezone == "America/New_York"

"""The platform schema stops a bad config with one message naming the file and the key, before any construct."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from stacks.naming import access_logs_bucket_name, artifact_bucket_name
from stacks.platform import PlatformConfigError, load_platform, parse_platform
from stacks.targets import endpoint_grants, router_grants, used_targets
from tests.infra.config_documents import EXAMPLE, SOURCE, assert_names_key, example, parse, rejects

ROOT = Path(__file__).resolve().parents[2]


def test_example_platform_is_valid() -> None:
    platform = load_platform(EXAMPLE)
    assert platform.region_names == ("us-east-1", "us-west-2")
    assert set(platform.features) == {"summarize-thread", "nightly-recap", "redact-escrow"}
    assert platform.models["llama-escrow"].kind == "sagemaker"


@pytest.mark.parametrize(
    ("mutate", "key", "words"),
    [
        pytest.param(
            lambda d: d["regions"].__setitem__("mars-north-1", d["regions"].pop("us-west-2")),
            "regions.mars-north-1",
            "unknown region 'mars-north-1'",
            id="unknown-region",
        ),
        pytest.param(
            lambda d: d["regions"]["us-west-2"].__setitem__("vpc_cidr", "10.40.128.0/17"),
            "regions.us-west-2.vpc_cidr",
            "overlaps regions.us-east-1.vpc_cidr",
            id="overlapping-cidrs",
        ),
        pytest.param(
            lambda d: d["features"]["summarize-thread"]["models"].append("gpt-9"),
            "features.summarize-thread.models[3]",
            "unknown model 'gpt-9'",
            id="unresolved-model",
        ),
        pytest.param(
            lambda d: d["features"]["nightly-recap"].__setitem__("home_region", "eu-west-1"),
            "features.nightly-recap.home_region",
            "has no cell",
            id="feature-region-without-cell",
        ),
        pytest.param(
            lambda d: d["regions"]["us-east-1"]["gateway_prefix_lists"].__setitem__("dynamodb", "pl-02cd2c6b"),
            "regions.us-east-1.gateway_prefix_lists.dynamodb",
            "no longer used: the router keeps its shared state in the fleet store",
            id="dynamodb-prefix-list-of-the-removed-health-table",
        ),
        pytest.param(
            lambda d: d["regions"]["us-east-1"]["gateway_prefix_lists"].pop("s3"),
            "regions.us-east-1.gateway_prefix_lists.s3",
            "missing required field",
            id="s3-prefix-list-missing",
        ),
        pytest.param(
            lambda d: d["regions"]["us-east-1"].pop("vpc_cidr"),
            "regions.us-east-1.vpc_cidr",
            "missing required field",
            id="missing-field",
        ),
        pytest.param(
            lambda d: d["features"]["summarize-thread"].__setitem__("deadline_ms", "20s"),
            "features.summarize-thread.deadline_ms",
            "expected an integer, got str",
            id="wrong-type",
        ),
        pytest.param(
            lambda d: d["regions"]["us-east-1"].__setitem__("availability_zones", ["us-east-1a"]),
            "regions.us-east-1.availability_zones",
            "at least 2",
            id="one-zone",
        ),
        pytest.param(
            lambda d: d["regions"]["us-east-1"].__setitem__("availability_zones", ["us-east-1a", "us-west-2b"]),
            "regions.us-east-1.availability_zones[1]",
            "not a zone of us-east-1",
            id="zone-of-another-region",
        ),
        pytest.param(
            lambda d: d["features"]["summarize-thread"].__setitem__("first_capacity", "reserved"),
            "features.summarize-thread.first_capacity",
            "'provisioned' or 'on_demand'",
            id="unknown-capacity",
        ),
        pytest.param(
            lambda d: d["features"]["summarize-thread"].__setitem__("retries", 3),
            "features.summarize-thread.retries",
            "unknown field",
            id="unknown-field",
        ),
        pytest.param(
            lambda d: d["platform"].__setitem__("account", 111122223333),
            "platform.account",
            "expected a string, got int",
            id="account-not-quoted",
        ),
        pytest.param(
            lambda d: d["models"]["claude-sonnet"]["regions"]["us-east-1"]["provisioned"].__setitem__(
                "arn", "arn:aws:bedrock:us-west-2:111122223333:provisioned-model/abc"
            ),
            "models.claude-sonnet.regions.us-east-1.provisioned.arn",
            "must be in us-east-1",
            id="pt-arn-other-region",
        ),
        pytest.param(
            lambda d: d["models"]["llama-escrow"]["regions"]["us-east-1"]["endpoint"].__setitem__("min_instances", 1),
            "models.llama-escrow.regions.us-east-1.endpoint.min_instances",
            "out of range [2, 100]",
            id="one-instance",
        ),
        pytest.param(
            lambda d: d["models"]["nova-lite"]["regions"].__setitem__("eu-west-1", {"on_demand": True}),
            "models.nova-lite.regions.eu-west-1",
            "has no cell",
            id="model-region-without-cell",
        ),
        pytest.param(
            lambda d: d["features"]["nightly-recap"].__setitem__("failover_regions", ["us-west-2"]),
            "features.nightly-recap.failover_regions",
            "repeats the home region",
            id="failover-is-home",
        ),
        pytest.param(
            lambda d: d["platform"].__setitem__("log_retention_days", 42),
            "platform.log_retention_days",
            "not a CloudWatch Logs retention period",
            id="retention-period",
        ),
    ],
)
def test_bad_config_names_file_and_key(mutate: Callable[[dict[str, Any]], None], key: str, words: str) -> None:
    assert_names_key(rejects(mutate), key, words)


LONG_PLATFORM = "spillway-" + "x" * 30 + "z"  # 40 characters: a valid name, too long for the bucket names
LONG_MODEL = "llama-escrow-" + "m" * 22  # 35 characters: a valid name, too long for its artifact bucket


def _rename_model(document: dict[str, Any], old: str, new: str) -> None:
    document["models"][new] = document["models"].pop(old)
    for feature in document["features"].values():
        feature["models"] = [new if m == old else m for m in feature["models"]]


def _no_on_demand_in(document: dict[str, Any], region: str) -> None:
    """Leaves only provisioned capacity (sonnet's PT, the escrow endpoint) in `region`: no Bedrock on demand there,
    and the other clouds' models not offered there."""
    document["models"]["nova-lite"]["regions"].pop(region)
    document["models"]["claude-sonnet"]["regions"][region]["on_demand"] = False
    for model in ("gemini-flash", "gpt-azure"):
        document["models"][model]["regions"].remove(region)


@pytest.mark.parametrize(
    ("mutate", "key", "words"),
    [
        pytest.param(
            lambda d: d["platform"].__setitem__("name", LONG_PLATFORM),
            "platform.name",
            "over S3's 63",
            id="platform-name-too-long-for-buckets",
        ),
        pytest.param(
            lambda d: _rename_model(d, "llama-escrow", LONG_MODEL),
            f"models.{LONG_MODEL}",
            "over S3's 63",
            id="model-name-too-long-for-its-bucket",
        ),
        pytest.param(
            lambda d: _no_on_demand_in(d, "us-east-1"),
            "features.nightly-recap.failover_regions[0]",
            "at a capacity a on_demand-first feature may use (on_demand)",
            id="on-demand-first-failover-without-on-demand",
        ),
        pytest.param(
            lambda d: _no_on_demand_in(d, "us-west-2"),
            "features.nightly-recap.home_region",
            "us-west-2 offers no model of the hierarchy (nova-lite, claude-sonnet, gpt-azure)",
            id="on-demand-first-home-without-on-demand",
        ),
        pytest.param(
            lambda d: (
                d["models"]["nova-lite"]["regions"].pop("us-west-2"),
                d["features"]["summarize-thread"].__setitem__("models", ["nova-lite"]),
            ),
            "features.summarize-thread.failover_regions[0]",
            "us-west-2 offers no model of the hierarchy (nova-lite) at a capacity a provisioned-first",
            id="failover-region-without-any-offer",
        ),
    ],
)
def test_config_implied_limits_name_the_key(mutate: Callable[[dict[str, Any]], None], key: str, words: str) -> None:
    assert_names_key(rejects(mutate), key, words)


def test_provisioned_first_may_use_provisioned_only_regions() -> None:
    document = example()
    # summarize-thread (provisioned-first) keeps us-west-2 through sonnet's PT alone; nightly-recap leaves it.
    document["models"]["nova-lite"]["regions"].pop("us-west-2")
    document["models"]["claude-sonnet"]["regions"]["us-west-2"]["on_demand"] = False
    document["features"]["nightly-recap"].update(home_region="us-east-1", failover_regions=[])
    document["features"]["redact-escrow"]["failover_regions"] = ["us-west-2"]
    platform = parse(document)
    assert "us-west-2" in platform.features["summarize-thread"].failover_regions


def _named(name: str) -> dict[str, Any]:
    document = example()
    document["platform"]["name"] = name
    for region in ("us-east-1", "us-west-2"):
        endpoint = document["models"]["llama-escrow"]["regions"][region]["endpoint"]
        endpoint["model_data_url"] = f"s3://{name}-llama-escrow-111122223333-{region}/llama-escrow/v1/model.tar.gz"
    return document


def test_bucket_names_at_the_limit() -> None:
    # <name>-model-access-logs-111122223333-us-west-2: 22 characters of name make exactly 63.
    platform = parse(_named("spillway-" + "x" * 13))
    for region in platform.region_names:
        assert len(access_logs_bucket_name(platform.name, platform.account, region)) == 63
        assert len(artifact_bucket_name(platform.name, "llama-escrow", platform.account, region)) <= 63
    with pytest.raises(PlatformConfigError) as caught:
        parse(_named("spillway-" + "x" * 14))
    assert caught.value.key == "platform.name"
    assert "is 64 characters" in str(caught.value)


def test_yaml_syntax_error_names_the_line() -> None:
    with pytest.raises(PlatformConfigError, match=r"^bad\.yaml: line 2, column \d+: mapping values are not allowed"):
        parse_platform("platform:\n  name: a: b\n", SOURCE)


def test_missing_file_is_one_clear_message(tmp_path: Path) -> None:
    with pytest.raises(PlatformConfigError, match="cannot read the file"):
        load_platform(tmp_path / "nope.yaml")


def test_app_prints_one_line_without_traceback(tmp_path: Path) -> None:
    document = example()
    document["features"]["summarize-thread"]["models"] = ["claude-sonnet", "ghost"]
    config = tmp_path / "platform.yaml"
    config.write_text(yaml.safe_dump(document), encoding="utf-8")
    env = {**os.environ, "CDK_OUTDIR": str(tmp_path / "out"), "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
    run = subprocess.run(
        [sys.executable, "app.py"],
        cwd=ROOT,
        env={**env, "CONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 1
    assert (
        run.stderr.strip() == f"error: {config}: features.summarize-thread.models[1]: unknown model 'ghost' "
        "(models: claude-sonnet, gemini-flash, gpt-azure, llama-escrow, nova-lite)"
    )
    assert "Traceback" not in run.stdout + run.stderr


def test_endpoint_grants_follow_the_config() -> None:
    """A model added to the config widens the endpoint grants of its regions; nothing else does."""
    before = parse(example())
    document = example()
    document["models"]["nova-pro"] = {
        "kind": "bedrock",
        "model_id": "amazon.nova-pro-v1:0",
        "regions": {"us-west-2": {"on_demand": True}},
    }
    document["features"]["nightly-recap"]["models"].append("nova-pro")
    after = parse(document)
    added = "arn:aws:bedrock:us-west-2::foundation-model/amazon.nova-pro-v1:0"
    assert set(endpoint_grants(after, "us-west-2").bedrock) - set(endpoint_grants(before, "us-west-2").bedrock) == {
        added
    }
    assert endpoint_grants(after, "us-east-1") == endpoint_grants(before, "us-east-1")
    for region in before.region_names:
        assert "*" not in "".join(endpoint_grants(after, region).bedrock)


def test_router_grants_cover_failover_regions() -> None:
    platform = parse(example())
    east = router_grants(platform, "us-east-1")
    assert "arn:aws:bedrock:us-west-2:111122223333:provisioned-model/sonnetusw2pt01" in east.bedrock
    assert "arn:aws:sagemaker:us-west-2:111122223333:endpoint/spillway-llama-escrow" in east.sagemaker
    # Endpoint grants of each region are exactly the used targets located there.
    for region in platform.region_names:
        located = {arn for t in used_targets(platform) if t.region == region for arn in t.arns}
        grants = endpoint_grants(platform, region)
        assert set(grants.bedrock) | set(grants.sagemaker) == located

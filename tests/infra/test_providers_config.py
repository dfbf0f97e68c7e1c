"""The platform file's OpenAI-compatible providers and `kind: openai` models: what they render to, and one clear error
naming the file and the key for each kind of mistake."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from spillway.config import parse_routing_table
from stacks.providers import GOOGLE_TOKEN_URL
from stacks.routing import render_routing_table
from stacks.targets import feature_targets, providers_reached_from, router_grants
from tests.infra.config_documents import assert_names_key, example, parse, region_document, rejects

VERTEX = "providers.vertex"
AZURE = "providers.azure"


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = document
        for part in parents:
            node = node[part]
        node[last] = value

    return mutate


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = document
        for part in parents:
            node = node[part]
        del node[last]

    return mutate


def _add_provider(name: str, body: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def mutate(document: dict[str, Any]) -> None:
        document["providers"][name] = body

    return mutate


def _self_hosted(addresses: dict[str, list[str]]) -> dict[str, Any]:
    key = {"rotation_functions": {"us-east-1": "arn:aws:lambda:us-east-1:111122223333:function:vllm-key-rotation"}}
    return {
        "type": "self_hosted",
        "base_url": "https://vllm.escrow.internal:8443/v1",
        "addresses": addresses,
        "api_key": key,
    }


@pytest.mark.parametrize(
    ("mutate", "key", "words"),
    [
        (_set(f"{VERTEX}.type", "gcp"), f"{VERTEX}.type", "expected one of vertex, azure_openai, bedrock, self_hosted"),
        (_set(f"{VERTEX}.project", "Bad_Project"), f"{VERTEX}.project", "Google Cloud project id"),
        (_set(f"{VERTEX}.location", "mars"), f"{VERTEX}.location", "Vertex AI location"),
        (_drop(f"{VERTEX}.workload_identity"), f"{VERTEX}.workload_identity", "missing required field"),
        (
            _set(f"{VERTEX}.workload_identity.audience", "https://iam.googleapis.com/pools/x"),
            f"{VERTEX}.workload_identity.audience",
            "workload identity pool provider",
        ),
        (_set(f"{VERTEX}.private_path.vpn.peer_ips", ["10.1.2.3"]), f"{VERTEX}.private_path.vpn.peer_ips[0]", "public"),
        (_set(f"{VERTEX}.private_path.vpn.peer_asn", 0), f"{VERTEX}.private_path.vpn.peer_asn", "out of range"),
        (_set(f"{VERTEX}.private_path.routes", ["0.0.0.0/0"]), f"{VERTEX}.private_path.routes[0]", "not a private"),
        (_set(f"{VERTEX}.private_path.routes", ["10.0.0.0/8"]), f"{VERTEX}.private_path.routes[0]", "wider than /16"),
        (
            _set(f"{VERTEX}.private_path.routes", ["10.200.0.0/24", "10.40.0.0/24"]),
            f"{VERTEX}.private_path.routes[1]",
            "overlaps regions.us-east-1.vpc_cidr",
        ),
        (
            _set(f"{AZURE}.private_path.routes", ["10.210.0.0/24", "10.200.0.0/25"]),
            f"{AZURE}.private_path.routes[1]",
            "overlaps providers.vertex.private_path.routes[0]",
        ),
        (
            _set(f"{VERTEX}.private_path.endpoint_ips", ["10.99.0.2"]),
            f"{VERTEX}.private_path.endpoint_ips[0]",
            "not in the path's routes",
        ),
        (
            _set(f"{VERTEX}.private_path.dns_resolvers", ["10.99.0.10"]),
            f"{VERTEX}.private_path.dns_resolvers[0]",
            "unreachable",
        ),
        (_set(f"{AZURE}.resource", "Has Spaces"), f"{AZURE}.resource", "Azure OpenAI resource name"),
        (
            _set(f"{AZURE}.api_key.rotation_functions.us-east-1", "arn:aws:lambda:us-west-2:111122223333:function:f"),
            f"{AZURE}.api_key.rotation_functions.us-east-1",
            "must be a function in us-east-1",
        ),
        (
            _drop(f"{AZURE}.api_key.rotation_functions.us-west-2"),
            "models.gpt-azure.regions[1]",
            "add us-west-2 to providers.azure.api_key.rotation_functions",
        ),
        (_set(f"{AZURE}.api_key.rotate_after_days", 0), f"{AZURE}.api_key.rotate_after_days", "out of range"),
        (_set("models.gemini-flash.provider", "openai-cloud"), "models.gemini-flash.provider", "unknown provider"),
        (_set("models.gemini-flash.model", "bad model"), "models.gemini-flash.model", "model name"),
        (_set("models.gemini-flash.images", "yes"), "models.gemini-flash.images", "true or false"),
        (_set("models.gemini-flash.regions", ["eu-west-1"]), "models.gemini-flash.regions[0]", "has no cell"),
        (_set("models.gemini-flash.model_id", "x"), "models.gemini-flash.model_id", "unknown field"),
        (
            _add_provider("vllm", _self_hosted({"us-east-1": ["10.40.1.0/24"]})),
            "providers.vllm.addresses.us-east-1[0]",
            "outside the network's subnets",
        ),
        (
            _add_provider("vllm", _self_hosted({"us-east-1": ["10.99.0.0/24"]})),
            "providers.vllm.addresses.us-east-1[0]",
            "must lie in the cell's VPC",
        ),
    ],
)
def test_bad_providers_name_the_file_and_key(mutate: Callable[[dict[str, Any]], None], key: str, words: str) -> None:
    assert_names_key(rejects(mutate), key, words)


def test_a_guardrail_on_a_feature_with_another_clouds_model_is_refused() -> None:
    def mutate(document: dict[str, Any]) -> None:
        document["guardrails"] = {
            "safety": {"blocked_input_message": "no", "blocked_output_message": "no", "words": ["codename"]}
        }
        document["features"]["summarize-thread"]["failover_regions"] = []
        document["features"]["summarize-thread"]["converse"] = {"guardrail": "safety"}

    assert_names_key(rejects(mutate), "features.summarize-thread.models[2]", "applies to Bedrock only")


def test_a_self_hosted_model_needs_its_capacity() -> None:
    def mutate(document: dict[str, Any]) -> None:
        _add_provider("vllm", _self_hosted({"us-east-1": ["10.40.160.0/24"]}))(document)
        document["models"]["llama-vllm"] = {
            "kind": "openai",
            "provider": "vllm",
            "model": "llama",
            "regions": ["us-east-1"],
        }

    assert_names_key(rejects(mutate), "models.llama-vllm.max_in_flight", "self-hosted model's capacity")


def test_the_example_renders_other_clouds_as_the_router_reads_them() -> None:
    platform = parse(example())
    table = render_routing_table(platform, "us-east-1")
    parse_routing_table(table)  # the router's own loader accepts it
    gemini = table["targets"]["gemini-flash/on_demand/us-east-1"]["backend"]
    assert gemini == {
        "kind": "openai",
        "model": "google/gemini-2.5-flash",
        "auth": "workload_identity",
        "audience": platform.providers["vertex"].audience,
        "token_url": GOOGLE_TOKEN_URL,
        "base_url": "https://us-central1-aiplatform.googleapis.com/v1/projects/spillway-llm-prod/locations/us-central1"
        "/endpoints/openapi",
        "images": True,
    }
    azure = table["targets"]["gpt-azure/on_demand/us-east-1"]["backend"]
    assert azure["base_url"] == "https://spillway-eastus2.openai.azure.com/openai/v1"
    assert (azure["auth"], azure["secret_id"]) == ("secret", "spillway/providers/azure/api-key")
    # Another cloud is reached over the router's own cell's path: the other cell's targets are not in this table.
    assert "gemini-flash/on_demand/us-west-2" not in table["targets"]
    assert table["features"]["summarize-thread"]["models"][-1] == "gemini-flash"


def test_a_bedrock_provider_is_signed_granted_on_the_foundation_model_and_fails_over() -> None:
    def mutate(document: dict[str, Any]) -> None:
        document["providers"]["bedrock-oai"] = {"type": "bedrock"}
        document["models"]["gpt-oss"] = {
            "kind": "openai",
            "provider": "bedrock-oai",
            "model": "openai.gpt-oss-120b-1:0",
            "regions": ["us-east-1", "us-west-2"],
        }
        document["features"]["summarize-thread"]["models"].append("gpt-oss")

    document = example()
    mutate(document)
    platform = parse(document)
    table = render_routing_table(platform, "us-east-1")
    east = table["targets"]["gpt-oss/on_demand/us-east-1"]["backend"]
    assert east["base_url"] == "https://bedrock-runtime.us-east-1.amazonaws.com/openai/v1"
    assert east["auth"] == "sigv4"
    assert "gpt-oss/on_demand/us-west-2" in table["targets"]  # reached through the peering like Converse
    grants = router_grants(platform, "us-east-1")
    assert "arn:aws:bedrock:us-west-2::foundation-model/openai.gpt-oss-120b-1:0" in grants.bedrock_runtime
    assert [p.name for p in providers_reached_from(platform, "us-east-1")] == ["azure", "vertex"]  # no path needed


def test_other_clouds_grant_no_model_arn() -> None:
    platform = parse(example())
    targets = [t for t in feature_targets(platform, "summarize-thread", "us-east-1") if t.kind == "openai"]
    assert [t.id for t in targets] == ["gemini-flash/on_demand/us-east-1"]
    assert targets[0].arns == ()
    assert not any("gemini" in arn for arn in router_grants(platform, "us-east-1").bedrock_runtime)


def test_a_cell_without_a_path_to_the_other_cloud_serves_the_feature_without_that_model() -> None:
    document = example()
    document["regions"]["us-east-2"] = region_document("us-east-2", "10.42.0.0/20", ["us-east-2a", "us-east-2b"])
    document["router"]["appconfig_extension_layer_arns"]["us-east-2"] = (
        "arn:aws:lambda:us-east-2:728743619870:layer:AWS-AppConfig-Extension-Arm64:200"
    )
    document["models"]["nova-lite"]["regions"]["us-east-2"] = {"on_demand": True}
    document["features"]["nightly-recap"]["failover_regions"].append("us-east-2")
    platform = parse(document)
    table = render_routing_table(platform, "us-east-2")
    assert table["features"]["nightly-recap"]["models"] == ["nova-lite", "claude-sonnet"]  # no gpt-azure path here
    assert not any(t["backend"]["kind"] == "openai" for t in table["targets"].values())
    assert providers_reached_from(platform, "us-east-2") == ()
    assert "gpt-azure" in render_routing_table(platform, "us-west-2")["features"]["nightly-recap"]["models"]

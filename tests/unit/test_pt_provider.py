"""The Provisioned Throughput custom resource handler, against botocore's Stubber: no AWS, no credentials."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

HANDLER = Path(__file__).resolve().parents[2] / "lambdas" / "provisioned_throughput" / "handler.py"
ARN = "arn:aws:bedrock:us-east-1:111122223333:provisioned-model/abc123def456"
MODEL = "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-sonnet-4-5-20250929-v1:0"
STACK = "arn:aws:cloudformation:us-east-1:111122223333:stack/spillway-models-us-east-1/1"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pt_handler", HANDLER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def handler() -> Iterator[tuple[ModuleType, Stubber]]:
    module = load()
    client = boto3.client(
        "bedrock", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    module._client = client
    with Stubber(client) as stubber:
        yield module, stubber
        stubber.assert_no_pending_responses()


def props(commitment: str = "OneMonth", units: str = "2") -> dict[str, Any]:
    return {
        "ServiceToken": "arn:aws:lambda:us-east-1:111122223333:function:x",
        "ModelId": MODEL,
        "ModelUnits": units,
        "CommitmentDuration": commitment,
        "ProvisionedModelName": "spillway-claude-sonnet-us-east-1",
        "Tags": {"spillway:provisioned-name": "spillway-claude-sonnet-us-east-1", "cost-center": "llm-platform"},
    }


def event(request: str, properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "RequestType": request,
        "StackId": STACK,
        "LogicalResourceId": "ProvisionedThroughputPtClaudeSonnet",
        "RequestId": "r-1",
        "ResourceProperties": properties,
        **extra,
    }


def describe(status: str, **extra: Any) -> dict[str, Any]:
    return {
        "modelUnits": 2,
        "desiredModelUnits": 2,
        "provisionedModelName": "spillway-claude-sonnet-us-east-1",
        "provisionedModelArn": ARN,
        "modelArn": MODEL,
        "desiredModelArn": MODEL,
        "foundationModelArn": MODEL,
        "status": status,
        "creationTime": "2026-11-23T00:00:00Z",
        "lastModifiedTime": "2026-11-23T00:00:00Z",
        "commitmentDuration": "OneMonth",
        **extra,
    }


def test_create_buys_once_with_an_idempotent_token(handler: tuple[ModuleType, Stubber]) -> None:
    module, stubber = handler
    created = event("Create", props())
    token = module.request_token(created)
    assert token == module.request_token(event("Create", props()))  # a retry reuses it: no second purchase
    assert len(token) <= 256
    assert token.isalnum()
    stubber.add_response(
        "create_provisioned_model_throughput",
        {"provisionedModelArn": ARN},
        {
            "clientRequestToken": token,
            "provisionedModelName": "spillway-claude-sonnet-us-east-1",
            "modelId": MODEL,
            "modelUnits": 2,
            "commitmentDuration": "OneMonth",
            "tags": [
                {"key": "cost-center", "value": "llm-platform"},
                {"key": "spillway:provisioned-name", "value": "spillway-claude-sonnet-us-east-1"},
            ],
        },
    )
    assert module.on_event(created) == {"PhysicalResourceId": ARN, "Data": {"ProvisionedModelArn": ARN}}


def test_create_without_commitment_sends_no_term(handler: tuple[ModuleType, Stubber]) -> None:
    module, stubber = handler
    created = event("Create", props(commitment=""))
    stubber.add_response(
        "create_provisioned_model_throughput",
        {"provisionedModelArn": ARN},
        {
            "clientRequestToken": module.request_token(created),
            "provisionedModelName": "spillway-claude-sonnet-us-east-1",
            "modelId": MODEL,
            "modelUnits": 2,
            "tags": [
                {"key": "cost-center", "value": "llm-platform"},
                {"key": "spillway:provisioned-name", "value": "spillway-claude-sonnet-us-east-1"},
            ],
        },
    )
    assert module.on_event(created)["PhysicalResourceId"] == ARN


def test_is_complete_polls_until_in_service(handler: tuple[ModuleType, Stubber]) -> None:
    module, stubber = handler
    polled = event("Create", props(), PhysicalResourceId=ARN)
    stubber.add_response("get_provisioned_model_throughput", describe("Creating"), {"provisionedModelId": ARN})
    stubber.add_response("get_provisioned_model_throughput", describe("InService"), {"provisionedModelId": ARN})
    assert module.is_complete(polled) == {"IsComplete": False}
    done = module.is_complete(polled)
    assert done["IsComplete"] is True
    assert done["Data"] == {
        "ProvisionedModelArn": ARN, "Status": "InService", "ModelUnits": "2", "CommitmentDuration": "OneMonth"
    }  # fmt: skip


def test_failed_purchase_fails_the_deployment_with_its_reason(handler: tuple[ModuleType, Stubber]) -> None:
    module, stubber = handler
    stubber.add_response(
        "get_provisioned_model_throughput",
        describe("Failed", failureMessage="insufficient capacity"),
        {"provisionedModelId": ARN},
    )
    with pytest.raises(RuntimeError, match="insufficient capacity"):
        module.is_complete(event("Create", props(), PhysicalResourceId=ARN))


@pytest.mark.parametrize(
    ("changed", "value"), [("ModelUnits", "3"), ("CommitmentDuration", "SixMonths"), ("ModelId", "other")]
)
def test_update_never_buys_again(handler: tuple[ModuleType, Stubber], changed: str, value: str) -> None:
    module, _ = handler  # no stubbed call: any Bedrock call would fail the test
    new = {**props(), changed: value}
    with pytest.raises(ValueError, match=f"{changed} cannot change in place"):
        module.on_event(event("Update", new, PhysicalResourceId=ARN, OldResourceProperties=props()))


def test_update_of_tags_only_retags_the_same_resource(handler: tuple[ModuleType, Stubber]) -> None:
    module, stubber = handler
    tags = {"spillway:provisioned-name": "spillway-claude-sonnet-us-east-1", "cost-center": "other"}
    new = {**props(), "Tags": tags}
    stubber.add_response(
        "tag_resource",
        {},
        {"resourceARN": ARN, "tags": [{"key": k, "value": v} for k, v in sorted(tags.items())]},
    )
    stubber.add_response("get_provisioned_model_throughput", describe("InService"), {"provisionedModelId": ARN})
    answer = module.on_event(event("Update", new, PhysicalResourceId=ARN, OldResourceProperties=props()))
    assert answer["PhysicalResourceId"] == ARN  # the same PT: no replacement, no purchase
    assert module.is_complete(event("Update", new, PhysicalResourceId=ARN))["IsComplete"] is True


def test_delete_keeps_a_committed_purchase(handler: tuple[ModuleType, Stubber]) -> None:
    module, _ = handler  # no DeleteProvisionedModelThroughput may be called
    deleted = event("Delete", props(commitment="SixMonths"), PhysicalResourceId=ARN)
    assert module.on_event(deleted) == {"PhysicalResourceId": ARN, "Data": {"Kept": "true"}}
    assert module.is_complete(deleted) == {"IsComplete": True}


def test_delete_releases_a_purchase_without_commitment(handler: tuple[ModuleType, Stubber]) -> None:
    module, stubber = handler
    deleted = event("Delete", props(commitment=""), PhysicalResourceId=ARN)
    stubber.add_response("delete_provisioned_model_throughput", {}, {"provisionedModelId": ARN})
    stubber.add_response("get_provisioned_model_throughput", describe("InService"), {"provisionedModelId": ARN})
    stubber.add_client_error(
        "get_provisioned_model_throughput", "ResourceNotFoundException", http_status_code=404,
        expected_params={"provisionedModelId": ARN},
    )  # fmt: skip
    assert module.on_event(deleted) == {"PhysicalResourceId": ARN}
    assert module.is_complete(deleted) == {"IsComplete": False}
    assert module.is_complete(deleted) == {"IsComplete": True}


def test_delete_after_a_failed_create_touches_nothing(handler: tuple[ModuleType, Stubber]) -> None:
    module, _ = handler
    deleted = event("Delete", props(commitment=""), PhysicalResourceId="r-1")
    assert module.on_event(deleted) == {"PhysicalResourceId": "r-1"}
    assert module.is_complete(deleted) == {"IsComplete": True}

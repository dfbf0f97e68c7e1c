"""Bedrock Provisioned Throughput as a CloudFormation custom resource (CDK Provider framework handlers).

`on_event` starts the work, `is_complete` polls until it is done. Buying PT is a paid commitment, so:
- Create is idempotent: the client request token is derived from the stack, the resource and the PT name, so a
  retried Create can never buy a second one.
- Update never buys: a change of model, units, term or name is refused with a message (a replacement would be a
  second purchase while the first one's term still runs). Only tags may change; they are re-applied.
- Delete removes the PT only when it has no commitment term; a committed PT is kept (and billed until its term
  ends) and the handler says so. Delete it in the Bedrock console once the term is over.

Stdlib + boto3 only; no prompt or completion ever passes through here.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

LOG = logging.getLogger()
LOG.setLevel(logging.INFO)

IMMUTABLE = ("ModelId", "ModelUnits", "CommitmentDuration", "ProvisionedModelName")

_client: Any = None


def bedrock() -> Any:
    global _client  # noqa: PLW0603 - one client per Lambda container
    if _client is None:
        _client = boto3.client("bedrock", config=Config(retries={"max_attempts": 3, "mode": "standard"}))
    return _client


def request_token(event: dict[str, Any]) -> str:
    """Same stack, resource and name -> same token: Bedrock returns the first purchase instead of a second one."""
    props = event["ResourceProperties"]
    seed = f"{event['StackId']}|{event['LogicalResourceId']}|{props['ProvisionedModelName']}"
    return "pt" + hashlib.sha256(seed.encode()).hexdigest()[:62]


def _committed(props: dict[str, Any]) -> bool:
    return bool(props.get("CommitmentDuration"))


def _data(description: dict[str, Any]) -> dict[str, str]:
    return {
        "ProvisionedModelArn": description["provisionedModelArn"],
        "Status": description.get("status", ""),
        "ModelUnits": str(description.get("modelUnits", "")),
        "CommitmentDuration": description.get("commitmentDuration", "") or "NONE",
    }


def _tags(props: dict[str, Any]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in sorted(props.get("Tags", {}).items())]


def on_event(event: dict[str, Any], _context: object = None) -> dict[str, Any]:
    request = event["RequestType"]
    props = event["ResourceProperties"]
    if request == "Create":
        arguments: dict[str, Any] = {
            "clientRequestToken": request_token(event),
            "provisionedModelName": props["ProvisionedModelName"],
            "modelId": props["ModelId"],
            "modelUnits": int(props["ModelUnits"]),
            "tags": _tags(props),
        }
        if _committed(props):
            arguments["commitmentDuration"] = props["CommitmentDuration"]
        response = bedrock().create_provisioned_model_throughput(**arguments)
        arn = response["provisionedModelArn"]
        LOG.info(json.dumps({"action": "create", "arn": arn, "units": arguments["modelUnits"],
                             "commitment": props.get("CommitmentDuration") or "NONE"}))  # fmt: skip
        return {"PhysicalResourceId": arn, "Data": {"ProvisionedModelArn": arn}}

    arn = event["PhysicalResourceId"]
    if request == "Update":
        old = event.get("OldResourceProperties", {})
        changed = [key for key in IMMUTABLE if str(old.get(key, "")) != str(props.get(key, ""))]
        if changed:
            raise ValueError(
                f"Provisioned Throughput {arn}: {', '.join(changed)} cannot change in place, and a replacement "
                "would be a second paid purchase. Remove the create block, deploy, then add the new one."
            )
        if old.get("Tags") != props.get("Tags"):
            bedrock().tag_resource(resourceARN=arn, tags=_tags(props))
        return {"PhysicalResourceId": arn, "Data": {"ProvisionedModelArn": arn}}

    if request == "Delete":
        if not arn.startswith("arn:"):
            LOG.info(json.dumps({"action": "delete", "result": "nothing was created"}))
            return {"PhysicalResourceId": arn}
        if _committed(props):
            LOG.warning(json.dumps({"action": "delete", "arn": arn, "result": "kept",
                                    "why": f"commitment term {props['CommitmentDuration']} still billed; "
                                           "delete it in Bedrock once the term has ended"}))  # fmt: skip
            return {"PhysicalResourceId": arn, "Data": {"Kept": "true"}}
        try:
            bedrock().delete_provisioned_model_throughput(provisionedModelId=arn)
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
        LOG.info(json.dumps({"action": "delete", "arn": arn, "result": "deleted"}))
        return {"PhysicalResourceId": arn}

    raise ValueError(f"unknown request type {request!r}")


def is_complete(event: dict[str, Any], _context: object = None) -> dict[str, Any]:
    request = event["RequestType"]
    arn = event.get("PhysicalResourceId", "")
    props = event["ResourceProperties"]
    if request == "Delete":
        if not arn.startswith("arn:") or _committed(props):
            return {"IsComplete": True}
        try:
            bedrock().get_provisioned_model_throughput(provisionedModelId=arn)
        except ClientError as error:
            if error.response["Error"]["Code"] == "ResourceNotFoundException":
                return {"IsComplete": True}
            raise
        return {"IsComplete": False}

    description = bedrock().get_provisioned_model_throughput(provisionedModelId=arn)
    status = description.get("status")
    if status == "InService":
        return {"IsComplete": True, "Data": _data(description)}
    if status == "Failed":
        raise RuntimeError(f"Provisioned Throughput {arn} failed: {description.get('failureMessage', 'no reason')}")
    return {"IsComplete": False}

"""The router as deployed, minus AWS: real boto3 clients against the loopback emulator, config from its AppConfig
extension stand-in, everything built from the environment as in Lambda."""

from __future__ import annotations

from typing import Any

import handler
from local.emulator import Emulator, Fault
from tests.router.conftest import LambdaContext, api_event, body_of, converse_body, header

PT = "claude-sonnet/provisioned/us-east-1"
OD = "claude-sonnet/on_demand/us-east-1"


def _call(feature: str, text: str = "hello emulator", **kw: Any) -> dict[str, Any]:
    event = api_event("POST", f"/v1/features/{feature}/converse", body=converse_body(text), **kw)
    return handler.lambda_handler(event, LambdaContext())  # type: ignore[no-any-return]


def test_bedrock_provisioned_serves_over_the_wire(emulated: Emulator) -> None:
    response = _call("summarize-thread")
    assert response["statusCode"] == 200
    assert header(response, "x-spillway-target") == PT
    body = body_of(response)
    assert body["output"]["message"]["content"] == [{"text": "hello emulator"}]
    assert body["usage"]["inputTokens"] > 0
    assert handler.get_router().source.get().source == "appconfig"


def test_a_throttled_pt_spills_to_on_demand(emulated: Emulator) -> None:
    table = handler.get_router().source.get().table
    assert table is not None
    pt_arn = table.targets[PT].backend
    assert pt_arn.kind == "bedrock"
    emulated.set_fault(("us-east-1", "bedrock", pt_arn.model_id), Fault.throttle(count=1))
    response = _call("summarize-thread")
    assert response["statusCode"] == 200
    assert header(response, "x-spillway-route") == f"{PT}=capacity,{OD}=ok"


def test_sagemaker_escrow_serves_over_the_wire(emulated: Emulator) -> None:
    response = _call("redact-escrow", "private words")
    assert response["statusCode"] == 200
    assert header(response, "x-spillway-target") == "llama-escrow/provisioned/us-east-1"
    assert body_of(response)["output"]["message"]["content"] == [{"text": "private words"}]


def test_a_validation_error_is_a_400_with_the_model_code(emulated: Emulator) -> None:
    emulated.set_fault("us-east-1", Fault.error_response("validation"))
    response = _call("summarize-thread")
    assert response["statusCode"] == 400
    assert body_of(response)["error"]["code"] == "ValidationException"


def test_a_closed_region_fails_over(emulated: Emulator) -> None:
    emulated.close_region("us-east-1")
    response = _call("summarize-thread")
    assert response["statusCode"] == 200
    assert header(response, "x-spillway-target") == "claude-sonnet/provisioned/us-west-2"


def test_malformed_answers_move_on(emulated: Emulator) -> None:
    emulated.set_fault("us-east-1", Fault.malformed_body("wrong_shape"))
    response = _call("summarize-thread")
    assert response["statusCode"] == 200
    assert str(header(response, "x-spillway-target")).endswith("us-west-2")

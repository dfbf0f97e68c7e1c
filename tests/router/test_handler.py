"""The HTTP edge: API Gateway events through handler.lambda_handler, for every status the API documents."""

from __future__ import annotations

import base64
import copy
import json
from types import SimpleNamespace
from typing import Any

import botocore.session  # type: ignore[import-untyped]
import pytest
from botocore.model import StructureShape  # type: ignore[import-untyped]

from spillway import api, limits
from spillway.backends import ClientPool
from spillway.backends.bedrock import BedrockBackend
from spillway.backends.contract import BackendReply
from spillway.errors import BackendError, ErrorClass
from stacks.platform import load_platform
from tests.router.conftest import (
    PLATFORM,
    Harness,
    LambdaContext,
    api_event,
    body_of,
    converse_body,
    header,
    ok_reply,
    rendered_table,
)

PT = "claude-sonnet/provisioned/us-east-1"
OD = "claude-sonnet/on_demand/us-east-1"
WEST_OD = "claude-sonnet/on_demand/us-west-2"
THROTTLE = BackendError.of("ThrottlingException", 429)
DOWN = BackendError.of("ServiceUnavailableException", 503)


def _error(response: dict[str, Any]) -> dict[str, Any]:
    body = body_of(response)
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "request_id"}
    assert body["error"]["request_id"] == header(response, "x-spillway-request-id")
    return body["error"]  # type: ignore[no-any-return]


def test_served_has_converse_shape_and_route_headers(harness: Harness) -> None:
    request = converse_body(
        "hello",
        system=[{"text": "be brief"}],
        inferenceConfig={"maxTokens": 64, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]},
        toolConfig={"tools": [{"toolSpec": {"name": "lookup", "inputSchema": {"json": {"type": "object"}}}}]},
    )
    response = harness.converse(body=request, request_id="rid-42")
    assert response["statusCode"] == 200
    body = body_of(response)
    assert set(body) == {"output", "stopReason", "usage", "metrics"}
    assert body["output"]["message"]["content"] == [{"text": "fine answer"}]
    assert header(response, "x-spillway-target") == PT
    assert header(response, "x-spillway-attempts") == "1"
    assert header(response, "x-spillway-request-id") == "rid-42"
    assert header(response, "content-type") == "application/json"
    # The request reaches the backend as sent: every Converse field passed through, nothing added.
    assert harness.bedrock.calls[0][1] == request


def test_spill_then_serve_reports_every_attempt(harness: Harness) -> None:
    harness.bedrock.plan[PT] = THROTTLE
    response = harness.converse()
    assert response["statusCode"] == 200
    assert header(response, "x-spillway-target") == OD
    assert header(response, "x-spillway-attempts") == "2"
    assert header(response, "x-spillway-route") == f"{PT}=capacity,{OD}=ok"


def test_failover_to_another_region(harness: Harness) -> None:
    harness.bedrock.plan[PT] = DOWN
    harness.bedrock.plan[OD] = DOWN
    response = harness.converse()
    assert response["statusCode"] == 200
    assert header(response, "x-spillway-target") == "claude-sonnet/provisioned/us-west-2"


def test_sagemaker_feature_uses_the_sagemaker_backend(harness: Harness) -> None:
    response = harness.converse("redact-escrow")
    assert response["statusCode"] == 200
    assert harness.sagemaker.targets == ["llama-escrow/provisioned/us-east-1"]
    assert harness.bedrock.calls == []


def test_base64_body_is_accepted(harness: Harness) -> None:
    event = api_event("POST", "/v1/features/summarize-thread/converse", body=converse_body(), base64_body=True)
    response = harness.call(event)
    assert response["statusCode"] == 200


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ([], "$"),
        ({"messages": "hi"}, "messages"),
        ({"messages": []}, "messages"),
        ({}, "messages"),
        ({"messages": [{"role": "tool", "content": [{"text": "x"}]}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": []}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"text": "a", "image": {}}]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": [{"sticker": {}}]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": [{"text": 3}]}]}, "messages[0].content[0].text"),
        ({"messages": [{"role": "user", "content": [{"text": "a"}], "name": "x"}]}, "messages[0]"),
        (converse_body(modelId="anthropic.claude"), "modelId"),
        (converse_body(promptVariables={"topic": {"text": "x"}}), "promptVariables"),
        (converse_body(guardrailConfig="gr-1"), "guardrailConfig"),
        (converse_body(additionalModelResponseFieldPaths="/stop"), "additionalModelResponseFieldPaths"),
        (converse_body(sampling={"topK": 5}), "$"),
        (converse_body(system="be brief"), "system"),
        (converse_body(system=[{"image": {}}]), "system[0]"),
        (converse_body(inferenceConfig={"maxTokens": 0}), "inferenceConfig.maxTokens"),
        (converse_body(inferenceConfig={"maxTokens": True}), "inferenceConfig.maxTokens"),
        (converse_body(inferenceConfig={"temperature": 2}), "inferenceConfig.temperature"),
        (converse_body(inferenceConfig={"topK": 5}), "inferenceConfig"),
        (converse_body(inferenceConfig={"stopSequences": "END"}), "inferenceConfig.stopSequences"),
        (converse_body(toolConfig={"tools": []}), "toolConfig.tools"),
        (converse_body(toolConfig={"tools": [{"toolSpec": {}}], "toolChoice": "any"}), "toolConfig.toolChoice"),
    ],
)
def test_invalid_body_is_400_before_any_backend_call(harness: Harness, body: Any, path: str) -> None:
    response = harness.converse(body=body)
    assert response["statusCode"] == 400
    error = _error(response)
    assert error["code"] == api.BAD_REQUEST
    assert error["message"].startswith(f"{path}: ")
    assert harness.bedrock.calls == []


@pytest.mark.parametrize("raw", ["{not json", '{"messages": [', "\ufeff{}", "", "null"])
def test_malformed_json_is_400(harness: Harness, raw: str) -> None:
    response = harness.call(api_event("POST", "/v1/features/summarize-thread/converse", raw_body=raw))
    assert response["statusCode"] == 400
    assert _error(response)["code"] in (api.INVALID_JSON, api.BAD_REQUEST)
    assert harness.bedrock.calls == []


def test_invalid_utf8_is_400(harness: Harness) -> None:
    raw = base64.b64encode(b'{"messages": "\xff\xfe"}').decode()
    event = api_event("POST", "/v1/features/summarize-thread/converse", raw_body=raw)
    event["isBase64Encoded"] = True
    response = harness.call(event)
    assert response["statusCode"] == 400
    assert _error(response)["code"] == api.INVALID_JSON


def test_model_client_error_is_400_with_its_code_and_no_retry(harness: Harness) -> None:
    harness.bedrock.plan[PT] = BackendError.of("ValidationException", 400)
    response = harness.converse()
    assert response["statusCode"] == 400
    error = _error(response)
    assert error["code"] == "ValidationException"
    assert error["message"] == api.MODEL_REJECTED
    assert harness.bedrock.targets == [PT]
    assert header(response, "x-spillway-attempts") == "1"


def test_unknown_feature_is_404(harness: Harness) -> None:
    response = harness.converse("no-such-feature")
    assert response["statusCode"] == 404
    error = _error(response)
    assert error["code"] == api.UNKNOWN_FEATURE
    assert "no-such-feature" not in response["body"]


def test_canary_variant_name_is_not_a_feature(harness: Harness) -> None:
    response = harness.converse("summarize-thread..canary")
    assert response["statusCode"] == 404


def test_unknown_path_is_404_and_wrong_method_405(harness: Harness) -> None:
    response = harness.call(api_event("GET", "/v2/anything"))
    assert response["statusCode"] == 404
    assert _error(response)["code"] == api.NOT_FOUND
    response = harness.call(api_event("GET", "/v1/features/summarize-thread/converse"))
    assert response["statusCode"] == 405
    assert _error(response)["code"] == api.METHOD_NOT_ALLOWED


@pytest.mark.parametrize("image_bytes", [300 * 1024, limits.BEDROCK_IMAGE_BYTES])
def test_images_up_to_bedrocks_limit_are_served_not_413(harness: Harness, image_bytes: int) -> None:
    image = {"image": {"format": "png", "source": {"bytes": base64.b64encode(b"\x89" * image_bytes).decode()}}}
    response = harness.converse(body={"messages": [{"role": "user", "content": [{"text": "what is it?"}, image]}]})
    assert response["statusCode"] == 200
    ((_, request, _),) = harness.bedrock.calls
    assert request["messages"][0]["content"][1] == image  # handed on as sent (the Bedrock backend decodes it)


def test_over_the_derived_limit_is_413_before_any_call(harness: Harness) -> None:
    text = "x" * (limits.MAX_REQUEST_BYTES - 60)  # with the envelope of the body, just over
    response = harness.converse(body=converse_body(text))
    assert response["statusCode"] == 413
    assert _error(response)["code"] == api.PAYLOAD_TOO_LARGE
    assert harness.bedrock.calls == []


def test_over_the_configured_size_is_413(table_doc: dict[str, Any]) -> None:
    doc = json.loads(json.dumps(table_doc))
    doc["limits"] = {"max_request_bytes": 200}
    h = Harness(doc)
    try:
        small = h.converse(body=converse_body("x" * 50))
        assert small["statusCode"] == 200
        big = h.converse(body=converse_body("x" * 300))
        assert big["statusCode"] == 413
        error = _error(big)
        assert error["code"] == api.PAYLOAD_TOO_LARGE
        assert "200 bytes" in error["message"]
        assert len(h.bedrock.calls) == 1
    finally:
        h.handler.set_router(None)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded", "json"])
def test_wrong_content_type_is_415(harness: Harness, content_type: str | None) -> None:
    response = harness.converse(content_type=content_type)
    assert response["statusCode"] == 415
    assert _error(response)["code"] == api.UNSUPPORTED_MEDIA_TYPE
    assert harness.bedrock.calls == []


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON"])
def test_json_content_types_are_accepted(harness: Harness, content_type: str) -> None:
    assert harness.converse(content_type=content_type)["statusCode"] == 200


def test_no_capacity_left_is_503_with_retry_after(harness: Harness) -> None:
    harness.bedrock.default = THROTTLE
    response = harness.converse()
    assert response["statusCode"] == 503
    error = _error(response)
    assert error["code"] == api.NO_CAPACITY
    retry_after = header(response, "Retry-After")
    assert retry_after is not None
    assert 1 <= int(retry_after) <= 60
    table = rendered_table()
    feature = table["features"]["summarize-thread"]
    targets = sum(1 for t in table["targets"].values() if t["model"] in feature["models"])
    assert int(header(response, "x-spillway-attempts") or 0) == min(feature["max_attempts"], targets)  # each once


def test_spent_deadline_is_504(harness: Harness) -> None:
    def slow(target: Any, request: Any, timeout_s: float) -> BackendReply:
        harness.clock.advance(timeout_s)  # the attempt used its whole budget, then failed
        raise BackendError.of("ModelTimeoutException", 408)

    harness.bedrock.default = slow
    response = harness.converse()
    assert response["statusCode"] == 504
    assert _error(response)["code"] == api.DEADLINE_EXCEEDED


def test_lambda_remaining_time_bounds_the_deadline(harness: Harness) -> None:
    event = api_event("POST", "/v1/features/summarize-thread/converse", body=converse_body())
    response = harness.call(event, LambdaContext(remaining_ms=3000))
    assert response["statusCode"] == 200
    (_, _, timeout_s) = harness.bedrock.calls[0]
    assert timeout_s <= (3000 - 500) / 1000.0
    no_time = harness.call(event, LambdaContext(remaining_ms=600))
    assert no_time["statusCode"] == 504
    assert len(harness.bedrock.calls) == 1


def test_unexpected_exception_is_502_never_500(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(harness.router, "current", broken)
    response = harness.converse()
    assert response["statusCode"] == 502
    error = _error(response)
    assert error["code"] == api.ROUTER_ERROR
    assert "boom" not in response["body"]


@pytest.mark.parametrize(
    ("event", "request_id"),
    [
        ({}, "lambda-req-1"),
        ({"httpMethod": "POST"}, "lambda-req-1"),
        ({"path": "/v1/features", "httpMethod": None}, "lambda-req-1"),
        ({"requestContext": {"requestId": "r1"}}, "r1"),
        (None, "lambda-req-1"),
        ([], "lambda-req-1"),
    ],
)
def test_malformed_event_is_502(harness: Harness, event: Any, request_id: str) -> None:
    response = harness.handler.lambda_handler(event, LambdaContext())
    assert response["statusCode"] == 502
    assert json.loads(response["body"]) == {
        "error": {"code": api.ROUTER_ERROR, "message": api.MESSAGES[api.ROUTER_ERROR], "request_id": request_id}
    }
    assert response["headers"]["x-spillway-request-id"] == request_id
    assert harness.bedrock.calls == []


def test_no_config_at_all_is_503(table_doc: dict[str, Any]) -> None:
    h = Harness(table_doc)
    try:
        h.doc = {"version": 99}
        h.source.invalidate()
        response = h.converse()
        assert response["statusCode"] == 503
        assert _error(response)["code"] == api.CONFIG_UNAVAILABLE
        assert header(response, "Retry-After") == "5"
    finally:
        h.handler.set_router(None)


def test_list_features(harness: Harness) -> None:
    response = harness.call(api_event("GET", "/v1/features", content_type=None))
    assert response["statusCode"] == 200
    features = {f["name"]: f for f in body_of(response)["features"]}
    served = load_platform(PLATFORM).features_served_in("us-east-1")  # the harness's table: config/platform.yaml
    assert set(features) == {f.name for f in served}
    for feature in served:
        assert features[feature.name]["models"] == list(feature.models)
        assert features[feature.name]["canary"] is None


def test_health_shows_an_open_breaker_and_no_arns(harness: Harness) -> None:
    harness.bedrock.plan[PT] = DOWN
    table = harness.router.current()[0].table
    assert table is not None
    for i in range(table.features["summarize-thread"].breaker.consecutive_failures):
        assert harness.converse(request_id=f"r{i}")["statusCode"] == 200
    response = harness.call(api_event("GET", "/v1/health", content_type=None))
    assert response["statusCode"] == 200
    body = body_of(response)
    targets = {t["id"]: t for t in body["targets"]}
    assert targets[PT]["state"] == "open"
    assert targets[PT]["cooldown_remaining_s"] > 0
    assert targets[OD]["state"] == "closed"
    assert body["config"]["source"] == "appconfig"
    assert body["store"] == {"enabled": False}
    assert "arn:" not in response["body"]
    assert "provisioned-model" not in response["body"]
    # Open breaker: the next request goes straight to on-demand.
    calls = len(harness.bedrock.calls)
    assert header(harness.converse(), "x-spillway-target") == OD
    assert harness.bedrock.targets[calls:] == [OD]


def test_backend_error_class_maps_to_engine_behaviour(harness: Harness) -> None:
    harness.bedrock.plan[PT] = BackendError(ErrorClass.OURS, "AccessDeniedException", 403)
    response = harness.converse()
    assert response["statusCode"] == 200
    assert header(harness.converse(), "x-spillway-target") == OD


class _ConverseClient:
    """bedrock-runtime as botocore hands its parsed answer back: the members, ResponseMetadata and a member this
    botocore does not know yet."""

    meta = SimpleNamespace(service_model=botocore.session.get_session().get_service_model("bedrock-runtime"))

    def converse(self, **params: Any) -> dict[str, Any]:
        return {**ok_reply().response, "ResponseMetadata": {"HTTPStatusCode": 200}, "someFutureMember": {}}

    def converse_stream(self, **params: Any) -> dict[str, Any]:
        """The same answer as ConverseStream's events (what a buffered request is served through by default)."""
        events = [
            {"messageStart": {"role": "assistant"}},
            {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": "fine "}}},
            {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": "answer"}}},
            {"contentBlockStop": {"contentBlockIndex": 0}},
            {"messageStop": {"stopReason": "end_turn"}},
            {
                "metadata": {
                    "usage": {"inputTokens": 11, "outputTokens": 7, "totalTokens": 18},
                    "metrics": {"latencyMs": 42},
                }
            },
        ]
        return {"stream": _Events(events), "ResponseMetadata": {"HTTPStatusCode": 200}}


class _Events(list[dict[str, Any]]):
    def close(self) -> None:
        pass


@pytest.mark.parametrize("via_stream", [True, False], ids=["assembled-from-converse-stream", "converse"])
def test_a_served_answer_is_converses_output_shape(table_doc: dict[str, Any], via_stream: bool) -> None:
    """The 200 body against botocore's own model of Converse's output, through the real Bedrock backend: Converse's
    members, its required ones present, nothing else (no ResponseMetadata, nothing botocore does not model); the same
    whether the router called ConverseStream and assembled the answer (the default) or called Converse."""
    model = botocore.session.get_session().get_service_model("bedrock-runtime")
    shape = model.operation_model("Converse").output_shape
    assert isinstance(shape, StructureShape)
    doc = copy.deepcopy(table_doc)  # the session's table stays as rendered
    doc["features"]["summarize-thread"]["buffered_via_stream"] = via_stream
    harness = Harness(doc)
    harness.router.backends["bedrock"] = BedrockBackend(ClientPool(lambda service, region, config: _ConverseClient()))
    try:
        response = harness.converse()
    finally:
        harness.handler.set_router(None)
    assert response["statusCode"] == 200
    body = body_of(response)
    assert set(shape.required_members) <= set(body)
    assert set(body) <= set(shape.members), set(body) - set(shape.members)
    usage = shape.members["usage"]
    assert isinstance(usage, StructureShape)
    assert set(usage.required_members) <= set(body["usage"]) <= set(usage.members)
    assert body["output"]["message"]["content"] == [{"text": "fine answer"}]


def test_a_broken_context_still_answers_without_a_500(harness: Harness) -> None:
    response = harness.handler.lambda_handler(api_event("GET", "/v1/features", content_type=None), None)
    assert response["statusCode"] == 502
    assert json.loads(response["body"])["error"]["code"] == api.ROUTER_ERROR


def test_context_overflow_falls_back_to_the_next_model_then_400(harness: Harness) -> None:
    overflow = BackendError(ErrorClass.CLIENT, "ValidationException", 400, context_overflow=True)
    for target in ("claude-sonnet/provisioned/us-east-1", "claude-sonnet/on_demand/us-east-1"):
        harness.bedrock.plan[target] = overflow
    response = harness.converse()
    assert response["statusCode"] == 200
    assert header(response, "x-spillway-target") == "nova-lite/on_demand/us-east-1"
    harness.bedrock.default = overflow
    response = harness.converse(request_id="too-big")
    assert response["statusCode"] == 400
    assert _error(response)["code"] == "ValidationException"

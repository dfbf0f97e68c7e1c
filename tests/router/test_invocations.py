"""The handler serves one invocation at a time per environment, as Lambda calls it (the local worlds too). What one
invocation leaves behind (request id, route arguments, the resolver's event) never reaches the next."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping
from typing import Any

from spillway import telemetry
from spillway.backends.contract import BackendReply, Usage
from spillway.config import Target
from tests.router.conftest import Harness, LambdaContext, api_event, body_of, converse_body, header


def _echo(target: Target, request: Mapping[str, Any], timeout_s: float) -> BackendReply:
    text = request["messages"][0]["content"][0]["text"]
    response = {"output": {"message": {"role": "assistant", "content": [{"text": f"echo {text}"}]}}}
    return BackendReply(response={**response, "stopReason": "end_turn"}, latency_ms=1.0, usage=Usage(1, 1))


def test_each_invocation_answers_its_own_request(harness: Harness) -> None:
    harness.bedrock.default = harness.sagemaker.default = _echo
    for n in range(3):
        answer = harness.converse(body=converse_body(f"question {n}"), request_id=f"r{n}")
        assert header(answer, "x-spillway-request-id") == f"r{n}"
        assert body_of(answer)["output"]["message"]["content"][0]["text"] == f"echo question {n}"
    rejected = harness.converse(body={"messages": "not a list"}, request_id="r-bad")
    assert rejected["statusCode"] == 400
    assert body_of(rejected)["error"]["request_id"] == "r-bad"


def test_the_request_id_does_not_carry_over(harness: Harness) -> None:
    first = harness.converse(request_id="api-gw-1")
    assert header(first, "x-spillway-request-id") == "api-gw-1"
    event: dict[str, Any] = api_event("GET", "/v1/features", content_type=None)
    del event["requestContext"]["requestId"]
    context = LambdaContext()
    context.aws_request_id = "lambda-2"
    second = harness.call(event, context)
    assert second["statusCode"] == 200
    assert header(second, "x-spillway-request-id") == "lambda-2"


def test_route_arguments_do_not_carry_over(harness: Harness) -> None:
    assert harness.converse("summarize-thread")["statusCode"] == 200
    unknown = harness.converse("no-such-feature")
    assert unknown["statusCode"] == 404
    assert body_of(unknown)["error"]["code"] == "UnknownFeature"
    assert harness.call(api_event("GET", "/v1/health", content_type=None))["statusCode"] == 200
    assert harness.converse("summarize-thread")["statusCode"] == 200


def test_a_malformed_events_log_line_is_its_own(harness: Harness) -> None:
    """The logger's per-invocation keys are reset for an event the router refuses too, so its line does not carry
    the previous request's correlation id."""
    handler = telemetry.logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    try:
        harness.converse(request_id="the-previous-request")
        context = LambdaContext()
        context.aws_request_id = "lambda-malformed"
        assert harness.call({"requestContext": {}}, context)["statusCode"] == 502
    finally:
        handler.setStream(previous)
    (rejected,) = [json.loads(line) for line in buffer.getvalue().splitlines() if '"rejected"' in line]
    assert rejected["correlation_id"] == "lambda-malformed"
    assert rejected["function_request_id"] == "lambda-malformed"

"""The streaming route's infrastructure (issue 12): its API Gateway method, the router function's runtime loop that
answers it in streaming mode, and the WAF treating it as prompt-carrying."""

from __future__ import annotations

import copy
import importlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
import runtime_loop
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_

from stacks.assembly import SynthResult, build
from stacks.constructs.router_api import (
    CHAT_RESOURCE,
    STREAM_RESOURCE,
    STREAM_TIMEOUT_MAX_S,
    STREAMED_RESOURCES,
    add_chat_completions,
    add_converse_stream,
    stream_timeout_s,
)
from stacks.constructs.router_function import HANDLER, LAMBDA_MAX_TIMEOUT_S, RouterFunction
from stacks.constructs.web_acl import prompt_route_patterns
from stacks.platform import Platform, PlatformConfigError
from tests.infra.config_documents import SOURCE, example, parse
from tests.infra.conftest import Template, resources_of
from tests.infra.test_waf import BODY_RULE_GROUPS, Request, matches

STREAM_PATH = "/live/v1/features/summarize-thread/converse-stream"


def _small_api(stack_name: str) -> tuple[cdk.App, lambda_.Function, apigw.RestApi, apigw.RequestValidator]:
    """An app with one stack holding a function, an IAM-authorized REST API and its validator: a method's shape is
    read there, apart from the router's templates."""
    app = cdk.App()
    stack = cdk.Stack(app, stack_name, env=cdk.Environment(account="111111111111", region="us-east-1"))
    function = lambda_.Function(
        stack, "Router", runtime=lambda_.Runtime.PYTHON_3_13, handler="handler.lambda_handler",
        code=lambda_.Code.from_inline("def lambda_handler(event, context): ..."),
    )  # fmt: skip
    api = apigw.RestApi(
        stack, "Api",
        default_method_options=apigw.MethodOptions(authorization_type=apigw.AuthorizationType.IAM),
    )  # fmt: skip
    validator = api.add_request_validator("Validator", validate_request_body=True, validate_request_parameters=True)
    return app, function, api, validator


def _stream_method_template(integration_timeout_s: int) -> dict[str, Any]:
    """A small stack holding only the streaming method (the shared synthesis deploys no stream route yet)."""
    app, function, api, validator = _small_api("StreamRoute")
    model = api.add_model(
        "ConverseRequest", content_type="application/json", schema=apigw.JsonSchema(type=apigw.JsonSchemaType.OBJECT)
    )
    feature = api.root.add_resource("v1").add_resource("features").add_resource("{feature}")
    add_converse_stream(feature, function, validator, model, integration_timeout_s)
    return app.synth().get_stack_by_name("StreamRoute").template  # type: ignore[no-any-return]


def _chat_method_template(*, streams: bool) -> dict[str, Any]:
    """A small stack holding only the chat completions method, with the function streaming or not."""
    app, function, api, validator = _small_api("ChatRoute")
    buffered = apigw.LambdaIntegration(function, proxy=True, allow_test_invoke=False)
    add_chat_completions(api.root.add_resource("v1"), function, buffered, validator, 125, streams=streams)
    return app.synth().get_stack_by_name("ChatRoute").template  # type: ignore[no-any-return]


def _joined(value: Any) -> str:
    """An Fn::Join's literal parts, references as <ref>: enough to read a URI or an ARN's shape."""
    parts = value["Fn::Join"][1]
    return "".join(part if isinstance(part, str) else "<ref>" for part in parts)


def test_the_stream_method_streams_from_the_functions_response_streaming_invocation() -> None:
    template = _stream_method_template(integration_timeout_s=125)
    (method,) = resources_of(template, "AWS::ApiGateway::Method").values()
    props = method["Properties"]
    assert props["HttpMethod"] == "POST"
    assert props["AuthorizationType"] == "AWS_IAM"
    assert props["OperationName"] == "converseStream"
    assert props["RequestValidatorId"]
    assert "application/json" in props["RequestModels"]
    assert props["RequestParameters"] == {"method.request.path.feature": True}
    integration = props["Integration"]
    assert integration["Type"] == "AWS_PROXY"
    assert integration["IntegrationHttpMethod"] == "POST"
    assert integration["ResponseTransferMode"] == "STREAM"
    assert integration["TimeoutInMillis"] == 125_000
    uri = _joined(integration["Uri"])
    expected = "arn:<ref>:apigateway:us-east-1:lambda:path/2021-11-15/functions/<ref>/response-streaming-invocations"
    assert uri == expected


def test_the_stream_method_may_invoke_the_function_on_that_route_only() -> None:
    template = _stream_method_template(integration_timeout_s=125)
    permissions = list(resources_of(template, "AWS::Lambda::Permission").values())
    assert len(permissions) == 1  # no test-invoke permission
    props = permissions[0]["Properties"]
    # InvokeWithResponseStream is authorised by lambda:InvokeFunction (no action of its own).
    assert props["Action"] == "lambda:InvokeFunction"
    assert props["Principal"] == "apigateway.amazonaws.com"
    assert _joined(props["SourceArn"]).endswith("/POST/v1/features/*/converse-stream")


@pytest.mark.parametrize("streams", [True, False])
def test_chat_completions_streams_from_the_same_entry_once_the_function_streams(streams: bool) -> None:
    """API Gateway integrates a method, not a body value: once the function streams, the whole chat completions
    method is the streaming integration (lambda_stream_handler answers both stream true and false); before, the
    buffered one."""
    (method,) = resources_of(_chat_method_template(streams=streams), "AWS::ApiGateway::Method").values()
    props = method["Properties"]
    assert (props["HttpMethod"], props["OperationName"], props["AuthorizationType"]) == (
        "POST",
        "chatCompletions",
        "AWS_IAM",
    )
    integration = props["Integration"]
    assert integration["Type"] == "AWS_PROXY"
    (resource,) = [
        r["Properties"]["PathPart"]
        for r in resources_of(_chat_method_template(streams=streams), "AWS::ApiGateway::Resource").values()
        if r["Properties"]["PathPart"] == "completions"
    ]
    assert ("POST", "/v1/chat/" + resource) == CHAT_RESOURCE
    assert CHAT_RESOURCE in STREAMED_RESOURCES  # what the function must answer in streaming mode
    uri = _joined(integration["Uri"])
    if streams:
        assert integration["ResponseTransferMode"] == "STREAM"
        assert integration["TimeoutInMillis"] == 125_000
        assert uri.endswith("/2021-11-15/functions/<ref>/response-streaming-invocations")
    else:
        assert integration.get("ResponseTransferMode") in (None, "BUFFERED")
        assert uri.endswith("/2015-03-31/functions/<ref>/invocations")


def test_the_stream_timeout_is_the_deadline_within_api_gateways_fifteen_minutes() -> None:
    assert stream_timeout_s(125) == 125
    assert stream_timeout_s(3600) == STREAM_TIMEOUT_MAX_S == 900
    (method,) = resources_of(_stream_method_template(3600), "AWS::ApiGateway::Method").values()
    assert method["Properties"]["Integration"]["TimeoutInMillis"] == 900_000


def _router_function(template: Template) -> tuple[str, Mapping[str, Any]]:
    """The router function's logical id and properties."""
    functions = {
        logical_id: f["Properties"]
        for logical_id, f in resources_of(template, "AWS::Lambda::Function").items()
        if f["Properties"].get("Handler") == HANDLER
    }
    assert len(functions) == 1
    return next(iter(functions.items()))


def test_the_router_templates_stream_converse_stream_from_the_functions_runtime_loop(
    platform: Platform, templates: Mapping[str, Template], synth: SynthResult
) -> None:
    """The methods integrated with STREAM are converse-stream and chat completions, on the router function, whose
    environment starts the runtime loop that streams exactly those methods (the rest stay buffered, on the same
    function)."""
    assert RouterFunction.streams
    assert set(STREAMED_RESOURCES) == {STREAM_RESOURCE, CHAT_RESOURCE}
    for region in platform.region_names:
        template = templates[f"{platform.name}-router-{region}"]
        paths = {r["Properties"].get("PathPart") for r in resources_of(template, "AWS::ApiGateway::Resource").values()}
        assert {"converse", "converse-stream", "completions"} <= paths
        methods = resources_of(template, "AWS::ApiGateway::Method").values()
        streamed = [m["Properties"] for m in methods if m["Properties"]["Integration"].get("ResponseTransferMode")]
        assert sorted(m["OperationName"] for m in streamed) == ["chatCompletions", "converseStream"]
        _, function = _router_function(template)
        assert function["Runtime"] == "python3.13"
        for stream in streamed:
            assert stream["HttpMethod"] == "POST"
            assert stream["AuthorizationType"] == "AWS_IAM"
            assert stream["Integration"]["ResponseTransferMode"] == "STREAM"
            assert _joined(stream["Integration"]["Uri"]).endswith("/response-streaming-invocations")
            # The integration ends no later than the function: a stream is not cut by the function's own timeout.
            assert stream["Integration"]["TimeoutInMillis"] <= function["Timeout"] * 1000
        env = function["Environment"]["Variables"]
        assert env[runtime_loop.WRAPPER_VAR] == f"/var/task/{runtime_loop.WRAPPER}"
        assert runtime_loop.parse_routes(env[runtime_loop.STREAM_ROUTES_VAR]) == set(STREAMED_RESOURCES)
        module, _, name = env[runtime_loop.STREAM_HANDLER_VAR].partition(".")
        assert callable(getattr(importlib.import_module(module), name))
        # The function's code asset ships the wrapper executable and the loop beside it.
        key = function["Code"]["S3Key"]  # "<asset hash>.zip", staged as asset.<hash> beside the templates
        code = synth.outdir / f"asset.{key.removesuffix('.zip')}"
        wrapper = code / runtime_loop.WRAPPER
        assert wrapper.is_file()
        assert wrapper.stat().st_mode & 0o111 == 0o111
        assert (code / "runtime_loop.py").is_file()


def _body_groups(template: Template) -> list[Mapping[str, Any]]:
    (acl,) = resources_of(template, "AWS::WAFv2::WebACL").values()
    groups = [rule["Statement"].get("ManagedRuleGroupStatement") for rule in acl["Properties"]["Rules"]]
    return [g for g in groups if g is not None and g["Name"] in BODY_RULE_GROUPS]


def test_the_waf_treats_converse_stream_as_prompt_carrying(
    platform: Platform, templates: Mapping[str, Template]
) -> None:
    assert any(re.search(p, STREAM_PATH) for p in prompt_route_patterns())
    method, _ = STREAM_RESOURCE
    empty = Request(method, STREAM_PATH, b"")  # the route itself, even without a body
    for region in platform.region_names:
        groups = _body_groups(templates[f"{platform.name}-router-{region}"])
        assert groups
        for group in groups:
            assert not matches(group["ScopeDownStatement"], empty), (region, group["Name"])
        # Planted: without the route's pattern, the empty-bodied stream request would reach the body rules.
        planted = copy.deepcopy(groups[0]["ScopeDownStatement"])
        statements = planted["AndStatement"]["Statements"]
        planted["AndStatement"]["Statements"] = [
            s for s in statements if "converse-stream" not in str(s) and "converse\\-stream" not in str(s)
        ]
        assert len(planted["AndStatement"]["Statements"]) < len(statements)
        assert matches(planted, empty)


def test_a_deadline_the_function_cannot_outlive_is_refused_by_name(tmp_path: Path) -> None:
    """Lambda's 15 minutes bound the function, and so every stream: a served deadline that needs a longer function
    timeout with the router's margins is a configuration error, not a template CloudFormation would refuse."""
    document = example()
    document["features"]["summarize-thread"]["deadline_ms"] = 899_000
    # The one rate Little's law allows such a deadline within the reserved concurrency's range.
    document["router"]["api"].update(rate_limit=1, burst_limit=1)
    document["router"]["calling_services"] = {"support-desk": {"rate_limit": 1, "burst_limit": 1, "quota_per_day": 10}}
    document["router"]["reserved_concurrency"] = 999
    platform = parse(document)  # the file itself is consistent
    with pytest.raises(PlatformConfigError, match=f"over Lambda's {LAMBDA_MAX_TIMEOUT_S} s") as caught:
        build(platform, outdir=tmp_path, cloudformation_validation=False)
    assert caught.value.source == SOURCE
    assert "903 s function timeout" in str(caught.value)

"""Issue 10 item 6, read from the synthesized router templates: the Lambda's reserved concurrency, the stage's
throttle and the usage plans agree (Little's law), and a throttled Lambda reaches the caller as 503 with Retry-After
in the router's error shape, never a bare 500."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from stacks.platform import Platform
from tests.infra.conftest import Template, resources_of

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
# API Gateway answers for a Lambda it could not invoke: INTEGRATION_FAILURE, falling back to DEFAULT_5XX.
THROTTLE_RESPONSE_TYPES = ("INTEGRATION_FAILURE", "DEFAULT_5XX")


def _one(template: Template, resource_type: str) -> Mapping[str, Any]:
    (resource,) = resources_of(template, resource_type).values()
    return resource["Properties"]


def concurrency_problems(template: Template) -> list[str]:
    """Little's law on the template's own numbers: stage rate x longest deadline <= reserved concurrency, the stage
    burst fits the concurrency, and the usage plans fit the stage."""
    function = _one(template, "AWS::Lambda::Function")
    concurrency = function["ReservedConcurrentExecutions"]
    stage = _one(template, "AWS::ApiGateway::Stage")
    (settings,) = [m for m in stage["MethodSettings"] if m.get("ResourcePath") == "/*"]
    rate, burst = settings["ThrottlingRateLimit"], settings["ThrottlingBurstLimit"]
    # The integration waits the longest served deadline plus one second (stacks/router.py INTEGRATION_MARGIN_S).
    timeouts = {
        m["Properties"]["Integration"]["TimeoutInMillis"]
        for m in resources_of(template, "AWS::ApiGateway::Method").values()
    }
    deadline_s = (max(timeouts) - 1000) / 1000
    problems = []
    if rate * deadline_s > concurrency:
        problems.append(f"stage {rate}/s x {deadline_s} s = {rate * deadline_s} > reserved concurrency {concurrency}")
    if burst > concurrency:
        problems.append(f"stage burst {burst} > reserved concurrency {concurrency}")
    plans = [p["Properties"]["Throttle"] for p in resources_of(template, "AWS::ApiGateway::UsagePlan").values()]
    if sum(p["RateLimit"] for p in plans) > rate:
        problems.append(f"usage plans add up to {sum(p['RateLimit'] for p in plans)}/s > stage {rate}/s")
    return problems


def throttle_answer(template: Template, response_type: str) -> tuple[str | None, str | None, Any]:
    """(status, Retry-After, rendered body) API Gateway gives for `response_type`; (None, None, None) if unset."""
    for response in resources_of(template, "AWS::ApiGateway::GatewayResponse").values():
        props = response["Properties"]
        if props["ResponseType"] != response_type:
            continue
        retry = props.get("ResponseParameters", {}).get("gatewayresponse.header.Retry-After")
        text = props["ResponseTemplates"]["application/json"]
        rendered = re.sub(r"\$context\.[A-Za-z.]+", "x", text)  # what API Gateway substitutes at run time
        return props.get("StatusCode"), retry, json.loads(rendered)
    return None, None, None


def lambda_throttle_problems(template: Template) -> list[str]:
    error_schema = json.loads(OPENAPI.read_text(encoding="utf-8"))["components"]["schemas"]["Error"]
    problems = []
    for response_type in THROTTLE_RESPONSE_TYPES:
        status, retry, body = throttle_answer(template, response_type)
        if status not in {"429", "503"}:
            problems.append(f"{response_type}: status {status} (API Gateway's default is a bare 5xx)")
            continue
        if retry is None or not re.fullmatch(r"'[1-9][0-9]?'", retry):
            problems.append(f"{response_type}: no Retry-After")
        try:
            jsonschema.validate(body, error_schema)
        except jsonschema.ValidationError as error:
            problems.append(f"{response_type}: body not in the router's error shape ({error.message})")
    return problems


@pytest.fixture(scope="module")
def routers(platform: Platform, templates: Mapping[str, Template]) -> dict[str, Template]:
    return {region: templates[f"{platform.name}-router-{region}"] for region in platform.region_names}


def test_concurrency_stage_and_plans_agree(routers: Mapping[str, Template]) -> None:
    for region, template in routers.items():
        assert concurrency_problems(template) == [], region
    planted = copy.deepcopy(next(iter(routers.values())))
    for function in resources_of(planted, "AWS::Lambda::Function").values():
        function["Properties"]["ReservedConcurrentExecutions"] = 50  # the value issue 10 found
    assert any("> reserved concurrency 50" in p for p in concurrency_problems(planted))


def test_a_lambda_throttle_answers_503_with_retry_after_in_the_router_shape(routers: Mapping[str, Template]) -> None:
    for region, template in routers.items():
        assert lambda_throttle_problems(template) == [], region
        status, retry, body = throttle_answer(template, "INTEGRATION_FAILURE")
        assert (status, retry, body["error"]["code"]) == ("503", "'1'", "NoCapacity")
    planted = copy.deepcopy(next(iter(routers.values())))
    planted["Resources"] = {
        k: v for k, v in planted["Resources"].items()
        if v.get("Properties", {}).get("ResponseType") != "INTEGRATION_FAILURE"
    }  # fmt: skip
    assert lambda_throttle_problems(planted) == [
        "INTEGRATION_FAILURE: status None (API Gateway's default is a bare 5xx)"
    ]


def rendered_from_template(template: Template, response_type: str, context: Mapping[str, str]) -> Any:
    """(status, headers, body) API Gateway sends from the template's gateway response of `response_type`."""
    for response in resources_of(template, "AWS::ApiGateway::GatewayResponse").values():
        props = response["Properties"]
        if props["ResponseType"] != response_type:
            continue
        body = re.sub(
            r"\$context\.([A-Za-z.]+)", lambda m: context[m.group(1)], props["ResponseTemplates"]["application/json"]
        )
        headers = {}
        for key, mapping in props.get("ResponseParameters", {}).items():
            static = re.fullmatch(r"'(.*)'", mapping)
            headers[key.removeprefix("gatewayresponse.header.").lower()] = (
                static.group(1) if static else context[mapping.removeprefix("context.")]
            )
        return int(props["StatusCode"]), headers, body.encode()
    return None


def test_the_local_fleet_answers_a_throttled_lambda_as_the_template_does(routers: Mapping[str, Template]) -> None:
    """The fleet world's throttle answer (local/localrun/fleet.py) is the deployed gateway response, byte for byte."""
    from local.localrun.fleet import is_throttle_answer  # noqa: PLC0415 (the local world, only here)

    context = {"requestId": "c0ffee00-0000-4000-8000-000000000001", "error.responseType": "INTEGRATION_FAILURE"}
    for region, template in routers.items():
        status, headers, body = rendered_from_template(template, "INTEGRATION_FAILURE", context)
        assert is_throttle_answer(status, {**headers, "content-type": "application/json"}, body), region
    planted = copy.deepcopy(next(iter(routers.values())))
    for response in resources_of(planted, "AWS::ApiGateway::GatewayResponse").values():
        if response["Properties"]["ResponseType"] == "INTEGRATION_FAILURE":
            response["Properties"]["ResponseParameters"]["gatewayresponse.header.Retry-After"] = "'5'"
    status, headers, body = rendered_from_template(planted, "INTEGRATION_FAILURE", context)
    assert not is_throttle_answer(status, headers, body)

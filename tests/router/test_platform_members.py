"""What the platform decides per feature (service tier, latency-optimized performance): sent on Bedrock targets,
overridable by a caller only where the platform file says so, and the tier that served reported in the route
headers and metrics."""

from __future__ import annotations

import json
from typing import Any

import pytest

import handler
from local.emulator import Emulator
from spillway import api
from tests.router.conftest import Harness, LambdaContext, api_event, body_of, converse_body, header

PT = "claude-sonnet/provisioned/us-east-1"


def test_the_example_platform_renders_its_settings(table_doc: dict[str, Any]) -> None:
    assert table_doc["features"]["summarize-thread"]["converse"] == {
        "defaults": {"serviceTier": {"type": "priority"}},
        "caller_may_override": ["serviceTier"],
    }
    assert table_doc["features"]["nightly-recap"]["converse"] == {
        "defaults": {"serviceTier": {"type": "flex"}},
        "caller_may_override": [],
    }


def test_bedrock_targets_carry_the_features_settings(harness: Harness) -> None:
    assert harness.converse("summarize-thread")["statusCode"] == 200
    ((tid, _, _),) = [(c[0], c[1], c[2]) for c in harness.bedrock.calls]
    target = harness.router.current()[1].plan("summarize-thread").steps[0].target  # type: ignore[union-attr]
    assert (tid, target.backend.defaults) == (PT, (("serviceTier", {"type": "priority"}),))


@pytest.mark.parametrize("member", ["serviceTier"])
def test_a_caller_may_override_only_what_the_platform_allows(harness: Harness, member: str) -> None:
    body = converse_body("hi", **{member: {"type": "default"}})
    assert harness.converse("summarize-thread", body=body)["statusCode"] == 200
    response = harness.converse("nightly-recap", body=body)
    assert response["statusCode"] == 400
    error = body_of(response)["error"]
    assert error["code"] == api.BAD_REQUEST
    assert error["message"].startswith(f"{member}: is decided by this feature's platform settings")
    assert [c[0] for c in harness.bedrock.calls] == [PT]  # the refused request reached no backend


def test_the_tier_reaches_bedrock_and_the_served_tier_comes_back(
    emulated: Emulator, table_doc: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    def call(body: dict[str, Any]) -> dict[str, Any]:
        event = api_event("POST", "/v1/features/summarize-thread/converse", body=body)
        return handler.lambda_handler(event, LambdaContext())  # type: ignore[no-any-return]

    target = ("us-east-1", "bedrock", table_doc["targets"][PT]["backend"]["model_id"])
    response = call(converse_body("hi"))
    assert json.loads(emulated.received(target)[-1])["serviceTier"] == {"type": "priority"}
    assert header(response, "x-spillway-service-tier") == "priority"
    response = call(converse_body("hi", serviceTier={"type": "flex"}))  # allowed here: the caller's value wins
    assert json.loads(emulated.received(target)[-1])["serviceTier"] == {"type": "flex"}
    assert header(response, "x-spillway-service-tier") == "flex"
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"ServedByTier"' in line]
    assert [(m["service_tier"], m["ServedByTier"]) for m in metrics] == [("priority", [1.0]), ("flex", [1.0])]

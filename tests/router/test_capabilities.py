"""Capability-aware plans: a target whose backend kind cannot express the request is passed over before sending
(traced as unsupported, no health signal) and the plan goes on; only when no target can is the answer 400, naming
what no target takes. Nothing of a request is dropped silently."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

import handler
from local.emulator import Emulator
from spillway import api
from spillway.backends.kinds import EVERYTHING, KINDS, request_needs
from tests.router.conftest import Harness, LambdaContext, api_event, body_of, converse_body, header
from tools import doc_tables

SAGEMAKER = KINDS["sagemaker"]
ESCROW = "redact-escrow"  # llama-escrow (SageMaker) first, then claude-sonnet (Bedrock)
CANARY = "CANARY-caller-image-7d1e"


def request_using(name: str) -> dict[str, Any]:
    """The smallest request that uses `name` of the capability vocabulary."""
    body = converse_body("hi")
    head, _, tail = name.partition(".")
    if head == "system":
        body["system"] = [{tail: {"text": CANARY}}]
    elif head == "toolResult" and tail:
        result = {"toolUseId": "t1", "content": [{tail: {"format": "png", "source": {"bytes": CANARY}}}]}
        body["messages"][0]["content"].append({"toolResult": result})
    elif head == "toolConfig" and tail:
        body["toolConfig"] = {"tools": [{tail: {"name": CANARY}}]}
    elif name in api.REQUEST_MEMBERS:
        body.setdefault(name, [] if api.REQUEST_MEMBERS[name] == "array" else {"x": CANARY})
    else:
        body["messages"][0]["content"].append({name: {"format": "png", "source": {"bytes": CANARY}}})
    return body


def test_the_vocabulary_is_every_member_block_and_tool_kind() -> None:
    assert KINDS["bedrock"].can == EVERYTHING
    assert SAGEMAKER.can < EVERYTHING
    for name in EVERYTHING:
        assert name in request_needs(request_using(name)), name


@pytest.mark.parametrize("name", sorted(EVERYTHING - SAGEMAKER.can))
def test_what_sagemaker_cannot_express_passes_it_over_to_a_model_that_can(harness: Harness, name: str) -> None:
    response = harness.converse(ESCROW, body=request_using(name))
    assert response["statusCode"] == 200
    route = str(header(response, "x-spillway-route")).split(",")
    assert route[:2] == [
        "llama-escrow/provisioned/us-east-1=unsupported",
        "llama-escrow/provisioned/us-west-2=unsupported",
    ]
    assert harness.sagemaker.calls == []
    assert harness.bedrock.targets == ["claude-sonnet/provisioned/us-east-1"]
    assert harness.bedrock.calls[0][1] == request_using(name)  # nothing dropped on the way
    for target in ("llama-escrow/provisioned/us-east-1", "llama-escrow/provisioned/us-west-2"):
        assert harness.health.record_of(target).trips == 0  # not a health signal


def test_a_request_sagemaker_can_express_goes_to_it(harness: Harness) -> None:
    body = converse_body("hi", system=[{"text": "brief"}, {"cachePoint": {"type": "default"}}])
    response = harness.converse(ESCROW, body=body)
    assert response["statusCode"] == 200
    assert header(response, "x-spillway-target") == "llama-escrow/provisioned/us-east-1"


def test_when_no_target_can_the_answer_is_400_naming_what_none_takes(table_doc: dict[str, Any]) -> None:
    doc = json.loads(json.dumps(table_doc))
    doc["features"][ESCROW]["models"] = ["llama-escrow"]
    h = Harness(doc)
    try:
        body = request_using("image")
        body["messages"][0]["content"].append({"video": {"format": "mp4", "source": {"bytes": CANARY}}})
        body["system"] = [{"guardContent": {"text": {"text": CANARY}}}]
        response = h.converse(ESCROW, body=body)
        assert response["statusCode"] == 400
        error = body_of(response)["error"]
        assert error["code"] == "UnsupportedContent"
        assert error["message"] == api.unsupported_message(("image", "system.guardContent", "video"))
        assert CANARY not in response["body"]
        assert header(response, "x-spillway-attempts") == "0"
        assert str(header(response, "x-spillway-route")).endswith("=unsupported")
        assert h.sagemaker.calls == h.bedrock.calls == []
    finally:
        h.handler.set_router(None)


def test_the_documented_table_is_the_registry() -> None:
    path, render = doc_tables.TABLES["capability-table"]
    text = path.read_text()
    assert doc_tables.render_doc(text, "capability-table", render()) == text, "run `python -m tools.doc_tables`"
    for name in EVERYTHING - SAGEMAKER.can:
        assert f"| `{name}` | yes | no |" in text


def test_an_image_for_an_escrow_feature_is_served_by_its_bedrock_model_over_the_wire(
    emulated: Emulator, table_doc: dict[str, Any]
) -> None:
    png = bytes(range(256))
    image = {"image": {"format": "png", "source": {"bytes": base64.b64encode(png).decode()}}}
    body = {"messages": [{"role": "user", "content": [{"text": "what is it?"}, image]}]}
    response = handler.lambda_handler(api_event("POST", f"/v1/features/{ESCROW}/converse", body=body), LambdaContext())
    assert response["statusCode"] == 200
    assert str(header(response, "x-spillway-route")).startswith("llama-escrow/provisioned/us-east-1=unsupported,")
    assert header(response, "x-spillway-target") == "claude-sonnet/provisioned/us-east-1"
    sagemaker = [t for t in emulated.stats()["targets"] if t["kind"] == "sagemaker"]
    assert sum(t["requests"] for t in sagemaker) == 0
    pt = ("us-east-1", "bedrock", table_doc["targets"]["claude-sonnet/provisioned/us-east-1"]["backend"]["model_id"])
    received = json.loads(emulated.received(pt)[-1])["messages"][0]["content"][1]["image"]["source"]["bytes"]
    assert base64.b64decode(received) == png

"""The API contract: docs/openapi.json matches the code, is valid OpenAPI, and the resolver serves what it says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import botocore.session  # type: ignore[import-untyped]
import pytest
from openapi_spec_validator import validate

import handler
from spillway import api
from spillway.errors import BackendError
from spillway.limits import MAX_REQUEST_BYTES
from tests.router.conftest import Harness, api_event, converse_body
from tools import openapi as tool

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "openapi.json"


def test_committed_document_matches_the_code() -> None:
    assert DOC.read_text() == tool.render(), "docs/openapi.json is stale: run `python -m tools.openapi`"


def test_document_is_valid_openapi() -> None:
    validate(json.loads(DOC.read_text()))


def test_check_mode_reports_a_stale_document(tmp_path: Path) -> None:
    stale = tmp_path / "openapi.json"
    stale.write_text("{}\n")
    assert tool.main(["--check", "--output", str(stale)]) == 1
    assert tool.main(["--output", str(stale)]) == 0
    assert tool.main(["--check", "--output", str(stale)]) == 0


def test_resolver_routes_are_the_documented_routes() -> None:
    registered = set()
    for route_key in handler.app._static_routes + handler.app._dynamic_routes:
        registered.add((route_key.method, route_key.rule.pattern))
    documented = {(r.method, handler.app._compile_regex(r.path).pattern) for r in api.ROUTES}
    assert registered == documented


def _statuses_the_handler_answers(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> dict[int, dict[str, Any]]:
    """Drive the converse route down each of its paths; the answers by status."""
    path = "/v1/features/summarize-thread/converse"
    answers = [
        harness.converse(),
        harness.converse(body={"messages": "not a list"}),
        harness.converse("no-such-feature"),
        harness.call(api_event("POST", path, body=converse_body("x" * (MAX_REQUEST_BYTES + 1)))),
        harness.call(api_event("POST", path, raw_body="hello", content_type="text/plain")),
    ]

    def spends_its_budget(target: Any, request: Any, timeout_s: float) -> Any:
        harness.clock.advance(timeout_s)
        raise BackendError.of("ModelTimeoutException", 408)

    harness.bedrock.default = harness.sagemaker.default = spends_its_budget
    answers.append(harness.converse(request_id="slow"))
    harness.bedrock.default = harness.sagemaker.default = BackendError.of("ThrottlingException", 429)
    answers.append(harness.converse(request_id="throttled"))

    def broken() -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(harness.router, "current", broken)
    answers.append(harness.converse(request_id="bug"))
    return {answer["statusCode"]: answer for answer in answers}


def test_the_documented_statuses_are_the_ones_the_handler_answers(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = json.loads(DOC.read_text())
    documented = doc["paths"]["/v1/features/{feature}/converse"]["post"]["responses"]
    answered = _statuses_the_handler_answers(harness, monkeypatch)
    assert set(documented) == {str(status) for status in answered}
    for status, answer in answered.items():
        sent = {name.lower() for name in answer["multiValueHeaders"]} - {"content-type"}
        described = {name.lower() for name in documented[str(status)].get("headers", {})}
        assert sent <= described, (status, sent - described)


def test_content_block_vocabulary_matches_botocore() -> None:
    model = botocore.session.get_session().get_service_model("bedrock-runtime")
    assert set(api.CONTENT_BLOCKS) == set(model.shape_for("ContentBlock").members)
    assert set(api.SYSTEM_BLOCKS) == set(model.shape_for("SystemContentBlock").members)
    assert set(api.TOOL_RESULT_BLOCKS) == set(model.shape_for("ToolResultContentBlock").members)
    assert set(api.TOOL_KINDS) == set(model.shape_for("Tool").members)
    assert set(api.INFERENCE_KEYS) == set(model.shape_for("InferenceConfiguration").members)
    assert set(api.TOOL_CONFIG_KEYS) == set(model.shape_for("ToolConfiguration").members)
    converse_input = model.operation_model("Converse").input_shape
    assert set(api.REQUEST_FIELDS) | set(api.REFUSED_FIELDS) == set(converse_input.members)
    assert set(api.ROLES) == set(model.shape_for("ConversationRole").enum)
    for name, json_type in api.REQUEST_MEMBERS.items():
        botocore_type = converse_input.members[name].type_name
        assert json_type == {"list": "array", "structure": "object", "map": "object"}[botocore_type], name

"""The API contract: docs/openapi.json matches the code, is valid OpenAPI, and the resolver serves what it says."""

from __future__ import annotations

import json
from pathlib import Path

import botocore.session
from openapi_spec_validator import validate

import handler
from spillway import api
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


def test_every_documented_status_has_an_error_code_or_ok() -> None:
    doc = json.loads(DOC.read_text())
    converse = doc["paths"]["/v1/features/{feature}/converse"]["post"]
    assert set(converse["responses"]) == {"200", "400", "404", "413", "415", "502", "503", "504"}
    assert "Retry-After" in converse["responses"]["503"]["headers"]
    assert {"x-spillway-target", "x-spillway-attempts", "x-spillway-request-id"} <= set(
        converse["responses"]["200"]["headers"]
    )


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

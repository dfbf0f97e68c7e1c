"""A guarded feature is served only with its guardrail: the hosted table's id reaches Bedrock, and the bundled
fallback (which cannot know the id) answers it 503 ConfigUnavailable instead of serving it unguarded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spillway import api
from spillway.backends.contract import BackendReply
from spillway.config import Target
from spillway.routing_source import RoutingSource
from stacks.routing import render_routing_table
from tests.infra.config_documents import parse
from tests.infra.guarded_documents import GUARDED_FEATURE, GUARDED_REGION, GUARDRAIL, guarded_example
from tests.router.conftest import Harness, header, ok_reply

GUARDRAIL_CONFIG = {"guardrailIdentifier": "gr0abc123", "guardrailVersion": "3"}


def _error_code(response: dict[str, Any]) -> str:
    code = json.loads(response["body"])["error"]["code"]
    assert isinstance(code, str)
    return code


def test_the_hosted_tables_guardrail_reaches_bedrock() -> None:
    ids = (GUARDRAIL_CONFIG["guardrailIdentifier"], GUARDRAIL_CONFIG["guardrailVersion"])
    hosted = render_routing_table(parse(guarded_example()), GUARDED_REGION, {GUARDRAIL: ids})
    h = Harness(hosted)
    seen: list[dict[str, Any]] = []

    def record(target: Target, request: Any, timeout_s: float) -> BackendReply:
        seen.append(dict(getattr(target.backend, "defaults", ())))
        return ok_reply()

    h.bedrock.default = record
    try:
        response = h.converse(GUARDED_FEATURE)
        assert response["statusCode"] == 200
        assert seen == [{"guardrailConfig": GUARDRAIL_CONFIG}]
        # A caller may not replace the platform's guardrail (caller_may_override does not name it).
        refused = h.converse(GUARDED_FEATURE, body={**_body(), "guardrailConfig": GUARDRAIL_CONFIG})
        assert refused["statusCode"] == 400
        assert len(seen) == 1
    finally:
        h.handler.set_router(None)


def test_the_bundled_table_answers_a_guarded_feature_503(tmp_path: Path) -> None:
    bundle = tmp_path / "routing.json"
    bundle.write_text(json.dumps(render_routing_table(parse(guarded_example()), GUARDED_REGION)), encoding="utf-8")
    h = Harness({"version": 99})  # AppConfig has nothing valid: the bundle serves
    h.source = RoutingSource(
        application="spillway",
        environment=GUARDED_REGION,
        profile="routing",
        bundled_path=bundle,
        fetch=lambda url, timeout_s: (404, b"", None),
        clock=h.clock,
    )
    router = h.handler.Router(
        h.source, {"bedrock": h.bedrock, "sagemaker": h.sagemaker}, region=GUARDED_REGION, health=h.health,
        clock=h.clock,
    )  # fmt: skip
    h.handler.set_router(router)
    try:
        assert router.current()[0].source == "bundled"
        response = h.converse(GUARDED_FEATURE)
        assert response["statusCode"] == 503
        assert _error_code(response) == api.CONFIG_UNAVAILABLE
        assert header(response, "Retry-After") == "5"
        assert h.bedrock.calls == []  # nothing was sent anywhere, guarded or not
        assert h.converse("summarize-thread")["statusCode"] == 200  # the bundle serves the unguarded features
    finally:
        h.handler.set_router(None)


def _body() -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [{"text": "hello"}]}]}

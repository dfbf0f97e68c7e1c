"""Traces: a sampled invocation sends one subsegment under Lambda's function segment, to the daemon Lambda names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from spillway import telemetry
from spillway.errors import BackendError
from tests.router.conftest import TRACE_PARENT, TRACE_ROOT, Harness, XRayDaemon, api_event

ROUTER = Path(__file__).resolve().parents[2] / "lambdas" / "router"


def test_the_trace_header_is_honoured(harness: Harness, xray: XRayDaemon) -> None:
    response = harness.converse("summarize-thread")
    assert response["statusCode"] == 200
    [doc] = xray.documents()
    assert doc["trace_id"] == TRACE_ROOT
    assert doc["parent_id"] == TRACE_PARENT
    assert doc["type"] == "subsegment"
    assert len(doc["id"]) == 16
    assert doc["id"] != TRACE_PARENT
    assert doc["start_time"] <= doc["end_time"]
    annotations = doc["annotations"]
    target = response["multiValueHeaders"]["x-spillway-target"][0]
    assert annotations["feature"] == "summarize-thread"
    assert annotations["target"] == target
    assert annotations["outcome"] == "served"
    assert annotations["attempts"] == 1
    assert annotations["canary"] is False
    assert annotations["route"] == f"{target}=ok"
    assert doc["http"] == {"response": {"status": 200}}
    assert "fault" not in doc
    assert "error" not in doc


def test_a_spill_is_annotated_with_every_attempt(harness: Harness, xray: XRayDaemon) -> None:
    first = harness.converse("summarize-thread")["multiValueHeaders"]["x-spillway-target"][0]
    harness.bedrock.plan[first] = BackendError.of("ThrottlingException", 429)
    harness.sagemaker.plan[first] = BackendError.of("ThrottlingException", 429)
    response = harness.converse("summarize-thread", request_id="req-2")
    doc = xray.documents()[-1]
    assert doc["annotations"]["attempts"] == int(response["multiValueHeaders"]["x-spillway-attempts"][0])
    assert doc["annotations"]["route"] == response["multiValueHeaders"]["x-spillway-route"][0]
    assert doc["annotations"]["route"].startswith(f"{first}=capacity")


def test_error_statuses_mark_the_span(harness: Harness, xray: XRayDaemon) -> None:
    assert harness.call(api_event("GET", "/v1/nowhere", content_type=None))["statusCode"] == 404
    harness.bedrock.default = BackendError.of("ThrottlingException", 429)
    harness.sagemaker.default = BackendError.of("ThrottlingException", 429)
    assert harness.converse("summarize-thread")["statusCode"] == 503
    not_found, exhausted = xray.documents()
    assert not_found["error"] is True
    assert "fault" not in not_found
    assert exhausted["fault"] is True
    assert "error" not in exhausted


@pytest.mark.parametrize(
    "header",
    [
        f"Root={TRACE_ROOT};Parent={TRACE_PARENT};Sampled=0",
        f"Root={TRACE_ROOT};Sampled=1",
        f"Root=1-nothex;Parent={TRACE_PARENT};Sampled=1",
        "",
    ],
    ids=["unsampled", "no_parent", "bad_root", "empty"],
)
def test_no_span_without_a_sampled_context(
    harness: Harness, xray: XRayDaemon, monkeypatch: pytest.MonkeyPatch, header: str
) -> None:
    monkeypatch.setenv("_X_AMZN_TRACE_ID", header)
    assert harness.converse("summarize-thread")["statusCode"] == 200
    assert xray.documents() == []


def test_each_invocation_gets_its_own_span_and_cold_start_once(
    harness: Harness, xray: XRayDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(harness.handler, "_cold", True)
    harness.converse("summarize-thread")
    other_root = "1-67a1b2c4-00000000000000000000beef"
    monkeypatch.setenv("_X_AMZN_TRACE_ID", f"Root={other_root};Parent=00000000000000aa;Sampled=1")
    harness.converse("summarize-thread")
    first, second = xray.documents()
    assert (first["trace_id"], second["trace_id"]) == (TRACE_ROOT, other_root)
    assert second["parent_id"] == "00000000000000aa"
    assert first["id"] != second["id"]
    assert (first["annotations"]["ColdStart"], second["annotations"]["ColdStart"]) == (True, False)


def test_an_unreachable_daemon_costs_the_trace_not_the_request(
    harness: Harness, xray: XRayDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any) -> None:
        raise OSError("no daemon")

    monkeypatch.setattr(telemetry.tracer, "_socket", type("Refusing", (), {"sendto": refuse})())
    errors = telemetry.tracer.send_errors
    assert harness.converse("summarize-thread")["statusCode"] == 200
    assert telemetry.tracer.send_errors == errors + 1
    assert xray.documents() == []


def test_the_handler_loads_no_tracing_sdk_and_no_build_time_module() -> None:
    """Cold start: a fresh `import handler` (as Lambda's init does) loads no X-Ray or OpenTelemetry SDK, and none of
    the modules only the stacks and tests use. The figure itself is local/benchmarks/bench_cold_start.py's."""
    probe = (
        "import sys, handler; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'aws_xray_sdk', 'opentelemetry', 'wrapt'} "
        "or m in {'spillway.schema', 'yaml', 'jsonschema', 'stacks'}))"
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_LAMBDA_", "SPILLWAY_"))}
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROUTER, env=environ, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout

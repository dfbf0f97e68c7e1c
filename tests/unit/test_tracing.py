"""spillway.tracing's parsers: Lambda's trace header and the daemon address, as Lambda and the SDKs write them."""

from __future__ import annotations

import pytest

from spillway.tracing import DEFAULT_DAEMON, Span, TraceContext, parse_daemon_address, parse_trace_header

ROOT = "1-5759e988-bd862e3fe1be46a994272793"


def test_lambda_trace_header() -> None:
    header = f"Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=1;Lineage=a87bd80c:0"
    assert parse_trace_header(header) == TraceContext(ROOT, "53995c3f42cd8ad8", sampled=True)
    assert parse_trace_header(f"Sampled=0; Parent=53995c3f42cd8ad8; Root={ROOT}") == TraceContext(
        ROOT, "53995c3f42cd8ad8", sampled=False
    )


@pytest.mark.parametrize(
    "header", [None, "", "Root=;Parent=;Sampled=1", f"Root={ROOT}", f"Root={ROOT};Parent=XYZ;Sampled=1", "garbage"]
)
def test_malformed_trace_headers_are_no_context(header: str | None) -> None:
    assert parse_trace_header(header) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("169.254.79.129:2000", ("169.254.79.129", 2000)),
        ("tcp:127.0.0.1:2000 udp:127.0.0.2:2001", ("127.0.0.2", 2001)),
        (None, DEFAULT_DAEMON),
        ("nonsense", DEFAULT_DAEMON),
        ("host:99999", DEFAULT_DAEMON),
    ],
)
def test_daemon_address(value: str | None, expected: tuple[str, int]) -> None:
    assert parse_daemon_address(value) == expected


def test_annotation_keys_follow_xray_rules() -> None:
    span = Span("router", TraceContext(ROOT, "53995c3f42cd8ad8", sampled=True), 1.0)
    span.annotate("feature", "summarize")
    span.annotate("bad key!", "dropped")
    assert span.document(2.0)["annotations"] == {"feature": "summarize"}
